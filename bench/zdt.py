"""Zero-downtime scenario: PostgreSQL + the app (images/app) under an open-loop load of
`load_rate` requests/s (GET /api/v1/live, a new connection each), then restarts and crashes of
the app. hive-init holds the app's port (`listen`, the app on fd 3, rolling restarts);
supervisord runs the app binding its own port (`supervisorctl restart` stops, then starts).

Each window runs from the action (the restart command, or the SIGKILL) until the new process
answers, plus WINDOW_TAIL; the requests scheduled in it are counted: failed (refused, reset,
unanswered within the client's timeout), delayed (answered, slower than DELAYED), and the
slowest answered. A crash is a SIGKILL at a moment the app holds no accepted connection
(SIGSTOP, look, kill, as field-facts.md says): what a killed process had already accepted is
lost whoever holds the port, and would hide what the held socket changes.
"""

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable

from bench import loadgen
from bench.common import PYTHON, BenchError, free_port, http_status, wait_for
from bench.sides import HIVE, Program, RunningInit

DELAYED = 0.5  # seconds: an answer slower than this counts as delayed
WINDOW_TAIL = 1.0  # seconds counted after the new process answers
CLIENT_TIMEOUT = 30.0  # a request may wait this long for the next process


def accepted_connections(pid: int, port: int) -> int:
    """TCP connections to `port` that process `pid` holds (accepted ones, not the listener)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if int(local.rsplit(":", 1)[1], 16) == port and state != "0A" and inode in inodes:  # 0A: LISTEN
                    count += 1
    return count


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def kill_idle(pid: int, port: int, settle: Callable[[], None], timeout: float = 60) -> None:
    """SIGKILL `pid` at a moment it holds no accepted connection: SIGSTOP it (after `settle()`,
    which waits for the load to be caught up), look, and kill it, or let it go on and retry."""
    deadline = time.monotonic() + timeout
    while True:
        settle()
        os.kill(pid, signal.SIGSTOP)
        while _state(pid) != "T":  # the signal is delivered asynchronously
            time.sleep(0.001)
        if accepted_connections(pid, port) == 0:
            os.kill(pid, signal.SIGKILL)
            return
        os.kill(pid, signal.SIGCONT)
        if time.monotonic() > deadline:
            raise BenchError("the app never was without a connection in hand")


class Load:
    """The open-loop client in a thread, until stopped."""

    def __init__(self, port: int, rate: float):
        loadgen.TIMEOUT = CLIENT_TIMEOUT
        self.result = loadgen.LoadResult()
        self.until = threading.Event()
        target = loadgen.Target("127.0.0.1", port, "GET", "/api/v1/live")
        self.thread = threading.Thread(target=loadgen.run_load, args=(target, rate, 3600, False),
                                       kwargs={"until": self.until, "result": self.result}, daemon=True)
        self.thread.start()

    def answered(self) -> int:
        return len(self.result.latencies) + self.result.errors

    def caught_up(self, in_flight: int = 3, timeout: float = 90) -> None:
        wait_for(lambda: self.result.sent - self.answered() <= in_flight, timeout, 0.005, "the load to catch up")

    def finish(self) -> loadgen.LoadResult:
        self.until.set()
        self.thread.join(CLIENT_TIMEOUT + 10)
        return self.result


def window(result: loadgen.LoadResult, start: float, end: float) -> dict[str, float]:
    inside = [latency for scheduled, latency in list(result.samples) if start <= scheduled <= end]
    answered = [lat for lat in inside if lat is not None]
    return {"failed": float(len(inside) - len(answered)), "delayed": float(sum(lat > DELAYED for lat in answered)),
            "slowest_ms": max(answered) * 1000 if answered else float("nan"), "requests": float(len(inside))}


def app_pid(init: RunningInit) -> int | None:
    argv, env = init.cli("status")
    if init.side == HIVE:
        out = subprocess.run([*argv, "--json"], capture_output=True, text=True, env=env, timeout=30).stdout
        try:
            return next(p["pid"] for p in json.loads(out)["programs"] if p["name"] == "app")
        except (ValueError, StopIteration, KeyError):
            return None
    out = subprocess.run([*argv[:-1], "status", "app"], capture_output=True, text=True, env=env, timeout=30).stdout
    words = out.replace(",", " ").split()
    return int(words[words.index("pid") + 1]) if "RUNNING" in words and "pid" in words else None


def _restart(init: RunningInit) -> None:
    argv, env = init.cli("status")
    command = [argv[0], "restart", "app"] if init.side == HIVE else [*argv[:-1], "restart", "app"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    if done.returncode != 0:
        raise BenchError(f"{init.side}: restart failed: {done.stdout}{done.stderr}")


def programs(side: str, pg_programs: list[Program], app_port: int) -> list[Program]:
    """The pg scenario's programs, with the app taking a held socket on hive-init's side."""
    postgres, app = pg_programs
    if side == HIVE:
        app.argv = [PYTHON, "-m", "hive_app", "--fd", "3"]
        app.hive_extra = f'listen = ["127.0.0.1:{app_port}"]\nmax_restarts = -1\n'
        app.readiness_period = "1s"
    return [postgres, app]


def run(init: RunningInit, app_port: int, rate: float, restarts: int, crashes: int,
        rec: Callable[..., None]) -> None:
    side = init.side
    wait_for(lambda: http_status("127.0.0.1", app_port, "/api/v1/health", 0.5) == 200 or not init.alive(),
             120, 0.01, "the app's health")
    load = Load(app_port, rate)
    try:
        wait_for(lambda: load.answered() >= rate, 60, 0.01, "the first second of load")
        for action in ["restart"] * restarts + ["crash"] * crashes:
            before = app_pid(init)
            if before is None:
                raise BenchError(f"{side}: the app is not running:\n{init.tail()}")
            load.caught_up()
            if action == "restart":
                start = time.monotonic()
                _restart(init)
            else:
                kill_idle(before, app_port, load.caught_up)
                start = time.monotonic()
            wait_for(lambda before=before: app_pid(init) not in (None, before), 120, 0.02, "the new process")
            wait_for(lambda: http_status("127.0.0.1", app_port, "/api/v1/live", 5) == 200, 120, 0.01,
                     "the new process to answer")
            end = time.monotonic() + WINDOW_TAIL
            load.caught_up(timeout=120)
            time.sleep(max(0.0, end - time.monotonic()))
            figures = window(load.result, start - 0.05, end)
            for name in ("failed", "delayed", "slowest_ms"):
                rec(f"zdt_{action}_{name}", side, figures[name], requests=figures["requests"])
    finally:
        load.finish()


def free_ports() -> tuple[int, int]:
    return free_port(), free_port()
