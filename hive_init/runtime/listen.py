"""Listening sockets that hive-init binds once and holds for its whole life (`listen` on a
program). Every process of the program gets them as descriptors 3, 4, ... with LISTEN_FDS,
LISTEN_PID and LISTEN_FDNAMES (sd_listen_fds; set by the exec wrapper, runtime/execwrap.py).
Because the init keeps its copy, a connection made while no process accepts (a crash, a
restart) waits in the socket's backlog instead of being refused.

They are bound as root before any program runs (a port below 1024, a root-owned directory).
A unix socket is made where a less privileged user may own the directory, so root never acts
on a name such a user could swap: the directory is opened component by component without
following links; the socket is bound, chmod-ed and chown-ed inside a fresh private (0700,
root) directory next to it, where nobody else can reach it; then renamed into place. A name
that is there already is replaced only if it is a socket nobody answers on (a stale one), or
one of our own.
"""

import errno
import os
import socket
import stat
from dataclasses import dataclass

from hive_init.config.addresses import Address, parse_address
from hive_init.config.errors import ConfigError
from hive_init.config.model import Config, ListenSpec

# connections that may wait while no process accepts (the kernel caps it at net.core.somaxconn);
# an app server that calls listen() again on the descriptor (uvicorn does) sets its own
BACKLOG = 4096
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Key = tuple[Address, int | None, int | None, int | None]


def key_of(spec: ListenSpec) -> Key:
    """Two entries with the same key are the same socket (the name is only a label)."""
    return (parse_address(spec.address), spec.mode, spec.uid, spec.gid)


@dataclass(eq=False)
class HeldSocket:
    address: Address
    sock: socket.socket
    bound: str  # what it is bound to, as a user writes it (the real port when 0 was asked)
    file_id: tuple[int, int] | None = None  # unix on disk: (st_dev, st_ino) of the socket file


class HeldSockets:
    def __init__(self) -> None:
        self._held: dict[Key, HeldSocket] = {}

    def hold(self, config: Config) -> list[str]:
        """Bind every address of `config` not held yet. On a failure, a ConfigError naming the
        program's entry, and what this call bound is closed again: nothing half-made."""
        new: dict[Key, HeldSocket] = {}
        try:
            for spec in config.programs.values():
                for i, listen in enumerate(spec.listen):
                    key = key_of(listen)
                    if key in self._held or key in new:
                        continue
                    same = self._bound_to(key[0])
                    if same is not None:  # "127.0.0.1:0" then its real port: one socket
                        new[key] = same
                        continue
                    try:
                        new[key] = _bind(key, self._ours())
                    except OSError as e:
                        raise ConfigError(config.path, f"programs.{spec.name}.listen[{i}]: cannot bind "
                                          f"{listen.address}: {_reason(e)}") from None
                    except ValueError as e:
                        raise ConfigError(config.path, f"programs.{spec.name}.listen[{i}]: cannot bind "
                                          f"{listen.address}: {e}") from None
        except BaseException:
            for held in new.values():
                if held not in self._held.values():
                    _release(held)
            raise
        self._held.update(new)
        return [held.bound for held in new.values()]

    def release_unused(self, config: Config) -> list[str]:
        """Close what no program of `config` lists any more (after a reload). A process that
        still runs keeps its own copy until it exits."""
        used = {key_of(listen) for spec in config.programs.values() for listen in spec.listen}
        gone = [key for key in self._held if key not in used]
        for key in gone:
            held = self._held.pop(key)
            if held not in self._held.values():
                _release(held)
        return [str(key[0].sockaddr) for key in gone]

    def release_all(self) -> None:
        for held in {id(h): h for h in self._held.values()}.values():
            _release(held)
        self._held.clear()

    def passed(self, listen: tuple[ListenSpec, ...]) -> list[tuple[int, str]]:
        """(descriptor, name) in the order of `listen`: what the exec wrapper moves to 3, 4, ..."""
        return [(self._held[key_of(spec)].sock.fileno(), spec.name) for spec in listen]

    def bound(self, listen: tuple[ListenSpec, ...]) -> list[str]:
        return [self._held[key].bound for key in map(key_of, listen) if key in self._held]

    def inodes(self, listen: tuple[ListenSpec, ...]) -> set[int]:
        """The sockets' inodes, as /proc shows them in a process's epoll set."""
        return {os.fstat(self._held[key_of(spec)].sock.fileno()).st_ino for spec in listen}

    def _bound_to(self, address: Address) -> HeldSocket | None:
        """A held inet socket that is bound to exactly `address` (not asking for port 0)."""
        if address.family == socket.AF_UNIX or address.port == 0:
            return None
        for held in self._held.values():
            if held.address.family == address.family and held.sock.getsockname()[:2] == address.sockaddr:
                return held
        return None

    def _ours(self) -> set[tuple[int, int]]:
        return {h.file_id for h in self._held.values() if h.file_id is not None}


held = HeldSockets()


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def _bind(key: Key, ours: set[tuple[int, int]]) -> HeldSocket:
    address, mode, uid, gid = key
    if address.family != socket.AF_UNIX:
        return _bind_inet(address)
    if address.abstract:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address.path)
            sock.listen(BACKLOG)
        except BaseException:
            sock.close()
            raise
        return HeldSocket(address, sock, "unix:@" + address.path[1:])
    assert mode is not None and uid is not None and gid is not None
    return _bind_unix_file(address, mode, uid, gid, ours)


def _bind_inet(address: Address) -> HeldSocket:
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        # a restarted init rebinds at once, whatever connections of the last one linger in TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address.sockaddr)
        sock.listen(BACKLOG)
        host, port = sock.getsockname()[:2]
    except BaseException:
        sock.close()
        raise
    shown = f"[{host}]:{port}" if address.family == socket.AF_INET6 else f"{host}:{port}"
    return HeldSocket(address, sock, shown)


def _bind_unix_file(address: Address, mode: int, uid: int, gid: int, ours: set[tuple[int, int]]) -> HeldSocket:
    parent, name = os.path.split(address.path)
    dirfd = open_directory(parent)
    try:
        _check_replaceable(dirfd, name, ours)
        private_name, private = _private_directory(dirfd)
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                # bound through the descriptor of the private directory: no path a user can change
                sock.bind(f"/proc/self/fd/{private}/s")
                os.chmod("s", mode, dir_fd=private)  # only root can put a link there: safe to follow
                os.chown("s", uid, gid, dir_fd=private, follow_symlinks=False)
                info = os.stat("s", dir_fd=private, follow_symlinks=False)
                sock.listen(BACKLOG)  # before it has its name: the first connection already waits
                os.rename("s", name, src_dir_fd=private, dst_dir_fd=dirfd)
            except BaseException:
                sock.close()
                raise
        finally:
            os.close(private)
            try:
                os.rmdir(private_name, dir_fd=dirfd)
            except OSError:
                pass  # left only if someone swapped the name: an empty directory of ours at worst
    finally:
        os.close(dirfd)
    return HeldSocket(address, sock, "unix:" + address.path, (info.st_dev, info.st_ino))


def open_directory(path: str) -> int:
    """A descriptor of the directory `path`, reached from / one component at a time with
    O_NOFOLLOW: a symbolic link anywhere on the way is refused, not followed."""
    fd = os.open("/", _DIR_FLAGS)
    walked = ""
    try:
        for part in path.strip("/").split("/"):
            if not part:
                continue
            walked += "/" + part
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(fd, part):
                    raise ValueError(f"{walked} is a symbolic link (give the real path: links are not "
                                     "followed)") from None
                if e.errno == errno.ENOTDIR:
                    raise ValueError(f"{walked} is not a directory") from None
                if e.errno == errno.ENOENT:
                    raise ValueError(f"directory {walked} does not exist") from None
                raise
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_link(dirfd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _check_replaceable(dirfd: int, name: str, ours: set[tuple[int, int]]) -> None:
    try:
        info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if (info.st_dev, info.st_ino) in ours:
        return  # our own socket, bound again with another mode or owner: replaced atomically
    if not stat.S_ISSOCK(info.st_mode):
        raise ValueError("the path exists and is not a socket (hive-init does not remove it)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(f"/proc/self/fd/{dirfd}/{name}")
    except (ConnectionRefusedError, FileNotFoundError):
        return  # stale: nobody listens on it any more
    except BlockingIOError:
        pass  # its backlog is full: somebody listens
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "another process listens on this socket")


def _private_directory(dirfd: int) -> tuple[str, int]:
    while True:
        # what secrets.token_hex(6) returns, without importing secrets (hmac, hashlib: 0.6 MiB kept)
        name = f".hive-init-{os.urandom(6).hex()}"
        try:
            os.mkdir(name, 0o700, dir_fd=dirfd)
        except FileExistsError:
            continue
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=dirfd)
            info = os.fstat(fd)
        except OSError:
            os.rmdir(name, dir_fd=dirfd)
            raise
        if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
            os.close(fd)  # someone swapped it between mkdir and open: do nothing in it
            raise ValueError("the socket's directory changed while hive-init was binding")
        return name, fd


def _release(held: HeldSocket) -> None:
    """Close our copy; a unix socket file goes too, if the name still is ours."""
    try:
        if held.file_id is not None:
            parent, name = os.path.split(held.address.path)
            try:
                dirfd = open_directory(parent)
            except (OSError, ValueError):
                return
            try:
                info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                if (info.st_dev, info.st_ino) == held.file_id:
                    os.unlink(name, dir_fd=dirfd)
            except OSError:
                pass
            finally:
                os.close(dirfd)
    finally:
        held.sock.close()
