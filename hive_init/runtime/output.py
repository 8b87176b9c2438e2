"""A child's stdout/stderr → lines → log events, a bounded ring buffer per program, an optional
rotated log file, and live followers (`hive-init logs -f`).

Lines are cut at `MAX_LINE` bytes so that a child writing without newlines costs bounded memory;
invalid UTF-8 is shown with replacement characters, never dropped.
"""

import collections
import errno
import os
import stat
import time
from collections.abc import Callable, Iterator

import anyio

from hive_init import log, redact, securefs
from hive_init.config.model import LogFile

MAX_LINE = 16 * 1024
READ_SIZE = 64 * 1024


class LineSplitter:
    """Bytes in, complete lines out. A line longer than `max_line` comes out in pieces of
    `max_line` bytes; `flush()` gives the last unterminated line at EOF."""

    def __init__(self, max_line: int = MAX_LINE):
        self.max_line = max_line
        self.buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        self.buffer += data
        start = 0
        buffer, max_line = self.buffer, self.max_line
        while True:
            # a full-length line may still be followed by its "\r\n": look that far
            end = buffer.find(b"\n", start, start + max_line + 2)
            if end >= 0:
                stop = end - 1 if end > start and buffer[end - 1] == 13 else end  # 13: "\r"
                if stop - start <= max_line:
                    yield bytes(buffer[start:stop])
                    start = end + 1
                    continue
            if end >= 0 or len(buffer) - start > max_line + 1:
                yield bytes(buffer[start:start + max_line])
                start += max_line
                continue
            break
        del buffer[:start]

    def flush(self) -> Iterator[bytes]:
        """At EOF: what is left, in pieces of at most max_line bytes."""
        buffer = bytes(self.buffer)
        self.buffer.clear()
        if buffer.endswith(b"\r"):
            buffer = buffer[:-1]
        for i in range(0, len(buffer), self.max_line):
            yield buffer[i:i + self.max_line]


def decode(line: bytes) -> str:
    return line.decode("utf-8", "replace")


class RotatingFile:
    """Size-rotated log file: path, path.1 … path.N. A failing disk is logged once, then skipped.

    hive-init writes it as root into a directory that the program's user may own (`app` owns
    /var/log/hive in the images), so every step goes through the descriptor of the directory,
    verified once (securefs.open_directory), and the names in it: the file is opened with
    O_NOFOLLOW and only if it is a regular file with one link, rotated by renameat within that
    directory, truncated with ftruncate on our own descriptor. It is kept at mode 0640 at most,
    owned by hive-init's user and the program's group (LogFile.gid), so that the program may
    read its own log and nobody else but root can."""

    MODE = 0o640

    def __init__(self, spec: LogFile):
        self.spec = spec
        self.dir_fd: int | None = None
        self.fd: int | None = None
        self.size = 0
        self.failed = False

    @property
    def name(self) -> str:
        return os.path.basename(self.spec.path)

    def write(self, text: str) -> None:
        if self.failed:
            return
        data = (text + "\n").encode("utf-8", "replace")
        try:
            if self.fd is None:
                self._open()
            assert self.fd is not None
            if self.size + len(data) > self.spec.max_bytes and self.size > 0:
                self._rotate()
            os.write(self.fd, data)
            self.size += len(data)
        except OSError as e:
            self.failed = True
            self.close()
            # makedirs says "File exists" when a parent of the path is a regular file
            reason = "a parent of the path is not a directory" if isinstance(e, (FileExistsError, NotADirectoryError)) \
                else "refused: a symbolic link where hive-init does not follow one" if e.errno == errno.ELOOP \
                else e.strerror
            log.get_logger().error("cannot write log file; output goes to stdout only",
                                   path=self.spec.path, error=reason)

    def _open(self) -> None:
        if self.dir_fd is None:
            self.dir_fd = securefs.open_directory(os.path.dirname(self.spec.path), create_mode=0o755)
        fd = securefs.open_regular(self.dir_fd, self.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, self.MODE,
                                   path=self.spec.path)
        try:
            self._own(fd)
            self.size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def _own(self, fd: int) -> None:
        """Owner, group and mode by descriptor: a file someone else made (or left 0644) becomes ours."""
        st = os.fstat(fd)
        uid = os.geteuid()
        gid = self.spec.gid if self.spec.gid is not None and uid == 0 else st.st_gid
        if uid == 0 and (st.st_uid, st.st_gid) != (0, gid):
            os.fchown(fd, 0, gid)
        if stat.S_IMODE(st.st_mode) & ~self.MODE:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & self.MODE)

    def _rotate(self) -> None:
        assert self.fd is not None and self.dir_fd is not None
        if self.spec.backups == 0:
            os.ftruncate(self.fd, 0)  # our own descriptor: whatever the name points at now
            self.size = 0
            return
        os.close(self.fd)
        self.fd = None
        d, name = self.dir_fd, self.name
        for i in range(self.spec.backups - 1, 0, -1):
            try:  # renameat within the verified directory: a link is renamed, never followed
                os.rename(f"{name}.{i}", f"{name}.{i + 1}", src_dir_fd=d, dst_dir_fd=d)
            except FileNotFoundError:
                pass
        os.rename(name, f"{name}.1", src_dir_fd=d, dst_dir_fd=d)
        self._open()

    def reopen(self) -> None:
        self.close()
        self.failed = False

    def close(self) -> None:
        for attr in ("fd", "dir_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                setattr(self, attr, None)
                try:
                    os.close(fd)
                except OSError:
                    pass


Line = tuple[float, str, str]  # (unix time, stream, text)


class Output:
    """Everything one program printed: the last N lines, the log file, the followers."""

    def __init__(self, program: str, buffer_lines: int, log_file: LogFile | None):
        self.program = program
        self.recent: collections.deque[Line] = collections.deque(maxlen=buffer_lines)
        self.file = RotatingFile(log_file) if log_file else None
        self.followers: set[Callable[[Line], None]] = set()
        self.lines_total = 0

    def emit(self, stream: str, text: str) -> None:
        # once, before any sink: stdout, the ring buffer (`hive-init logs`), followers, the file
        text = redact.redact(text)
        entry = (time.time(), stream, text)
        self.recent.append(entry)
        self.lines_total += 1
        log.redacted_child_line(self.program, stream, text)
        if self.file is not None:
            self.file.write(text)
        for follower in tuple(self.followers):
            follower(entry)

    async def pump(self, fd: int, stream: str) -> None:
        await pump_lines(fd, lambda text: self.emit(stream, text))


async def pump_lines(fd: int, emit: Callable[[str], None]) -> None:
    """Read a non-blocking pipe until EOF (every writer of it is gone), emitting each line."""
    splitter = LineSplitter()
    try:
        while True:
            await anyio.wait_readable(fd)
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                break
            if not data:
                break
            for line in splitter.feed(data):
                emit(decode(line))
    finally:
        for line in splitter.flush():
            emit(decode(line))
