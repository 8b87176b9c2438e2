"""The two sides, given the same programs: hive-init (a TOML config) and supervisord (a
supervisord.conf as people write it for a container: nodaemon, children's output on its stdout,
a unix socket for supervisorctl, an inet_http_server for XML-RPC, everything else default).

Each init is started as its installed console script from the venv's bin/, its stdout and
stderr appended to a file in the scenario's directory (as docker's log collector would take
them). As root, `pid1=True` runs it as PID 1 of a new PID namespace."""

import json
import os
import select
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field

from bench.common import (
    HIVE_INIT,
    SUPERVISORCTL,
    SUPERVISORD,
    UNSHARE,
    BenchError,
    child_env,
    children,
    free_port,
    wait_for,
)

HIVE = "hive-init"
SUP = "supervisord"
SIDES = (HIVE, SUP)


@dataclass
class Program:
    name: str
    argv: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    directory: str | None = None
    priority: int | None = None
    oneshot: bool = False
    # hive-init only: supervisord has no equivalent (it is the point of the comparison)
    readiness_http: str | None = None
    readiness_period: str | None = None
    backoff_initial: str | None = None
    depends_ready: tuple[str, ...] = ()
    hive_extra: str = ""  # raw TOML lines inside [programs.NAME] (e.g. kind = "postgres")
    hive_tables: str = ""  # raw TOML after the program's table ([[programs.NAME.roles]], ...)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        # JSON string escapes are valid TOML basic-string escapes; hive-init expands ${VAR} and
        # reads $$ as a literal $, so every $ meant for the shell is doubled
        return json.dumps(value.replace("$", "$$"))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def hive_config(directory: str, programs: list[Program], http_port: int | None) -> str:
    lines = [
        "[init]",
        f"control_socket = {_toml(os.path.join(directory, 'hive-init.sock'))}",
        f"http = {_toml(f'127.0.0.1:{http_port}') if http_port else 'false'}",
        'log_format = "json"',
        "",
    ]
    for p in programs:
        lines.append(f"[programs.{p.name}]")
        if p.argv is not None:
            lines.append(f"command = {_toml(p.argv)}")
        if p.env:
            lines.append(f"environment = {_toml(p.env)}")
        if p.user:
            lines.append(f"user = {_toml(p.user)}")
        if p.directory:
            lines.append(f"directory = {_toml(p.directory)}")
        if p.priority is not None:
            lines.append(f"priority = {p.priority}")
        if p.oneshot:
            lines.append("oneshot = true")
        if p.depends_ready:
            lines.append(f"depends_on = {_toml({d: 'ready' for d in p.depends_ready})}")
        if p.backoff_initial is not None:
            lines.append(f"backoff = {_toml({'initial': p.backoff_initial})}")
        if p.hive_extra:
            lines.append(p.hive_extra.strip())
        if p.readiness_http:
            lines.append(f"[programs.{p.name}.readiness]")
            lines.append(f"http = {_toml(p.readiness_http)}")
            if p.readiness_period:
                lines.append(f"period = {_toml(p.readiness_period)}")
        if p.hive_tables:
            lines.append(p.hive_tables.strip())
        lines.append("")
    return "\n".join(lines)


def _ini_escape(text: str) -> str:
    return text.replace("%", "%%")  # supervisord expands %(name)s in most values


def sup_config(directory: str, programs: list[Program], http_port: int | None) -> str:
    sock = os.path.join(directory, "supervisor.sock")
    lines = [
        "[supervisord]",
        "nodaemon=true",
        "user=root" if os.geteuid() == 0 else "",
        "logfile=/dev/null",  # nodaemon already logs to stdout
        "logfile_maxbytes=0",
        f"pidfile={os.path.join(directory, 'supervisord.pid')}",
        "",
        "[unix_http_server]",
        f"file={sock}",
        "",
    ]
    if http_port:
        lines += ["[inet_http_server]", f"port=127.0.0.1:{http_port}", ""]
    lines += [
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{sock}",
        "",
    ]
    for p in programs:
        if p.argv is None:
            raise ValueError(f"{p.name}: supervisord needs a command")
        lines.append(f"[program:{p.name}]")
        lines.append(f"command={_ini_escape(shlex.join(p.argv))}")
        if p.env:
            env = ",".join(f'{k}="{_ini_escape(v)}"' for k, v in p.env.items())
            lines.append(f"environment={env}")
        if p.user:
            lines.append(f"user={p.user}")
        if p.directory:
            lines.append(f"directory={p.directory}")
        if p.priority is not None:
            lines.append(f"priority={p.priority}")
        if p.oneshot:
            lines += ["autorestart=false", "startsecs=0"]
        # the container way: the programs' output goes to supervisord's stdout, as with hive-init
        lines += ["stdout_logfile=/dev/stdout", "stdout_logfile_maxbytes=0", "redirect_stderr=true", ""]
    return "\n".join(lines)


class RunningInit:
    """One init process, either side."""

    def __init__(self, side: str, directory: str, programs: list[Program], *, http: bool = True,
                 pid1: bool = False):
        self.side = side
        self.directory = directory
        self.http_port = free_port() if http else None
        self.pid1 = pid1
        if side == HIVE:
            self.config = os.path.join(directory, "hive-init.toml")
            text = hive_config(directory, programs, self.http_port)
            argv = [HIVE_INIT, "run", "-c", self.config]
            self.socket = os.path.join(directory, "hive-init.sock")
        else:
            self.config = os.path.join(directory, "supervisord.conf")
            text = sup_config(directory, programs, self.http_port)
            argv = [SUPERVISORD, "-n", "-c", self.config]
            self.socket = os.path.join(directory, "supervisor.sock")
        with open(self.config, "w") as f:
            f.write(text)
        if pid1:
            if UNSHARE is None:
                raise BenchError("unshare is missing")
            argv = [UNSHARE, "--pid", "--fork", "--mount-proc", "--kill-child", *argv]
        self.log_path = os.path.join(directory, f"{side}.log")
        self._log = open(self.log_path, "ab")  # noqa: SIM115  (the child's stdout for its whole life; closed in stop)
        env = child_env({"PYTHONUNBUFFERED": "1"})
        # the moment the init is exec'd: every "from start" figure counts from here
        self.t_start = time.time()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=env, cwd=directory)
        self._pid: int | None = None if pid1 else self.proc.pid

    @property
    def pid(self) -> int:
        """The init's PID as seen from here (in a namespace: unshare's child)."""
        if self._pid is None:
            found = wait_for(lambda: children(self.proc.pid) or self.proc.poll() is not None, 10,
                             what="the init inside its namespace")
            if self.proc.poll() is not None:
                raise BenchError(f"{self.side} exited at once:\n{self.tail()}")
            self._pid = found[0]  # type: ignore[index]
        return self._pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def ready_for_cli(self, timeout: float = 20) -> None:
        wait_for(lambda: os.path.exists(self.socket) or not self.alive(), timeout, 0.005, "the control socket")
        if not self.alive():
            raise BenchError(f"{self.side} exited:\n{self.tail()}")

    def terminate_timed(self, timeout: float = 60) -> float:
        """TERM to the init; seconds until it has exited."""
        pid = self.pid
        self.t_term = time.time()
        # the exit seen when it happens: Popen.wait(timeout) polls with sleeps doubling up to 50 ms,
        # so an exit at 16 ms was seen at 31.5 ms (0.5 + 1 + 2 + 4 + 8 + 16) and one at 15 ms at 15.5
        pidfd = os.pidfd_open(self.proc.pid)
        try:
            start = time.perf_counter()
            os.kill(pid, signal.SIGTERM)
            readable, _, _ = select.select([pidfd], [], [], timeout)
            took = time.perf_counter() - start
        finally:
            os.close(pidfd)
        if not readable:
            raise BenchError(f"{self.side} still running {timeout}s after TERM:\n{self.tail()}")
        self.proc.wait()
        self.t_gone = self.t_term + took
        return took

    def stop_breakdown(self) -> dict[str, float]:
        """hive-init only: TERM → its last log line ("exited"), and that line → the process gone
        (the interpreter's own teardown). Its log time stamps have millisecond resolution."""
        if self.side != HIVE:
            return {}
        import datetime

        with open(self.log_path, errors="replace") as f:
            for line in f:
                if '"msg": "exited"' not in line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("program") == "hive-init" and "target" not in event:
                    at = datetime.datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()
                    return {"term_to_exited_line_s": round(at - self.t_term, 4),
                            "exited_line_to_gone_s": round(self.t_gone - at, 4)}
        return {}

    def close(self) -> None:
        """SIGKILL to the init and everything under it (its programs run in sessions of their own)."""
        if self.proc.poll() is None:
            import psutil

            try:
                tree = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.Error:
                tree = []
            for process in tree:
                try:
                    process.kill()
                except psutil.Error:
                    pass
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self._log.close()

    # ---- the control command a HEALTHCHECK would run -------------------------------------------
    def cli(self, what: str) -> tuple[list[str], dict[str, str]]:
        env = child_env()
        if self.side == HIVE:
            env["HIVE_INIT_SOCKET"] = self.socket
            return [HIVE_INIT, what], env
        return [SUPERVISORCTL, "-c", self.config, "status"], env

    def __enter__(self) -> "RunningInit":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
