"""Durations as written in configs: "250ms", "10s", "2m", "1h30m", or a plain number of seconds."""

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(value: object) -> float:
    """Seconds as a float; ValueError with a user-facing reason otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like \"10s\", got a boolean")
    if isinstance(value, (int, float)):
        if value < 0 or value != value or value == float("inf"):
            raise ValueError(f"must be a finite, non-negative number of seconds (got {value})")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like \"10s\" (got {type(value).__name__})")
    text = value.strip()
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        try:
            return parse_duration(float(text))
        except ValueError:
            raise ValueError(f"expected a duration like \"250ms\", \"10s\", \"2m\" (got {value!r})") from None
    return total
