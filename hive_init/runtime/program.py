"""One program's life: wait for its dependencies, prepare, spawn, watch, probe, stop, and
restart it through its backoff, or give up (FATAL). One task per program drives all of it."""

import signal
import time
from typing import Any

import anyio

from hive_init import log
from hive_init.config.model import Probe, ProgramSpec
from hive_init.health.probes import ProbeResult, ProbeStats, check
from hive_init.runtime.kind import Kind, PrepareError, kind_for
from hive_init.runtime.listen import held
from hive_init.runtime.output import Output
from hive_init.runtime.pid1 import describe_exit, signal_name
from hive_init.runtime.restart import RestartTracker
from hive_init.runtime.spawn import KILL_WAIT, Child, SpawnError, spawn, wait_exit
from hive_init.runtime.state import DOWN, UP, Board, State

# Before a readiness probe first passes it is tried sooner than its period: from this delay,
# doubling up to the period, so a program is READY within milliseconds of really being ready
# without probing often for the rest of its life.
FIRST_READY_DELAY = 0.02


class Program:
    def __init__(self, spec: ProgramSpec, board: Board, programs: dict[str, "Program"], buffer_lines: int = 1000):
        self.spec = spec
        self.name = spec.name
        self.board = board
        self.programs = programs
        self.kind: Kind = kind_for(spec)
        self.output = Output(spec.name, buffer_lines, spec.log_file)
        self.tracker = RestartTracker(spec)
        self.log = log.get_logger(program=spec.name)
        self.state = State.STOPPED
        self.reason = ""
        self.want_up = spec.autostart
        self.child: Child | None = None
        self.started_at: float | None = None  # unix time of the current child's start
        self.last_exit: int | None = None
        self.completed = False  # a oneshot that ran to success
        self.ready_probe: ProbeResult | None = None
        self.live_probe: ProbeResult | None = None
        self.probe_stats = {"readiness": ProbeStats(), "liveness": ProbeStats()}
        self._wakeup = anyio.Event()
        self._failure: str | None = None  # why a running child is being stopped to be restarted
        self.scope = anyio.CancelScope()  # the supervisor's handle on this program's task
        self._preparing: anyio.CancelScope | None = None

    # ---- what others see -------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None and self.child.code is None else None

    @property
    def ready(self) -> bool:
        return self.state is State.READY or (self.state is State.EXITED and self.completed)

    @property
    def should_be_up(self) -> bool:
        """Counts for the container's readiness: wanted up (a critical program always is: the
        container cannot work without it, even when an operator stopped it), and not a oneshot
        that has finished; a FATAL program counts, as it is down against everyone's wishes."""
        if self.spec.oneshot and self.completed:
            return False
        return self.want_up or self.spec.critical or self.state is State.FATAL

    def uptime(self) -> float | None:
        return time.time() - self.started_at if self.started_at and self.pid else None

    # ---- what operators ask ------------------------------------------------------------------
    def start(self) -> None:
        if self.want_up and self.state not in DOWN:
            return
        self.want_up = True
        self.completed = False
        self.tracker.reset()
        if self.state in (State.EXITED, State.FATAL):
            self._set(State.STOPPED, "start requested")
        self.board.changed()

    async def stop(self) -> None:
        self.want_up = False
        self._wakeup.set()
        if self._preparing is not None:
            self._preparing.cancel()
        self.board.changed()
        await self.board.until(lambda: self.state in DOWN)

    async def restart(self) -> None:
        await self.stop()
        self.start()

    def signal(self, signum: int) -> bool:
        return self.child.signal(signum) if self.child is not None else False

    def signal_group(self, signum: int) -> bool:
        return self.child.signal(signum, group=True) if self.child is not None else False

    # ---- the program's own task ---------------------------------------------------------------
    async def run(self) -> None:
        async with anyio.create_task_group() as pumps:
            while True:
                await self.board.until(lambda: self.want_up)
                if await self._dependencies_met():
                    await self._run_until_down(pumps)

    def _set(self, state: State, reason: str = "", **fields: Any) -> None:
        changed = state is not self.state
        self.state, self.reason = state, reason
        if changed:
            level = "error" if state is State.FATAL else "warning" if state is State.BACKOFF else "info"
            if state is State.STARTING and not reason:
                level = "debug"  # "spawned" follows at once and says more
            getattr(self.log, level)(state.value.lower() if not reason else f"{state.value.lower()}: {reason}", **fields)
        self.board.changed()

    async def _dependencies_met(self) -> bool:
        while self.want_up:
            waiting = []
            for dep_name, condition in self.spec.depends_on:
                dep = self.programs[dep_name]
                if dep.condition_holds(condition):
                    continue
                failure = dep.condition_failed(condition)
                if failure:
                    self.want_up = False
                    self._set(State.FATAL, f"dependency {dep_name} {failure}")
                    return False
                waiting.append(f"{dep_name} ({condition})")
            if not waiting:
                return True
            if self.state is not State.STARTING or self.reason != f"waiting for {', '.join(waiting)}":
                self._set(State.STARTING, f"waiting for {', '.join(waiting)}")
            await self.board.next_change()
        if self.state is State.STARTING:
            self._set(State.STOPPED, "stop requested")
        return False

    def condition_holds(self, condition: str) -> bool:
        if self.completed:
            return True
        if condition == "started":
            return self.state in UP
        if condition == "ready":
            return self.state is State.READY
        return False

    def condition_failed(self, condition: str) -> str | None:
        """Why `condition` can never hold without an operator stepping in, or None."""
        if self.state is State.FATAL:
            return f"is FATAL ({self.reason})"
        if self.state is State.EXITED and not self.completed:
            return f"exited ({self.reason}) and will not restart"
        if condition == "completed" and not self.spec.oneshot and self.state is State.EXITED:
            return "exited without completing"
        return None

    async def _run_until_down(self, pumps: anyio.abc.TaskGroup) -> None:
        while self.want_up:
            self._set(State.STARTING, "preparing" if self.spec.kind != "command" else "")
            code, stopped = await self._run_once(pumps)
            if stopped:
                self._set(State.STOPPED, describe_exit(code) if code not in (None, 0, -self.spec.stop_signal) else "")
                return
            assert code is not None
            self.last_exit = code
            uptime = time.time() - self.started_at if self.started_at else 0.0
            decision = self.tracker.after_exit(code, uptime, time.monotonic())
            what = self._failure or describe_exit(code)
            if decision.verdict == "done":
                self.completed = self.spec.oneshot or self.tracker.succeeded(code)
                self.want_up = False
                self._set(State.EXITED, what if not self.spec.oneshot else f"completed ({what})")
                return
            if decision.verdict in ("failed", "fatal"):
                self.want_up = False
                self._set(State.FATAL, f"{what}; " + decision.reason, exit_code=code)
                return
            self._set(State.BACKOFF, f"{what}; restarting in {decision.delay:.3g}s", exit_code=code)
            with anyio.move_on_after(decision.delay):
                await self.board.until(lambda: not self.want_up)
            if not self.want_up:
                self._set(State.STOPPED, "stopped during backoff")
                return
            self.tracker.restarting(time.monotonic())

    async def _run_once(self, pumps: anyio.abc.TaskGroup) -> tuple[int | None, bool]:
        """Start the program once and watch it. Returns (exit code, whether it was stopped on request)."""
        self._wakeup = anyio.Event()
        self._failure = None
        try:
            # a stop request cancels a long preparation (PostgreSQL's first boot) at once
            try:
                with anyio.CancelScope() as self._preparing:
                    launch = await self.kind.prepare()
            finally:
                self._preparing = None
            if not self.want_up:
                return None, True
            child = spawn(launch.argv, env=launch.env, cwd=launch.cwd, run_as=launch.run_as,
                          kill_group=self.spec.kill_group, on_exit=lambda _child: self._wakeup.set(),
                          listen_fds=held.passed(self.spec.listen))
        except (PrepareError, SpawnError) as e:
            self.log.error(f"cannot start: {e}")
            self.started_at = time.time()
            if not self.want_up:
                return None, True
            return getattr(e, "code", 1), False
        self.child, self.started_at = child, time.time()
        for fd, stream in ((child.stdout, "stdout"), (child.stderr, "stderr")):
            if fd is not None:
                pumps.start_soon(self._pump, child, fd, stream)
        self.log.info("spawned", pid=child.pid, command=" ".join(launch.argv))
        async with anyio.create_task_group() as watchers:
            watchers.start_soon(self._watch_started, child)
            await self._wakeup.wait()
            watchers.cancel_scope.cancel()
        if child.code is None:
            await self._stop_child(child)
            if self._failure and self.want_up:
                return child.code, False
            return child.code, True
        if child.leftovers_killed:
            self.log.debug("ended what the program left in its process group", pid=child.pid)
        await self.kind.exited(child.code)
        return child.code, not self.want_up

    async def _pump(self, child: Child, fd: int, stream: str) -> None:
        try:
            await self.output.pump(fd, stream)
        finally:
            pipe = child.popen.stdout if stream == "stdout" else child.popen.stderr
            if pipe is not None:
                pipe.close()

    async def _stop_child(self, child: Child) -> None:
        self._set(State.STOPPING, self._failure or "")
        try:
            for signum, wait in self.kind.stop_plan():
                child.signal(signum)
                with anyio.move_on_after(wait):
                    await child.exited.wait()
                if child.code is not None:
                    return
                self.log.warning(f"still running {wait:g}s after {signal_name(signum)}")
            child.signal(signal.SIGKILL, group=True)
            await child.exited.wait()
        except anyio.get_cancelled_exc_class():
            # the shutdown deadline passed, or a second TERM: no more grace
            with anyio.CancelScope(shield=True):
                if child.signal(signal.SIGKILL, group=True):
                    self.log.warning("killed (no time left to stop gracefully)", pid=child.pid)
                await wait_exit(child, KILL_WAIT)  # bounded: the reaper may be cancelled too
            raise
        finally:
            if child.code is not None:
                with anyio.CancelScope(shield=True):
                    await self.kind.exited(child.code)

    async def _watch_started(self, child: Child) -> None:
        try:
            await self.kind.started(child)
        except PrepareError as e:
            self._failure = f"did not start: {e}"  # handled as a failed start: stopped, then backoff
            self.log.error(self._failure)
            self._wakeup.set()
            return
        probe = self.spec.readiness
        self.ready_probe = None
        # a oneshot without a probe is not "ready" while it runs: it is ready when it completes
        self._set(State.RUNNING if probe or self.spec.oneshot else State.READY)
        async with anyio.create_task_group() as probes:
            if probe is not None:
                probes.start_soon(self._readiness, probe)
            if self.spec.liveness is not None:
                probes.start_soon(self._liveness, self.spec.liveness)

    async def _readiness(self, probe: Probe) -> None:
        await anyio.sleep(probe.initial_delay)
        successes = failures = 0
        delay = FIRST_READY_DELAY
        while True:
            result = await check(probe, self.kind)
            self.ready_probe = result
            self.probe_stats["readiness"].observe(result)
            if result.ok:
                successes, failures = successes + 1, 0
                if successes >= probe.success_threshold and self.state is State.RUNNING:
                    self._set(State.READY, "", probe_ms=round(result.latency * 1000, 1))
            else:
                successes, failures = 0, failures + 1
                if failures >= probe.failure_threshold and self.state is State.READY:
                    self._set(State.RUNNING, f"not ready: {result.message}")
            if self.state is State.READY:
                delay = probe.period
            else:
                delay = min(delay * 2, probe.period)
            await anyio.sleep(delay)

    async def _liveness(self, probe: Probe) -> None:
        await anyio.sleep(probe.initial_delay)
        failures = 0
        while True:
            result = await check(probe, self.kind)
            self.live_probe = result
            self.probe_stats["liveness"].observe(result)
            failures = 0 if result.ok else failures + 1
            if failures >= probe.failure_threshold:
                self._failure = f"liveness probe failed {failures} times: {result.message}"
                self.log.warning(self._failure)
                self._wakeup.set()
                return
            await anyio.sleep(probe.period)
