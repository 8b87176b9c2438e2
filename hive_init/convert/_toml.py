"""Just enough TOML writing for the converter: strings, integers, booleans, lists, inline tables,
keys and comments, each escaped so that any input text gives a document tomllib reads back."""

import re
from collections.abc import Mapping, Sequence

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]')
_COMMENT_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

Value = str | int | bool | Sequence["Value"] | Mapping[str, "Value"]


def string(text: str) -> str:
    """A basic string: quotes, backslashes and control characters escaped."""

    def one(match: re.Match[str]) -> str:
        char = match.group(0)
        return _ESCAPES.get(char) or f"\\u{ord(char):04X}"

    # a lone surrogate cannot be written as UTF-8 (nor escaped: TOML has no \\uD800)
    text = _no_surrogates(text)
    return '"' + _NEEDS_ESCAPE.sub(one, text) + '"'


def key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else string(name)


def value(v: Value) -> str:
    if isinstance(v, bool):  # before int: bool is an int
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return string(v)
    if isinstance(v, Mapping):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, Sequence):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def comment(text: str) -> str:
    """One comment line; newlines and control characters in the text are shown escaped."""
    text = _COMMENT_UNSAFE.sub(lambda m: repr(m.group(0))[1:-1], _no_surrogates(text))
    return ("# " + text).rstrip()


def _no_surrogates(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")
