"""What every part of the supervisord converter shares: its error, its notes, a program being converted."""

import os
import re
from dataclasses import dataclass, field
from typing import Any


class ConvertError(Exception):
    """Conversion stops: one line for stderr and the exit status."""

    def __init__(self, status: int, where: str, message: str):
        super().__init__(f"{where}: {message}" if where else message)
        self.status = status


@dataclass(frozen=True)
class Note:
    """One line on stderr: an item without an equivalent (kind "report") or a warning."""

    kind: str
    file: str
    line: int
    section: str
    key: str | None
    text: str

    def __str__(self) -> str:
        what = f"[{self.section}] {self.key}" if self.key else f"[{self.section}]"
        label = "not converted" if self.kind == "report" else "warning"
        return _one_line(f"{self.file}:{self.line}: {what}: {label}: {self.text}")


@dataclass
class _Program:
    name: str
    source: str  # the section, e.g. "program:api"
    origin: str  # FILE:LINE of the section
    notes: list[str] = field(default_factory=list)  # comments between the origin and the table
    fields: list[tuple[str, Any, str | None]] = field(default_factory=list)  # key, value, comment
    suggestions: list[str] = field(default_factory=list)  # commented-out fields inside the table
    environment: dict[str, str] = field(default_factory=dict)
    user_unknown_here: bool = False
    priority: int | None = None
    argv: list[str] = field(default_factory=list)  # for the dependency hints (placeholders shown)
    command_text: str = ""
    supervisord_name: str = ""  # the NAME of [program:NAME]
    stop_timeout: float = 10.0  # supervisord's stopwaitsecs (default 10), for the shutdown_timeout

    def effective_priority(self) -> int:
        return 999 if self.priority is None else self.priority  # supervisord's default


def _one_line(text: str) -> str:
    """Control characters and the other line breaks str.splitlines() knows, shown escaped."""
    return re.sub("[\x00-\x1f\x7f-\x9f\u2028\u2029]", lambda m: ascii(m.group(0))[1:-1], text)


def _here(path: str) -> str:
    return os.path.abspath(os.path.dirname(path))
