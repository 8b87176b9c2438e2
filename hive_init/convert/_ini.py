"""Reading supervisord's INI files the way supervisord does, but remembering where each value came from.

supervisord reads its files with Python's RawConfigParser (inline comments after whitespace
with ';' or '#', non-strict: a repeated section or key merges/overrides). That parser forgets
line numbers, and every message of the converter names FILE:LINE, so this module applies the
same rules itself. tests/convert/test_convert_ini_toml.py checks it against RawConfigParser on random text.
"""

import io
import re
from dataclasses import dataclass, field

DEFAULT_SECTION = "DEFAULT"
_COMMENT_PREFIXES = ("#", ";")
_INLINE_PREFIXES = (";", "#")
_SECTION = re.compile(r"\[(?P<header>.+)\]")
_OPTION = re.compile(r"(?P<option>.*?)\s*(?P<vi>=|:)\s*(?P<value>.*)$")
_NONSPACE = re.compile(r"\S")


class IniError(ValueError):
    def __init__(self, file: str, line: int, message: str):
        super().__init__(message)
        self.file = file
        self.line = line
        self.message = message


@dataclass
class Option:
    value: str
    file: str
    line: int


@dataclass
class Section:
    name: str
    file: str  # where the section first appeared
    line: int
    options: dict[str, Option] = field(default_factory=dict)


@dataclass
class Document:
    sections: dict[str, Section] = field(default_factory=dict)
    defaults: dict[str, Option] = field(default_factory=dict)

    def get(self, section: str, key: str) -> Option | None:
        """A key of a section, falling back to [DEFAULT] like RawConfigParser.get()."""
        found = self.sections[section].options.get(key)
        return found if found is not None else self.defaults.get(key)

    def read(self, text: str, file: str) -> list[str]:
        """Merge one file into the document; returns the sections it named, in order."""
        named: list[str] = []
        options: dict[str, Option] | None = None  # the section being read
        # (section, key) -> the lines of its latest value: joined at the end of the file,
        # since continuation lines may follow
        values: dict[tuple[int, str], tuple[dict[str, Option], str, list[str], int]] = {}
        key: str | None = None
        indent_level = 0
        for lineno, line in enumerate(io.StringIO(text, newline=None), start=1):
            comment_start = _comment_start(line)
            value = line[:comment_start].strip()
            if not value:
                # a blank line belongs to the value being read (trailing blanks are dropped)
                if comment_start is None and options is not None and key:
                    values[id(options), key][2].append("")
                continue
            first = _NONSPACE.search(line)
            indent = first.start() if first else 0
            if options is not None and key and indent > indent_level:
                values[id(options), key][2].append(value)
                continue
            indent_level = indent
            header = _SECTION.match(value)
            if header:
                name = header.group("header")
                named.append(name)
                if name == DEFAULT_SECTION:
                    options = self.defaults
                else:
                    if name not in self.sections:
                        self.sections[name] = Section(name, file, lineno)
                    options = self.sections[name].options
                key = None
                continue
            if options is None:
                raise IniError(file, lineno, f"not an INI file: a setting before any [section] header: {value!r}")
            match = _OPTION.match(value)
            if not match or not match.group("option"):
                raise IniError(file, lineno, f"not a 'key = value' line: {value!r}")
            key = match.group("option").rstrip().lower()
            values[id(options), key] = (options, key, [match.group("value").strip()], lineno)
            options.setdefault(key, Option("", file, lineno))
        for options, k, lines, lineno in values.values():
            options[k] = Option("\n".join(lines).rstrip(), file, lineno)
        return named


def _comment_start(line: str) -> int | None:
    """Where a comment starts: a whole-line comment, or ';'/'#' at the start or after whitespace."""
    if line.strip().startswith(_COMMENT_PREFIXES):
        return 0
    start: int | None = None
    for prefix in _INLINE_PREFIXES:
        index = line.find(prefix)
        while index != -1:
            if index == 0 or line[index - 1].isspace():
                start = index if start is None else min(start, index)
                break
            index = line.find(prefix, index + 1)
    return start
