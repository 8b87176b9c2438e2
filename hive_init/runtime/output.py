"""A child's stdout/stderr → lines → log events, a bounded ring buffer per program, an optional
rotated log file, and live followers (`hive-init logs -f`).

Lines are cut at `MAX_LINE` bytes so that a child writing without newlines costs bounded memory;
invalid UTF-8 is shown with replacement characters, never dropped.
"""

import collections
import os
import time
from collections.abc import Callable, Iterator

import anyio

from hive_init import log
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
    """Size-rotated log file: path, path.1 … path.N. A failing disk is logged once, then skipped."""

    def __init__(self, spec: LogFile):
        self.spec = spec
        self.file = None
        self.size = 0
        self.failed = False

    def write(self, text: str) -> None:
        if self.failed:
            return
        data = (text + "\n").encode("utf-8", "replace")
        try:
            if self.file is None:
                os.makedirs(os.path.dirname(self.spec.path) or ".", exist_ok=True)
                self.file = open(self.spec.path, "ab", buffering=0)
                self.size = self.file.tell()
            if self.size + len(data) > self.spec.max_bytes and self.size > 0:
                self._rotate()
            self.file.write(data)
            self.size += len(data)
        except OSError as e:
            self.failed = True
            # makedirs says "File exists" when a parent of the path is a regular file
            reason = "a parent of the path is not a directory" if isinstance(e, (FileExistsError, NotADirectoryError)) \
                else e.strerror
            log.get_logger().error("cannot write log file; output goes to stdout only",
                                   path=self.spec.path, error=reason)

    def _rotate(self) -> None:
        assert self.file is not None
        self.file.close()
        if self.spec.backups == 0:
            os.truncate(self.spec.path, 0)
        else:
            for i in range(self.spec.backups - 1, 0, -1):
                if os.path.exists(f"{self.spec.path}.{i}"):
                    os.replace(f"{self.spec.path}.{i}", f"{self.spec.path}.{i + 1}")
            os.replace(self.spec.path, f"{self.spec.path}.1")
        self.file = open(self.spec.path, "ab", buffering=0)
        self.size = 0

    def reopen(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.failed = False

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


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
        entry = (time.time(), stream, text)
        self.recent.append(entry)
        self.lines_total += 1
        log.child_line(self.program, stream, text)
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
