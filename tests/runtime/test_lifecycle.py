"""The supervisor's lifecycle as a user sees it: start order, restarts, FATAL, shutdown order,
exit statuses. Real processes; the init runs as PID 1 in a PID namespace where we are root."""

import os
import signal
import time

import pytest

from tests.helpers import ROOT, wait_until

REPEAT_WINDOW = 0.5  # hive_init/runtime/supervisor.py's: a second TERM sooner is the first one twice

PID1 = [pytest.param(False, id="subreaper")] + ([pytest.param(True, id="pid1", marks=pytest.mark.pid1)] if ROOT else [])


@pytest.mark.parametrize("pid1", PID1)
def test_term_stops_dependents_first_and_exits_0(start_init, pid1):
    init = start_init("""
        [programs.db]
        command = ["sh", "-c", "trap 'echo db-stopping; exit 0' TERM; echo db-up; while :; do sleep 0.05; done"]
        [programs.app]
        command = ["sh", "-c", "trap 'echo app-stopping; exit 0' TERM; echo app-up; while :; do sleep 0.05; done"]
        depends_on = { db = "started" }
        [programs.worker]
        command = ["sh", "-c", "trap 'echo worker-stopping; exit 0' TERM; echo worker-up; while :; do sleep 0.05; done"]
        depends_on = { app = "started" }
    """, pid1=pid1)
    init.wait_msg("worker-up", "worker")
    assert [e for e in init.output("db")][0] == "db-up"
    init.signal(signal.SIGTERM)
    assert init.wait() == 0
    stopped = [e["msg"] for e in init.lines if e.get("stream") and "stopping" in e["msg"]]
    assert stopped == ["worker-stopping", "app-stopping", "db-stopping"]
    starts = [e["target"] for e in init.events() if e["msg"] == "spawned"]
    assert starts == ["db", "app", "worker"]


@pytest.mark.parametrize("pid1", PID1)
def test_crash_loop_backs_off_then_fatal_and_critical_exits_nonzero(start_init, pid1):
    init = start_init("""
        [programs.flaky]
        command = ["sh", "-c", "echo boom; exit 3"]
        max_restarts = 3
        critical = true
        backoff = { initial = "50ms", factor = 2, max = "1s" }
    """, pid1=pid1)
    assert init.wait() == 1
    backoffs = [e for e in init.events("flaky") if e["msg"].startswith("backoff")]
    assert [b["msg"].split("restarting in ")[1] for b in backoffs] == ["0.05s", "0.1s", "0.2s"]
    fatal = init.wait_msg("fatal", "flaky")
    assert "3 restarts within 60s" in fatal["msg"]
    assert init.output("flaky").count("boom") == 4
    assert any("critical program flaky is FATAL" in e.get("reason", "") for e in init.events())


def test_non_critical_fatal_keeps_the_others_running(start_init):
    init = start_init("""
        [programs.flaky]
        command = ["false"]
        max_restarts = 1
        backoff = { initial = "10ms" }
        [programs.steady]
        command = ["sleep", "60"]
    """)
    init.wait_state("flaky", "FATAL")
    assert init.program("steady")["state"] == "READY"
    assert init.ctl("status").returncode == 1  # not everything that should be up is ready
    assert init.stop() == 0


def test_depends_on_ready_waits_for_the_readiness_probe(start_init, tmp_path):
    flag = tmp_path / "ready-flag"
    probes = tmp_path / "probes"  # the probe counts its runs, so the test can wait for a few failures
    init = start_init(f"""
        [programs.db]
        command = ["sleep", "60"]
        [programs.db.readiness]
        exec = ["sh", "-c", "echo >> {probes}; test -e {flag}"]
        period = "100ms"
        [programs.app]
        command = ["sh", "-c", "echo app-started; exec sleep 60"]
        depends_on = {{ db = "ready" }}
    """)
    init.wait_state("db", "RUNNING")
    app = init.wait_state("app", "STARTING")
    assert "waiting for db (ready)" in app["reason"]
    wait_until(lambda: probes.exists() and len(probes.read_text()) >= 3, 20, "three failed readiness probes")
    assert init.output("app") == []
    flag.touch()
    init.wait_msg("app-started", "app")
    assert init.program("db")["state"] == "READY"


def test_oneshot_completed_gates_and_a_failed_oneshot_blocks(start_init):
    init = start_init("""
        [programs.migrate]
        command = ["sh", "-c", "echo migrating; exit 0"]
        oneshot = true
        [programs.app]
        command = ["sleep", "60"]
        depends_on = { migrate = "completed" }
        [programs.bad-migration]
        command = ["sh", "-c", "exit 4"]
        oneshot = true
        [programs.blocked]
        command = ["sleep", "60"]
        depends_on = { bad-migration = "completed" }
    """)
    init.wait_state("app", "READY")
    assert init.program("migrate")["state"] == "EXITED"
    blocked = init.wait_state("blocked", "FATAL")
    assert "dependency bad-migration" in blocked["reason"] and "exit status 4" in blocked["reason"]
    assert init.program("blocked")["pid"] is None


def test_second_term_skips_the_grace(start_init):
    init = start_init("""
        [programs.stubborn]
        command = ["sh", "-c", "trap 'echo ignoring' TERM; echo up; while :; do sleep 0.05; done"]
        stop_timeout = "60s"
    """)
    init.wait_msg("up", "stubborn")
    init.signal(signal.SIGTERM)
    init.wait_msg("ignoring", "stubborn")
    init.signal(signal.SIGTERM)  # at once: the same request delivered twice (uv run, timeout, Ctrl-C)
    init.wait_msg("again at once: ignored")
    assert init.program("stubborn")["state"] == "STOPPING"  # a round trip: the init is still there
    # not synchronisation: the next TERM must come after the repeat window to count as a new request
    time.sleep(REPEAT_WINDOW + 0.1)
    init.signal(signal.SIGTERM)
    assert init.wait(timeout=20) == 0
    assert any("killing what is left" in e["msg"] for e in init.events())


def test_stop_timeout_kills_a_program_that_ignores_term(start_init):
    init = start_init("""
        [init]
        shutdown_timeout = "20s"
        [programs.stubborn]
        command = ["sh", "-c", "trap '' TERM; echo up; while :; do sleep 0.05; done"]
        stop_timeout = "300ms"
    """)
    init.wait_msg("up", "stubborn")
    init.signal(signal.SIGTERM)
    assert init.wait() == 0
    assert any("still running 0.3s after SIGTERM" in e["msg"] for e in init.events("stubborn"))


def test_shutdown_timeout_bounds_the_whole_shutdown(start_init):
    init = start_init("""
        [init]
        shutdown_timeout = "500ms"
        [programs.stubborn]
        command = ["sh", "-c", "trap '' TERM; echo up; while :; do sleep 0.05; done"]
        stop_timeout = "60s"
    """)
    init.wait_msg("up", "stubborn")
    init.signal(signal.SIGTERM)
    assert init.wait() == 0
    assert any("shutdown_timeout (0.5s) reached" in e["msg"] for e in init.events())


def test_restart_policies(start_init):
    init = start_init("""
        [programs.once-ok]
        command = ["true"]
        restart = "on-failure"
        [programs.once-bad]
        command = ["sh", "-c", "exit 2"]
        restart = "on-failure"
        max_restarts = 2
        backoff = { initial = "10ms" }
        [programs.expected]
        command = ["sh", "-c", "exit 5"]
        restart = "on-failure"
        exit_codes = [0, 5]
        [programs.never]
        command = ["sh", "-c", "exit 1"]
        restart = "never"
    """)
    assert init.wait_state("once-ok", "EXITED")["restarts"] == 0
    assert init.wait_state("once-bad", "FATAL")["restarts"] == 2
    assert init.wait_state("expected", "EXITED")["last_exit"] == 5
    never = init.wait_state("never", "FATAL")
    assert never["restarts"] == 0 and never["last_exit"] == 1


def test_a_program_that_cannot_be_executed_is_reported_and_backs_off(start_init):
    init = start_init("""
        [programs.missing]
        command = ["/nonexistent/binary"]
        max_restarts = 1
        backoff = { initial = "10ms" }
    """)
    fatal = init.wait_state("missing", "FATAL")
    assert fatal["last_exit"] == 127
    assert any("cannot execute '/nonexistent/binary': no such file or directory" in e["msg"]
               for e in init.events("missing"))


def test_leftovers_in_the_group_are_ended_when_the_main_process_exits(start_init, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    init = start_init(f"""
        [programs.parent]
        command = ["sh", "-c", "sleep 300 & echo $! > {pidfile}; sleep 0.2; exit 1"]
        restart = "never"
    """)
    init.wait_state("parent", "FATAL")
    grandchild = int(pidfile.read_text())

    def gone() -> bool:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, 5, "the end of the program's leftover child", interval=0.02)
