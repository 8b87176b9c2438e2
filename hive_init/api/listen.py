"""Accepting connections without ever letting a client end the init: one accept loop for the
control socket and the HTTP endpoint.

Descriptors are the one resource a local user can exhaust from outside. Two defences:
- a budget: each endpoint caps its own connections so that together they leave `RESERVE`
  descriptors below the soft RLIMIT_NOFILE for what the init itself needs (spawning a program
  takes pipes, a probe a socket or pipes, a log file a descriptor);
- a spare descriptor: if accept() still fails with EMFILE/ENFILE (something else used the
  reserve), the spare is closed, the pending connection accepted and closed at once, and the
  spare reopened. Without that the listening socket stays readable forever and the loop spins;
  with anyio's `serve()` the error ended the task group (PID 1 exit 70).
"""

import errno
import os
import resource
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.lowlevel

from hive_init import log

RESERVE = 48  # descriptors kept free for spawns, probes, log files, the config on reload
SHED_LOG_EVERY = 10.0  # seconds between two "shedding connections" lines (a flood must not fill the log)
_EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class CannotListen(Exception):
    """An endpoint cannot be opened (socket taken, port in use): one line, before any spawn."""


def budget(share: float, floor: int, ceiling: int) -> int:
    """This endpoint's share of the descriptors left once those already open and the reserve are
    counted; measured once, when the endpoint starts."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return ceiling
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 32
    return max(floor, min(ceiling, int((soft - in_use - RESERVE) * share)))


class Shedder:
    """The spare descriptor and the rate-limited line about connections shed."""

    def __init__(self, what: str):
        self.what = what
        self.spare: int | None = _open_spare()
        self.shed = 0
        self._logged_at = -SHED_LOG_EVERY
        self._unlogged = 0

    def note(self, reason: str) -> None:
        """One line every SHED_LOG_EVERY seconds at most, saying how many were shed meanwhile."""
        self.shed += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= SHED_LOG_EVERY:
            log.get_logger().warning(f"{self.what}: shedding new connections ({reason})", shed=self._unlogged)
            self._logged_at = now
            self._unlogged = 0

    def shed_pending(self, sock: socket.socket) -> None:
        """Accept the connection that could not be accepted, using the spare, and close it."""
        if self.spare is not None:
            os.close(self.spare)  # frees exactly one descriptor for the accept below
            self.spare = None
        try:
            conn, _ = sock.accept()
            conn.close()
        except OSError:
            pass  # nothing pending any more, or still no descriptor: the next readiness retries
        self.spare = _open_spare()

    def close(self) -> None:
        if self.spare is not None:
            os.close(self.spare)
            self.spare = None


def _open_spare() -> int | None:
    try:
        return os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


async def accept_loop(sock: socket.socket, shedder: Shedder,
                      handle: Callable[[socket.socket], Coroutine[Any, Any, None]], tg: anyio.abc.TaskGroup,
                      make_room: Callable[[], bool] | None = None) -> None:
    """Accept forever; every error of accept() is survived. `handle` owns the accepted socket.
    Out of descriptors, `make_room()` may close one of the endpoint's idle connections (True if
    it did): the pending connection (a probe, maybe) then gets its descriptor."""
    sock.setblocking(False)
    while True:
        await anyio.wait_readable(sock)
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            continue  # the client went away between readiness and accept
        except OSError as e:
            if e.errno in _EXHAUSTED:
                if make_room is not None and make_room():
                    await anyio.lowlevel.checkpoint()  # the evicted connection's task closes its socket
                    await anyio.lowlevel.checkpoint()
                    continue
                shedder.note(os.strerror(e.errno))
                shedder.shed_pending(sock)
                if shedder.spare is None:
                    await anyio.sleep(0.1)  # not even the spare: yield instead of spinning on a readable socket
                continue
            raise
        conn.setblocking(False)
        tg.start_soon(handle, conn)
