"""What every scenario needs: paths of the installed commands, scratch directories other users
can reach, free ports, time stamps written by the programs themselves, and what /proc says about
a process (RSS, PSS, context switches, children)."""

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
# `uv run python -m bench`: sys.executable is the project venv's python, next to the console scripts
VENV_BIN = Path(sys.executable).parent
PYTHON = sys.executable
HIVE_INIT = str(VENV_BIN / "hive-init")
SUPERVISORD = str(VENV_BIN / "supervisord")
SUPERVISORCTL = str(VENV_BIN / "supervisorctl")
IS_ROOT = os.geteuid() == 0
UNSHARE = shutil.which("unshare")
BASH = shutil.which("bash") or "/bin/bash"


# Python bytecode for everything the bench starts. A container image has it (pip compiles at
# install); a venv made with PYTHONDONTWRITEBYTECODE=1 (as uv's dev setups often are) has none, and
# then every start compiles each module again, which costs both sides time and RSS. The bench's
# processes keep theirs apart, under /var/tmp, without writing into the venv or the sources.
PYCACHE = f"/var/tmp/hive-init-bench-pycache-{os.geteuid()}"


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("HIVE_INIT_SOCKET", None)
    env["PYTHONPYCACHEPREFIX"] = PYCACHE
    env.update(extra or {})
    return env


WARM_UP = """
import importlib, pkgutil, sys
for top in sys.argv[1:]:
    try:
        package = importlib.import_module(top)
    except Exception:
        continue
    for info in pkgutil.walk_packages(getattr(package, "__path__", []), top + "."):
        if ".tests" in info.name or ".test_" in info.name or info.name.endswith(".__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except BaseException:
            pass
"""
# uvicorn: the app's server (images/app, the `app` group), no longer the init's (its endpoint is h11)
WARM_PACKAGES = ("hive_init", "supervisor", "anyio", "uvicorn", "h11", "structlog", "asyncpg", "psutil",
                 "prometheus_client", "fastapi", "starlette", "pydantic", "hive_app", "http", "xmlrpc", "asyncio",
                 "email", "json", "logging", "concurrent")


_NOT_STDLIB = ("test", "tests", "idlelib", "tkinter", "turtledemo", "site-packages")


def prepare_pycache(warm: bool) -> None:
    """The standard library's own bytecode copied into the cache (with a prefix, Python looks
    for every .pyc there, never in the __pycache__ directories); with `warm`, the packages both
    sides use are compiled once too (else each is compiled at its first use, then kept)."""
    import sysconfig

    os.makedirs(PYCACHE, mode=0o755, exist_ok=True)
    stdlib = sysconfig.get_paths()["stdlib"]
    marker = os.path.join(PYCACHE, ".stdlib-" + sys.version.split()[0])
    if not os.path.exists(marker):
        tag = sys.implementation.cache_tag
        for directory, dirs, files in os.walk(stdlib):
            if os.path.basename(directory) != "__pycache__":
                dirs[:] = [d for d in dirs if d not in _NOT_STDLIB]
                continue
            target = PYCACHE + os.path.dirname(directory)
            for name in files:
                if name.endswith(f".{tag}.pyc"):
                    os.makedirs(target, exist_ok=True)
                    shutil.copy2(os.path.join(directory, name), os.path.join(target, name))
        open(marker, "w").close()
    if warm:
        env = child_env({"PYTHONPATH": str(ROOT / "images" / "app")})
        subprocess.run([PYTHON, "-c", WARM_UP, *WARM_PACKAGES], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=600, cwd="/")


class BenchError(RuntimeError):
    """A scenario could not be measured (an init did not start, a program never came up)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_root() -> str:
    """The run's scratch root: under /tmp with mode 0755, so that PostgreSQL's user can reach
    data directories inside it (pytest's and root's own directories are 0700)."""
    path = tempfile.mkdtemp(prefix="hive-init-bench-", dir="/tmp")
    os.chmod(path, 0o755)
    return path


def subdir(root: str, name: str) -> str:
    path = tempfile.mkdtemp(prefix=name + "-", dir=root)
    os.chmod(path, 0o755)
    return path


def postgres_user() -> str | None:
    """As root, PostgreSQL runs as `postgres` (it refuses root): create the user if missing."""
    if not IS_ROOT:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"],
                       check=True)
    return "postgres"


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.002, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what or predicate}")
        time.sleep(interval)


# ---- time stamps written by the programs -----------------------------------------------------

def stamp_command(path: str, then: str = "exec sleep infinity") -> list[str]:
    """A program that appends "PID UNIXTIME" to `path` the moment it starts (bash's
    $EPOCHREALTIME: no extra process), then does `then`."""
    return [BASH, "-c", f'echo "$$ $EPOCHREALTIME" >> {path}; {then}']


def trap_sleeper(path: str) -> list[str]:
    """A program that exits at once on TERM (and takes its sleep with it)."""
    return stamp_command(path, "trap 'kill $p 2>/dev/null; exit 0' TERM; "
                               "while :; do sleep 1000 & p=$!; wait $p; done")


def read_stamps(path: str) -> list[tuple[int, float]]:
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    stamps = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                stamps.append((int(parts[0]), float(parts[1].replace(",", "."))))
            except ValueError:
                pass
    return stamps


# ---- /proc ------------------------------------------------------------------------------------

def _status_fields(path: str) -> dict[str, str]:
    fields = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def ctx_switches(pid: int) -> tuple[int, int, int]:
    """(voluntary, involuntary, threads): summed over every thread of the process (the
    /proc/PID/status numbers are the main thread's only)."""
    vol = invol = threads = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = _status_fields(f"/proc/{pid}/task/{tid}/status")
        except OSError:
            continue
        vol += int(fields["voluntary_ctxt_switches"])
        invol += int(fields["nonvoluntary_ctxt_switches"])
        threads += 1
    return vol, invol, threads


def rss_kib(pid: int) -> int:
    return int(_status_fields(f"/proc/{pid}/status")["VmRSS"].split()[0])


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise BenchError(f"no Pss in /proc/{pid}/smaps_rollup")


def cpu_ticks(pid: int) -> int:
    """utime + stime of the process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    fields = raw[raw.rfind(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def wait_quiet(pid: int, quiet: float = 0.3, timeout: float = 15.0) -> None:
    """Until the process has used no CPU for `quiet` seconds (its start-up is over), at most
    `timeout` (a process that never goes quiet is measured anyway: that is what it does)."""
    deadline = time.monotonic() + timeout
    last = cpu_ticks(pid)
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = cpu_ticks(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out += [int(p) for p in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()[0]


GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def run_measured(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int, int, str]:
    """(wall seconds, peak RSS in KiB, exit status, output) of one command.

    The peak RSS comes from /usr/bin/time (%M): the rusage of a child forked by this (large)
    Python process would count this process's own RSS, which the child holds until its exec."""
    report = None
    if GNU_TIME:
        fd, report = tempfile.mkstemp(prefix="bench-time-")
        os.close(fd)
        argv = [GNU_TIME, "-f", "%M", "-o", report, *argv]
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env)
        assert proc.stdout is not None
        out = proc.stdout.read()  # until the command exits (and closes it)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        maxrss = usage.ru_maxrss
        if report:
            with open(report) as f:
                lines = f.read().split()
            maxrss = int(lines[-1]) if lines and lines[-1].isdigit() else maxrss
    finally:
        if report:
            os.unlink(report)
    text = out.decode("utf-8", "replace")
    if GNU_TIME and proc.returncode != 0:
        text = text.replace("Command exited with non-zero status", "").strip()
    return wall, maxrss, proc.returncode, text


def http_status(host: str, port: int, path: str, timeout: float = 0.5) -> int | None:
    """A GET with a fresh connection; the status code, or None when nothing answers."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            head = b""
            while b"\r\n" not in head:
                data = s.recv(4096)
                if not data:
                    break
                head += data
    except OSError:
        return None
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) >= 2 and parts[1].isdigit():
        return int(parts[1])
    return None


def dump_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
