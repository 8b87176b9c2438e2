"""Rolling restarts (restart_order = "start-first", the default with `listen`): the new process
starts beside the old one, both holding the same listening sockets; the old one is stopped (its
own stop_signal and stop_timeout, so it drains what it accepted) only once the new one is READY
and accepts on the held sockets. If the new one fails first, it is stopped and the old one keeps
serving. Used by `hive-init restart NAME`, a reload that changed the program, and a liveness
failure (Program.request_restart).

The new process runs as a second Program of the same name, outside the supervisor's table
until it serves; then it takes the old one's place (log buffer and restart count carried on).
"""

import weakref
from typing import Any

import anyio

from hive_init import procfs
from hive_init.config.model import ProgramSpec
from hive_init.runtime.listen import held
from hive_init.runtime.program import Program
from hive_init.runtime.spawn import KILL_WAIT
from hive_init.runtime.state import State

# `supervisor` below is the runtime.supervisor.Supervisor (not imported: it imports this module);
# what is used of it: board, programs, config, shutting_down and _launch
Supervisor = Any

# bounds on the new process: to become READY, then to be seen accepting on its sockets
READY_TIMEOUT = 60.0
ACCEPT_TIMEOUT = 15.0
FAILED = (State.BACKOFF, State.FATAL, State.EXITED)


_replacing: "weakref.WeakSet[Program]" = weakref.WeakSet()


def rolls(program: Program, spec: ProgramSpec | None = None) -> bool:
    """Whether a restart of `program` (into `spec`) is rolling: both orders say start-first and
    a process runs (a program that is down has nothing to keep up: a plain start)."""
    spec = spec or program.spec
    return (program.spec.restart_order == "start-first" and spec.restart_order == "start-first"
            and program.state in (State.RUNNING, State.READY) and program.pid is not None
            and program not in _replacing)


def replacing(program: Program) -> bool:
    """A rolling restart of `program` is under way."""
    return program in _replacing


async def roll(supervisor: Supervisor, old: Program, spec: ProgramSpec | None = None,
               reason: str = "restart requested") -> str | None:
    """Replace `old` by a new process of `spec` (default: its own). None when done, else why
    the new process was given up (the old one still serves)."""
    if old in _replacing:
        return "was not started: a rolling restart is under way already"
    _replacing.add(old)
    try:
        return await _roll(supervisor, old, spec or old.spec, reason)
    finally:
        _replacing.discard(old)


async def _roll(supervisor: Supervisor, old: Program, spec: ProgramSpec, reason: str) -> str | None:
    new = Program(spec, supervisor.board, supervisor.programs, supervisor.config.init.output_buffer_lines)
    new.want_up = True
    if spec.log_file == old.spec.log_file:
        new.output = old.output  # one log buffer (and file) across the restart
    new.tracker.restarts_total = old.tracker.restarts_total + 1
    old.log.info(f"rolling restart ({reason}): starting a new process beside pid {old.pid}")
    supervisor._launch(new)
    failure = await _until_serving(supervisor, new)
    if failure is not None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(new.spec.stop_timeout + 2 * KILL_WAIT):
            await new.stop()  # bounded: at the shutdown deadline the reaper may be gone
        new.scope.cancel()
        old.log.error(f"rolling restart given up: the new process {failure}; pid {old.pid} keeps serving")
        return failure
    if supervisor.programs.get(old.name) is old:
        supervisor.programs[old.name] = new  # the same key: status keeps its order
    supervisor.board.changed()
    old.log.info(f"rolling restart: pid {new.pid} serves; stopping pid {old.pid}")
    await old.stop()
    old.scope.cancel()
    return None


async def _until_serving(supervisor: Supervisor, new: Program) -> str | None:
    with anyio.move_on_after(READY_TIMEOUT):
        await supervisor.board.until(lambda: new.state is State.READY or new.state in FAILED
                                     or new.last_exit is not None or supervisor.shutting_down)
    if supervisor.shutting_down:
        return "was not needed any more (shutting down)"
    if new.state is not State.READY or new.pid is None:
        return (f"is {new.state.value} ({new.reason})" if new.state is not State.STARTING and new.state is not State.RUNNING
                else f"was not READY within {READY_TIMEOUT:g}s")
    pid = new.pid
    if new.spec.listen and not await _accepting(new):
        if new.pid != pid or new.state is not State.READY:
            return f"exited before it accepted a connection ({new.state.value}: {new.reason})"
        new.log.warning(f"pid {pid} is READY but was not seen accepting on its sockets within "
                        f"{ACCEPT_TIMEOUT:g}s (not an epoll server?): relying on its readiness")
    if new.pid != pid or new.state is not State.READY:
        return f"did not stay READY ({new.state.value}: {new.reason})"
    return None


async def _accepting(new: Program) -> bool:
    """The new process (or one of its children) polls a held socket: it takes connections now.
    Readiness alone cannot tell, as a probe through the shared address may reach the old one."""
    inodes = held.inodes(new.spec.listen)
    pid = new.pid
    delay = 0.01
    with anyio.move_on_after(ACCEPT_TIMEOUT):
        while pid is not None and new.pid == pid:
            if await anyio.to_thread.run_sync(polls_any, pid, inodes):
                return new.pid == pid
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.25)
    return False


def polls_any(pid: int, inodes: set[int]) -> bool:
    """Whether an epoll set of `pid` or of its descendants (uvicorn's workers, a forking server)
    watches one of `inodes`. One scan of /proc (kernel-made text: it cannot hang), run in a
    worker thread all the same."""
    return any(procfs.epoll_targets(proc) & inodes for proc in procfs.descendants(pid, procfs.all_stats()))
