"""Resources that are not there: a port someone else holds, a binary or directory that does not
exist, a program that exits at once forever, a log file that cannot be written. Each gives clear
log lines, the backoff applies (no busy loop: the init's own CPU time stays low), and what can
still run, runs."""

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos.util import cpu_seconds, wait_until
from tests.helpers import ROOT

BIND = ("import socket, sys, time\n"
        "s = socket.socket()\n"
        "s.bind(('127.0.0.1', int(sys.argv[1])))\n"
        "s.listen()\n"
        "print('listening', flush=True)\n"
        "time.sleep(300)\n")


def backoff_delays(init, name: str) -> list[float]:
    return [float(e["msg"].rsplit("restarting in ", 1)[1].rstrip("s"))
            for e in init.events(name) if e["msg"].startswith("backoff")]


def test_a_port_already_taken_backs_off_then_fatal_then_runs_once_freed(start_init, tmp_path):
    script = tmp_path / "bind.py"
    script.write_text(BIND)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    init = start_init(f"""
        [programs.web]
        command = ["{sys.executable}", "{script}", "{port}"]
        max_restarts = 3
        backoff = {{ initial = "100ms", factor = 2 }}
        [programs.steady]
        command = ["sleep", "300"]
    """)
    init.wait_state("steady", "READY")
    pid = init.init_pid
    cpu_before = cpu_seconds(pid)
    fatal = init.wait_state("web", "FATAL", timeout=30)
    cpu = cpu_seconds(pid) - cpu_before
    holder.close()
    assert fatal["restarts"] == 3 and fatal["last_exit"] == 1
    assert "3 restarts within 60s (max_restarts = 3)" in fatal["reason"]
    assert backoff_delays(init, "web") == [0.1, 0.2, 0.4]
    # the reason is in the log, as the program said it: once per attempt
    assert sum("Address already in use" in line for line in init.output("web")) == 4
    print(f"port taken: init CPU {cpu:.2f}s")  # for SCENARIOS.md (pytest -s)
    assert cpu < 1.0, f"the init used {cpu:.2f}s of CPU while web crash-looped"
    assert init.program("steady")["state"] == "READY"
    # the operator frees the port and starts it again: it runs
    assert init.ctl("start", "web").returncode == 0
    init.wait_msg("listening", "web")
    assert init.wait_state("web", "READY")["restarts"] == 3  # a count since the init started: no new restart
    assert init.stop() == 0


def test_missing_binary_missing_directory_and_a_program_that_exits_at_once_back_off(start_init, tmp_path):
    """Three programs failing in a loop with max_restarts = -1 (never FATAL): each one's attempts
    follow its backoff (the delays the init reports, not a count in a wall-clock window), and the
    init's own CPU stays low."""
    init = start_init(f"""
        [programs.missing]
        command = ["/nonexistent/bin/server", "--port", "1"]
        max_restarts = -1
        backoff = {{ initial = "50ms", max = "400ms" }}
        [programs.nowhere]
        command = ["sleep", "300"]
        directory = "{tmp_path / 'not-there'}"
        max_restarts = -1
        backoff = {{ initial = "50ms", max = "400ms" }}
        [programs.quitter]
        command = ["true"]
        restart = "always"
        max_restarts = -1
        backoff = {{ initial = "50ms", max = "400ms" }}
        [programs.steady]
        command = ["sleep", "300"]
    """)
    init.wait_state("steady", "READY")
    pid = init.init_pid
    cpu_before = cpu_seconds(pid)
    for name in ("missing", "nowhere", "quitter"):
        wait_restarts(init, name, 6, timeout=60)
    cpu = cpu_seconds(pid) - cpu_before
    # 50+100+200+400+400+… ms, as the init reports each delay
    status = {p["name"]: p for p in init.status()["programs"]}
    for name in ("missing", "nowhere", "quitter"):
        delays = backoff_delays(init, name)
        assert delays[:5] == [0.05, 0.1, 0.2, 0.4, 0.4], (name, delays)
    assert status["missing"]["last_exit"] == 127 and status["nowhere"]["last_exit"] == 126
    assert status["quitter"]["last_exit"] == 0
    print(f"restart loops: {[status[n]['restarts'] for n in ('missing', 'nowhere', 'quitter')]} restarts, "
          f"init CPU {cpu:.2f}s")  # for SCENARIOS.md (pytest -s)
    # the init's own CPU time (not wall time, so load elsewhere does not count) for ~20 restarts
    assert cpu < 1.0, f"the init used {cpu:.2f}s of CPU for {sum(status[n]['restarts'] for n in status)} restarts"
    messages = [e["msg"] for e in init.events()]
    assert "cannot start: cannot execute '/nonexistent/bin/server': no such file or directory" in messages
    assert f"cannot start: cannot start 'sleep': directory '{tmp_path / 'not-there'}' does not exist" in messages
    assert status["steady"]["state"] == "READY" and status["steady"]["restarts"] == 0
    assert init.stop() == 0


def wait_restarts(init, name: str, count: int, timeout: float) -> None:
    def restarted() -> bool:
        assert init.proc.poll() is None, f"the init died (status {init.proc.returncode}): {init.raw[-1]}"
        return init.program(name)["restarts"] >= count

    wait_until(restarted, timeout, f"{count} restarts of {name}", interval=0.1)


def test_a_program_that_crash_loops_for_ever_does_not_take_the_init_down(start_init):
    # max = "10ms" caps the delay, so the loop is fast; the exponent is what overflows
    init = start_init("""
        [programs.crasher]
        command = ["false"]
        max_restarts = -1
        backoff = { initial = "1ms", max = "10ms", factor = 1000 }
        [programs.steady]
        command = ["sleep", "300"]
    """)
    init.wait_state("steady", "READY")
    wait_restarts(init, "crasher", 120, timeout=60)
    assert init.stop() == 0


@pytest.mark.soak
def test_1100_restarts_in_a_row_with_the_default_factor(start_init):
    init = start_init("""
        [programs.crasher]
        command = ["false"]
        max_restarts = -1
        backoff = { initial = "1ms", max = "2ms" }
        [programs.steady]
        command = ["sleep", "300"]
    """)
    init.wait_state("steady", "READY")
    wait_restarts(init, "crasher", 1100, timeout=300)
    assert init.stop() == 0


@contextlib.contextmanager
def read_only_dir(path: Path):
    """A directory nobody can create files in: a read-only tmpfs as root (root ignores modes),
    mode 0555 otherwise."""
    path.mkdir()
    if ROOT:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True).returncode:
            pytest.skip("cannot mount a read-only tmpfs here")
        try:
            yield "Read-only file system"
        finally:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
    else:
        path.chmod(0o555)
        try:
            yield "Permission denied"
        finally:
            path.chmod(0o755)


def test_an_unwritable_log_file_is_reported_once_and_output_still_reaches_stdout(start_init, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    with read_only_dir(tmp_path / "ro") as ro_error:
        init = start_init(f"""
            [programs.ro]
            command = ["sh", "-c", "for i in 1 2 3 4 5; do echo ro-line-$i; done; exec sleep 300"]
            log_file = "{tmp_path / 'ro' / 'sub' / 'ro.log'}"
            [programs.notdir]
            command = ["sh", "-c", "for i in 1 2 3 4 5; do echo notdir-line-$i; done; exec sleep 300"]
            log_file = "{blocker / 'notdir.log'}"
        """)
        init.wait_msg("ro-line-5", "ro")
        init.wait_msg("notdir-line-5", "notdir")
        errors = [e for e in init.events() if e["msg"].startswith("cannot write log file")]
        # one clear error per file (not one per line), naming the file and why
        assert sorted(e["path"] for e in errors) == sorted([str(tmp_path / "ro" / "sub" / "ro.log"),
                                                           str(blocker / "notdir.log")])
        reasons = {e["path"]: e["error"] for e in errors}
        assert reasons[str(tmp_path / "ro" / "sub" / "ro.log")] == ro_error
        assert reasons[str(blocker / "notdir.log")] == "a parent of the path is not a directory"
        assert all(e["level"] == "error" for e in errors)
        print("log file errors:", [(e["path"], e["error"]) for e in errors])  # for SCENARIOS.md (pytest -s)
        assert init.output("ro") == [f"ro-line-{i}" for i in range(1, 6)]
        assert init.output("notdir") == [f"notdir-line-{i}" for i in range(1, 6)]
        assert init.program("ro")["state"] == "READY" and init.program("notdir")["state"] == "READY"
        # USR1 (after logrotate) tries again, and says so again if it still fails
        init.signal(10)
        init.wait_msg("log files reopened")
        init.ctl("signal", "ro", "USR1")  # sh dies of USR1 and is restarted: new lines, a new attempt
        init.wait_for(lambda e: e.get("target") == "ro" and e["msg"].startswith("backoff"), what="ro's restart")
        wait_until(lambda: init.output("ro").count("ro-line-5") == 2, 10, "ro's second run")
        wait_until(lambda: len([e for e in init.events() if e["msg"].startswith("cannot write log file")]) == 3, 10,
                   "a second report for ro.log")
        assert init.stop() == 0
        assert not os.path.exists(blocker / "notdir.log")
