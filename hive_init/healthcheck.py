"""`hive-init health`, the command Docker runs every few seconds: a fast path that skips
argparse and the `socket` module (the C `_socket` does all it needs), one request, one line."""

import json

import _socket

from hive_init.paths import default_socket_path, socket_path  # noqa: F401  (re-exported: the fast path's users)


def main(socket: str | None = None, timeout: float = 5.0) -> int:
    """Exit 0 healthy, 1 not (or unreachable): Docker reserves every other status."""
    path = socket_path(socket)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(b'{"cmd":"health"}\n')
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        reply = json.loads(data)
    except FileNotFoundError:
        print(f"unhealthy: hive-init is not running (no control socket at {path})")
        return 1
    except ConnectionRefusedError:
        print(f"unhealthy: hive-init is not running (nothing listens on {path})")
        return 1
    except PermissionError:
        print(f"unhealthy: permission denied on {path} (run as the init's user or root)")
        return 1
    except (OSError, ValueError) as e:
        print(f"unhealthy: hive-init at {path} did not answer: {e}")
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
