"""supervisord.conf → hive-init TOML.

The source is read with supervisord 4.x's own rules (its INI dialect, `%(name)s` expansions,
`[include]`, `numprocs`, value types), so a file supervisord refuses is refused here too
(exits.CONFIG) instead of being half-converted. Every setting either becomes a hive-init field,
is explained by a comment when nothing is needed, or is reported on stderr as
`FILE:LINE: [section] key: not converted: reason` (exits.CONVERT_INCOMPLETE). The result is
parsed back with tomllib and validated with hive-init's own loader before it is written.
"""

import glob
import os
import platform
import pwd
import re
import secrets
import shlex
import signal
import sys
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from hive_init import exits
from hive_init.config import ConfigError, loads
from hive_init.convert import _toml
from hive_init.convert._ini import Document, IniError, Option, Section

MAX_PROCESSES = 1000  # numprocs beyond this is a typo, not a plan: refuse rather than write it out
_TRUE = ("yes", "true", "on", "1")
_FALSE = ("no", "false", "off", "0")
_LOG_LEVELS = {"critical": "error", "error": "error", "warn": "warning", "info": "info",
               "debug": "debug", "trace": "debug", "blather": "debug"}
# output that already ends up on the container's stdout/stderr, like all of hive-init's output
_CONSOLE = {"/dev/stdout", "/dev/stderr", "/dev/fd/1", "/dev/fd/2", "/proc/self/fd/1", "/proc/self/fd/2",
            "/proc/1/fd/1", "/proc/1/fd/2", "/dev/console"}
_PROGRAM_KEYS = {
    "command", "process_name", "numprocs", "numprocs_start", "priority", "autostart", "startsecs",
    "startretries", "autorestart", "exitcodes", "stopsignal", "stopwaitsecs", "stopasgroup", "killasgroup",
    "user", "redirect_stderr", "environment", "directory", "umask", "serverurl",
    *(f"{ch}_{k}" for ch in ("stdout", "stderr")
      for k in ("logfile", "logfile_maxbytes", "logfile_backups", "capture_maxbytes", "events_enabled", "syslog")),
}
_IRRELEVANT_SUPERVISORD = {
    "nodaemon": "hive-init always runs in the foreground",
    "silent": "hive-init logs to stdout",
    "logfile": "hive-init logs to stdout", "logfile_maxbytes": "hive-init logs to stdout",
    "logfile_backups": "hive-init logs to stdout",
    "pidfile": "hive-init writes no pidfile", "identifier": "used by supervisorctl only",
    "childlogdir": "only for AUTO log files: hive-init copies all output to its stdout",
    "nocleanup": "only for AUTO log files", "directory": "only used when supervisord daemonizes",
}
# a word the placeholder for an environment reference is built from: letters and digits only, so
# that shlex (both modes) and supervisord's KEY=val parser keep it in one piece
_REF_PREFIX = "HIVEINITREF"


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

    def effective_priority(self) -> int:
        return 999 if self.priority is None else self.priority  # supervisord's default


@dataclass
class Result:
    text: str
    notes: list[Note]
    files: list[str]

    @property
    def incomplete(self) -> bool:
        return any(n.kind == "report" for n in self.notes)


def command(source: str, output: str | None) -> int:
    """Convert; write TOML to `output` (or stdout when None); report each item without an equivalent
    on stderr as one line `FILE:LINE: [section] key: not converted: reason`. Returns the exit status."""
    try:
        result = convert(source)
        _write(output, result.text, result.files)  # first: if it fails, its error is the one line
        for note in result.notes:
            print(note, file=sys.stderr)
    except ConvertError as e:
        print(_one_line(str(e)), file=sys.stderr)
        return e.status
    except Exception as e:  # a bug: still one line, and a status that says so
        print(_one_line(f"hive-init convert: internal error: {type(e).__name__}: {e} (please report it)"),
              file=sys.stderr)
        return exits.SOFTWARE
    return exits.CONVERT_INCOMPLETE if result.incomplete else exits.OK


def convert(source: str) -> Result:
    """The converted text and what to tell about it; ConvertError when there is nothing to write."""
    return _Converter(source).run()


def _write(output: str | None, text: str, inputs: list[str]) -> None:
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

    def finish(self, text: str) -> str:
        return self.pattern.sub(lambda m: "${" + self.names[int(m.group(1))] + "}", text.replace("$", "$$"))

    def show(self, text: str) -> str:
        """For comments and messages: the references as supervisord wrote them."""
        return self.pattern.sub(lambda m: "%(ENV_" + self.names[int(m.group(1))] + ")s", text)


_FORMAT = re.compile(
    r"%(?:(?P<percent>%)|\((?P<name>[^)]*)\)(?P<spec>[#0 +-]*(?P<width>\d*)(?:\.(?P<precision>\d*))?[hlL]?"
    r"[diouxXeEfFgGcrsa])|(?P<bad>))"
)


class _Converter:
    def __init__(self, source: str):
        self.source = source
        self.doc = Document()
        self.files: list[str] = []
        self.notes: list[Note] = []
        self.refs: _Refs
        self.programs: list[_Program] = []
        self.header_notes: list[str] = []
        self.init_fields: list[tuple[str, Any, str | None]] = []
        self.supervisord_env: dict[str, str] = {}
        self.default_user: tuple[str, Option] | None = None
        self.group_of: dict[str, str] = {}
        self.warned_resolved: set[tuple[str, str]] = set()

    # -- reading ---------------------------------------------------------------------------

    def run(self) -> Result:
        text = self._read(self.source)
        self.refs = _Refs(text)
        self._parse(text, self.source)
        self._include()
        self._convert_sections()
        if not self.programs:
            raise ConvertError(exits.CONFIG, self.source,
                               "no [program:NAME] section to convert: hive-init needs at least one program")
        self._name_programs()
        self._suggest_dependencies()
        out = self._render(validation=False)
        try:
            tomllib.loads(out)
        except tomllib.TOMLDecodeError as e:  # the emitter's bug, not the source's
            raise ConvertError(exits.SOFTWARE, self.source, f"internal error: the TOML written does not parse ({e})") from None
        try:
            loads(self._render(validation=True), self.source, env=_AnyEnv())
        except ConfigError as e:
            raise ConvertError(exits.CONFIG, self.source,
                               f"the converted configuration would not validate: {e.message}") from None
        return Result(out, self._sorted_notes(), self.files)

    def _sorted_notes(self) -> list[Note]:
        """One note per item (numprocs repeats them), in the order of the files and lines."""
        unique: dict[tuple[str, str, int, str, str | None], Note] = {}
        for note in self.notes:
            unique.setdefault((note.kind, note.file, note.line, note.section, note.key), note)
        order = {f: i for i, f in enumerate(self.files)}
        return sorted(unique.values(), key=lambda n: (order.get(n.file, len(order)), n.line))

    def _read(self, path: str, included_from: tuple[str, int] | None = None) -> str:
        where = f"{included_from[0]}:{included_from[1]}: [include] files: {path}" if included_from else path
        try:
            with open(path, "rb") as f:
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
        files = self._expand(opt, "include", "files", names, env=os.environ, resolve=True)
        base = os.path.dirname(self.source)
        self.header_notes.append(f"[include] files = {' '.join(files.split())}")
        for pattern in files.split():
            full = os.path.join(base, pattern)
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

    # -- sections --------------------------------------------------------------------------

    def _convert_sections(self) -> None:
        if "supervisord" in self.doc.sections:
            self._supervisord(self.doc.sections["supervisord"])
        for section in self.doc.sections.values():
            if section.name.startswith("group:"):
                self._group(section)
        for section in self.doc.sections.values():
            name = section.name
            kind = name.split(":", 1)[0] if ":" in name else name
            if name.startswith("program:"):
                self._program(section)
            elif name in ("supervisord", "include") or name.startswith("group:"):
                pass
            elif name == "supervisorctl" or name.startswith("ctlplugin:"):
                self.header_notes.append(f"[{_one_line(name)}]: not needed (hive-init has its own commands)")
            elif name in ("unix_http_server", "inet_http_server"):
                self._report_section(section, "hive-init has its own control socket and HTTP endpoint "
                                              "([init] control_socket and http)")
            elif kind == "rpcinterface":
                self._report_section(section, "supervisord's XML-RPC interface has no equivalent: hive-init "
                                              "has its own control socket and HTTP endpoint")
            elif kind == "eventlistener":
                self._report_section(section, "hive-init has no event listeners (for health checks it has "
                                              "readiness and liveness probes)")
            elif kind == "fcgi-program":
                self._report_section(section, "hive-init has no FastCGI socket manager: run the program "
                                              "with its own socket as a [program:x]")
            else:
                self._warn(Option("", section.file, section.line), name, None,
                           "not a supervisord section (supervisord ignores it too)")

    def _report_section(self, section: Section, reason: str) -> None:
        self.notes.append(Note("report", section.file, section.line, section.name, None, reason))

    def _report(self, opt: Option, section: str, key: str | None, reason: str) -> None:
        self.notes.append(Note("report", opt.file, opt.line, section, key, reason))

    def _warn(self, opt: Option, section: str, key: str | None, text: str) -> None:
        self.notes.append(Note("warning", opt.file, opt.line, section, key, text))

    def _supervisord(self, section: Section) -> None:
        names = {"here": "", "host_node_name": platform.node()}
        ignored = []
        for key, opt in section.options.items():
            names["here"] = _here(opt.file)
            if key == "environment":
                raw = self._expand(opt, section.name, key, names, env={})
                self.supervisord_env = self._environment(opt, section.name, raw)
            elif key == "loglevel":
                level = self._expand(opt, section.name, key, names, env={}).strip().lower()
                if level not in _LOG_LEVELS:
                    raise self._error(opt, section.name, key, f"bad logging level {opt.value!r} "
                                      f"(one of {', '.join(_LOG_LEVELS)})")
                self.init_fields.append(("log_level", _LOG_LEVELS[level], f"supervisord loglevel={level}"))
            elif key == "user":
                user = self._expand(opt, section.name, key, names, env={})
                if self.refs.has(user) or user.strip() not in ("root", "0"):
                    self.default_user = (user.strip(), opt)
            elif key == "umask":
                value = self._expand(opt, section.name, key, names, env={})
                try:
                    mask = int(value, 8)
                except ValueError:
                    raise self._error(opt, section.name, key, f"{value!r} is not an octal umask") from None
                if mask != 0o022:
                    self._report(opt, section.name, key, f"hive-init does not set a umask: set it before "
                                                         f"starting hive-init (umask {value.strip()})")
            elif key in ("minfds", "minprocs"):
                value = self._integer(opt, section.name, key, self._expand(opt, section.name, key, names, env={}))
                if value is not None and value > (1024 if key == "minfds" else 200):
                    limit = "nofile" if key == "minfds" else "nproc"
                    self._report(opt, section.name, key, f"hive-init does not raise resource limits: give the "
                                                         f"container --ulimit {limit}={value}")
            elif key == "strip_ansi":
                if self._boolean(opt, section.name, key, self._expand(opt, section.name, key, names, env={})):
                    self._report(opt, section.name, key, "hive-init does not strip ANSI escapes from output")
            else:
                ignored.append(key)
        if ignored:
            reasons = [f"{k} ({_IRRELEVANT_SUPERVISORD.get(k, 'no effect on the programs')})" for k in ignored]
            self.header_notes.append(f"[supervisord] not needed: {', '.join(reasons)}")
        if self.supervisord_env:
            self.header_notes.append("[supervisord] environment: copied into every program's environment")

    def _group(self, section: Section) -> None:
        group = _checked_name(section.name.split(":", 1)[1], section, None)
        opt = section.options.get("programs")
        members: list[str] = []
        if opt is not None:
            names = {"here": _here(opt.file), "host_node_name": platform.node()}
            raw = self._expand(opt, section.name, "programs", names, env=self.supervisord_env)
            members = [m.strip() for m in raw.split(",")] if raw else []
        for member in members:
            if f"program:{member}" not in self.doc.sections and f"fcgi-program:{member}" not in self.doc.sections:
                assert opt is not None
                raise self._error(opt, section.name, "programs", f"names an unknown program {member!r} "
                                                                 "(supervisord refuses this too)")
            self.group_of.setdefault(member, group)
        listed = ", ".join(members) if members else "none"
        reason = f"hive-init has no groups: its programs ({listed}) are converted one by one"
        if "priority" in section.options:
            reason += f"; the group's priority={section.options['priority'].value} is not applied"
        self._report_section(section, reason)

    # -- programs --------------------------------------------------------------------------

    def _program(self, section: Section) -> None:
        sname = section.name
        at = Option("", section.file, section.line)
        program_name = _checked_name(sname.split(":", 1)[1], section, None)
        names: dict[str, Any] = {"program_name": program_name, "group_name": self.group_of.get(program_name, program_name),
                                 "host_node_name": platform.node(), "here": _here(section.file)}
        for key, opt in section.options.items():
            if key not in _PROGRAM_KEYS:
                self._report(opt, sname, key, "not a supervisord program setting (supervisord ignores it too)")

        def raw(key: str, env: Mapping[str, str]) -> tuple[str | None, Option | None]:
            opt = self.doc.get(sname, key)
            if opt is None:
                return None, None
            names["here"] = _here(opt.file)
            return self._expand(opt, sname, key, names, env), opt

        numprocs_text, numprocs_opt = raw("numprocs", self.supervisord_env)
        numprocs = self._integer(numprocs_opt, sname, "numprocs", numprocs_text, literal=True) if numprocs_opt else 1
        start_text, start_opt = raw("numprocs_start", self.supervisord_env)
        start = self._integer(start_opt, sname, "numprocs_start", start_text, literal=True) if start_opt else 0
        assert numprocs is not None and start is not None
        name_opt = self.doc.get(sname, "process_name")
        process_name = name_opt.value if name_opt else "%(program_name)s"
        if numprocs > 1 and "%(process_num)" not in process_name:
            raise self._error(name_opt or numprocs_opt or at, sname, "process_name",
                              "must contain %(process_num) when numprocs > 1 (supervisord refuses this too)")
        if numprocs > MAX_PROCESSES:
            raise self._error(numprocs_opt or at, sname, "numprocs", f"{numprocs} processes: more than "
                                                                     f"{MAX_PROCESSES}, refusing to write them out")
        if numprocs < 1:
            self._report(numprocs_opt or at, sname, "numprocs", f"numprocs={numprocs}: supervisord runs no process")
            return
        for num in range(start, start + numprocs):
            names.update(process_num=num, numprocs=numprocs)
            self.programs.append(self._process(section, names, raw, name_opt, numprocs))

    def _process(self, section: Section, names: dict[str, Any], raw: Any, name_opt: Option | None,
                 numprocs: int) -> _Program:
        sname = section.name
        refs = self.refs
        if name_opt is not None:
            names["here"] = _here(name_opt.file)
            pname = self._expand(name_opt, sname, "process_name", names, self.supervisord_env)
            if refs.has(pname):
                raise self._error(name_opt, sname, "process_name", "uses %(ENV_...)s: a program name must be "
                                                                   "known when converting")
            pname = _checked_name(pname, section, name_opt)
        else:
            pname = names["program_name"]
        prog = _Program(name=pname, source=sname, origin=f"{section.file}:{section.line}")
        if numprocs > 1:
            prog.notes.append(f"process {names['process_num']} of numprocs={numprocs}")

        # environment first: the other settings may refer to it as %(ENV_X)s
        env_text, env_opt = raw("environment", self.supervisord_env)
        own_env = self._environment(env_opt, sname, env_text) if env_opt is not None and env_text else {}
        env = {**self.supervisord_env, **own_env}
        prog.environment = {k: refs.finish(v) for k, v in env.items()}

        def get(key: str) -> tuple[str | None, Option | None]:
            return raw(key, env)

        self._command(prog, *get("command"), section)
        directory, opt = get("directory")
        if opt is not None and directory is not None:
            if not refs.has(directory) and not os.path.isabs(directory):
                self._report(opt, sname, "directory", f"{directory!r} is relative: hive-init needs an absolute path")
            else:
                prog.fields.append(("directory", refs.finish(directory), None))
        user, opt = get("user")
        if opt is not None and user is not None:
            self._user(prog, user.strip(), opt, sname)
        elif self.default_user is not None:
            self._user(prog, self.default_user[0], self.default_user[1], "supervisord",
                       "from [supervisord] user: supervisord ran every program as this user")
        text, opt = get("priority")
        if opt is not None:
            prog.priority = self._integer(opt, sname, "priority", text)
        text, opt = get("autostart")
        if opt is not None:
            value = self._boolean(opt, sname, "autostart", text)
            if value is not None:
                prog.fields.append(("autostart", value, None))
        self._restart(prog, get, sname)
        self._stopping(prog, get, sname)
        self._logs(prog, get, sname)
        text, opt = get("umask")
        if opt is not None:
            self._report(opt, sname, "umask", f"hive-init does not set a umask per program: put `umask "
                                              f"{refs.show(text or '')}` in a shell command before exec")
        text, opt = get("serverurl")
        if opt is not None and text is not None and text.strip().upper() != "AUTO":
            self._report(opt, sname, "serverurl", "supervisord's XML-RPC server URL has no equivalent")
        return prog

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

    def _command(self, prog: _Program, text: str | None, opt: Option | None, section: Section) -> None:
        sname = section.name
        if opt is None or text is None:
            raise self._error(Option("", section.file, section.line), sname, "command",
                              "is missing (supervisord refuses a program without one)")
        if not text.strip():
            raise self._error(opt, sname, "command", "is empty")
        prog.command_text = self.refs.show(text)
        try:
            argv = shlex.split(text)
        except ValueError as e:
            raise self._error(opt, sname, "command", f"cannot be split into arguments: {e}") from None
        if not argv or not argv[0]:
            raise self._error(opt, sname, "command", "names no program to run")
        reasons = _shell_syntax(text)
        if reasons:
            line = " ".join(part.strip() for part in text.split("\n") if part.strip())
            prog.fields.append(("command", self.refs.finish(line), None))
            prog.fields.append(("shell", True, f"uses shell syntax ({', '.join(reasons)})"))
            prog.notes.append(f"supervisord ran the command without a shell, passing {', '.join(reasons)} to it "
                              "as is; converted to shell = true (/bin/sh -c) as that is what it looks meant to do")
            self._warn(opt, sname, "command", f"converted to shell = true: it uses {', '.join(reasons)}, which "
                                              "supervisord passed to the program as is (no shell): check it")
            prog.argv = [self.refs.show(a) for a in argv]
            return
        prog.argv = [self.refs.show(a) for a in argv]
        prog.fields.append(("command", [self.refs.finish(a) for a in argv], None))

    def _user(self, prog: _Program, user: str, opt: Option, section: str, comment: str | None = None) -> None:
        if not user:
            raise self._error(opt, section, "user", "is empty (supervisord refuses this too)")
        prog.fields.append(("user", self.refs.finish(user), comment))
        if self.refs.has(user):
            prog.user_unknown_here = True
            self._warn(opt, section, "user", f"{self.refs.show(user)!r} depends on the environment: written as "
                                             "is, checked without it")
            return
        try:
            pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except (KeyError, ValueError, OverflowError):
            prog.user_unknown_here = True
            self._warn(opt, section, "user", f"no user {user!r} on this machine: written as is, checked without it "
                                             "(it must exist where hive-init runs)")

    def _restart(self, prog: _Program, get: Any, sname: str) -> None:
        text, opt = get("autorestart")
        value = "unexpected"
        if opt is not None and text is not None:
            if self.refs.has(text):
                self._report(opt, sname, "autorestart", f"{self.refs.show(text)!r}: hive-init needs a literal value")
            else:
                value = text.strip().lower()
                if value in _TRUE:
                    value = "true"
                elif value in _FALSE:
                    value = "false"
                elif value != "unexpected":
                    raise self._error(opt, sname, "autorestart", f"{text!r} is not true, false or unexpected")
        codes_text, codes_opt = get("exitcodes")
        codes: list[int] | None = None
        if codes_opt is not None and codes_text is not None:
            if self.refs.has(codes_text):
                self._report(codes_opt, sname, "exitcodes", "uses %(ENV_...)s: hive-init needs literal exit codes")
            else:
                try:
                    codes = [int(c) for c in codes_text.split(",")] if codes_text else []
                except ValueError:
                    codes = None
                if codes is None or any(not 0 <= c <= 255 for c in codes):
                    raise self._error(codes_opt, sname, "exitcodes", f"{codes_text!r} is not a list of exit "
                                                                     "statuses from 0 to 255")
        if value == "true":
            prog.fields.append(("restart", "always", "autorestart=true"))
        elif value == "false":
            prog.fields.append(("restart", "never", "autorestart=false"))
        else:
            why = "autorestart=unexpected" if opt is not None else "supervisord's default autorestart=unexpected"
            prog.fields.append(("restart", "on-failure", f"{why}: restart unless the exit status is in exit_codes"))
        if codes is not None:
            prog.fields.append(("exit_codes", codes, None))
        elif value == "unexpected" and codes_opt is None:
            prog.fields.append(("exit_codes", [0], "supervisord's default exitcodes=0"))
        text, opt = get("startsecs")
        if opt is not None:
            prog.notes.append(f"startsecs={self.refs.show(text or '')}: no direct equivalent, hive-init's restart "
                              "backoff covers programs that fail right away (backoff.reset_after is the "
                              "time a program must stay up to count as started again)")
        text, opt = get("startretries")
        if opt is not None:
            retries = self._integer(opt, sname, "startretries", text)
            if retries is not None and retries < 0:
                self._report(opt, sname, "startretries", f"{retries} is negative")
            elif retries is not None:
                prog.fields.append(("max_restarts", retries, f"startretries={retries}"))

    def _stopping(self, prog: _Program, get: Any, sname: str) -> None:
        text, opt = get("stopsignal")
        if opt is not None and text is not None:
            if self.refs.has(text):
                self._report(opt, sname, "stopsignal", f"{self.refs.show(text)!r}: hive-init needs a literal signal")
            else:
                prog.fields.append(("stop_signal", self._signal(opt, sname, text), None))
        text, opt = get("stopwaitsecs")
        if opt is not None:
            secs = self._integer(opt, sname, "stopwaitsecs", text)
            if secs is not None and secs < 0:
                self._report(opt, sname, "stopwaitsecs", f"{secs} is negative")
            elif secs is not None:
                prog.fields.append(("stop_timeout", f"{secs}s", f"stopwaitsecs={secs}"))
        flags: dict[str, bool | None] = {}
        where: dict[str, Option] = {}
        for key in ("stopasgroup", "killasgroup"):
            text, opt = get(key)
            if opt is not None:
                flags[key] = self._boolean(opt, sname, key, text)
                where[key] = opt
        stop_group = flags.get("stopasgroup")
        kill_group = flags.get("killasgroup", stop_group)
        if stop_group and kill_group is False:
            raise self._error(where["killasgroup"], sname, "killasgroup",
                              "cannot be false with stopasgroup=true (supervisord refuses this too)")
        if stop_group:
            prog.fields.append(("kill_group", True, "stopasgroup=true"))
        elif kill_group:
            prog.fields.append(("kill_group", True, "killasgroup=true: hive-init sends the stop signal "
                                                    "to the whole group too"))
        elif "killasgroup" in flags or "stopasgroup" in flags:
            if kill_group is False:
                prog.fields.append(("kill_group", False, "stopasgroup/killasgroup=false"))

    def _logs(self, prog: _Program, get: Any, sname: str) -> None:
        redirect_text, redirect_opt = get("redirect_stderr")
        redirect = bool(redirect_opt and self._boolean(redirect_opt, sname, "redirect_stderr", redirect_text))
        files: dict[str, tuple[str, Option]] = {}
        for ch in ("stdout", "stderr"):
            key = f"{ch}_logfile"
            text, opt = get(key)
            if opt is not None and text is not None:
                if ch == "stderr" and redirect:
                    continue  # supervisord ignores it then (and says so)
                path = text.strip()
                lower = path.lower()
                if lower in ("none", "off", "auto") or path in _CONSOLE or path == "/dev/null":
                    if path == "/dev/null":
                        prog.notes.append(f"{key}=/dev/null: hive-init still copies the output to its stdout")
                elif lower == "syslog":
                    self._report(opt, sname, key, "hive-init does not log to syslog: the output goes to its stdout")
                elif path.startswith("/dev/"):
                    self._report(opt, sname, key, f"{path}: hive-init rotates a log_file by renaming it, which "
                                                  "a device cannot be")
                elif path:
                    files[ch] = (path, opt)
            text, opt = get(f"{ch}_syslog")
            if opt is not None and self._boolean(opt, sname, f"{ch}_syslog", text):
                self._report(opt, sname, f"{ch}_syslog", "hive-init does not log to syslog: the output goes to its stdout")
            text, opt = get(f"{ch}_capture_maxbytes")
            if opt is not None and text is not None and (self._size(opt, sname, f"{ch}_capture_maxbytes", text) or 0) > 0:
                self._report(opt, sname, f"{ch}_capture_maxbytes", "process communication events have no equivalent")
            text, opt = get(f"{ch}_events_enabled")
            if opt is not None and self._boolean(opt, sname, f"{ch}_events_enabled", text):
                self._report(opt, sname, f"{ch}_events_enabled", "process log events have no equivalent")
        if not files:
            return
        channel = "stdout" if "stdout" in files else "stderr"
        path, opt = files[channel]
        if channel == "stdout" and "stderr" in files:
            other, other_opt = files["stderr"]
            if other != path:
                self._report(other_opt, sname, "stderr_logfile", "hive-init writes a program's stdout and stderr "
                                                                 "to one log_file: stderr goes to stdout_logfile's file")
            comment = None
        elif channel == "stdout":
            comment = None if redirect else f"{channel}_logfile; stderr goes there too with hive-init"
        else:
            comment = "stderr_logfile; stdout goes there too with hive-init"
        prog.fields.append(("log_file", self.refs.finish(path), comment))
        text, mb_opt = get(f"{channel}_logfile_maxbytes")
        size = self._size(mb_opt, sname, f"{channel}_logfile_maxbytes", text) if mb_opt and text is not None else 50 * 1024**2
        if size is not None and size <= 0:
            assert mb_opt is not None
            self._report(mb_opt, sname, f"{channel}_logfile_maxbytes", f"{size} (never rotate) has no equivalent: "
                                                                       "hive-init rotates at log_file_max_size (10MB by default)")
        elif size is not None:
            prog.fields.append(("log_file_max_size", _human_size(size), None if mb_opt else "supervisord's default"))
        text, bu_opt = get(f"{channel}_logfile_backups")
        backups = self._integer(bu_opt, sname, f"{channel}_logfile_backups", text) if bu_opt else 10
        if backups is not None and bu_opt is not None and not 0 <= backups <= 100:
            self._report(bu_opt, sname, f"{channel}_logfile_backups", f"{backups}: hive-init keeps 0 to 100 backups")
            backups = max(0, min(backups, 100))
        if backups is not None:
            prog.fields.append(("log_file_backups", backups, None if bu_opt else "supervisord's default"))

    # -- values ----------------------------------------------------------------------------

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
            raise self._error(opt, section, key, f"{self.refs.show(text)!r}: must be known when converting")
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
        value = self._literal(opt, section, key, text)
        if value is None:
            return None
        lowered = value.lower()
        try:
            for suffix, factor in (("kb", 1024), ("mb", 1024**2), ("gb", 1024**3)):
                if lowered.endswith(suffix):
                    return int(lowered[:-2]) * factor
            return int(lowered)
        except ValueError:
            raise self._error(opt, section, key, f"{value!r} is not a size like 50MB") from None

    def _signal(self, opt: Option, section: str, text: str) -> str | int:
        value = text.strip()
        try:
            number = int(value)
        except ValueError:
            name = value.upper()
            name = name if name.startswith("SIG") else "SIG" + name
            if name in signal.Signals.__members__:
                return name[3:]
            raise self._error(opt, section, "stopsignal", f"{text!r} is not a signal name") from None
        if number in signal.valid_signals():
            try:
                return signal.Signals(number).name[3:]
            except ValueError:
                return number
        raise self._error(opt, section, "stopsignal", f"{text!r} is not a signal number")

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

    # -- the result ------------------------------------------------------------------------

    def _name_programs(self) -> None:
        """hive-init's names: letters, digits, '-', '_' and '.', unique. Names already valid are kept
        first, so that a mapped name never takes the place of one that needed no change."""
        taken = {p.name for p in self.programs if _valid_name(p.name)}
        seen: set[str] = set()
        for prog in self.programs:
            wanted = prog.name
            if _valid_name(wanted) and wanted not in seen:
                seen.add(wanted)
                continue
            base = "".join(c if c.isalnum() or c in "-_." else "_" for c in wanted)
            if not _valid_name(base):
                base = f"program{base}"
            name, n = base, 1
            while name in taken or name in seen:
                n += 1
                name = f"{base}-{n}"
            seen.add(name)
            reason = "hive-init names use letters, digits, '-', '_' and '.'" if base != wanted else "already used"
            prog.notes.append(f"named {name!r}: supervisord's name {wanted!r} ({reason})")
            prog.name = name

    def _suggest_dependencies(self) -> None:
        for prog in self.programs:
            text = prog.command_text
            targets: list[_Program] = []
            why = ""
            for service, tool, waits, looks_like in _SERVICES:
                if waits.search(text):
                    targets = [p for p in self.programs if p is not prog and p.source != prog.source
                               and (looks_like.search(p.name) or (p.argv and looks_like.search(os.path.basename(p.argv[0]))))]
                    why = f"its command waits for {service} with {tool}"
                    if targets:
                        self._readiness_hint(targets[0], text, service)
                    break
            if not targets and _GENERIC_WAIT.search(text):
                earlier = [p.effective_priority() for p in self.programs if p.effective_priority() < prog.effective_priority()]
                if earlier:
                    top = max(earlier)
                    targets = [p for p in self.programs if p.effective_priority() == top and p.source != prog.source]
                    why = "its command waits for something before starting, after these by priority"
            if targets:
                deps = _toml.value([p.name for p in targets])
                prog.suggestions.append(f"depends_on = {deps}  # suggested: {why}")
                self.header_notes.append(f"suggested for {prog.name}: depends_on = {deps} ({why})")

    def _readiness_hint(self, target: _Program, text: str, service: str) -> None:
        if service != "PostgreSQL" or any(s.startswith("readiness") for s in target.suggestions):
            return
        match = re.search(r"\bpg_isready\b[^;&|)\n`]*", text)
        try:
            argv = shlex.split(match.group(0)) if match else ["pg_isready"]
        except ValueError:
            argv = ["pg_isready"]
        argv = [a for a in argv if a not in ("do", "then")] or ["pg_isready"]
        target.suggestions.append(f"readiness = {_toml.value({'exec': argv})}  # suggested: so that "
                                  "depends_on waits until PostgreSQL accepts connections")

    def _render(self, validation: bool) -> str:
        any_priority = any(p.priority is not None for p in self.programs)
        lines = [_toml.comment(f"Converted from {self.source} by `hive-init convert` (supervisord 4.x semantics)."),
                 _toml.comment("Review it before use: every setting without an equivalent is listed below and "
                               "was reported on stderr."),
                 "#",
                 _toml.comment("Start order: supervisord starts programs by priority (lower first) but never waits "
                               "for one to be up;"),
                 _toml.comment("hive-init keeps `priority` with the same meaning and can also wait: with "
                               "`depends_on = [\"db\"]` a program"),
                 _toml.comment("starts once db is ready. Where a priority (or a wait loop in a command, such as "
                               "`until pg_isready ...`)"),
                 _toml.comment("was meant as a dependency, say so with depends_on (and give the dependency a "
                               "readiness probe)."),
                 ]
        if any(_SERVICES[0][3].search(p.name) for p in self.programs):
            lines.append(_toml.comment("hive-init can also run PostgreSQL itself: kind = \"postgres\" "
                                       "(initdb, settings, readiness; see the README)."))
        if self.header_notes:
            lines.append("#")
            lines.extend(_toml.comment(n) for n in dict.fromkeys(self.header_notes))
        reports = [n for n in self._sorted_notes() if n.kind == "report"]
        if reports:
            lines.append("#")
            lines.append(_toml.comment("Not converted:"))
            lines.extend(_toml.comment(f"  {n.file}:{n.line}: [{n.section}]{' ' + n.key if n.key else ''}: {n.text}")
                         for n in reports)
        if self.init_fields:
            lines += ["", "[init]"]
            lines.extend(_field(k, v, c) for k, v, c in self.init_fields)
        for prog in self.programs:
            lines.append("")
            lines.append(_toml.comment(f"[{prog.source}] from {prog.origin}"))
            lines.extend(_toml.comment(n) for n in prog.notes)
            lines.append(f"[programs.{_toml.key(prog.name)}]")
            fields = list(prog.fields)
            if prog.priority is not None or any_priority:
                after = max(i for i, f in enumerate(fields) if f[0] in ("command", "shell")) + 1
                fields.insert(after, ("priority", prog.effective_priority(),
                                      None if prog.priority is not None else "supervisord's default priority"))
            for k, v, c in fields:
                if validation and k == "user" and prog.user_unknown_here:
                    continue
                lines.append(_field(k, v, c))
            lines.extend(_toml.comment(s) for s in prog.suggestions)
            if prog.environment:
                lines.append(f"[programs.{_toml.key(prog.name)}.environment]")
                lines.extend(_field(k, v, None) for k, v in prog.environment.items())
        return "\n".join(lines) + "\n"


def _field(key: str, value: Any, comment: str | None) -> str:
    line = f"{_toml.key(key)} = {_toml.value(value)}"
    return f"{line}  {_toml.comment(comment)}" if comment else line


# (service, the tool a wait loop uses, how the loop shows, how the service's program looks)
_SERVICES = [
    ("PostgreSQL", "pg_isready", re.compile(r"\bpg_isready\b"), re.compile(r"postgres|postmaster|pg_ctl|pgsql", re.I)),
    ("Redis", "redis-cli ping", re.compile(r"\bredis-cli\b[^;&|]*\bping\b"), re.compile(r"redis", re.I)),
    ("MySQL", "mysqladmin ping", re.compile(r"\bmysqladmin\b[^;&|]*\bping\b"), re.compile(r"mysql|mariadb", re.I)),
]
_GENERIC_WAIT = re.compile(r"\buntil\b|\bwhile\b|wait-for|\bdockerize\b.*-wait|\bnc\s+-z")


def _shell_syntax(text: str) -> list[str]:
    """What in an (unsplit) supervisord command only means something to a shell: unquoted, or
    inside double quotes for `$` and backquotes. Quoting follows shlex's POSIX rules."""
    found: dict[str, None] = {}
    if re.match(r"\s*[A-Za-z_][A-Za-z0-9_]*=", text):
        found["a VAR=value prefix"] = None
    quote: str | None = None
    word_start = True
    i = 0
    while i < len(text):
        c = text[i]
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if quote == "'":
            if c == "'":
                quote = None
        elif quote == '"':
            if c == "\\" and nxt in '"\\':
                i += 1
            elif c == '"':
                quote = None
            elif c == "$" and (nxt.isalnum() or nxt in "_{(?#@*!$-"):
                found["$ expansions"] = None
            elif c == "`":
                found["`command substitution`"] = None
        else:
            starts = word_start
            word_start = c in " \t\r\n"
            if c == "\\":
                i += 2
                continue
            if c in "'\"":
                quote = c
            elif c == "|":
                found["||" if nxt == "|" else "a pipe"] = None
                i += nxt == "|"
            elif c == "&" and nxt == "&":
                found["&&"] = None
                i += 1
            elif c == "&" and text[i - 1:i] not in ("<", ">"):
                found["& (background)"] = None
            elif c == ";":
                found["';'"] = None
            elif c in "<>":
                found["a redirection"] = None
            elif c in "*?[":
                found["a glob"] = None
            elif c == "$" and (nxt.isalnum() or nxt in "_{(?#@*!$-"):
                found["$ expansions"] = None
            elif c == "`":
                found["`command substitution`"] = None
            elif c in "()":
                found["( )"] = None
            elif c == "~" and starts:
                found["~"] = None
        i += 1
    return list(found)


def _checked_name(name: str, section: Section, opt: Option | None) -> str:
    """supervisord's own rule for program and group names."""
    name = name.strip()
    for char in " :/":
        if char in name:
            where = f"{opt.file}:{opt.line}" if opt else f"{section.file}:{section.line}"
            raise ConvertError(exits.CONFIG, where, f"[{section.name}]: invalid name {name!r}: supervisord "
                                                    f"refuses {char!r} in names")
    return name


def _valid_name(name: str) -> bool:
    """hive-init's rule, from its one place."""
    from hive_init.config.fields import valid_program_name

    return valid_program_name(name)


def _here(path: str) -> str:
    return os.path.abspath(os.path.dirname(path))


def _line_of_section(text: str, name: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip().startswith(f"[{name}]"):
            return number
    return 1


def _human_size(size: int) -> str | int:
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return size


def _one_line(text: str) -> str:
    """Control characters and the other line breaks str.splitlines() knows, shown escaped."""
    return re.sub("[\x00-\x1f\x7f-\x9f\u2028\u2029]", lambda m: ascii(m.group(0))[1:-1], text)


class _AnyEnv(Mapping[str, str]):
    """For validating the output: every `${X}` is set, to a value a path field accepts."""

    def __getitem__(self, key: str) -> str:
        return "/hive-init-convert-check"

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0
