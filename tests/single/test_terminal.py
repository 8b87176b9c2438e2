"""Single-command mode on a real terminal (a pty): interactive shells start, job control works.

Through `script` (the issue's own reproduction) and through Python's pty module for keys."""

import os
import signal
import subprocess

import pytest

from tests.single.util import HIVE, Terminal, children, proc_state, script_available, until

pytestmark = pytest.mark.skipif(not script_available(), reason="needs script(1) from util-linux")

INTERACTIVE = f"{HIVE} run -- bash --norc -i -c 'exit 0'"


def interactive_starts(tries: int) -> list[int]:
    """`script -qec "hive-init run -- bash -i -c 'exit 0'" /dev/null`, `tries` times; the tries
    that did not end (a hang is a child stopped by SIGTTOU/SIGTTIN at its start)."""
    hung = []
    for i in range(tries):
        proc = subprocess.Popen(["script", "-qec", INTERACTIVE, "/dev/null"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            if proc.wait(30) != 0:
                hung.append(i)
        except subprocess.TimeoutExpired:
            hung.append(i)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return hung


def test_an_interactive_shell_starts_every_time():
    assert interactive_starts(20) == []


@pytest.mark.soak
def test_an_interactive_shell_starts_every_time_soak():
    assert interactive_starts(200) == []


def test_under_a_job_control_shell_an_interactive_child_never_hangs():
    """`bash -m`: the caller is a job-control shell that puts us in a foreground job of our own."""
    script = "; ".join([f"{HIVE} run -- bash --norc -i -c 'exit 3'; echo rc=$?"] * 10)
    term = Terminal(["bash", "--norc", "-m", "-c", script])
    try:
        status = term.wait(60)
        assert status == 0, term.screen[-2000:]
        assert term.screen.count(b"rc=3") == 10
    finally:
        term.close()


def hive_and_child(shell: int) -> tuple[int, int]:
    """hive-init (the shell's child) and its child, once both run."""
    hive = until(lambda: next(iter(children(shell)), None), what="hive-init started by the shell")
    child = until(lambda: next(iter(children(hive)), None), what="hive-init's child")
    until(lambda: os.path.realpath(f"/proc/{child}/exe").endswith("sleep"), what="the child exec'd sleep")
    return hive, child


def test_ctrl_z_stops_the_job_fg_continues_it_ctrl_c_ends_it():
    term = Terminal(["bash", "--norc", "--noprofile", "-i"])
    try:
        term.expect(b"$ ")
        term.send(f"{HIVE} run -- sleep 300\n".encode())
        hive, child = hive_and_child(term.pid)
        term.send(b"\x1a")  # Ctrl-Z: the terminal sends TSTP to the foreground group, the child's
        term.expect(b"Stopped")
        assert until(lambda: proc_state(hive) == "T" and proc_state(child) == "T", what="both stopped")
        term.send(b"echo shell-is-back\n")
        term.expect(b"shell-is-back\r\n")
        term.send(b"fg\n")
        until(lambda: proc_state(child) in ("S", "R") and proc_state(hive) in ("S", "R"), what="both running")
        # the child has the terminal again: Ctrl-C reaches it (sleep dies of INT: 130)
        until(lambda: os.tcgetpgrp(term.fd) == child, what="the child back in the terminal's foreground")
        term.send(b"\x03")
        until(lambda: proc_state(hive) is None, what="hive-init exited")
        term.send(b"echo rc=$?\n")
        term.expect(b"rc=130")
    finally:
        term.close()


def test_a_background_read_stops_the_job_and_fg_gives_it_the_terminal():
    """`hive-init run -- cat &`: cat reads the terminal from the background (SIGTTIN), the job is
    reported stopped; `fg` gives cat the terminal and it reads."""
    term = Terminal(["bash", "--norc", "--noprofile", "-i"])
    try:
        term.expect(b"$ ")
        term.send(f"{HIVE} run -- head -n1 &\n".encode())
        term.expect(b"$ ")
        hive = until(lambda: next(iter(children(term.pid)), None), what="hive-init")
        until(lambda: proc_state(hive) == "T", what="the job stopped by the background read")
        term.send(b"fg\n")
        child = until(lambda: next(iter(children(hive)), None), what="the child")
        until(lambda: os.tcgetpgrp(term.fd) == child, what="the child in the terminal's foreground")
        term.send(b"a line for head\n")
        until(lambda: proc_state(hive) is None, what="hive-init exited after head")
        term.send(b"echo rc=$?\n")
        term.expect(b"rc=0")
    finally:
        term.close()
