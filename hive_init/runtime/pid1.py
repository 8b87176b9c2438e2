"""The PID-1 duties: becoming a subreaper when not PID 1, and the one reaper.

Only the reaper ever waits for a child. It peeks at an exited child with WNOWAIT, lets the
child's owner react while the zombie still holds its PID (so the owner can signal the old
process group without any risk of PID reuse), and only then reaps it.
"""

import os
import signal as _signal
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    import anyio

# Faults: the kernel sends these to a thread that did something wrong, and then a handler that
# returns only makes the faulting instruction run again (Python's handler returns: the init would
# spin forever instead of crashing). So they stay blocked in every thread of the init: a real
# fault is then delivered with its default action anyway (the kernel unblocks it), and the same
# signal *sent* with kill(2) (SI_USER) waits, blocked, for the fault waiter to collect it.
FAULTS = frozenset((4, 5, 6, 7, 8, 11, 31))  # ILL, TRAP, ABRT, BUS, FPE, SEGV, SYS (x86/arm Linux)

# Every signal that can be caught. Not PID 1, each one has a handler (the supervisor's
# SignalQueue), if only to log it: its default action would kill the init. As PID 1 the kernel
# applies no default action, so a signal we have no use for is left at SIG_DFL and the kernel
# drops it at send: nothing queued, nothing woken (31,000 queued real-time signals cost the
# kernel seconds of its own time to hand out, one list walk each). The faults among them are
# the ones sent with kill(2): a fault of our own still kills the init (FAULTS above says how).
CATCHABLE = tuple(s for s in _signal.valid_signals() if s not in (_signal.SIGKILL, _signal.SIGSTOP))
# Python itself ignores these two (writes to a closed pipe give EPIPE instead); they stay so.
PYTHON_IGNORES = frozenset((_signal.SIGPIPE, _signal.SIGXFSZ))

ExitHandler = Callable[[int], None]


def become_subreaper() -> None:
    """Orphans of our children come to us instead of to the real PID 1 (tests, `docker run --init`)."""
    if os.getpid() == 1:
        return
    from hive_init.prctl import PR_SET_CHILD_SUBREAPER, prctl

    error = prctl(PR_SET_CHILD_SUBREAPER, 1)
    if error:
        raise OSError(error, f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(error)}")


def exit_code(info: os.waitid_result) -> int:
    """A process's exit as one number: its status, or minus the signal that killed it."""
    if info.si_code == os.CLD_EXITED:
        return info.si_status
    return -info.si_status


def signal_name(signum: int) -> str:
    """SIGTERM, SIGRTMIN+4, or the number: any signal can arrive, named or not."""
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        if signal.SIGRTMIN < signum < signal.SIGRTMAX:
            return f"SIGRTMIN+{signum - signal.SIGRTMIN}"
        return f"signal {signum}"


def describe_exit(code: int) -> str:
    return f"exit status {code}" if code >= 0 else f"killed by {signal_name(-code)}"


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


class SignalQueue:
    """Signals as a stream the init's loop reads, with none ever lost.

    asyncio learns of a signal from one byte its C handler writes to a socket; a storm of
    SIGCHLD (10,000 orphans) fills that socket and later bytes are dropped, a TERM among them.
    So the Python-level handler records each signal here too: it runs in the main thread before
    the loop reads the socket, and as long as bytes were dropped the socket is full, so the
    loop is woken anyway and finds every recorded signal. Kinds, not counts, matter: the kernel
    merges repeats of a signal as well.
    """

    def __init__(self, actions: Iterable[int]):
        """`actions`: the signals the init acts on. What else can be caught is handled here:
        recorded and yielded too (the caller logs and ignores it), or, as PID 1, left to the
        kernel to drop (CATCHABLE says why)."""
        self.pid1 = os.getpid() == 1
        self.actions = tuple(sorted(set(actions)))
        # Not PID 1, the rest get a plain handler only: one sigaction each, where the loop's
        # add_signal_handler costs ~0.13 ms a signal at start and again at exit (60 of them:
        # ~8 ms of every start and stop)
        self.others = () if self.pid1 else tuple(s for s in CATCHABLE if s not in self.actions)
        self.signals = self.actions + self.others
        self.pending: dict[int, None] = {}  # insertion-ordered set
        self._wake: anyio.Event | None = None

    def __enter__(self) -> "SignalQueue":
        import asyncio
        import signal

        loop = asyncio.get_running_loop()
        self._loop = loop
        for signum in self.actions:
            loop.add_signal_handler(signum, self._woken)
            signal.signal(signum, self._record)
        for signum in self.others:
            signal.signal(signum, self._record_other)
        if self.pid1:  # what we have no use for: the default, which the kernel never applies to PID 1
            for signum in set(CATCHABLE) - set(self.signals) - PYTHON_IGNORES:
                signal.signal(signum, signal.SIG_DFL)
        # a full socket is expected in a storm and handled above: no warning for each byte
        fd = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
        # Faults sent with kill(2) would kill a process that is not PID 1 even with a handler
        # (FAULTS says why): blocked, and collected by a thread. PID 1 needs none of that.
        blocked = set() if self.pid1 else set(FAULTS)
        # what `hive-init run` held back during its start arrives now; children inherit the mask
        # (spawn unblocks the faults around its fork: see unblock_faults)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(CATCHABLE) - blocked)
        if blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        self._waiter = None
        if blocked:
            import threading

            self._stop_waiter = False
            self._waiter = threading.Thread(target=self._wait_faults, args=(loop,), name="fault-signals",
                                            daemon=True)
            self._waiter.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import asyncio
        import signal

        loop = asyncio.get_running_loop()
        for signum in self.actions:
            loop.remove_signal_handler(signum)
        for signum in self.others:
            signal.signal(signum, signal.SIG_DFL)
        if self._waiter is not None and self._waiter.ident is not None:
            self._stop_waiter = True
            signal.pthread_kill(self._waiter.ident, signal.SIGSYS)  # wakes its sigwaitinfo
            self._waiter.join(1.0)

    def _wait_faults(self, loop: "asyncio.AbstractEventLoop") -> None:
        """A thread that does nothing but wait (no wake-up while none comes) for a fault signal
        sent by another process, and hands it to the loop like any other signal."""
        import signal

        while not self._stop_waiter:
            info = signal.sigwaitinfo(FAULTS)
            if self._stop_waiter:
                return
            try:
                loop.call_soon_threadsafe(self._sent, info.si_signo)
            except RuntimeError:  # the loop is closed: the init is exiting
                return

    def _sent(self, signum: int) -> None:
        self.pending[signum] = None
        self._woken()

    def _record(self, signum: int, _frame: object) -> None:
        self.pending[signum] = None

    def _record_other(self, signum: int, _frame: object) -> None:
        """A signal the loop has no handler of its own for: recorded, and the loop told, as the
        loop's own signal handling does it (call_soon_threadsafe is safe from a handler)."""
        self.pending[signum] = None
        self._loop.call_soon_threadsafe(self._woken)

    def _woken(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def __aiter__(self) -> "SignalQueue":
        return self

    async def __anext__(self) -> int:
        import anyio

        while not self.pending:
            self._wake = anyio.Event()
            await self._wake.wait()
        signum = next(iter(self.pending))
        del self.pending[signum]
        return signum



class unblock_faults:
    """Around a fork: the faults unblocked in this thread, so that the child does not inherit
    our blocking (a fault sent meanwhile reaches SignalQueue's handler); `block_again()` after."""

    def __init__(self) -> None:
        import signal

        self.blocked = FAULTS & signal.pthread_sigmask(signal.SIG_BLOCK, ())
        if self.blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, self.blocked)

    def block_again(self) -> None:
        import signal

        if self.blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, self.blocked)
