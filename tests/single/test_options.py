"""Single-command mode's command line and its start: usage errors, --success-exit,
--parent-death-signal, --verbose, signals sent during the start, and what it imports."""

import os
import signal
import subprocess

import pytest

from tests.helpers import ROOT
from tests.single.util import HIVE, UNSHARE, children, kill_tree, until


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([HIVE, *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, **kwargs)


@pytest.mark.parametrize("args", [["run", "--"], ["run", "-v", "--"], ["-s", "/nonexistent.sock", "run", "--"]])
def test_nothing_after_the_double_dash_is_a_usage_error(args):
    out = run(*args)
    assert (out.returncode, out.stderr) == (2, "hive-init: run: a command is missing after --\n")


@pytest.mark.parametrize("args,message", [
    (["-e", "300"], "--success-exit 300: expected an exit status from 0 to 255"),
    (["-p", "NOPE"], "--parent-death-signal NOPE: expected a signal name like \"TERM\" or \"SIGINT\" (got 'NOPE')"),
    (["-r", "TERM:RTMIN+99"], "--rewrite TERM:RTMIN+99: expected a signal name"),
])
def test_a_bad_option_value_says_which(args, message):
    out = run("run", *args, "--", "true")
    assert out.returncode == 2 and out.stderr.startswith(f"hive-init: {message}"), out.stderr


@pytest.mark.parametrize("codes,script,status", [
    (["3"], "exit 3", 0),
    (["3", "4"], "exit 4", 0),
    (["3"], "exit 5", 5),
    (["143"], "kill $$", 0),  # as tini -e: after 128+N
])
def test_success_exit_counts_a_status_as_success(codes, script, status):
    args = [a for code in codes for a in ("--success-exit", code)]
    assert run("run", *args, "--", "sh", "-c", script).returncode == status


def test_parent_death_signal_is_forwarded_when_our_parent_dies(tmp_path):
    got = tmp_path / "got"
    child = f"trap 'echo USR1 > {got}; exit 0' USR1; echo ready; while :; do sleep 0.05; done"
    # the parent: a shell that starts hive-init in the background and exits when its stdin closes
    parent = subprocess.Popen(["sh", "-c", f'{HIVE} run -p USR1 -- sh -c "{child}" & read x'],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert parent.stdout.readline().strip() == "ready"
        parent.stdin.close()  # the parent exits: the kernel sends hive-init USR1, forwarded
        until(lambda: got.exists() and got.read_text().strip() == "USR1", what="the child's USR1")
    finally:
        kill_tree(parent)


def test_verbose_logs_each_forwarded_signal():
    proc = subprocess.Popen([HIVE, "run", "-v", "-r", "HUP:0", "--", "sh", "-c", "trap 'exit 0' USR1; echo ready; "
                             "while :; do sleep 0.05; done"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGHUP)
        os.kill(proc.pid, signal.SIGUSR1)
        assert proc.wait(20) == 0
        err = proc.stderr.read()
        assert "hive-init: SIGHUP dropped (--rewrite)\n" in err
        assert f"hive-init: forwarded SIGUSR1 to process group {started_pid(err)}\n" in err
    finally:
        kill_tree(proc)


def started_pid(err: str) -> str:
    return err.split(" as pid ", 1)[1].split()[0]


def start_places() -> list:
    out = [pytest.param([], id="subreaper")]
    if ROOT:
        out.append(pytest.param(UNSHARE, id="pid1", marks=pytest.mark.pid1))
    return out


@pytest.mark.parametrize("prefix", start_places())
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGSEGV])
def test_a_signal_sent_during_the_start_is_not_lost(prefix, signum):
    """Sent the moment the process exists, before Python has even read hive-init's first line:
    blocked from that line on, then forwarded (sleep dies of it: 128+N); never dropped (PID 1)
    nor taking hive-init down (not PID 1)."""
    proc = subprocess.Popen(prefix + [HIVE, "run", "--", "sleep", "300"], stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        pid = until(lambda: next(iter(children(proc.pid)), None)) if prefix else proc.pid

        seen: dict[str, object] = {}  # the last look, said if the wait fails

        def sent() -> bool:  # once hive-init has blocked it (before that, its default would apply)
            # Blocked shows in SigBlk until hive-init waits in sigwaitinfo: for the wait, the
            # kernel takes what it waits for out of the mask (/proc then shows none blocked), so
            # a look that comes late (a busy machine) sees it there instead.
            try:
                seen["exe"] = os.readlink(f"/proc/{pid}/exe")
                if "python" not in os.path.basename(str(seen["exe"])):
                    return False  # still unshare's fork (it blocks TERM and INT around its fork)
                with open(f"/proc/{pid}/status") as f:
                    status = {k: v.strip() for k, _, v in (line.partition(":") for line in f)}
                seen.update({k: status.get(k) for k in ("State", "SigBlk", "SigPnd", "ShdPnd")})
                blk = status["SigBlk"]
                with open(f"/proc/{pid}/wchan") as f:
                    seen["wchan"] = f.read()
            except (OSError, KeyError) as e:
                seen["error"] = repr(e)
                return False
            if int(blk, 16) & (1 << (signum - 1)) or "sigtimedwait" in str(seen["wchan"]):
                os.kill(pid, signum)
                return True
            return False

        try:
            until(sent, what="hive-init blocking signals")
        except AssertionError as e:
            raise AssertionError(f"{e}; last seen of pid {pid}: {seen}; unshare exit: {proc.poll()}") from None
        assert proc.wait(30) == 128 + signum
    finally:
        kill_tree(proc)


def test_the_lean_path_imports_no_event_loop_nor_config():
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    out = subprocess.run([HIVE, "run", "--", "true"], capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    heavy = {m for m in imported if m.split(".")[0] in ("asyncio", "anyio", "uvicorn", "argparse", "subprocess",
                                                        "threading", "selectors")
             or m.startswith("hive_init.config") or m in ("hive_init.log", "hive_init.runtime.supervisor")}
    assert not heavy
    assert "hive_init.runtime.single" in imported
