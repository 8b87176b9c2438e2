"""hive-init's single-command mode beside tini and dumb-init on the same inputs: what a user
observes (exit statuses, the signals the child receives, the child's SigBlk/SigIgn, a nohup'd
HUP, what is left of the child's group), as PID 1 of a new PID namespace and not."""

import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.single.util import FAULTS, FORWARDABLE, INITS, UNSHARE, children, kill_tree, peers_or_skip, proc_state, until

pytestmark = pytest.mark.usefixtures("_peers")


@pytest.fixture
def _peers():
    peers_or_skip()


def places() -> list:
    out = [pytest.param(False, id="subreaper")]
    if ROOT:
        out.append(pytest.param(True, id="pid1", marks=pytest.mark.pid1))
    return out


def command(init: str, pid1: bool, argv: list[str]) -> list[str]:
    return (UNSHARE if pid1 else []) + INITS[init] + argv


def init_pid(proc: subprocess.Popen, pid1: bool) -> int:
    """The init itself: Popen's process, or unshare's child (PID 1 inside)."""
    if not pid1:
        return proc.pid
    return until(lambda: next(iter(children(proc.pid)), None), what="the init inside the namespace")


# A child that reports each signal it gets on stdout, then goes on waiting: every signal blocked
# and taken by sigwaitinfo (a handler + pause() loses a signal that lands just before pause()).
CATCHER = (
    "import signal\n"
    "wanted = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, wanted)\n"
    "print('ready', flush=True)\n"
    "while True: print('got', signal.sigwaitinfo(wanted).si_signo, flush=True)\n"
)


def start_catcher(init: str, pid1: bool) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(command(init, pid1, [sys.executable, "-c", CATCHER]), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc, init_pid(proc, pid1)


def received(init: str, pid1: bool, signals: list[int]) -> list[int]:
    """Each signal sent to the init in turn; those the child reported (the init still alive)."""
    proc, pid = start_catcher(init, pid1)
    got = []
    try:
        for signum in signals:
            if signum in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU) and init == "dumb-init":
                continue  # dumb-init stops itself after forwarding these: a job-control test's matter
            if proc.poll() is not None:
                break
            os.kill(pid, signum)
            line = proc.stdout.readline().strip()
            if line == f"got {signum}":
                got.append(signum)
            else:
                break  # the init died (and its child with it: its stdout closed)
    finally:
        kill_tree(proc)
    return got


@pytest.mark.parametrize("pid1", places())
def test_every_signal_1_to_31_reaches_the_child_as_with_dumb_init(pid1):
    classic = [s for s in FORWARDABLE if s < 32 and s not in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)]
    assert received("hive-init", pid1, classic) == classic
    assert received("dumb-init", pid1, classic) == classic


@pytest.mark.parametrize("pid1", places())
def test_real_time_signals_reach_the_child_as_with_tini(pid1):
    realtime = [signal.SIGRTMIN, signal.SIGRTMIN + 1, signal.SIGRTMAX - 1, signal.SIGRTMAX]
    assert received("hive-init", pid1, realtime) == realtime == received("tini", pid1, realtime)


@pytest.mark.parametrize("pid1", places())
def test_a_fault_signal_sent_by_kill_is_forwarded_not_taken_for_our_own(pid1):
    """SIGSEGV & co. sent with kill(2): dumb-init forwards them, and so do we, PID 1 or not
    (tini as a plain process dies of them and orphans its child)."""
    assert received("hive-init", pid1, FAULTS) == FAULTS
    assert received("dumb-init", pid1, FAULTS) == FAULTS


LAUNCH = (
    # the caller: blocks USR1 and WINCH, ignores HUP and USR2, then execs the init (SIGPIPE and
    # SIGXFSZ back to their default first: Python's own start ignores them, nobody's caller)
    "import os, signal, sys\n"
    "signal.signal(signal.SIGPIPE, signal.SIG_DFL); signal.signal(signal.SIGXFSZ, signal.SIG_DFL)\n"
    "signal.signal(signal.SIGHUP, signal.SIG_IGN); signal.signal(signal.SIGUSR2, signal.SIG_IGN)\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGWINCH})\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)
SHOW_MASKS = ["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]  # not through sh: dash resets its mask


@pytest.mark.parametrize("pid1", places())
def test_the_child_gets_the_callers_blocked_and_ignored_signals_as_with_tini(pid1):
    """tini's sigconf check: the child's SigBlk and SigIgn are the caller's, whatever the init
    blocks or ignores for itself."""
    def masks(init: str) -> str:
        out = subprocess.run([sys.executable, "-c", LAUNCH, *command(init, pid1, SHOW_MASKS)], capture_output=True,
                             text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stderr
        return out.stdout

    ours = masks("hive-init")
    blocked = 1 << (signal.SIGUSR1 - 1) | 1 << (signal.SIGWINCH - 1)
    ignored = 1 << (signal.SIGHUP - 1) | 1 << (signal.SIGUSR2 - 1)
    assert ours == f"SigBlk:\t{blocked:016x}\nSigIgn:\t{ignored:016x}\n"
    assert ours == masks("tini")


def test_a_nohup_child_survives_the_hup_it_ignores_as_with_tini(tmp_path):
    def survives(init: str) -> str:
        out = subprocess.run(["nohup", *INITS[init], "sh", "-c", "kill -HUP $$; echo survived"], capture_output=True,
                             text=True, timeout=30, cwd=tmp_path, stdin=subprocess.DEVNULL)
        return f"{out.returncode} {out.stdout.strip()}"

    assert survives("hive-init") == "0 survived" == survives("tini")


@pytest.mark.parametrize("pid1", places())
@pytest.mark.parametrize("status", [0, 3, 255])
def test_exit_statuses_and_128_plus_n_match_tini_and_dumb_init(pid1, status):
    for argv in (["sh", "-c", f"exit {status}"], ["sh", "-c", "kill -USR1 $$"]):
        codes = {init: subprocess.run(command(init, pid1, argv), capture_output=True, timeout=30).returncode
                 for init in INITS}
        assert len(set(codes.values())) == 1, codes


LEAVER = "sleep 300 & echo $!; exit 7"
# the leftover ignores TERM, and is sleeping (TERM ignored through its exec) before the child exits
STUBBORN = ("sh -c \"trap '' TERM; exec sleep 301\" & p=$!; "
            "until readlink /proc/$p/exe | grep -q sleep; do :; done; echo $p; exit 7")


def leftover(init: str, pid1: bool, script: str) -> tuple[int, bool]:
    """The child exits, leaving a process in its group: our status, and whether it survived."""
    proc = subprocess.Popen(command(init, pid1, ["sh", "-c", script]), stdout=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        pid_inside = int(proc.stdout.readline())
        status = proc.wait(30)
        if pid1:  # the namespace is gone with its PID 1: everything in it was killed
            return status, False
        # dumb-init exits as soon as it has sent TERM: give the leftover time to die of it
        try:
            until(lambda: proc_state(pid_inside) in (None, "Z"), timeout=3, what="the leftover gone")
            alive = False
        except AssertionError:
            alive = True
        if alive:
            os.kill(pid_inside, signal.SIGKILL)
        return status, alive
    finally:
        kill_tree(proc)


@pytest.mark.parametrize("pid1", places())
def test_the_rest_of_the_group_gets_term_when_the_child_exits_as_with_dumb_init(pid1):
    assert leftover("hive-init", pid1, LEAVER) == (7, False) == leftover("dumb-init", pid1, LEAVER)


def test_what_ignores_term_in_the_group_is_killed_after_the_grace():
    """dumb-init leaves it running; we KILL it after GROUP_GRACE: nothing of the child outlives us."""
    assert leftover("hive-init", False, STUBBORN) == (7, False)
    assert leftover("dumb-init", False, STUBBORN) == (7, True)
