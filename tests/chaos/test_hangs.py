"""Hangs: a program frozen with SIGSTOP is found out by its liveness probe and restarted (a stopped
process ignores TERM while stopped, so the runtime has to SIGKILL it); a program deaf to TERM is
killed at its stop_timeout; and the whole shutdown never takes longer than shutdown_timeout."""

import signal
import sys
import time

import psutil
import pytest

from tests.chaos.util import PID1, alive, wait_until
from tests.helpers import free_port

# A server with a graceful TERM handler, as real servers have: while SIGSTOPped the handler cannot
# run, so TERM stays pending and only SIGKILL ends it.
WEB = """\
import http.server, os, signal, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        print("probed", flush=True)  # so the test can count the passed probes
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
def graceful(*_):
    print("graceful exit", flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, graceful)
print("serving", flush=True)
server.serve_forever()
"""

# A worker that proves it is alive by touching a heartbeat file, with the same TERM handler.
WORKER = """\
import os, signal, sys, time
def graceful(*_):
    print("graceful exit", flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, graceful)
print("working", flush=True)
while True:
    os.utime(sys.argv[1])
    time.sleep(0.05)
"""
# the probe also counts its passes in a file, so the test can wait for a few of them
HEARTBEAT_FRESH = ("import os, sys, time; fresh = time.time() - os.stat(sys.argv[1]).st_mtime <= 0.5; "
                   "fresh and open(sys.argv[2], 'a').write('.'); sys.exit(not fresh)")


def processes_of(init) -> list[psutil.Process]:
    return psutil.Process(init.init_pid).children(recursive=True)


@pytest.mark.parametrize("probe", ["http", "heartbeat"])
def test_a_sigstopped_program_is_caught_by_liveness_and_killed_and_restarted(start_init, tmp_path, probe):
    if probe == "http":
        port = free_port()
        script = tmp_path / "web.py"
        script.write_text(WEB)
        args, liveness = f'"{script}", "{port}"', f'http = "http://127.0.0.1:{port}/"'
        passes = lambda: init.output("app").count("probed")
    else:
        beat = tmp_path / "heartbeat"
        beat.touch()
        passes_file = tmp_path / "passes"
        script = tmp_path / "worker.py"
        script.write_text(WORKER)
        args, liveness = f'"{script}", "{beat}"', f'exec = ["{sys.executable}", "-c", "{HEARTBEAT_FRESH}", "{beat}", "{passes_file}"]'
        passes = lambda: len(passes_file.read_text()) if passes_file.exists() else 0
    init = start_init(f"""
        [programs.app]
        command = ["{sys.executable}", {args}]
        stop_timeout = "500ms"
        backoff = {{ initial = "50ms" }}
        [programs.app.liveness]
        {liveness}
        period = "200ms"
        timeout = "400ms"
        initial_delay = "500ms"
        failure_threshold = 2
    """, pid1=PID1)
    init.wait_msg("serving" if probe == "http" else "working", "app")
    first = init.wait_state("app", "READY")
    wait_until(lambda: passes() >= 3, 20, "three passed liveness probes")
    assert init.program("app")["restarts"] == 0
    assert init.ctl("signal", "app", "STOP").returncode == 0
    failed = init.wait_for(lambda e: e.get("target") == "app" and "liveness probe failed 2 times" in e["msg"],
                           timeout=10, what="the liveness failure")
    init.wait_for(lambda e: e.get("target") == "app" and "still running 0.5s after SIGTERM" in e["msg"],
                  timeout=10, what="TERM not being enough for a stopped process")
    init.wait_for(lambda e: e.get("target") == "app" and e["msg"].startswith("backoff: liveness probe failed"),
                  timeout=10, what="the restart")
    wait_until(lambda: (p := init.program("app"))["state"] == "READY" and p["pid"] != first["pid"], 20,
               "a new app process")
    assert init.program("app")["restarts"] == 1
    assert "graceful exit" not in init.output("app")  # it was SIGKILLed, never resumed
    # nothing is left stopped or unreaped
    wait_until(lambda: not [p for p in processes_of(init) if p.status() in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE)],
               5, "no stopped or zombie process under the init")
    assert ("timed out" in failed["msg"]) if probe == "http" else ("exit status 1" in failed["msg"])
    assert init.stop() == 0


def test_deaf_and_frozen_programs_are_killed_at_their_stop_timeout(start_init, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    beat = tmp_path / "beat"
    beat.touch()
    init = start_init(f"""
        [init]
        shutdown_timeout = "20s"
        [programs.deaf]
        command = ["sh", "-c", "trap '' TERM; echo deaf-up; while :; do sleep 0.05; done"]
        stop_timeout = "1s"
        [programs.frozen]
        command = ["{sys.executable}", "{script}", "{beat}"]
        stop_timeout = "1s"
        [programs.polite]
        command = ["sh", "-c", "trap 'echo polite-bye; exit 0' TERM; echo polite-up; while :; do sleep 0.05; done"]
    """, pid1=PID1)
    for name, text in (("deaf", "deaf-up"), ("frozen", "working"), ("polite", "polite-up")):
        init.wait_msg(text, name)
    assert init.ctl("signal", "frozen", "STOP").returncode == 0
    pids = [p.pid for p in processes_of(init)]
    start = time.monotonic()
    init.signal(signal.SIGTERM)
    assert init.wait(timeout=30) == 0
    took = time.monotonic() - start
    print(f"shutdown with stop_timeout = 1s took {took:.2f}s")  # for SCENARIOS.md (pytest -s)
    # no upper bound here (the figure is bench's): not killed before its stop_timeout, and killed
    # because of it (the "still running 1s after SIGTERM" events below)
    assert took >= 1.0, f"shutdown took {took:.2f}s with stop_timeout = 1s"
    for name in ("deaf", "frozen"):
        assert any("still running 1s after SIGTERM" in e["msg"] for e in init.events(name)), name
    assert "polite-bye" in init.output("polite")
    assert "graceful exit" not in init.output("frozen")
    assert [pid for pid in pids if alive(pid)] == []


def test_the_whole_shutdown_fits_in_shutdown_timeout(start_init):
    """Three programs in a chain, each deaf to TERM with a stop_timeout of 3s (9s in all, stopped
    one after the other): shutdown_timeout = 2s must bound the whole shutdown."""
    deaf = "trap '' TERM; echo {0}-up; while :; do sleep 0.05; done"
    init = start_init(f"""
        [init]
        shutdown_timeout = "2s"
        [programs.db]
        command = ["sh", "-c", "{deaf.format('db')}"]
        stop_timeout = "3s"
        [programs.api]
        command = ["sh", "-c", "{deaf.format('api')}"]
        stop_timeout = "3s"
        depends_on = {{ db = "started" }}
        [programs.worker]
        command = ["sh", "-c", "{deaf.format('worker')}"]
        stop_timeout = "3s"
        depends_on = {{ api = "started" }}
    """, pid1=PID1)
    init.wait_msg("worker-up", "worker")
    pids = [p.pid for p in processes_of(init)]
    start = time.monotonic()
    init.signal(signal.SIGTERM)
    code = init.wait(timeout=30)
    took = time.monotonic() - start
    assert code == 0
    assert any("shutdown_timeout (2s) reached" in e["msg"] for e in init.events())
    assert [pid for pid in pids if alive(pid)] == []
    print(f"shutdown with shutdown_timeout = 2s took {took:.2f}s")  # for SCENARIOS.md (pytest -s)
    # no upper bound in seconds (the figure is bench's): the 2s bound cut the chain short, so no
    # program was given its whole 3s stop_timeout
    assert not [e for e in init.events() if "still running 3s after SIGTERM" in e["msg"]], init.events()
