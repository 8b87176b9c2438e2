"""The control socket's wire format, shared by the server and the CLI: one JSON object per
line, request then response(s). Kept free of heavy imports: the CLI's health check loads it."""

import json
import socket

MAX_REQUEST = 64 * 1024


def encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


from hive_init.peercred import untrusted_server_uid  # noqa: E402


class Unreachable(Exception):
    pass


class Client:
    """A blocking client: the CLI needs nothing more, and it starts in milliseconds."""

    def __init__(self, path: str, timeout: float = 5.0):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except FileNotFoundError:
            raise Unreachable(f"hive-init is not running (no control socket at {path})") from None
        except ConnectionRefusedError:
            raise Unreachable(f"hive-init is not running (nothing listens on {path})") from None
        except PermissionError:
            raise Unreachable(f"permission denied on {path} (run as the init's user or root)") from None
        except (TimeoutError, OSError) as e:
            raise Unreachable(f"cannot reach hive-init at {path}: {e}") from None
        stranger = untrusted_server_uid(self.sock)
        if stranger is not None:  # checked before a byte is sent: it would get our command
            self.sock.close()
            raise Unreachable(f"{path} is served by uid {stranger}, neither root nor this user: not talking to it")
        self.buffer = b""

    def request(self, message: dict) -> dict:
        try:
            self.sock.sendall(encode(message))
            return self.receive()
        except (TimeoutError, OSError) as e:
            raise Unreachable(f"hive-init at {self.path} did not answer: {e}") from None

    def receive(self) -> dict:
        while b"\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise Unreachable(f"hive-init at {self.path} closed the connection")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def close(self) -> None:
        self.sock.close()
