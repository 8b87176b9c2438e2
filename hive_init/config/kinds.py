"""Kinds of program beyond `command`, as the config sees them. Each registers the fields it adds
to a `[programs.NAME]` table and how to read them; the loader knows no kind by name.
hive_init.postgres registers `kind = "postgres"` when the CLI wires the layers together."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hive_init.config.fields import Table


@dataclass(frozen=True)
class ConfigKind:
    name: str
    # the fields this kind adds (called only when a program of this kind is read)
    fields: Callable[[], frozenset[str]]
    # reads them: (the kind's options for ProgramSpec.options, defaults for common fields:
    # user, stop_signal, readiness). What it leaves unread the loader reports as unknown.
    parse: Callable[[Table, set[str]], tuple[Any, dict[str, Any]]]
    # why `command` is refused: the kind builds its own
    own_command: str
    # the kind's own probe (`NAME = true` in a probe table), with its default (period, timeout)
    probe_defaults: tuple[float, float] | None = None


_KINDS: dict[str, ConfigKind] = {}


def register(kind: ConfigKind) -> None:
    _KINDS[kind.name] = kind


def get(name: object) -> ConfigKind | None:
    return _KINDS.get(name) if isinstance(name, str) else None


def names() -> tuple[str, ...]:
    """What `kind` may be: command, then the registered ones."""
    return ("command", *_KINDS)


def probes() -> tuple[str, ...]:
    """The registered kinds' own probes."""
    return tuple(name for name, kind in _KINDS.items() if kind.probe_defaults is not None)
