"""The control socket's wire format, shared by the server and the CLI: one JSON object per
line, request then response(s). Kept free of heavy imports: the CLI's health check loads it."""

import json

# Unreachable: what the clients catch, imported from here with Client
from hive_init.peercred import Unreachable as Unreachable
from hive_init.peercred import connect, no_answer

MAX_REQUEST = 64 * 1024


def encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class Client:
    """A blocking client: the CLI needs nothing more, and it starts in milliseconds."""

    def __init__(self, path: str, timeout: float = 5.0):
        self.path = path
        self.sock = connect(path, timeout)
        self.buffer = b""

    def request(self, message: dict) -> dict:
        try:
            self.sock.sendall(encode(message))
            return self.receive()
        except OSError as e:  # a timeout included
            raise no_answer(self.path, e) from None

    def receive(self) -> dict:
        while b"\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise no_answer(self.path)
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def close(self) -> None:
        self.sock.close()
