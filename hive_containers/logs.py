"""`hive-containers logs`: a container's output read back through its engine, readable (as
hive-init shows it on a terminal) or raw, all of it or one program's, the last N lines or
followed; and `tail`, the last lines `up` and `restart` show when a container is not healthy.
How one line is read and shown is `logline`'s.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TextIO

from hive_containers import logline
from hive_containers.compose import Service
from hive_containers.engine import Engine, EngineError
from hive_containers.exits import ENGINE, NOT_HEALTHY, OK, Failure


def show(engine: Engine, s: Service, out: TextIO, follow: bool = False, program: str | None = None,
         lines: int = 100, raw: bool = False) -> int:
    container = engine.find(s)
    if container is None:
        raise Failure(NOT_HEALTHY, f"{s.name}: no container (start it: hive-containers up {s.name})")
    print_line = _printer(out, program, raw)
    if not follow:
        history = engine.logs(container.id, tail=None if program else lines)
        for line in _last_matching(history, program, lines):
            print_line(line)
        return OK
    if program is None:
        return _stream(engine, engine.logs_argv(container.id, follow=True, tail=lines), print_line)
    # the last N lines of that program come from the whole history; then the stream from a
    # moment before, without the lines already shown
    since = (datetime.now(UTC) - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    history = engine.logs(container.id)
    for line in _last_matching(history, program, lines):
        print_line(line)
    seen = Counter(history)
    return _stream(engine, engine.logs_argv(container.id, follow=True, since=since), print_line, seen)


def tail(engine: Engine, container: str, n: int = 15) -> list[str]:
    """The container's last lines, readable, a line repeated in a row shown once."""
    try:
        lines = engine.logs(container, tail=100)
    except EngineError as e:
        return [f"(no logs: {e})"]
    out: list[str] = []
    repeats = 0
    for line in (logline.render(logline.parse_line(line)) for line in lines):
        if out and line == out[-1]:
            repeats += 1
            continue
        if repeats:
            out[-1] += f"  (×{repeats + 1})"
            repeats = 0
        out.append(line)
    if repeats:
        out[-1] += f"  (×{repeats + 1})"
    return out[-n:]


def _printer(out: TextIO, program: str | None, raw: bool) -> Callable[[str], None]:
    def print_line(line: str) -> None:
        parsed = logline.parse_line(line)
        if program is not None and not logline.belongs_to(parsed, program):
            return
        print(line if raw else logline.render(parsed), file=out, flush=True)
    return print_line


def _stream(engine: Engine, argv: list[str], print_line: Callable[[str], None],
            skip: Counter[str] | None = None) -> int:
    proc = engine.popen(argv)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            if skip and skip[line] > 0:
                skip[line] -= 1
                continue
            print_line(line)
    except KeyboardInterrupt:
        pass
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return OK if proc.returncode in (0, -15, None) else ENGINE


def _last_matching(lines: list[str], program: str | None, n: int) -> list[str]:
    if program is not None:
        lines = [line for line in lines if logline.belongs_to(logline.parse_line(line), program)]
    return lines[-n:] if n > 0 else []
