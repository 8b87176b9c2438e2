"""The validated configuration: immutable, typed, and everything the runtime needs resolved
(durations in seconds, signals as numbers, users as ids) so nothing is parsed twice."""

from dataclasses import dataclass, field
from typing import Any, Literal

Condition = Literal["started", "ready", "completed"]
RestartPolicy = Literal["always", "on-failure", "never"]
# what a program gets of hive-init's own environment unless environment_passthrough says
# otherwise: what a process needs to behave (where commands are, language, time zone, terminal);
# HOME, USER and LOGNAME are the program's user's when it has one. `NAME*` is a prefix.
DEFAULT_PASSTHROUGH = ("PATH", "LANG", "LANGUAGE", "LC_*", "TZ", "TERM", "HOME", "USER", "LOGNAME")
LogFormat = Literal["json", "console", "auto"]
RestartOrder = Literal["start-first", "stop-first"]


@dataclass(frozen=True, slots=True)
class RunAs:
    """A resolved user: the ids a child switches to when hive-init is root."""

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.1
    max: float = 30.0
    factor: float = 2.0
    # a program that stayed up this long is healthy again: its next crash starts from `initial`
    reset_after: float = 10.0


@dataclass(frozen=True, slots=True)
class Probe:
    kind: Literal["exec", "tcp", "http", "postgres"]
    target: tuple[str, ...] | str | None  # argv for exec, "host:port" for tcp, URL for http
    period: float = 10.0
    timeout: float = 1.0
    initial_delay: float = 0.0
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True, slots=True)
class LogFile:
    path: str
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 3
    # the file's group (the program's), when hive-init is root; its owner is hive-init's user
    gid: int | None = None


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """One address hive-init binds and holds for a program (hive_init.runtime.listen)."""

    address: str  # as written: "127.0.0.1:8000", "[::1]:80", "unix:/run/app.sock", "unix:@abstract"
    name: str  # its entry in LISTEN_FDNAMES
    # unix sockets on the file system only: the socket file's mode and owner
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True, slots=True)
class ProgramSpec:
    name: str
    command: tuple[str, ...]
    kind: str = "command"
    directory: str | None = None
    run_as: RunAs | None = None
    environment: tuple[tuple[str, str], ...] = ()
    environment_passthrough: tuple[str, ...] = DEFAULT_PASSTHROUGH
    priority: int = 0
    depends_on: tuple[tuple[str, Condition], ...] = ()
    oneshot: bool = False
    autostart: bool = True
    restart: RestartPolicy = "always"
    exit_codes: tuple[int, ...] = (0,)
    backoff: Backoff = field(default_factory=Backoff)
    max_restarts: int = 5  # -1: unlimited
    restart_window: float = 60.0
    # supervisord's startsecs/startretries: a process that stayed up start_seconds has started;
    # start_retries failed starts in a row (retried whatever `restart` says), then FATAL; -1: no such budget
    start_seconds: float = 1.0
    start_retries: int = -1
    critical: bool = False
    stop_signal: int = 15
    stop_timeout: float = 10.0
    kill_group: bool = True
    log_file: LogFile | None = None
    readiness: Probe | None = None
    liveness: Probe | None = None
    # resources (hive_init.runtime.resources, .oom): bytes of the whole process tree, and how
    # long it may stay above them before a restart; None: the kind's default (0 for commands)
    memory_limit: int | None = None
    memory_limit_for: float = 5.0
    oom_score_adj: int | None = None
    listen: tuple[ListenSpec, ...] = ()
    # start-first: a restart starts the new process and stops the old one once the new is READY
    restart_order: RestartOrder = "stop-first"
    # the kind's own validated settings (PostgresSpec for kind = "postgres")
    options: Any = None


@dataclass(frozen=True, slots=True)
class InitSpec:
    shutdown_timeout: float = 25.0
    log_format: LogFormat = "auto"
    log_level: str = "info"
    http: tuple[str, int] | None = ("127.0.0.1", 9900)
    control_socket: str = ""
    output_buffer_lines: int = 1000
    environment_passthrough: tuple[str, ...] = DEFAULT_PASSTHROUGH


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    init: InitSpec
    programs: dict[str, ProgramSpec]
    # values that came from secrets; every output redacts them
    secrets: frozenset[str] = frozenset()

    def start_order(self) -> list[str]:
        from hive_init.config.graph import start_order

        return start_order(self.programs)
