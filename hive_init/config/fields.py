"""Reading one TOML table field by field, so that every error names its place and unknown
fields are caught (with a suggestion) instead of silently ignored."""

import difflib
import signal
from collections.abc import Callable
from typing import Any, TypeVar

from hive_init.config.durations import parse_duration
from hive_init.config.errors import ConfigError

T = TypeVar("T")
_MISSING: Any = object()


class Table:
    def __init__(self, data: dict[str, Any], file: str, where: str):
        self.data = data
        self.file = file
        self.where = where
        self.seen: set[str] = set()

    def error(self, key: str | None, message: str) -> ConfigError:
        place = f"{self.where}.{key}" if key else self.where
        return ConfigError(self.file, f"{place}: {message}" if place else message)

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        self.seen.add(key)
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise self.error(key, "is required")
        return default

    def has(self, key: str) -> bool:
        return key in self.data

    def typed(self, key: str, kind: type[T] | tuple[type, ...], default: Any = _MISSING, what: str = "") -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        # bool is an int in Python; a config that says `priority = true` is a mistake
        if isinstance(value, bool) and kind is not bool and not (isinstance(kind, tuple) and bool in kind):
            raise self.error(key, f"expected {what or _name(kind)}, got a boolean")
        if not isinstance(value, kind):
            raise self.error(key, f"expected {what or _name(kind)}, got {_describe(value)}")
        return value

    def string(self, key: str, default: Any = _MISSING) -> Any:
        value = self.typed(key, str, default, "a string")
        if isinstance(value, str) and "\0" in value:  # every string here reaches a C API, which would cut it
            raise self.error(key, "must not contain a NUL character")
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> Any:
        return self.typed(key, bool, default, "true or false")

    def integer(self, key: str, default: Any = _MISSING, minimum: int | None = None, maximum: int | None = None) -> Any:
        value = self.typed(key, int, default, "an integer")
        if isinstance(value, int) and not isinstance(value, bool):
            if minimum is not None and value < minimum:
                raise self.error(key, f"must be at least {minimum} (got {value})")
            if maximum is not None and value > maximum:
                raise self.error(key, f"must be at most {maximum} (got {value})")
        return value

    def number(self, key: str, default: Any = _MISSING, minimum: float | None = None) -> Any:
        value = self.typed(key, (int, float), default, "a number")
        if minimum is not None and value is not default and not value >= minimum:
            raise self.error(key, f"must be at least {minimum} (got {value})")
        return float(value) if value is not default else value

    def duration(self, key: str, default: Any = _MISSING) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        try:
            return parse_duration(value)
        except ValueError as e:
            raise self.error(key, str(e)) from None

    def size(self, key: str, default: Any = _MISSING) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        try:
            return parse_size(value)
        except ValueError as e:
            raise self.error(key, str(e)) from None

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _MISSING) -> Any:
        value = self.string(key, default)
        if value is not default and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)} (got {value!r})")
        return value

    def signal(self, key: str, default: Any = _MISSING) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        try:
            return parse_signal(value)
        except ValueError as e:
            raise self.error(key, str(e)) from None

    def string_list(self, key: str, default: Any = _MISSING, allow_empty: bool = False) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"expected a list of strings, got {_describe(value)}")
        if not value and not allow_empty:
            raise self.error(key, "must not be empty")
        if any("\0" in v for v in value):
            raise self.error(key, "must not contain a NUL character")
        return tuple(value)

    def table(self, key: str, default: Any = _MISSING) -> "Table | None":
        value = self.raw(key, default)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {_describe(value)}")
        return Table(value, self.file, f"{self.where}.{key}" if self.where else key)

    def sub(self, key: str, convert: Callable[["Table"], T]) -> T | None:
        table = self.table(key, None)
        return convert(table) if table is not None else None

    def reject_unknown(self, known: set[str] | frozenset[str]) -> None:
        """Checked before anything else, so a typo is reported as a typo, not as a missing field."""
        for key in self.data:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.error(key, f"unknown field{hint}")

    def done(self, known: set[str] | None = None) -> None:
        """Every field of the table was read: anything left is a typo or an unsupported field."""
        for key in self.data:
            if key not in self.seen:
                candidates = sorted(known or self.seen)
                close = difflib.get_close_matches(key, candidates, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.error(key, f"unknown field{hint}")


def parse_signal(value: object) -> int:
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        if value in signal.valid_signals():
            return value
        raise ValueError(f"{value} is not a signal number")
    if isinstance(value, str):
        name = value.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        sig = getattr(signal.Signals, name, None) if name in signal.Signals.__members__ else None
        if sig is not None:
            return int(sig)
    raise ValueError(f"expected a signal name like \"TERM\" or \"SIGINT\" (got {value!r})")


_SIZE_UNITS = {"": 1, "B": 1, "KB": 1024, "K": 1024, "KIB": 1024, "MB": 1024**2, "M": 1024**2, "MIB": 1024**2,
               "GB": 1024**3, "G": 1024**3, "GIB": 1024**3}


def parse_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        text = value.strip().upper()
        number = text.rstrip("KMGIB")
        unit = text[len(number):].strip()
        try:
            if unit in _SIZE_UNITS and number.strip():
                return int(float(number) * _SIZE_UNITS[unit])
        except ValueError:
            pass
    raise ValueError(f"expected a size like \"10MB\" (got {value!r})")


def _name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def _describe(value: object) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)


PROGRAM_NAME_RULE = "program names may only use letters, digits, '-', '_' and '.'"


def valid_program_name(name: str) -> bool:
    """The one rule for a program's name (PROGRAM_NAME_RULE): the loader enforces it, the
    converter renames what breaks it."""
    return name.replace("-", "").replace("_", "").replace(".", "").isalnum()
