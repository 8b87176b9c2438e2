"""`hive-init health`, the command Docker runs every few seconds: a fast path that skips
argparse and the `socket` module (peercred.connect, on the C `_socket`, does all it needs),
one request, one line."""

import json
import os

from hive_init.paths import default_socket_path
from hive_init.peercred import Unreachable, connect, no_answer


def socket_path(explicit: str | None, config: str | None = None) -> str:
    """Where the clients look: -s, else the control_socket of -c CONFIG, else $HIVE_INIT_SOCKET,
    else the control_socket of $HIVE_INIT_CONFIG, else the default (as `supervisorctl -c`)."""
    if explicit:
        return explicit
    if config:
        return socket_of_config(config)
    if os.environ.get("HIVE_INIT_SOCKET"):
        return os.environ["HIVE_INIT_SOCKET"]
    if os.environ.get("HIVE_INIT_CONFIG"):
        return socket_of_config(os.environ["HIVE_INIT_CONFIG"])
    return default_socket_path()


class BadConfig(ValueError):
    pass


def socket_of_config(path: str) -> str:
    """[init] control_socket of a config, read without loading the rest (its secrets may not be
    readable by whoever runs `status`, and its user lookups take time)."""
    import tomllib

    from hive_init.config.expand import UnsetVariable, expand, read_regular_file

    try:
        raw = tomllib.loads(read_regular_file(path, 4 * 1024 * 1024).decode("utf-8"))
        value = raw.get("init", {}).get("control_socket", "")
        if not isinstance(value, str):
            raise ValueError("[init] control_socket is not a string")
        return expand(value, os.environ, set()) or default_socket_path()
    except OSError as e:
        raise BadConfig(f"{path}: cannot read config: {e.strerror or e}") from None
    except (ValueError, RecursionError, AttributeError, UnsetVariable) as e:
        raise BadConfig(f"{path}: cannot find [init] control_socket: {e}") from None


def main(socket: str | None = None, timeout: float = 5.0, config: str | None = None) -> int:
    """Exit 0 healthy, 1 not (or unreachable): Docker reserves every other status."""
    try:
        path = socket_path(socket, config)
    except BadConfig as e:
        print(f"unhealthy: {e}")
        return 1
    try:
        sock = connect(path, timeout)
    except Unreachable as e:
        print(f"unhealthy: {e}")
        return 1
    try:
        sock.sendall(b'{"cmd":"health"}\n')
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise no_answer(path)
            data += chunk
        reply = json.loads(data)
    except (OSError, ValueError) as e:
        print(f"unhealthy: {no_answer(path, e)}")
        return 1
    except Unreachable as e:
        print(f"unhealthy: {e}")
        return 1
    finally:
        sock.close()
    if not reply.get("ok", True) or "programs" not in reply:
        print(f"unhealthy: {reply.get('message', 'unexpected answer')}")
        return 1
    programs = reply["programs"]
    if reply["ready"]:
        print(f"healthy: {sum(p['ready'] for p in programs)}/{len(programs)} programs ready")
        return 0
    print("unhealthy: " + ("; ".join(reply["failing"]) or "shutting down"))
    return 1
