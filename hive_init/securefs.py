"""Opening paths that a less privileged user may be able to change, as root, without being steered.

hive-init runs as root beside programs that own some of the directories it writes into
(`/var/log/hive` belongs to `app`, the data directory to `postgres`). A path is resolved one
component at a time from a directory descriptor, with O_NOFOLLOW: a symbolic link is followed
only where it sits in a directory nobody but root (or hive-init's own user) can write, because
only there can it not have been planted. Everything after that is done relative to the
descriptor of the directory we verified, never by re-resolving the path.

A leaf module: the standard library only.
"""

import errno
import os
import stat

# a directory descriptor that only names a place (no read permission needed to hold it)
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40  # as the kernel's own limit on links in one lookup (MAXSYMLINKS)


class UnsafePath(OSError):
    """The path passes through something another user could have planted (a link in a
    directory they can write, a hard link, a FIFO where a file is expected)."""

    def __init__(self, path: str, reason: str):
        super().__init__(errno.EPERM, reason, path)


def trusted_directory(st: os.stat_result) -> bool:
    """Nobody but root or hive-init's own user can add, remove or rename entries in it."""
    return st.st_uid in (0, os.geteuid()) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def open_directory(path: str, create_mode: int | None = None) -> int:
    """A descriptor (O_PATH) of directory `path`, reached without following a link that an
    untrusted user could have made. Missing directories are created with `create_mode` (owner:
    hive-init's user) when it is given. Raises OSError (UnsafePath for a planted link)."""
    if not os.path.isabs(path):
        raise ValueError(f"not an absolute path: {path!r}")
    fd = os.open("/", _DIR_FLAGS)
    try:
        parts = [p for p in path.split("/") if p and p != "."]
        links = 0
        while parts:
            name = parts.pop(0)
            if name == "..":
                # only within what we have already verified: the kernel's ".." of a directory
                # descriptor cannot be redirected by a link
                new = os.open("..", _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = new
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if create_mode is None:
                    raise
                try:
                    os.mkdir(name, create_mode, dir_fd=fd)  # the umask may narrow it: set it below
                except FileExistsError:
                    pass  # made meanwhile: looked at again below
                new = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.chmod(f"/proc/self/fd/{new}", create_mode)  # fchmod does not take O_PATH
                os.close(fd)
                fd = new
                continue
            if stat.S_ISLNK(st.st_mode):
                if not trusted_directory(os.fstat(fd)) or st.st_uid not in (0, os.geteuid()):
                    raise UnsafePath(path, f"{name!r} is a symbolic link in a directory another user can write")
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(name, dir_fd=fd)
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", _DIR_FLAGS)
                parts = [p for p in target.split("/") if p and p != "."] + parts
                continue
            new = os.open(name, _DIR_FLAGS, dir_fd=fd)  # ENOTDIR for anything but a directory
            os.close(fd)
            fd = new
        return fd
    except BaseException:
        os.close(fd)
        raise


def real_path_of(fd: int) -> str:
    """The canonical path of what `fd` refers to (never a link: it is the object itself)."""
    return os.readlink(f"/proc/self/fd/{fd}")


def open_regular(dir_fd: int, name: str, flags: int, mode: int = 0o600, path: str | None = None) -> int:
    """`name` in the directory `dir_fd`, opened without following a link, without blocking on a
    FIFO, and only if it is a regular file with no other hard link (a hard link made by another
    user would let them point us at any file on the same filesystem)."""
    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        shown = path or name
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(shown, "not a regular file")
        if st.st_nlink > 1:
            raise UnsafePath(shown, "has another hard link")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: str, limit: int) -> bytes:
    """At most `limit` bytes of the regular file `path`, reached as open_directory() does. Blocking:
    call it in a worker thread."""
    directory, name = os.path.split(path)
    dir_fd = open_directory(directory or "/")
    try:
        fd = open_regular(dir_fd, name, os.O_RDONLY, path=path)
    finally:
        os.close(dir_fd)
    try:
        return read_open_file(fd, limit, path)
    finally:
        os.close(fd)


def read_open_file(fd: int, limit: int, path: str | None = None) -> bytes:
    """At most `limit` bytes from an open descriptor; more is an error (EFBIG), not a cut: a file
    someone else controls (/dev/zero behind a link, a growing file) cannot make us read on."""
    chunks, left = [], limit + 1
    while left > 0:
        data = os.read(fd, min(left, 65536))
        if not data:
            break
        chunks.append(data)
        left -= len(data)
    if left <= 0:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
    return b"".join(chunks)


def private_directory(directory: str) -> None:
    """A directory of our own, closed to others: created 0700, or, if it exists, a real directory
    (not a link) that is ours and has no group or other bits (a name in /tmp can be taken first
    by anyone). Raises UnsafePath, or OSError when it cannot be created."""
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    st = os.stat(directory, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise UnsafePath(directory, f"not ours alone (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}, "
                                    f"{describe_mode(st.st_mode)})")


def describe_mode(mode: int) -> str:
    """What kind of file a mode says, for messages."""
    for test, name in ((stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISREG, "a regular file"), (stat.S_ISFIFO, "a FIFO")):
        if test(mode):
            return name
    return "a device"
