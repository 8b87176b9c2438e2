"""supervisord's value types (booleans, integers, sizes, signals, KEY=val lists, commands), read
by its own rules and, where hive-init has a parser (parse_size, parse_signal), by that one."""

import re
import shlex
import signal

from hive_init import exits
from hive_init.config.fields import parse_signal, parse_size
from hive_init.convert._common import ConvertError
from hive_init.convert._expansion import _Refs
from hive_init.convert._ini import Option

_TRUE = ("yes", "true", "on", "1")
_FALSE = ("no", "false", "off", "0")


class Values:
    """The converter's value parsing (a part of supervisord._Converter)."""

    refs: _Refs

    def _report(self, opt: Option, section: str, key: str | None, reason: str) -> None:
        raise NotImplementedError

    def _error(self, opt: Option, section: str, key: str | None, message: str) -> ConvertError:
        what = f"[{section}] {key}" if key else f"[{section}]"
        return ConvertError(exits.CONFIG, f"{opt.file}:{opt.line}", f"{what}: {message}")

    def _literal(self, opt: Option, section: str, key: str, text: str | None) -> str | None:
        """A value hive-init needs as a literal (number, boolean); None (reported) if it uses the environment."""
        assert text is not None
        if self.refs.has(text):
            self._report(opt, section, key, f"{self.refs.show(text)!r} uses the environment: hive-init needs a "
                                            "literal value here")
            return None
        return text

    def _integer(self, opt: Option | None, section: str, key: str, text: str | None, literal: bool = False) -> int | None:
        assert opt is not None and text is not None
        if literal and self.refs.has(text):
            names = ", ".join(f"{n}=VALUE" for n in self.refs.names_in(text))
            raise self._error(opt, section, key, f"{self.refs.show(text)!r}: must be known when converting "
                                                 f"(set it in the environment, or give --set {names})")
        value = self._literal(opt, section, key, text)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise self._error(opt, section, key, f"{value!r} is not an integer") from None

    def _boolean(self, opt: Option, section: str, key: str, text: str | None) -> bool | None:
        value = self._literal(opt, section, key, text)
        if value is None:
            return None
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise self._error(opt, section, key, f"{value!r} is not a boolean (true/false, yes/no, on/off, 1/0)")

    def _size(self, opt: Option, section: str, key: str, text: str | None) -> int | None:
        """supervisord's byte_size (digits, then KB, MB or GB), read by hive-init's own parse_size."""
        value = self._literal(opt, section, key, text)
        if value is None:
            return None
        if not re.fullmatch(r"\s*\d+\s*(?:[kKmMgG][bB])?\s*", value):
            raise self._error(opt, section, key, f"{value!r} is not a size like 50MB")
        return parse_size(value)

    def _signal(self, opt: Option, section: str, text: str) -> str | int:
        """supervisord's signal_number (a name with or without SIG, or a number), by hive-init's parse_signal;
        written as a name where there is one."""
        try:
            number = parse_signal(text.strip())
        except ValueError:
            raise self._error(opt, section, "stopsignal", f"{text!r} is not a signal name or number") from None
        try:
            return signal.Signals(number).name[3:]
        except ValueError:
            return number

    def _split(self, opt: Option, sname: str, text: str) -> list[str]:
        """supervisord's own split of a command (process.py: shlex.split)."""
        try:
            return shlex.split(text)
        except ValueError as e:
            raise self._error(opt, sname, "command", f"cannot be split into arguments: {e}") from None

    def _environment(self, opt: Option, section: str, text: str) -> dict[str, str]:
        """supervisord's KEY=val,KEY2="v, 2" (its own shlex-based parser, with its quirks)."""
        lexer = shlex.shlex(text)
        lexer.wordchars += "/.+-():"
        try:
            tokens = list(lexer)
        except ValueError as e:
            raise self._error(opt, section, "environment", f"cannot parse {self.refs.show(text)!r}: {e}") from None
        env: dict[str, str] = {}
        for i in range(0, len(tokens), 4):
            k_eq_v = tokens[i:i + 3]
            if len(k_eq_v) != 3 or k_eq_v[1] != "=":
                raise self._error(opt, section, "environment", f"not KEY=value pairs separated by commas: "
                                                               f"{self.refs.show(text)!r}")
            k, v = k_eq_v[0], k_eq_v[2].strip("'\"")
            if self.refs.has(k):
                self._report(opt, section, "environment", f"the name {self.refs.show(k)!r} uses %(ENV_...)s: "
                                                          "hive-init needs names known when converting")
                continue
            env[k] = v
        return env
