"""Running a helper command to completion (initdb, psql, an init script, `postgres --version`)
with its output, through spawn() and the one reaper.

Unlike spawn.run_command, every wait here that follows a cancellation is bounded: at the
shutdown deadline the supervisor cancels its whole task group, the task that drives the reaper
included, so an exit may never be reported again; an unbounded shielded wait would hang the
init. And the exit, not the end of the output, ends the command: a background process that
keeps the pipe open does not make it hang either."""

import os
import signal

import anyio

from hive_init.config.model import RunAs
from hive_init.runtime.spawn import Child, CommandResult, SpawnError, spawn

KILL_WAIT = 2.0


async def run(argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = "/",
              run_as: RunAs | None = None, timeout: float | None = None,
              output_limit: int = 256 * 1024) -> CommandResult:
    try:
        child = spawn(argv, env=env, cwd=cwd, run_as=run_as, merge_stderr=True)
    except SpawnError as e:
        return CommandResult(e.code, str(e))
    output = bytearray()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_read, child, output, output_limit)
            with anyio.move_on_after(timeout):
                await child.exited.wait()
            if child.code is None:  # timed out
                await kill(child)
            _drain(child, output, output_limit)
            tg.cancel_scope.cancel()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await kill(child)
        raise
    finally:
        child.close_pipes()
    code = child.code if child.code is not None else -signal.SIGKILL
    return CommandResult(code, output.decode("utf-8", "replace"))


async def kill(child: Child) -> None:
    """SIGKILL to the child's whole process group, and a bounded wait for its exit."""
    child.signal(signal.SIGKILL, group=True)
    await wait_exit(child, KILL_WAIT)


async def wait_exit(child: Child, timeout: float) -> bool:
    """Until the child has exited: reaped (its `exited` event), or a zombie not reaped yet
    (the reaper may be gone: after a cancellation at the shutdown deadline). The zombie holds
    the PID, so looking at /proc/PID cannot mistake another process for it."""
    delay = 0.002
    with anyio.move_on_after(timeout):
        while child.code is None and _running(child.pid):
            with anyio.move_on_after(delay):
                await child.exited.wait()
            delay = min(delay * 2, 0.1)
    return child.code is not None or not _running(child.pid)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")


async def _read(child: Child, output: bytearray, limit: int) -> None:
    fd = child.stdout
    if fd is None:
        return
    try:
        while True:
            await anyio.wait_readable(fd)
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not data:
                return
            _keep(output, data, limit)
    except (OSError, ValueError):  # closed under us
        return


def _drain(child: Child, output: bytearray, limit: int) -> None:
    """What the command wrote and the reader has not read yet, without waiting for more."""
    fd = child.stdout
    if fd is None:
        return
    while True:
        try:
            data = os.read(fd, 65536)
        except (OSError, ValueError):  # BlockingIOError included: nothing more for now
            return
        if not data:
            return
        _keep(output, data, limit)


def _keep(output: bytearray, data: bytes, limit: int) -> None:
    output += data
    if len(output) > limit:
        del output[: len(output) - limit]
