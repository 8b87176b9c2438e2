"""Who serves a unix socket we connected to. A leaf (the C `_socket` only, so that `hive-init
health`'s fast path can use it): a socket another user made must not receive our commands or
be believed."""

import _socket
import os
import sys

_LITTLE = sys.byteorder == "little"


def untrusted_server_uid(sock: "_socket.socket") -> int | None:
    """The uid of the process listening on a connected unix socket, if it is neither root nor us
    (else None)."""
    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)  # struct ucred: pid, uid, gid
    uid = int.from_bytes(creds[4:8], "little" if _LITTLE else "big")
    return None if uid in (0, os.geteuid()) else uid
