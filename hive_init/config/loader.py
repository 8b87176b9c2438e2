"""Loading a config file: TOML → `${VAR}` expansion → field-by-field validation → graph check.

Every failure is a ConfigError whose text is one line naming the file, program and field.
"""

import grp
import os
import pwd
import socket
import tomllib
from collections.abc import Mapping
from typing import Any

from hive_init.config import kinds
from hive_init.config.errors import ConfigError
from hive_init.config.expand import UnsetVariable, expand, read_regular_file
from hive_init.config.fields import PROGRAM_NAME_RULE, Table, valid_program_name
from hive_init.config.graph import find_cycle
from hive_init.config.model import (
    DEFAULT_PASSTHROUGH,
    Backoff,
    Config,
    InitSpec,
    ListenSpec,
    LogFile,
    Probe,
    ProgramSpec,
    RunAs,
)
from hive_init.paths import default_socket_path
from hive_init.redact import Redactor

CONDITIONS = ("started", "ready", "completed")
MAX_CONFIG = 4 * 1024 * 1024  # bytes: real configs are a few KB; bounds what a reload reads




def load(path: str, env: Mapping[str, str] | None = None) -> Config:
    try:
        data = read_regular_file(path, MAX_CONFIG)
    except OSError as e:
        raise ConfigError(path, f"cannot read config: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(path, f"not UTF-8 text (byte {e.start})") from None
    return loads(text, path, env)


def loads(text: str, path: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    # Hostile input gets the one-line error too, never a traceback: nesting deeper than Python's
    # recursion (tomllib and the walks below recurse), or more than memory allows.
    secrets: set[str] = set()
    try:
        return _loads(text, path, os.environ if env is None else env, secrets)
    except RecursionError:
        raise ConfigError(path, "nested too deeply") from None
    except MemoryError:
        raise ConfigError(path, "too large to load") from None
    except ConfigError as e:
        # an error may quote a value (`no such user '…'`): never one that came from a secret
        if any(s and s in e.message for s in secrets):
            redactor = Redactor(secrets)
            raise ConfigError(e.where, redactor(e.message)) from None
        raise


def _loads(text: str, path: str, env: Mapping[str, str], secrets: set[str]) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, f"invalid TOML: {e}") from None
    raw = _expand_all(raw, path, "", env, secrets)
    top = Table(raw, path, "")
    init = _init(top.table("init", {}) or Table({}, path, "init"))
    programs_table = top.table("programs", {})
    top.done({"init", "programs"})
    assert programs_table is not None
    programs: dict[str, ProgramSpec] = {}
    for name in programs_table.data:
        programs[name] = _program(name, programs_table.table(name), secrets, env, init)
    if not programs:
        raise ConfigError(path, "programs: no program is configured (add a [programs.NAME] table)")
    for spec in programs.values():
        for dep, _ in spec.depends_on:
            if dep not in programs:
                raise ConfigError(path, f"programs.{spec.name}.depends_on.{dep}: no program named {dep!r}")
    _listen_once(path, programs)
    cycle = find_cycle(programs)
    if cycle:
        raise ConfigError(path, f"programs: dependency cycle {' -> '.join(cycle)}")
    return Config(path=path, init=init, programs=programs, secrets=frozenset(s for s in secrets if len(s) >= 3))


def _expand_all(value: Any, path: str, where: str, env: Mapping[str, str], secrets: set[str]) -> Any:
    if isinstance(value, str):
        try:
            return expand(value, env, secrets)
        except UnsetVariable as e:
            raise ConfigError(path, f"{where}: {e}") from None
    if isinstance(value, list):
        return [_expand_all(v, path, f"{where}[{i}]", env, secrets) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _expand_all(v, path, f"{where}.{k}" if where else k, env, secrets) for k, v in value.items()}
    return value


_INIT_FIELDS = {"shutdown_timeout", "log_format", "log_level", "http", "control_socket", "output_buffer_lines",
                "environment_passthrough"}


def _init(t: Table) -> InitSpec:
    t.reject_unknown(_INIT_FIELDS)
    http = t.raw("http", "127.0.0.1:9900")
    if http in ("", False):
        address = None
    elif isinstance(http, str):
        address = _host_port(t, "http", http)
    else:
        raise t.error("http", "expected \"host:port\", or false to disable the endpoint")
    spec = InitSpec(
        shutdown_timeout=t.duration("shutdown_timeout", 25.0),
        log_format=t.choice("log_format", ("json", "console", "auto"), "auto"),
        log_level=t.choice("log_level", ("debug", "info", "warning", "error"), "info"),
        http=address,
        control_socket=t.string("control_socket", "") or default_socket_path(),
        output_buffer_lines=t.integer("output_buffer_lines", 1000, minimum=1, maximum=1_000_000),
        environment_passthrough=_passthrough(t, DEFAULT_PASSTHROUGH),
    )
    t.done()
    return spec


def _host_port(t: Table, key: str, text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise t.error(key, f"expected \"host:port\" (got {text!r})")
    return host, int(port)


_COMMON = {
    "kind", "command", "shell", "directory", "user", "group", "environment", "priority", "depends_on",
    "oneshot", "autostart", "restart", "exit_codes", "backoff", "max_restarts", "restart_window", "critical",
    "start_seconds", "start_retries",
    "stop_signal", "stop_timeout", "kill_group", "log_file", "log_file_max_size", "log_file_backups",
    "readiness", "liveness", "memory_limit", "memory_limit_for", "oom_score_adj", "environment_passthrough",
    "listen", "restart_order",
}


def _program(name: str, t: Table | None, secrets: set[str], env: Mapping[str, str], init: InitSpec) -> ProgramSpec:
    assert t is not None
    own_kind = kinds.get(t.data.get("kind"))  # None: command, or a kind choice() rejects below
    kind_fields = own_kind.fields() if own_kind is not None else frozenset()
    t.reject_unknown(_COMMON | kind_fields)
    if not valid_program_name(name):
        raise t.error(None, PROGRAM_NAME_RULE)
    kind = t.choice("kind", kinds.names(), "command")
    oneshot = t.boolean("oneshot", False)
    depends_on = _depends_on(t)
    defaults: dict[str, Any] = {}
    options: Any = None
    if own_kind is not None:
        # the kind reads its own fields; what it leaves unread is caught by done() below
        options, defaults = own_kind.parse(t, secrets, env)
        command: tuple[str, ...] = ()
        if t.has("command"):
            raise t.error("command", own_kind.own_command)
    else:
        command = _command(t)
    run_as = _run_as(t, defaults.get("user"))
    restart = t.choice("restart", ("always", "on-failure", "never"), "never" if oneshot else "always")
    if oneshot and restart == "always":
        raise t.error("restart", "a oneshot program runs to completion once; use \"on-failure\" or \"never\"")
    if oneshot and t.has("start_retries"):
        raise t.error("start_retries", "a oneshot is meant to exit: failed starts are counted for long-running programs only")
    log_path = t.string("log_file", None)
    if log_path and not os.path.isabs(log_path):  # beside the config, not wherever the init was started
        log_path = os.path.join(os.path.dirname(os.path.abspath(t.file)), log_path)
    listen = _listen(t, name, run_as)
    restart_order = _restart_order(t, listen, kind if own_kind is not None else None)
    spec = ProgramSpec(
        name=name,
        kind=kind,
        command=command,
        directory=_directory(t),
        run_as=run_as,
        environment=_environment(t),
        environment_passthrough=_passthrough(t, init.environment_passthrough),
        priority=t.integer("priority", 0),
        depends_on=depends_on,
        oneshot=oneshot,
        autostart=t.boolean("autostart", True),
        restart=restart,
        exit_codes=_exit_codes(t),
        backoff=t.sub("backoff", _backoff) or Backoff(),
        max_restarts=t.integer("max_restarts", 5, minimum=-1),
        restart_window=t.duration("restart_window", 60.0),
        start_seconds=t.duration("start_seconds", 1.0),
        start_retries=t.integer("start_retries", -1, minimum=-1),
        critical=t.boolean("critical", False),
        stop_signal=t.signal("stop_signal", defaults.get("stop_signal", 15)),
        stop_timeout=t.duration("stop_timeout", 10.0),
        kill_group=t.boolean("kill_group", True),
        log_file=LogFile(log_path, t.size("log_file_max_size", 10 * 1024 * 1024),
                         t.integer("log_file_backups", 3, minimum=0, maximum=100),
                         run_as.gid if run_as else None) if log_path else None,
        readiness=t.sub("readiness", lambda p: _probe(p, own_kind)) or defaults.get("readiness"),
        liveness=t.sub("liveness", lambda p: _probe(p, own_kind)),
        memory_limit=_memory_limit(t),
        memory_limit_for=t.duration("memory_limit_for", 5.0),
        oom_score_adj=t.integer("oom_score_adj", None, minimum=-1000, maximum=1000),
        listen=listen,
        restart_order=restart_order,
        options=options,
    )
    if not log_path:
        for key in ("log_file_max_size", "log_file_backups"):
            if t.has(key):
                raise t.error(key, "has no effect without log_file")
    t.done(_COMMON | kind_fields)
    return spec


def _memory_limit(t: Table) -> int | None:
    limit: int | None = t.size("memory_limit", None)
    if limit is not None and limit < 1024 * 1024:
        raise t.error("memory_limit", f"must be at least 1MB (got {t.data['memory_limit']!r}): a program needs more")
    if limit is None and t.has("memory_limit_for"):
        raise t.error("memory_limit_for", "has no effect without memory_limit")
    return limit
_LISTEN_FIELDS = {"address", "name", "mode", "user", "group"}


def _listen(t: Table, program: str, run_as: RunAs | None) -> tuple[ListenSpec, ...]:
    """`listen = ["HOST:PORT", "unix:/path.sock", {address = "unix:/x.sock", mode = "0660"}, ...]`."""
    from hive_init.config.addresses import parse_address, valid_fd_name

    value = t.raw("listen", [])
    if not isinstance(value, list):
        raise t.error("listen", "expected a list of addresses like [\"0.0.0.0:8000\", \"unix:/run/app.sock\"]")
    specs: list[ListenSpec] = []
    for i, item in enumerate(value):
        entry = Table(item, t.file, f"{t.where}.listen[{i}]") if isinstance(item, dict) else None
        if entry is not None:
            entry.reject_unknown(_LISTEN_FIELDS)
            text = entry.string("address")
        elif isinstance(item, str):
            text = item
        else:
            raise t.error(f"listen[{i}]", "expected an address string or a table with address = \"...\"")
        place = entry if entry is not None else Table({}, t.file, f"{t.where}.listen[{i}]")
        try:
            address = parse_address(text)
        except ValueError as e:
            raise place.error(None, str(e)) from None
        name = entry.string("name", program) if entry is not None else program
        if not valid_fd_name(name):
            raise place.error("name" if entry is not None else None,
                              f"{name!r} cannot be a LISTEN_FDNAMES entry (printable ASCII without ':' or spaces, at most 255)")
        mode = uid = gid = None
        on_disk = address.family == socket.AF_UNIX and not address.abstract
        if entry is not None and not on_disk:
            for key in ("mode", "user", "group"):
                if entry.has(key):
                    raise entry.error(key, "only a unix socket on the file system has a mode and an owner")
        if on_disk:
            # by default the socket file belongs to the program's user and group, 0660: the
            # program and its group may connect, others may not
            mode = _mode(entry, "mode", 0o660) if entry is not None else 0o660
            uid, gid = (run_as.uid, run_as.gid) if run_as is not None else (0, 0)
            if entry is not None and entry.has("user"):
                owner = _run_as(entry, None)
                assert owner is not None
                uid, gid = owner.uid, owner.gid
            elif entry is not None and entry.has("group"):
                gid = _gid(entry)
        if entry is not None:
            entry.done()
        specs.append(ListenSpec(address=text, name=name, mode=mode, uid=uid, gid=gid))
    seen: set[Any] = set()
    for i, spec in enumerate(specs):
        address = parse_address(spec.address)
        if address in seen:
            raise t.error(f"listen[{i}]", f"{spec.address!r} is listed twice")
        seen.add(address)
    return tuple(specs)


def _gid(t: Table) -> int:
    group = t.string("group")
    try:
        return (grp.getgrnam(group) if not (group.isascii() and group.isdigit()) else grp.getgrgid(int(group))).gr_gid
    except (KeyError, ValueError, OverflowError):
        raise t.error("group", f"no such group {group!r} on this system") from None


def _mode(t: Table, key: str, default: int) -> int:
    value = t.raw(key, default)
    if isinstance(value, str) and value and all(c in "01234567" for c in value) and int(value, 8) <= 0o777:
        return int(value, 8)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        return value  # a TOML octal integer (0o660)
    raise t.error(key, f"expected an octal mode like \"0660\" (got {value!r})")


def _restart_order(t: Table, listen: tuple[ListenSpec, ...], own_kind: str | None) -> Any:
    order = t.choice("restart_order", ("start-first", "stop-first"), "start-first" if listen else "stop-first")
    if order == "start-first" and own_kind is not None:
        # a kind runs a server that owns its state (PostgreSQL: one postmaster per data directory)
        raise t.error("restart_order", f"a kind = \"{own_kind}\" program cannot run twice at once; use \"stop-first\"")
    return order


def _listen_once(path: str, programs: dict[str, ProgramSpec]) -> None:
    """An address is held for one program only: two would take each other's connections."""
    from hive_init.config.addresses import parse_address

    owner: dict[Any, str] = {}
    for spec in programs.values():
        for i, listen in enumerate(spec.listen):
            address = parse_address(listen.address)
            other = owner.setdefault(address, spec.name)
            if other != spec.name:
                raise ConfigError(path, f"programs.{spec.name}.listen[{i}]: {listen.address!r} is already in programs.{other}.listen")


def _command(t: Table) -> tuple[str, ...]:
    value = t.raw("command")
    shell = t.boolean("shell", False)
    if isinstance(value, str):
        if not shell:
            raise t.error("command", "is a string: give a list like [\"prog\", \"arg\"], or set shell = true to run it through /bin/sh -c")
        if not value.strip():
            raise t.error("command", "must not be empty")
        return ("/bin/sh", "-c", value)
    command: tuple[str, ...] = t.string_list("command")
    if shell:
        raise t.error("shell", "shell = true needs command to be a string")
    if not command[0]:
        raise t.error("command", "the program to run must not be an empty string")
    return command


def _directory(t: Table) -> str | None:
    directory: str | None = t.string("directory", None)
    if directory is not None and not os.path.isabs(directory):
        raise t.error("directory", f"must be an absolute path (got {directory!r})")
    return directory


def _run_as(t: Table, default_user: str | None) -> RunAs | None:
    user = t.string("user", None) or default_user
    group = t.string("group", None)
    if user is None:
        if group is not None:
            raise t.error("group", "needs user to be set as well")
        return None
    try:
        entry = pwd.getpwnam(user) if not (user.isascii() and user.isdigit()) else pwd.getpwuid(int(user))
    except (KeyError, ValueError, OverflowError):
        key = "user" if t.has("user") else "kind"
        raise t.error(key, f"no such user {user!r} on this system (create it: useradd --system --no-create-home {user})") from None
    gid = entry.pw_gid
    if group is not None:
        try:
            gid = (grp.getgrnam(group) if not (group.isascii() and group.isdigit()) else grp.getgrgid(int(group))).gr_gid
        except (KeyError, ValueError, OverflowError):
            raise t.error("group", f"no such group {group!r} on this system") from None
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, gid))))
    return RunAs(user=entry.pw_name, uid=entry.pw_uid, gid=gid, groups=groups, home=entry.pw_dir)


def _environment(t: Table) -> tuple[tuple[str, str], ...]:
    env = t.table("environment", None)
    if env is None:
        return ()
    out = []
    for key, value in env.data.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, (str, int, float)):
            raise env.error(key, "expected a string value")
        if not key or "=" in key or "\0" in key:
            raise env.error(key, "is not a valid environment variable name")
        if "\0" in str(value):  # execve could not pass it: refused here, not at spawn
            raise env.error(key, "must not contain a NUL character")
        out.append((key, str(value)))
    return tuple(out)


def _passthrough(t: Table, default: tuple[str, ...]) -> tuple[str, ...]:
    """Names (or `PREFIX*` patterns; `*` alone: every variable whose name does not say secret) of
    hive-init's own variables that a program gets."""
    names = t.string_list("environment_passthrough", default, allow_empty=True)
    for name in names:
        bare = name[:-1] if name.endswith("*") else name
        if (not bare and name != "*") or "=" in bare or "*" in bare or "\0" in bare:
            raise t.error("environment_passthrough", f"{name!r} is not a variable name, a NAME* prefix or \"*\"")
    return tuple(names)


def _depends_on(t: Table) -> tuple[tuple[str, Any], ...]:
    value = t.raw("depends_on", None)
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple((v, "ready") for v in value)
    deps = t.table("depends_on")
    assert deps is not None
    out = []
    for dep in deps.data:
        out.append((dep, deps.choice(dep, CONDITIONS)))
    return tuple(out)


def _exit_codes(t: Table) -> tuple[int, ...]:
    value = t.raw("exit_codes", [0])
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value):
        raise t.error("exit_codes", "expected a list of exit statuses from 0 to 255")
    return tuple(value)


def _backoff(t: Table) -> Backoff:
    b = Backoff(
        initial=t.duration("initial", 0.1),
        max=t.duration("max", 30.0),
        factor=t.number("factor", 2.0, minimum=1.0),
        reset_after=t.duration("reset_after", 10.0),
    )
    if b.max < b.initial:
        raise t.error("max", f"must not be below initial ({b.max}s < {b.initial}s)")
    t.done()
    return b


def _probe(t: Table, own_kind: kinds.ConfigKind | None) -> Probe:
    own = own_kind.name if own_kind is not None and own_kind.probe_defaults is not None else None
    present = [k for k in ("exec", "tcp", "http", *kinds.probes()) if t.has(k)]
    if len(present) != 1:
        raise t.error(None, "needs exactly one of exec = [...], tcp = \"host:port\", http = \"URL\""
                      + (f", {own} = true" if own else ""))
    kind = present[0]
    period, timeout = 10.0, 1.0
    target: Any
    if kind == "exec":
        target = t.string_list("exec")
    elif kind == "tcp":
        host, port = _host_port(t, "tcp", t.string("tcp"))
        target = f"{host}:{port}"
    elif kind == "http":
        target = t.string("http")
        if not target.startswith(("http://", "https://")):
            raise t.error("http", f"expected an http:// URL (got {target!r})")
    else:  # a kind's own probe, named after the kind
        if kind != own or own_kind is None or own_kind.probe_defaults is None:
            raise t.error(kind, f"the {kind} probe is only for kind = \"{kind}\" programs")
        if t.boolean(kind) is not True:
            raise t.error(kind, f"set {kind} = true, or use another probe")
        target = None
        period, timeout = own_kind.probe_defaults
    probe = Probe(
        kind=kind,  # type: ignore[arg-type]
        target=target,
        period=t.duration("period", period),
        timeout=t.duration("timeout", timeout),
        initial_delay=t.duration("initial_delay", 0.0),
        success_threshold=t.integer("success_threshold", 1, minimum=1),
        failure_threshold=t.integer("failure_threshold", 3, minimum=1),
    )
    if probe.period <= 0:
        raise t.error("period", "must be more than 0")
    if probe.timeout <= 0:
        raise t.error("timeout", "must be more than 0")
    t.done()
    return probe
