"""Single-command mode (`hive-init run -- CMD`), checked as tini's and dumb-init's users rely on it."""

import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import ROOT, wait_until

RUN = [sys.executable, "-m", "hive_init", "run", "--"]


def pid1_variants() -> list:
    variants = [pytest.param([], id="subreaper")]
    if ROOT:
        variants.append(pytest.param(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"], id="pid1", marks=pytest.mark.pid1))
    return variants


@pytest.mark.parametrize("prefix", pid1_variants())
@pytest.mark.parametrize("status", [0, 1, 2, 32, 64, 127, 254, 255])
def test_exit_status_passes_through(prefix, status):
    out = subprocess.run(prefix + RUN + ["sh", "-c", f"exit {status}"], capture_output=True, timeout=30)
    assert out.returncode == status


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGKILL])
def test_death_by_signal_is_128_plus_n(signum):
    out = subprocess.run(RUN + ["sh", "-c", f"kill -{int(signum)} $$"], capture_output=True, timeout=30)
    assert out.returncode == 128 + signum


def start(args, **kwargs):
    proc = subprocess.Popen(RUN + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs)
    assert proc.stdout.readline().strip() == "ready"
    return proc


# one process that reports every signal it gets (a shell would leave its `sleep` children stopped by TSTP)
CATCHER = (
    "import signal, sys\n"
    "names = 'HUP INT QUIT USR1 USR2 TERM WINCH ALRM TSTP TTIN TTOU'.split()\n"
    "for n in names: signal.signal(getattr(signal, 'SIG' + n), lambda s, f: print('got-' + signal.Signals(s).name[3:], flush=True))\n"
    "print('ready', flush=True)\n"
    "while True: signal.pause()\n"
)
TRAPS = [sys.executable, "-c", CATCHER]


@pytest.mark.parametrize("name", ["HUP", "INT", "QUIT", "USR1", "USR2", "TERM", "WINCH", "ALRM", "TSTP", "TTIN", "TTOU"])
def test_each_normal_signal_reaches_the_child(name):
    proc = start(TRAPS)
    try:
        os.kill(proc.pid, signal.Signals["SIG" + name])
        assert proc.stdout.readline().strip() == f"got-{name}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_pipeline_in_the_childs_group_all_ends_on_term(tmp_path):
    pids = tmp_path / "pids"
    proc = start(["sh", "-c", f"sleep 300 | sleep 301 & echo $! > {pids}; echo ready; wait"])
    pipeline = int(pids.read_text())
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 128 + signal.SIGTERM
    wait_until(lambda: str(pipeline) not in subprocess.run(["pgrep", "-f", "sleep 30[01]"], capture_output=True,
                                                           text=True).stdout.split(), 10, "the pipeline to end")


def test_rewrite_one_signal_into_another_or_drop_it():
    rewritten = subprocess.Popen([sys.executable, "-m", "hive_init", "run", "-r", "TERM:USR1", "-r", "HUP:0", "--", *TRAPS],
                                 stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert rewritten.stdout.readline().strip() == "ready"
        os.kill(rewritten.pid, signal.SIGHUP)   # dropped
        os.kill(rewritten.pid, signal.SIGTERM)  # delivered as USR1
        assert rewritten.stdout.readline().strip() == "got-USR1"
    finally:
        os.killpg(rewritten.pid, signal.SIGKILL)
        rewritten.wait()


def test_child_only_leaves_the_rest_of_the_group_alone(tmp_path):
    pids = tmp_path / "pids"
    proc = subprocess.Popen([sys.executable, "-m", "hive_init", "run", "--child-only", "--", "sh", "-c",
                             f"trap 'exit 0' TERM; sleep 300 & echo $! > {pids}; echo ready; while :; do sleep 0.02; done"],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0
        sleeper = int(pids.read_text())
        os.kill(sleeper, 0)  # still alive: only the child was signalled
        os.kill(sleeper, signal.SIGKILL)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None


@pytest.mark.parametrize("name,mode,status,message", [
    ("missing", None, 127, "no such file or directory"),
    ("not-executable", 0o644, 126, "permission denied"),
    ("garbage", 0o755, 126, "not an executable format"),
])
def test_a_bad_command_exits_with_its_reason(tmp_path, name, mode, status, message):
    path = tmp_path / name
    if mode is not None:
        path.write_bytes(b"\x00\x01 not a program")
        path.chmod(mode)
    out = subprocess.run(RUN + [str(path)], capture_output=True, text=True, timeout=30)
    message = f"cannot execute '{path}': {message}"
    assert out.returncode == status
    assert out.stderr == f"hive-init: {message}\n"


def test_bad_rewrite_is_a_usage_error():
    out = subprocess.run([sys.executable, "-m", "hive_init", "run", "-r", "TERM", "--", "true"], capture_output=True, text=True)
    assert out.returncode == 2 and "--rewrite TERM: expected FROM:TO" in out.stderr
