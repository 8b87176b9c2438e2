"""Shutdown order as supervisord users rely on it: reverse priority a level at a time, combined
with depends_on, within one shutdown_timeout; `hive-init check` warns when a stop chain cannot fit.
Real processes: each stand-in writes a line when TERM reaches it and when it has finished draining."""

import signal
import subprocess
import sys
import textwrap

from tests.helpers import Init


def _drainer(name: str, drain: str = "0") -> str:
    # on TERM: say so, keep working for `drain` seconds (a drain), say so, exit
    return (f'["sh", "-c", "trap \'echo {name}-term; sleep {drain}; echo {name}-drained; exit 0\' TERM; '
            f'echo {name}-up; while :; do sleep 0.05; done"]')


def _stream(init: Init) -> list[str]:
    return [e["msg"] for e in init.lines if e.get("stream") and e["msg"].endswith(("-term", "-drained"))]


def test_a_database_outlives_the_apps_drain(start_init):
    init = start_init(f"""
        [programs.db]
        command = {_drainer("db")}
        priority = 1
        [programs.app]
        command = {_drainer("app", "0.5")}
        priority = 999
        [programs.web]
        command = {_drainer("web", "0.2")}
        priority = 999
    """)
    for name in ("db", "app", "web"):
        init.wait_msg(f"{name}-up", name)
    init.signal(signal.SIGTERM)
    assert init.wait() == 0
    order = _stream(init)
    # the 999 level stops together; the database is told only once both are down
    assert set(order[:2]) == {"app-term", "web-term"}
    assert order.index("db-term") > order.index("app-drained")
    assert order.index("db-term") > order.index("web-drained")


def test_levels_combine_with_depends_on(start_init):
    # worker depends on cache (priority 10) but has priority 1 itself: depends_on wins, the worker
    # stops with cache's level, before it; queue (priority 5) stops after both
    init = start_init(f"""
        [programs.cache]
        command = {_drainer("cache")}
        priority = 10
        [programs.worker]
        command = {_drainer("worker", "0.3")}
        priority = 1
        depends_on = {{ cache = "started" }}
        [programs.queue]
        command = {_drainer("queue")}
        priority = 5
    """)
    init.wait_msg("worker-up", "worker")
    init.wait_msg("queue-up", "queue")
    init.signal(signal.SIGTERM)
    assert init.wait() == 0
    order = [m for m in _stream(init) if m.endswith("-term")]
    assert order == ["worker-term", "cache-term", "queue-term"]


def test_the_levels_share_one_shutdown_timeout(start_init):
    # the app ignores TERM: it is killed when the whole shutdown_timeout is spent, and the database
    # (waiting for the app's level) is then killed too, not given a grace of its own
    init = start_init(f"""
        [init]
        shutdown_timeout = "1s"
        [programs.db]
        command = {_drainer("db")}
        priority = 1
        [programs.app]
        command = ["sh", "-c", "trap '' TERM; echo app-up; while :; do sleep 0.05; done"]
        priority = 999
        stop_timeout = "30s"
    """)
    init.wait_msg("app-up", "app")
    init.wait_msg("db-up", "db")
    init.signal(signal.SIGTERM)
    assert init.wait() == 0
    assert init.wait_msg("shutdown_timeout (1s) reached", timeout=1)
    assert "db-term" not in _stream(init)


def _check(tmp_path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "check.toml"
    path.write_text(textwrap.dedent(text))
    return subprocess.run([sys.executable, "-m", "hive_init", "check", str(path)], capture_output=True, text=True)


def test_check_warns_when_a_stop_chain_cannot_fit(tmp_path):
    out = _check(tmp_path, """
        [programs.db]
        command = ["db"]
        priority = 1
        stop_timeout = "20s"
        [programs.app]
        command = ["app"]
        priority = 999
        stop_timeout = "10s"
    """)
    assert out.returncode == 0
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert "programs.db.stop_timeout" in lines[0] and "app 10s -> db 20s = 30s" in lines[0]
    assert "shutdown_timeout (25s)" in lines[0]


def test_check_is_quiet_when_the_chain_fits(tmp_path):
    out = _check(tmp_path, """
        [init]
        shutdown_timeout = "31s"
        [programs.db]
        command = ["db"]
        priority = 1
        stop_timeout = "20s"
        [programs.app]
        command = ["app"]
        priority = 999
        stop_timeout = "10s"
    """)
    assert out.returncode == 0 and out.stderr == ""
