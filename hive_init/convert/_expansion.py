"""supervisord's `%(name)s` expansions, with `%(ENV_X)s` carried through as hive-init's `${X}`."""

import re
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hive_init.convert._ini import Option

if TYPE_CHECKING:
    from hive_init.convert._common import ConvertError

# a word the placeholder for an environment reference is built from: letters and digits only, so
# that shlex (both modes) and supervisord's KEY=val parser keep it in one piece
_REF_PREFIX = "HIVEINITREF"


class _Refs:
    """Environment references (`%(ENV_X)s` → `${X}`) carried through parsing as plain words.

    Text in between is "raw": what supervisord would have seen. `finish` turns it into a hive-init
    string: `$` doubled (hive-init expands `${...}` in every string; `$$` is a literal `$`), then
    the references written as `${X}`."""

    def __init__(self, corpus: str):
        nonce = secrets.token_hex(6).upper()
        while f"{_REF_PREFIX}{nonce}" in corpus.upper():
            nonce += "Q"
        self.prefix = f"{_REF_PREFIX}{nonce}"
        self.names: list[str] = []
        self.pattern = re.compile(re.escape(self.prefix) + r"(\d+)Z")

    def token(self, name: str) -> str:
        if name not in self.names:
            self.names.append(name)
        return f"{self.prefix}{self.names.index(name)}Z"

    def has(self, text: str) -> bool:
        return bool(self.pattern.search(text))

    def names_in(self, text: str) -> list[str]:
        return [self.names[int(m.group(1))] for m in self.pattern.finditer(text)]

    def whole(self, word: str) -> str | None:
        """The variable when `word` is nothing but one reference."""
        m = self.pattern.fullmatch(word)
        return self.names[int(m.group(1))] if m else None

    def finish(self, text: str) -> str:
        return self.pattern.sub(lambda m: "${" + self.names[int(m.group(1))] + "}", text.replace("$", "$$"))

    def show(self, text: str) -> str:
        """For comments and messages: the references as supervisord wrote them."""
        return self.pattern.sub(lambda m: "%(ENV_" + self.names[int(m.group(1))] + ")s", text)


_FORMAT = re.compile(
    r"%(?:(?P<percent>%)|\((?P<name>[^)]*)\)(?P<spec>[#0 +-]*(?P<width>\d*)(?:\.(?P<precision>\d*))?[hlL]?"
    r"[diouxXeEfFgGcrsa])|(?P<bad>))"
)


class Expansion:
    """The converter's expansions (a part of supervisord._Converter)."""

    refs: _Refs
    warned_resolved: set[tuple[str, str]]

    if TYPE_CHECKING:  # provided by the other parts of _Converter; declared here only for the type checker
        def _error(self, opt: Option, section: str, key: str | None, message: str) -> ConvertError: ...
        def _warn(self, opt: Option, section: str, key: str | None, text: str) -> None: ...

    def _expand(self, opt: Option, section: str, key: str, names: Mapping[str, Any], env: Mapping[str, str],
                resolve: bool = False) -> str:
        """supervisord's `value % expansions`, with `%(ENV_X)s` kept as a reference (see _Refs) unless
        `env` knows X. With `resolve`, an unknown X is an error: the value is needed now."""

        def one(m: re.Match[str]) -> str:
            if m.group("percent"):
                return "%"
            if m.group("bad") is not None:
                raise self._error(opt, section, key, f"a lone '%' in {opt.value!r} (write %% for a literal %)")
            name, spec = m.group("name"), m.group("spec")
            if len(m.group("width") or "") > 4 or len(m.group("precision") or "") > 4:
                raise self._error(opt, section, key, f"%({name}){spec}: width out of range")
            if name.startswith("ENV_") and name[4:] in env:
                value: Any = env[name[4:]]
            elif name.startswith("ENV_") and not resolve:
                if spec != "s":
                    raise self._error(opt, section, key, f"%({name}){spec}: only %({name})s can be converted")
                return self.refs.token(name[4:])
            elif name in names:
                value = names[name]
                if name in ("here", "host_node_name") and not resolve:
                    self._resolved(opt, section, key, name, str(value))
            else:
                available = ", ".join(sorted([*names, *(f"ENV_{k}" for k in env)])[:12])
                raise self._error(opt, section, key, f"%({name}){spec}: no such name to expand"
                                  f" (supervisord has: {available}, ENV_<variable>)")
            try:
                return ("%" + spec) % value
            except (TypeError, ValueError, OverflowError) as e:
                raise self._error(opt, section, key, f"%({name}){spec}: {e}") from None

        return _FORMAT.sub(one, opt.value)

    def _resolved(self, opt: Option, section: str, key: str, name: str, value: str) -> None:
        if (opt.file, name) in self.warned_resolved:
            return
        self.warned_resolved.add((opt.file, name))
        where = "the directory of this file here" if name == "here" else "this machine's name"
        self._warn(opt, section, key, f"%({name})s is written as {value!r} ({where}): check it is the same "
                                      "where hive-init runs")
