"""Turning a command into a running child: its own session and process group, the user it runs
as (with that user's supplementary groups), the merged environment, no descriptor of the init's,
and stdout/stderr on pipes. The child is watched by the one reaper; nothing here ever waits.
"""

import errno
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import anyio

from hive_init import exits, procfs
from hive_init.config.model import DEFAULT_PASSTHROUGH, RunAs
from hive_init.redact import is_secret_name
from hive_init.runtime.pid1 import describe_exit, reaper, unblock_faults


class SpawnError(Exception):
    """The command could not be started; str() is one line, ready for the log."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code  # what a shell would return: 126 cannot execute, 127 not found (hive_init.exits)


@dataclass(eq=False)
class Child:
    pid: int
    popen: subprocess.Popen[bytes]
    kill_group: bool
    started_at: float = field(default_factory=time.monotonic)
    code: int | None = None
    exited: anyio.Event = field(default_factory=anyio.Event)
    leftovers_killed: bool = False
    on_exit: "Callable[[Child], None] | None" = None
    denied: bool = False  # the last signal() was refused by the kernel (EPERM)

    @property
    def stdout(self) -> int | None:
        return self.popen.stdout.fileno() if self.popen.stdout else None

    @property
    def stderr(self) -> int | None:
        return self.popen.stderr.fileno() if self.popen.stderr else None

    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    def signal(self, signum: int, group: bool | None = None) -> bool:
        """Signal the child (its whole process group unless told otherwise); False if it is gone,
        or if the kernel refused (`denied` then says so): root without CAP_KILL (`--cap-drop=KILL`)
        may not signal another user's process, and PID 1 must live on to say it, not die of it."""
        self.denied = False
        if self.code is not None:
            return False
        try:
            if self.kill_group if group is None else group:
                os.killpg(self.pid, signum)
            else:
                os.kill(self.pid, signum)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            self.denied = True
            return False

    def _exited(self, code: int) -> None:
        # Called by the reaper while the zombie still holds the PID, so the group id cannot
        # have been reused: ending what the program left behind in its group is safe here.
        if self.kill_group:
            try:
                os.killpg(self.pid, signal.SIGKILL)
                self.leftovers_killed = True
            except ProcessLookupError:
                pass
        self.code = code
        self.popen.returncode = code  # so Popen never waits for it itself
        self.exited.set()
        if self.on_exit is not None:
            self.on_exit(self)

    def describe_exit(self) -> str:
        return describe_exit(self.code) if self.code is not None else "running"

    def close_pipes(self) -> None:
        for stream in (self.popen.stdout, self.popen.stderr, self.popen.stdin):
            if stream is not None:
                stream.close()


def child_environment(extra: Sequence[tuple[str, str]] | Mapping[str, str] = (), run_as: RunAs | None = None,
                      passthrough: Sequence[str] = DEFAULT_PASSTHROUGH) -> dict[str, str]:
    """A program's environment: what `passthrough` names of hive-init's own (exact names, or
    `PREFIX*` patterns, which never match a variable whose name says it holds a secret: a
    password reaches a program only where the config sends it), HIVE_INIT_SOCKET, the user's
    HOME/USER/LOGNAME, then the program's `environment` table."""
    exact = {p for p in passthrough if not p.endswith("*")}
    prefixes = tuple(p[:-1] for p in passthrough if p.endswith("*"))
    env = {k: v for k, v in os.environ.items()
           if k in exact or (prefixes and k.startswith(prefixes) and not is_secret_name(k))}
    # where `hive-init status` finds the init from inside a program (set by the supervisor)
    if "HIVE_INIT_SOCKET" in os.environ:
        env["HIVE_INIT_SOCKET"] = os.environ["HIVE_INIT_SOCKET"]
    if run_as is not None:
        env.update(HOME=run_as.home, USER=run_as.user, LOGNAME=run_as.user)
    env.update(extra.items() if isinstance(extra, Mapping) else extra)
    return env


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    run_as: RunAs | None = None,
    capture: bool = True,
    merge_stderr: bool = False,
    kill_group: bool = True,
    new_session: bool = True,
    inherit_stdio: bool = False,
    on_exit: Callable[[Child], None] | None = None,
    listen_fds: Sequence[tuple[int, str]] = (),
) -> Child:
    switch = run_as is not None and (os.geteuid() == 0) and run_as.uid != os.geteuid()
    if run_as is not None and not switch and run_as.uid != os.geteuid():
        raise SpawnError(f"cannot run as user {run_as.user!r}: hive-init is not running as root", exits.CANNOT_EXECUTE)
    env_fd = None
    if listen_fds:
        # held sockets go to 3, 4, ... with LISTEN_PID = the child's own pid: only the child can
        # do that, so the exec wrapper runs first (and switches the user itself, after). It runs
        # as root: it gets an empty environment, the program's comes on env_fd for the final exec
        from hive_init.runtime.execwrap import WRAPPER_ENVIRONMENT, environment_fd, wrap

        try:
            env_fd = environment_fd(os.environ if env is None else env)
        except OSError as e:
            raise SpawnError(f"cannot start {argv[0]!r}: {e.strerror or e}", exits.CANNOT_EXECUTE) from None
        argv = wrap(argv, listen_fds, run_as if switch else None, env_fd)
        env = WRAPPER_ENVIRONMENT
        switch = False
    pipe = subprocess.PIPE if capture else None
    # without a new session (single-command mode), the child still gets a process group of its
    # own, so that signals can go to the whole group while it keeps the terminal
    process_group = None if new_session else 0
    # only a switching spawn names the ids; narrowed once here, so the Popen call cannot reach None
    target = run_as if run_as is not None and switch else None
    faults = unblock_faults()  # the init's own blocking of fault signals is not the child's
    try:
        popen = subprocess.Popen(
            list(argv),
            stdin=None if inherit_stdio else subprocess.DEVNULL,
            stdout=pipe,
            stderr=(subprocess.STDOUT if merge_stderr else pipe) if capture else None,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            close_fds=True,
            start_new_session=new_session,
            restore_signals=True,
            user=target.uid if target is not None else None,
            group=target.gid if target is not None else None,
            extra_groups=list(target.groups) if target is not None else None,
            pass_fds=tuple(fd for fd, _ in listen_fds) + ((env_fd,) if env_fd is not None else ()),
            process_group=process_group,
        )
    except FileNotFoundError as e:
        if cwd and e.filename == cwd:
            raise SpawnError(f"cannot start {argv[0]!r}: directory {cwd!r} does not exist", exits.CANNOT_EXECUTE) from None
        raise SpawnError(f"cannot execute {argv[0]!r}: no such file or directory", exits.NOT_FOUND_COMMAND) from None
    except PermissionError:
        raise SpawnError(f"cannot execute {argv[0]!r}: permission denied", exits.CANNOT_EXECUTE) from None
    except OSError as e:
        if e.errno == errno.ENOEXEC:
            raise SpawnError(f"cannot execute {argv[0]!r}: not an executable format", exits.CANNOT_EXECUTE) from None
        raise SpawnError(f"cannot start {argv[0]!r}: {e.strerror or e}", exits.CANNOT_EXECUTE) from None
    finally:
        faults.block_again()
        if env_fd is not None:
            os.close(env_fd)  # the child has its own copy
    for stream in (popen.stdout, popen.stderr):
        if stream is not None:
            os.set_blocking(stream.fileno(), False)
    child = Child(popen.pid, popen, kill_group=kill_group, on_exit=on_exit)
    reaper.watch(child.pid, child._exited)
    return child


@dataclass(frozen=True)
class CommandResult:
    code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    def describe(self) -> str:
        return describe_exit(self.code)


KILL_WAIT = 2.0  # seconds to wait for a SIGKILLed child's exit (the one definition)


async def run_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    run_as: RunAs | None = None,
    timeout: float | None = None,
    output_limit: int = 64 * 1024,
) -> CommandResult:
    """Run a command to completion (through the one reaper), with its output (stdout and stderr
    together, the last `output_limit` bytes). At `timeout` its whole group is killed (-9).

    The exit, not the end of the output, ends the command: a background process that keeps the
    pipe open cannot make it hang. Every wait that follows a cancellation is bounded: at the
    shutdown deadline the task that drives the reaper is cancelled too, so an exit may never be
    reported again, and an unbounded shielded wait would hang the init."""
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
    """Until the child has exited: reaped (its `exited` event), or a zombie not reaped yet (the
    reaper may be gone after a cancellation at the shutdown deadline). The zombie holds the PID,
    so looking at /proc/PID cannot mistake another process for it."""
    delay = 0.002
    with anyio.move_on_after(timeout):
        while child.code is None and procfs.running(child.pid):
            with anyio.move_on_after(delay):
                await child.exited.wait()
            delay = min(delay * 2, 0.1)
    return child.code is not None or not procfs.running(child.pid)


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
