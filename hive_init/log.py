"""Where every line hive-init prints goes: its own events and its children's output.

One renderer (JSON lines, or docker-compose-style `name | text` for terminals) and one sink on
stdout that never blocks the event loop: when stdout is a pipe whose reader is slow, lines wait
in a bounded buffer and, past it, are dropped and counted rather than stalling the reaper.
"""

import json
import os
import stat
import sys
import time
from typing import Any

from hive_init import redact

INIT = "hive-init"
_COLORS = ("\x1b[36m", "\x1b[33m", "\x1b[32m", "\x1b[35m", "\x1b[34m", "\x1b[96m", "\x1b[93m", "\x1b[92m")
_RESET = "\x1b[0m"
_LEVEL_NUMBERS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class Sink:
    """stdout as a non-blocking, bounded writer."""

    def __init__(self, fd: int = 1, limit: int = 8 * 1024 * 1024):
        self.fd = fd
        self.limit = limit
        self.pending = bytearray()
        self.dropped_lines = 0
        self._nonblocking = False
        self._loop: Any = None

    def make_nonblocking(self) -> None:
        """Only for pipes and sockets (docker's log collector): a terminal or file never needs it,
        and O_NONBLOCK on a shared terminal would break the shell that started us."""
        try:
            mode = os.fstat(self.fd).st_mode
        except OSError:
            return
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            os.set_blocking(self.fd, False)
            self._nonblocking = True

    def write(self, line: str) -> None:
        data = line.encode("utf-8", "backslashreplace") + b"\n"
        if self.pending:
            self._queue(data)
            self._drain()  # as much as the reader takes now, not one write per loop turn
            return
        try:
            written = os.write(self.fd, data)
        except BlockingIOError:
            written = 0
        except OSError:
            return  # stdout closed: nowhere to log, and no reason to die
        if written < len(data):
            self._queue(data[written:])

    def _queue(self, data: bytes) -> None:
        if len(self.pending) + len(data) > self.limit:
            self.dropped_lines += 1
            return
        self.pending += data
        if self._loop is None:
            import asyncio

            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush_blocking()
                return
            self._loop.add_writer(self.fd, self._drain)

    def _drain(self) -> None:
        while self.pending:
            try:
                written = os.write(self.fd, self.pending)
            except BlockingIOError:
                return
            except OSError:
                written = len(self.pending)
            del self.pending[:written]
        if self._loop is not None:
            self._loop.remove_writer(self.fd)
            self._loop = None

    def flush_blocking(self) -> None:
        """At exit: the loop is gone, so wait for the reader."""
        if self._loop is not None:
            try:
                self._loop.remove_writer(self.fd)
            except Exception:
                pass
            self._loop = None
        if self._nonblocking:
            os.set_blocking(self.fd, True)
        while self.pending:
            try:
                del self.pending[: os.write(self.fd, self.pending)]
            except OSError:
                break
        self.pending.clear()


class Renderer:
    """Formats one event; `line()` is the fast path for child output (no processor chain)."""

    def __init__(self, fmt: str = "auto", width: int = 9, color: bool | None = None):
        tty = os.isatty(1)
        self.json = fmt == "json" or (fmt == "auto" and not tty)
        self.width = width
        self.color = tty if color is None else color
        self.colors: dict[str, str] = {}

    def line(self, source: str, stream: str, text: str) -> str:
        """`text` is redacted already (child_line, or Output.emit for every sink at once)."""
        if self.json:
            return json.dumps({"ts": _now(), "program": source, "stream": stream, "msg": text}, ensure_ascii=False)
        return f"{self._prefix(source)}{text}"

    def event(self, event: dict[str, Any]) -> str:
        level = event.pop("level", "info")
        msg = event.pop("event", "")
        program = event.pop("program", None)
        if self.json:
            out: dict[str, Any] = {"ts": _now(), "level": level, "program": INIT}
            if program:
                out["target"] = program
            out["msg"] = redact.redact(str(msg))
            for key, value in event.items():
                out[key] = redact.redact(value) if isinstance(value, str) else value
            return json.dumps(out, ensure_ascii=False, default=str)
        fields = " ".join(f"{k}={_console_value(v)}" for k, v in event.items())
        who = f"[{program}] " if program else ""
        mark = "" if level == "info" else f"{level.upper()}: "
        return redact.redact(f"{self._prefix(INIT)}{mark}{who}{msg}{' ' + fields if fields else ''}")

    def _prefix(self, source: str) -> str:
        name = source.ljust(self.width)
        if not self.color:
            return f"{name} | "
        color = self.colors.get(source)
        if color is None:
            color = self.colors[source] = _COLORS[len(self.colors) % len(_COLORS)]
        return f"{color}{name} |{_RESET} "


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _console_value(value: Any) -> str:
    text = str(value)
    return repr(text) if (" " in text or not text) else text


class Logger:
    """The init's own events: `log.info("spawned", pid=12)`, with bound context (`program=`).
    (structlog did this at first; it cost 15 ms of start-up and 2 MiB for the init's whole life
    for what these few lines do.)"""

    __slots__ = ("context",)

    def __init__(self, context: dict[str, Any]):
        self.context = context

    def bind(self, **context: Any) -> "Logger":
        return Logger({**self.context, **context})

    def _emit(self, level: str, msg: str, fields: dict[str, Any]) -> None:
        if _LEVEL_NUMBERS[level] >= _threshold:
            sink.write(renderer.event({"level": level, "event": msg, **self.context, **fields}))

    def debug(self, msg: str, **fields: Any) -> None:
        self._emit("debug", msg, fields)

    def info(self, msg: str, **fields: Any) -> None:
        self._emit("info", msg, fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self._emit("warning", msg, fields)

    def error(self, msg: str, **fields: Any) -> None:
        self._emit("error", msg, fields)


sink = Sink()
renderer = Renderer()
_threshold = _LEVEL_NUMBERS["info"]


def configure(fmt: str = "auto", level: str = "info", names: tuple[str, ...] = ()) -> None:
    global renderer, _threshold
    renderer = Renderer(fmt, width=max((len(n) for n in (INIT, *names)), default=9))
    _threshold = _LEVEL_NUMBERS[level]


def child_line(program: str, stream: str, text: str) -> None:
    sink.write(renderer.line(program, stream, redact.redact(text)))


def redacted_child_line(program: str, stream: str, text: str) -> None:
    """For a line that went through redact.redact() already."""
    sink.write(renderer.line(program, stream, text))


def get_logger(**context: Any) -> Logger:
    return Logger(context)


def fatal(message: str) -> None:
    """A one-line error for the user, before or after logging is set up."""
    sys.stderr.write(f"hive-init: {redact.redact(message)}\n")
    sys.stderr.flush()

