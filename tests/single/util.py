"""What the single-command tests share: the three inits side by side (hive-init's console script,
tini, dumb-init), a real pseudo-terminal, and waits with deadlines (never a bare sleep)."""

import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tests.helpers import wait_until

T = TypeVar("T")

# the installed console script, as users (and Docker's ENTRYPOINT) run it
HIVE = str(Path(sys.executable).parent / "hive-init")
TINI = "/usr/bin/tini"
DUMB = "/usr/bin/dumb-init"
HAVE_PEERS = os.access(TINI, os.X_OK) and os.access(DUMB, os.X_OK)
# The same duty in each: CMD in a process group of its own, signals to that group, as a
# subreaper when not PID 1 (tini: -s -g; dumb-init does both by default).
INITS = {
    "hive-init": [HIVE, "run", "--"],
    "tini": [TINI, "-s", "-g", "--"],
    "dumb-init": [DUMB, "--"],
}
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
FORWARDABLE = sorted(s for s in signal.valid_signals()
                     if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD))
FAULTS = [signal.SIGILL, signal.SIGTRAP, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGSEGV, signal.SIGSYS]


def until(predicate: Callable[[], T], timeout: float = 20, what: str = "") -> T:
    """tests.helpers.wait_until checked every 10 ms: the single-mode tests wait for short windows
    (a signal's delivery, a child's exit)."""
    value: T = wait_until(predicate, timeout, what, interval=0.01)
    return value


def proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()[0]


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def status_masks(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f) if k in ("SigBlk", "SigIgn")}


class Terminal:
    """A command on a real pseudo-terminal (its controlling terminal, as `docker run -it` gives):
    keys are written to the master side, the screen is read from it."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: exec at once (nothing else runs between fork and exec)
            try:
                os.execvpe(argv[0], argv, {**os.environ, "TERM": "dumb", "PS1": "$ ", **(env or {})})
            finally:
                os._exit(127)
        self.screen = b""
        self.status: int | None = None

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: every process holding the slave side has gone
            return False
        if not data:
            return False
        self.screen += data
        return True

    def expect(self, text: bytes, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(min(left, 0.2)):
                if text in self.screen:
                    return
                raise AssertionError(f"{text!r} never appeared; screen: {self.screen[-2000:]!r}")

    def wait(self, timeout: float = 20) -> int | None:
        """The command's exit status, or None if it has not exited by the deadline (a hang)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read(0.05)  # keep the terminal drained: a full pty would block the command
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
        return None

    def close(self) -> None:
        if self.status is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)  # pty.fork made it a session (group) leader
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def peers_or_skip() -> None:
    import pytest

    if not HAVE_PEERS:
        pytest.skip("tini and dumb-init (/usr/bin) are needed for the differential tests")


def script_available() -> bool:
    return shutil.which("script") is not None


def kill_tree(proc: subprocess.Popen) -> None:
    """The test's own leftovers (a failed assertion must not leave anything running)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
