"""Reading a supervisord config's files: the source, its [include] (inside --root for absolute
paths, as an image's tree), the scripts a listener runs; and writing the result atomically."""

import glob
import os
import platform
import shlex
import sys
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hive_init import exits
from hive_init.convert._common import ConvertError, _here
from hive_init.convert._ini import Document, IniError, Option


class Reading:
    """The converter's file handling (a part of supervisord._Converter)."""

    source: str
    root: str | None
    sets: dict[str, str]
    doc: Document
    files: list[str]
    private: bool
    header_notes: list[str]

    if TYPE_CHECKING:  # provided by the other parts of _Converter; declared here only for the type checker
        def _expand(self, opt: Option, section: str, key: str, names: Mapping[str, Any], env: Mapping[str, str],
                    resolve: bool = False) -> str: ...
        def _warn(self, opt: Option, section: str, key: str | None, text: str) -> None: ...

    def _read(self, path: str, included_from: tuple[str, int] | None = None) -> str:
        where = f"{included_from[0]}:{included_from[1]}: [include] files: {path}" if included_from else path
        try:
            with open(path, "rb") as f:
                if not os.fstat(f.fileno()).st_mode & 0o004:
                    self.private = True
                data = f.read()
        except (OSError, ValueError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise ConvertError(exits.NO_INPUT, where, f"cannot read: {reason}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConvertError(exits.CONFIG, where, f"not UTF-8 text (byte {e.start})") from None
        self.files.append(path)
        return text.removeprefix("\ufeff")

    def _parse(self, text: str, path: str) -> list[str]:
        try:
            return self.doc.read(text, path)
        except IniError as e:
            raise ConvertError(exits.CONFIG, f"{e.file}:{e.line}", e.message) from None

    def _include(self) -> None:
        """supervisord reads the main file's [include] once; an included file's [include] is ignored."""
        section = self.doc.sections.get("include")
        if section is None:
            return
        opt = self.doc.get("include", "files")
        if opt is None:
            raise ConvertError(exits.CONFIG, f"{section.file}:{section.line}",
                               "[include] has no files = setting (supervisord refuses this too)")
        names = {"here": _here(opt.file), "host_node_name": platform.node()}
        files = self._expand(opt, "include", "files", names, env={**os.environ, **self.sets}, resolve=True)
        base = os.path.dirname(self.source)
        self.header_notes.append(f"[include] files = {' '.join(files.split())}"
                                 + (f" (absolute paths read inside {self.root})" if self.root else ""))
        for pattern in files.split():
            full = self._inside_root(pattern) if os.path.isabs(pattern) else os.path.join(base, pattern)
            matches = sorted(glob.glob(full))
            if not matches:
                if glob.has_magic(pattern):
                    self._warn(opt, "include", "files", f"no file matches {full!r} (supervisord goes on without it)")
                    continue
                matches = [full]  # a plain name that is not there: say why it cannot be read
            for path in matches:
                if path in self.files:
                    continue
                text = self._read(path, (opt.file, opt.line))
                if "include" in self._parse(text, path):
                    sect = self.doc.sections["include"]
                    self._warn(Option("", path, _line_of_section(text, "include")), "include", None,
                               "an [include] inside an included file is ignored (by supervisord too)")
                    sect.options["files"] = opt

    def _inside_root(self, path: str) -> str:
        """An absolute path of the image, as found here: under --root when given."""
        return os.path.join(self.root, path.lstrip("/")) if self.root else path

    def _scripts_of(self, command: str) -> str:
        """The text of the scripts a command runs (absolute paths, inside --root), for the heuristics."""
        try:
            words = shlex.split(command)
        except ValueError:
            words = command.split()
        texts = []
        for word in words:
            if word.startswith("/"):
                try:
                    with open(self._inside_root(word), "rb") as f:
                        texts.append(f.read(64 * 1024).decode("utf-8", "replace"))
                except OSError:
                    pass
        return "\n".join(texts)


def _write(output: str | None, text: str, inputs: list[str], private: bool = False) -> None:
    if output is None or output == "-":
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except OSError as e:
            raise ConvertError(exits.USAGE, "<stdout>", f"cannot write: {e.strerror or e}") from None
        return
    target = os.path.realpath(output)
    for path in inputs:
        if os.path.realpath(path) == target:
            raise ConvertError(exits.USAGE, output, f"is an input of the conversion ({path}): refusing to overwrite it")
    if os.path.isdir(target):
        raise ConvertError(exits.USAGE, output, "is a directory: give the path of the TOML file to write")
    directory = os.path.dirname(target)
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise ConvertError(exits.USAGE, output, f"cannot write: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # 0600 when it holds a secret or came from a file others could not read (mkstemp's own mode)
        if not private:
            os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException as e:
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise ConvertError(exits.USAGE, output, f"cannot write: {e.strerror or e}") from None
        raise

def _line_of_section(text: str, name: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip().startswith(f"[{name}]"):
            return number
    return 1
