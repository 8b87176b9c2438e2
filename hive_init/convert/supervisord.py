"""supervisord.conf → hive-init TOML: the command, and the mapping of supervisord's sections and
settings to hive-init's fields. Reading files (_reading), `%()` expansion (_expansion), value
types (_values), inferences (_heuristics) and the output (_render) are modules of their own.

The source is read with supervisord 4.x's own rules (its INI dialect, `%(name)s` expansions,
`[include]`, `numprocs`, value types), so a file supervisord refuses is refused here too
(exits.CONFIG) instead of being half-converted. Every setting either becomes a hive-init field,
is explained by a comment when nothing is needed, or is reported on stderr as
`FILE:LINE: [section] key: not converted: reason` (exits.CONVERT_INCOMPLETE). The result is
parsed back with tomllib and validated with hive-init's own loader before it is written.
"""

import os
import platform
import pwd
import re
import shlex
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from hive_init import exits, redact
from hive_init.config import ConfigError, loads
from hive_init.convert import _heuristics as heuristics
from hive_init.convert import _toml
from hive_init.convert._common import ConvertError, Note, _here, _one_line, _Program
from hive_init.convert._expansion import Expansion, _Refs
from hive_init.convert._ini import Document, Option, Section
from hive_init.convert._reading import Reading, _write
from hive_init.convert._render import Rendering, _human_size
from hive_init.convert._values import _FALSE, _TRUE, Values

MAX_PROCESSES = 1000  # numprocs beyond this is a typo, not a plan: refuse rather than write it out
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

@dataclass
class Result:
    text: str
    notes: list[Note]
    files: list[str]
    private: bool = False  # a source file was not world-readable: the output is written 0600

    @property
    def incomplete(self) -> bool:
        return any(n.kind == "report" for n in self.notes)


def command(source: str, output: str | None, root: str | None = None, sets: list[str] | None = None,
            strict: bool = False) -> int:
    """Convert; write TOML to `output` (or stdout when None); report each item without an equivalent
    on stderr as one line `FILE:LINE: [section] key: not converted: reason`. Returns the exit status:
    0 (also when only what means nothing in hive-init was left out: said in the output's header),
    CONVERT_INCOMPLETE for a real loss, or for a warning with `strict`."""
    try:
        result = convert(source, root=root, sets=_sets(sets or []))
        private = result.private or bool(redact.Redactor()(result.text) != result.text)
        _write(output, result.text, result.files, private)  # first: if it fails, its error is the one line
        for note in result.notes:
            print(note, file=sys.stderr)
    except ConvertError as e:
        print(_one_line(str(e)), file=sys.stderr)
        return e.status
    except Exception as e:  # a bug: still one line, and a status that says so
        print(_one_line(f"hive-init convert: internal error: {type(e).__name__}: {e} (please report it)"),
              file=sys.stderr)
        return exits.SOFTWARE
    if result.incomplete or (strict and any(n.kind == "warning" for n in result.notes)):
        return exits.CONVERT_INCOMPLETE
    return exits.OK


def _sets(items: list[str]) -> dict[str, str]:
    """--set NAME=VALUE: the environment the converted container will have, for what must be known now."""
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not (name.replace("_", "").isalnum() and not name[0].isdigit()):
            raise ConvertError(exits.USAGE, "--set", f"{item!r}: expected NAME=VALUE")
        values[name] = value
    return values


def convert(source: str, root: str | None = None, sets: Mapping[str, str] | None = None) -> Result:
    """The converted text and what to tell about it; ConvertError when there is nothing to write."""
    return _Converter(source, root, dict(sets or {})).run()








class _Converter(Reading, Expansion, Values, Rendering):
    def __init__(self, source: str, root: str | None = None, sets: dict[str, str] | None = None):
        self.source = source
        self.root = root  # an image's file tree: absolute paths in [include] are read inside it
        self.sets = sets or {}  # --set NAME=VALUE: the container's environment, where it must be known now
        self.private = False
        self.critical: dict[str, str] = {}  # supervisord program name -> why hive-init's critical = true
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
        self.ignored: list[str] = []  # what means nothing in hive-init: the header says so
        self.group_priority: dict[str, int] = {}
        self.whole_group_kill: dict[str, None] = {}  # programs that kill_group = true signals differently

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
        self._shutdown_timeout()
        # supervisord's programs inherit its whole environment; hive-init's get a declared one
        self.init_fields.append(("environment_passthrough", ["*"],
                                 "as supervisord: every variable of the init's environment but those "
                                 "named like secrets (list names instead to narrow it)"))
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
        return Result(out, self._sorted_notes(), self.files, self.private)

    def _sorted_notes(self) -> list[Note]:
        """One note per item (numprocs repeats them), in the order of the files and lines."""
        unique: dict[tuple[str, str, int, str, str | None], Note] = {}
        for note in self.notes:
            unique.setdefault((note.kind, note.file, note.line, note.section, note.key), note)
        order = {f: i for i, f in enumerate(self.files)}
        return sorted(unique.values(), key=lambda n: (order.get(n.file, len(order)), n.line))





    # -- sections --------------------------------------------------------------------------

    def _convert_sections(self) -> None:
        listeners: list[Section] = []
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
                self._ignore(f"[{name}]: hive-init has its own control socket and HTTP endpoint "
                             "([init] control_socket and http)")
            elif kind == "rpcinterface":
                factory = self.doc.get(name, "supervisor.rpcinterface_factory")
                if factory is not None and factory.value.strip() == "supervisor.rpcinterface:make_main_rpcinterface":
                    self._ignore(f"[{name}]: supervisord's own XML-RPC interface; `supervisorctl` "
                                 "works with hive-init through its control socket")
                else:
                    self._report_section(section, "an XML-RPC plugin of supervisord has no equivalent in hive-init")
            elif kind == "eventlistener":
                listeners.append(section)
            elif kind == "fcgi-program":
                self._report_section(section, "hive-init has no FastCGI socket manager: run the program "
                                              "with its own socket as a [program:x]")
            else:
                self._warn(Option("", section.file, section.line), name, None,
                           "not a supervisord section (supervisord ignores it too)")
        for section in listeners:
            self._listener(section)
        if self.whole_group_kill:
            self._ignore(f"stopasgroup/killasgroup unset ({', '.join(self.whole_group_kill)}): supervisord signalled "
                         "only the main process; hive-init signals the program's whole process group (kill_group = "
                         "true), which also ends what it leaves behind; write kill_group = false for supervisord's way")
        self._ignore("supervisord set SUPERVISOR_ENABLED, SUPERVISOR_PROCESS_NAME and SUPERVISOR_GROUP_NAME for its "
                     "programs; hive-init sets HIVE_INIT_SOCKET (add them to environment if a script checks them)")
        for prog in self.programs:
            why = self.critical.get(prog.supervisord_name)
            if why:
                prog.fields.append(("critical", True, why))

    def _ignore(self, text: str) -> None:
        """Something that means nothing in hive-init: said in the output's header, not a loss."""
        self.ignored.append(text)

    def _listener(self, section: Section) -> None:
        """supervisor_stdout: nothing to do. A listener that stops supervisord when a program exits
        or goes FATAL (the supervisord idiom for "the container ends when this dies"): hive-init's
        critical = true on the programs it watches. Any other listener: a real loss."""
        name = section.name
        opt = self.doc.get(name, "command")
        names = {"here": _here(section.file), "host_node_name": platform.node(),
                 "program_name": name.split(":", 1)[1], "group_name": name.split(":", 1)[1],
                 "process_num": 0, "numprocs": 1}
        text = self.refs.show(self._expand(opt, name, "command", names, env=self.supervisord_env)) if opt else ""
        events_opt = self.doc.get(name, "events")
        events = [e.strip() for e in (events_opt.value if events_opt else "").split(",") if e.strip()]
        if re.search(r"(^|[/\s])supervisor_stdout\b", text):
            self._ignore(f"[{name}]: supervisor_stdout: nothing to do, hive-init copies every program's output "
                         "to its own stdout")
            return
        script = text + "\n" + self._scripts_of(text)
        if heuristics.watches_exits(events) and heuristics.stops_supervisord(script):
            programs = sorted({p.supervisord_name for p in self.programs})
            named = [p for p in programs if re.search(rf"(?<![\w/.-]){re.escape(p)}(?![\w/-])", script)]
            watched = named or programs
            why = f"[{name}] stopped supervisord on {', '.join(e for e in events if e.startswith('PROCESS_STATE'))}"
            for program in watched:
                self.critical.setdefault(program, why)
            self._ignore(f"[{name}]: it stopped supervisord when a program ended: converted to critical = true on "
                         f"{', '.join(watched)}" + ("" if named else " (it named none: all programs)"))
            return
        self._report_section(section, "hive-init has no event listeners (for health checks it has readiness and "
                                      "liveness probes; for \"stop the container when this ends\", critical = true)")


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
                wanted = self._integer(opt, section.name, key, self._expand(opt, section.name, key, names, env={}))
                if wanted is not None and wanted > (1024 if key == "minfds" else 200):
                    limit = "nofile" if key == "minfds" else "nproc"
                    self._report(opt, section.name, key, f"hive-init does not raise resource limits: give the "
                                                         f"container --ulimit {limit}={wanted}")
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
        priority_opt = section.options.get("priority")
        priority = 999  # supervisord's default group priority
        if priority_opt is not None:
            names = {"here": _here(priority_opt.file), "host_node_name": platform.node()}
            value = self._integer(priority_opt, section.name, "priority",
                                  self._expand(priority_opt, section.name, "priority", names, env=self.supervisord_env))
            priority = 999 if value is None else value
        for member in members:
            self.group_priority.setdefault(member, priority)
        listed = ", ".join(members) if members else "none"
        self._ignore(f"[{section.name}]: hive-init has no groups: its programs ({listed}) are converted one by "
                     f"one, with the group's priority ({priority}), which is what orders them in supervisord")

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

        # how many processes must be known now: from --set, else convert's own environment
        known = {**os.environ, **self.sets, **self.supervisord_env}
        numprocs_text, numprocs_opt = raw("numprocs", known)
        numprocs = self._integer(numprocs_opt, sname, "numprocs", numprocs_text, literal=True) if numprocs_opt else 1
        if numprocs_opt is not None and "%(ENV_" in numprocs_opt.value:
            self._ignore(f"[{sname}] numprocs = {numprocs_opt.value.strip()}: {numprocs} processes, from "
                         + ("--set" if any(f"ENV_{k})" in numprocs_opt.value for k in self.sets) else "the environment")
                         + " at conversion")
        start_text, start_opt = raw("numprocs_start", known)
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
        prog = _Program(name=pname, source=sname, origin=f"{section.file}:{section.line}",
                        supervisord_name=names["program_name"])
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
        group_priority = self.group_priority.get(names["program_name"])
        if group_priority is not None:
            # supervisord orders groups by the group's priority; a program's own only orders it inside
            if prog.priority is not None and prog.priority != group_priority:
                prog.notes.append(f"priority={prog.priority} ordered it inside [group:{names['group_name']}] only: "
                                  f"the group's priority {group_priority} is what orders it against the others")
            prog.priority = group_priority
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


    def _command(self, prog: _Program, text: str | None, opt: Option | None, section: Section) -> None:
        sname = section.name
        if opt is None or text is None:
            raise self._error(Option("", section.file, section.line), sname, "command",
                              "is missing (supervisord refuses a program without one)")
        if not text.strip():
            raise self._error(opt, sname, "command", "is empty")
        prog.command_text = self.refs.show(text)
        argv = self._split(opt, sname, text)
        # supervisord expands %(ENV_X)s before its shlex split: unquoted and alone, the value is split at
        # spaces and an empty one is no argument at all. Known values (--set) are read the same way.
        for name in dict.fromkeys(n for a in argv if (n := self.refs.whole(a))):
            token = self.refs.token(name)
            if len(self._split(opt, sname, text.replace(token, "a b"))) <= len(argv):
                continue  # quoted: one argument, as hive-init passes ${X}
            if name in self.sets:
                text = text.replace(token, self.sets[name])
                argv = self._split(opt, sname, text)
                self._ignore(f"[{sname}] command: %(ENV_{name})s read as supervisord does, with --set {name}")
            else:
                self._warn(opt, sname, "command", f"%(ENV_{name})s is a whole argument: supervisord splits its value "
                                                  "at spaces and drops an empty one, hive-init passes ${" + name + "} as "
                                                  f"one argument (give --set {name}=VALUE to read it as supervisord does)")
        if not argv or not argv[0]:
            raise self._error(opt, sname, "command", "names no program to run")
        if heuristics.stops_supervisord(prog.command_text):
            self.critical.setdefault(prog.supervisord_name, "its command stopped supervisord when it ended")
            self._ignore(f"[{sname}] command: stops supervisord: converted to critical = true")
        reasons = [] if heuristics.is_shell_script(argv) else heuristics.shell_syntax(text)
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
        # supervisord's restart budget: failed starts only (runs shorter than startsecs), never a
        # crash-loop window; a run that outlived startsecs is restarted at once (backoff reset)
        text, opt = get("startsecs")
        secs: int | None = 1
        if opt is not None:
            secs = self._integer(opt, sname, "startsecs", text)
            if secs is not None and secs < 0:
                raise self._error(opt, sname, "startsecs", f"{secs} is negative (supervisord refuses this too)")
        if secs is not None:
            prog.fields.append(("start_seconds", f"{secs}s", f"startsecs={secs}" if opt else "supervisord's default startsecs=1"))
        text, opt = get("startretries")
        retries: int | None = 3
        if opt is not None:
            retries = self._integer(opt, sname, "startretries", text)
            if retries is not None and retries < 0:
                raise self._error(opt, sname, "startretries", f"{retries} is negative (supervisord refuses this too)")
        if retries is not None:
            prog.fields.append(("start_retries", retries, f"startretries={retries}" if opt else
                                "supervisord's default startretries=3"))
        prog.fields.append(("max_restarts", -1, "supervisord never gives up on a program that started"))
        if secs is not None:
            prog.fields.append(("backoff", {"reset_after": f"{secs}s"}, "after a run longer than startsecs: "
                                "restarted at once, as by supervisord"))

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
                prog.stop_timeout = float(secs)
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
        else:
            self.whole_group_kill.setdefault(prog.supervisord_name, None)

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
                self._ignore(f"[{sname}] {ch}_capture_maxbytes: process communication events are for listeners, "
                             "which hive-init does not need")
            text, opt = get(f"{ch}_events_enabled")
            if opt is not None and self._boolean(opt, sname, f"{ch}_events_enabled", text):
                self._ignore(f"[{sname}] {ch}_events_enabled: log events are for listeners (supervisor_stdout): "
                             "hive-init copies every program's output to its stdout")
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









    # -- the result ------------------------------------------------------------------------


    def _suggest_dependencies(self) -> None:
        for prog in self.programs:
            text = prog.command_text
            targets: list[_Program] = []
            why = ""
            for service, tool, waits, looks_like in heuristics.SERVICES:
                if waits.search(text):
                    targets = [p for p in self.programs if p is not prog and p.source != prog.source
                               and (looks_like.search(p.name) or (p.argv and looks_like.search(os.path.basename(p.argv[0]))))]
                    why = f"its command waits for {service} with {tool}"
                    if targets:
                        self._readiness_hint(targets[0], text, service)
                    break
            if not targets and heuristics.GENERIC_WAIT.search(text):
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





def _checked_name(name: str, section: Section, opt: Option | None) -> str:
    """supervisord's own rule for program and group names."""
    name = name.strip()
    for char in " :/":
        if char in name:
            where = f"{opt.file}:{opt.line}" if opt else f"{section.file}:{section.line}"
            raise ConvertError(exits.CONFIG, where, f"[{section.name}]: invalid name {name!r}: supervisord "
                                                    f"refuses {char!r} in names")
    return name












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
