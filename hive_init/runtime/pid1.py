"""The PID-1 duties: becoming a subreaper when not PID 1, and the one reaper.

Only the reaper ever waits for a child. It peeks at an exited child with WNOWAIT, lets the
child's owner react while the zombie still holds its PID (so the owner can signal the old
process group without any risk of PID reuse), and only then reaps it.
"""

import os
from collections.abc import Callable

PR_SET_CHILD_SUBREAPER = 36

ExitHandler = Callable[[int], None]


def become_subreaper() -> None:
    """Orphans of our children come to us instead of to the real PID 1 (tests, `docker run --init`)."""
    if os.getpid() == 1:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def exit_code(info: os.waitid_result) -> int:
    """A process's exit as one number: its status, or minus the signal that killed it."""
    if info.si_code == os.CLD_EXITED:
        return info.si_status
    return -info.si_status


def describe_exit(code: int) -> str:
    import signal

    if code >= 0:
        return f"exit status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


class Reaper:
    def __init__(self) -> None:
        self._owners: dict[int, ExitHandler] = {}
        self.reaped_total = 0
        self.orphans_reaped = 0

    def watch(self, pid: int, on_exit: ExitHandler) -> None:
        """`on_exit(code)` runs in the loop when `pid` exits, before it is reaped."""
        self._owners[pid] = on_exit

    def reap(self) -> None:
        """Everything that has exited: one SIGCHLD may stand for many exits."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            owner = self._owners.pop(pid, None)
            if owner is not None:
                try:
                    owner(exit_code(info))
                finally:
                    self._reap(pid)
            else:
                self._reap(pid)
                self.orphans_reaped += 1

    def _reap(self, pid: int) -> None:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        self.reaped_total += 1


# One reaper per process, as the kernel has one list of children per process.
reaper = Reaper()
