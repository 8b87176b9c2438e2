"""Crashes under load (the chaos suite's PostgreSQL part): the emulated Genie container (as in
test_emulation) under a steady write loop through its API while the postmaster, a backend and
the app are each SIGKILLed again and again. hive-init brings each back, and every write the API
acknowledged is still there afterwards."""

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import psutil
import pytest

from tests.helpers import ROOT, free_port, wait_until
from tests.images.test_emulation import boot, genie_config

pytestmark = [pytest.mark.skipif(not ROOT, reason="needs root: PID namespace, the postgres user"), pytest.mark.pid1]

ROUNDS = 3  # each of postmaster, backend, app


def post(port: int, body: dict) -> str | None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/sessions", data=json.dumps(body).encode(),
                                     method="POST", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())["id"] if response.status == 201 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None  # not acknowledged: may or may not be there, and is not counted


def get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, {}


def find(init_pid: int, predicate) -> psutil.Process:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for p in psutil.Process(init_pid).children(recursive=True):
            try:
                if predicate(p.cmdline()):
                    return p
            except psutil.Error:
                pass
        time.sleep(0.05)
    raise AssertionError("process not found")


def test_acknowledged_writes_survive_repeated_kills(open_tmp, postgres_user):
    scratch = open_tmp
    (scratch / "data").mkdir(mode=0o755)
    api_port = free_port()
    init = boot(scratch, "chaos", genie_config(scratch, free_port(), api_port))
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            if (ident := post(api_port, {"user_id": f"w{n}", "session_data": {"n": n}})) is not None:
                acknowledged.append(ident)

    try:
        init.wait_state("api", "READY", timeout=120)
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        victims = {
            "postmaster": lambda cmd: cmd[:1] and cmd[0].endswith("/postgres") and "-D" in cmd,
            "backend": lambda cmd: cmd[:1] and cmd[0].startswith("postgres: hive hive_genie"),
            "app": lambda cmd: "hive_app" in cmd,
        }
        kills = 0
        for _ in range(ROUNDS):
            for predicate in victims.values():
                before = len(acknowledged)
                init.wait_state("api", "READY", timeout=120)
                deadline = time.monotonic() + 30
                while len(acknowledged) < before + 20 and time.monotonic() < deadline:
                    time.sleep(0.02)  # load held: writes keep being acknowledged before each kill
                os.kill(find(init.init_pid, predicate).pid, signal.SIGKILL)
                kills += 1
        init.wait_state("postgres", "READY", timeout=120)
        init.wait_state("api", "READY", timeout=120)
        recovered = len(acknowledged)  # and writes are acknowledged again after the last recovery
        wait_until(lambda: len(acknowledged) >= recovered + 5, 60, "writes acknowledged after the last kill")
        stop.set()
        thread.join(15)
        status = init.status()
        assert status["ready"] is True
        restarts = {p["name"]: p["restarts"] for p in status["programs"]}
        assert restarts["postgres"] >= ROUNDS and restarts["api"] >= ROUNDS
        assert len(acknowledged) >= 100
        missing = [i for i in acknowledged if get(api_port, f"/api/v1/sessions/{i}")[0] != 200]
        assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged writes lost"
        assert init.stop() == 0
        print(f"\n{kills} kills, {len(acknowledged)} acknowledged writes, 0 lost; restarts {restarts}")
    finally:
        stop.set()
        init.close()
