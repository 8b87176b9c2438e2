"""The JSON line format hive-init writes, read back: one object per line when its stdout is
not a terminal (always the case under Docker and podman):

    {"ts": "…Z", "program": "api", "stream": "stdout", "msg": "…"}                 a program's line
    {"ts": "…Z", "level": "info", "program": "hive-init", "target": "api", "msg": "ready", …}   an event

Pure functions: a raw line → `LogLine`, whether it belongs to a program, and how it is shown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

INIT = "hive-init"


@dataclass(frozen=True)
class LogLine:
    raw: str
    program: str | None = None  # None: not one of hive-init's JSON lines
    msg: str = ""
    ts: str = ""
    stream: str = ""
    level: str = ""
    target: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


def parse_line(raw: str) -> LogLine:
    raw = raw.rstrip("\r\n")
    text = raw.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return LogLine(raw)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return LogLine(raw)
    if not isinstance(data, dict) or not isinstance(data.get("program"), str):
        return LogLine(raw)
    known = {"ts", "program", "stream", "msg", "level", "target"}
    return LogLine(raw=raw, program=data["program"], msg=str(data.get("msg", "")), ts=str(data.get("ts", "")),
                   stream=str(data.get("stream", "")), level=str(data.get("level", "")),
                   target=str(data.get("target", "")), fields={k: v for k, v in data.items() if k not in known})


def belongs_to(line: LogLine, program: str) -> bool:
    """A program's own output, and hive-init's events about it (started, ready, exited, …)."""
    return line.program == program or (line.program == INIT and line.target == program)


def render(line: LogLine, width: int = 9) -> str:
    """`07:54:48.101 api       | text`, as hive-init shows it on a terminal, with the time of day."""
    if line.program is None:
        return line.raw
    clock = line.ts[11:23] if len(line.ts) >= 23 and line.ts[10] == "T" else line.ts
    text = line.msg
    if line.program == INIT:
        mark = "" if line.level in ("", "info") else f"{line.level.upper()}: "
        who = f"[{line.target}] " if line.target else ""
        extra = " ".join(f"{k}={_value(v)}" for k, v in line.fields.items())
        text = f"{mark}{who}{text}{' ' + extra if extra else ''}"
    return f"{clock + ' ' if clock else ''}{line.program.ljust(width)} | {text}"


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return repr(text) if (" " in text or not text) else text
