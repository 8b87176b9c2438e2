"""A client's end of the control socket: connecting to it, and who serves it. A leaf (the C
`_socket` only, so that `hive-init health`'s fast path can use it, with no module more than it
needs): a socket another user made must not receive our commands or be believed.

Every client (`hive-init health`, the control commands, supervisorctl) reaches the init through
`connect`, so each way of not reaching it is said one way, whichever command met it."""

import _socket
import os
import sys

_LITTLE = sys.byteorder == "little"


class Unreachable(Exception):
    """The init could not be reached, or not trusted, or did not answer. str(): one line, ready
    to print after the command's own prefix."""


def untrusted_server_uid(sock: "_socket.socket") -> int | None:
    """The uid of the process listening on a connected unix socket, if it is neither root nor us
    (else None)."""
    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)  # struct ucred: pid, uid, gid
    uid = int.from_bytes(creds[4:8], "little" if _LITTLE else "big")
    return None if uid in (0, os.geteuid()) else uid


def connect(path: str, timeout: float) -> "_socket.socket":
    """A connected stream socket to the init at `path`, served by root or by us; else
    Unreachable, and nothing was sent."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        stranger = untrusted_server_uid(sock)
    except OSError as e:
        sock.close()
        raise _connect_failed(path, e) from None
    if stranger is not None:  # checked before a byte is sent: it would get our command
        sock.close()
        raise Unreachable(f"{path} is served by uid {stranger}, neither root nor this user: "
                          "not trusted, not talking to it")
    return sock


def _connect_failed(path: str, error: OSError) -> Unreachable:
    if isinstance(error, FileNotFoundError):
        return Unreachable(f"hive-init is not running (no control socket at {path})")
    if isinstance(error, ConnectionRefusedError):
        return Unreachable(f"hive-init is not running (nothing listens on {path})")
    if isinstance(error, PermissionError):
        return Unreachable(f"permission denied on {path} (run as the init's user or root)")
    return Unreachable(f"cannot reach hive-init at {path}: {error}")


def no_answer(path: str, error: Exception | None = None) -> Unreachable:
    """Connected, but no answer came: `error` from sending or receiving (a timeout included), or
    a reply that is not JSON; None when the init closed the connection first."""
    if error is None:
        return Unreachable(f"hive-init at {path} closed the connection")
    return Unreachable(f"hive-init at {path} did not answer: {error}")
