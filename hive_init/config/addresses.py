"""The syntax of a `listen` address: "HOST:PORT" (an IP address, `[v6]`, `localhost` or `*`),
"unix:/absolute/path.sock" or "unix:@abstract-name". Parsed once, here; the runtime binds what
this returns (hive_init.runtime.listen). Host names other than localhost are not resolved: a
lookup can block and can change between two starts, an address held for the init's life must not.
"""

import os
import socket
from dataclasses import dataclass

# sun_path is 108 bytes on Linux, NUL included
UNIX_PATH_MAX = 107


@dataclass(frozen=True, slots=True)
class Address:
    family: int  # socket.AF_INET, AF_INET6 or AF_UNIX
    host: str = ""  # inet: the numeric address
    port: int = 0  # inet: 0 asks the kernel for a free port
    path: str = ""  # unix: an absolute path, or "\0name" for the abstract namespace

    @property
    def sockaddr(self) -> tuple[str, int] | str:
        return self.path if self.family == socket.AF_UNIX else (self.host, self.port)

    @property
    def abstract(self) -> bool:
        return self.path.startswith("\0")


def parse_address(text: str) -> Address:
    """ValueError (one line, for the config error) if `text` is not a listen address."""
    if text.startswith("unix:"):
        return _unix(text[len("unix:"):], text)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected \"HOST:PORT\", \"unix:/path.sock\" or \"unix:@name\" (got {text!r})")
    if host.startswith("[") and host.endswith("]"):
        return Address(socket.AF_INET6, _numeric(socket.AF_INET6, host[1:-1], text), int(port))
    if host in ("", "*", "0.0.0.0"):
        return Address(socket.AF_INET, "0.0.0.0", int(port))
    if host == "localhost":
        return Address(socket.AF_INET, "127.0.0.1", int(port))
    if ":" in host:
        raise ValueError(f"an IPv6 address goes in brackets: \"[{host}]:{port}\" (got {text!r})")
    return Address(socket.AF_INET, _numeric(socket.AF_INET, host, text), int(port))


def _numeric(family: int, host: str, text: str) -> str:
    try:
        socket.inet_pton(family, host)
    except OSError:
        raise ValueError(f"{host!r} is not an IP address (host names are not resolved; use an address, "
                         f"localhost or *) in {text!r}") from None
    return host


def _unix(path: str, text: str) -> Address:
    if path.startswith("@"):
        name = path[1:]
        if not name or len(name.encode()) > UNIX_PATH_MAX - 1 or "\0" in name:
            raise ValueError(f"an abstract socket name must be 1 to {UNIX_PATH_MAX - 1} bytes (got {text!r})")
        return Address(socket.AF_UNIX, path="\0" + name)
    if not os.path.isabs(path) or "\0" in path:
        raise ValueError(f"a unix socket needs an absolute path (got {text!r})")
    path = os.path.normpath(path)
    if path == "/" or len(path.encode()) > UNIX_PATH_MAX:
        raise ValueError(f"a unix socket path must name a file and fit in {UNIX_PATH_MAX} bytes (got {text!r})")
    return Address(socket.AF_UNIX, path=path)


def valid_fd_name(name: str) -> bool:
    """As sd_listen_fds_with_names reads LISTEN_FDNAMES: printable ASCII, no ':', at most 255."""
    return 0 < len(name) <= 255 and all(" " < c <= "~" and c != ":" for c in name)
