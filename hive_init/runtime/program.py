"""One program's life: wait for its dependencies, prepare, spawn, watch, probe, stop, and
restart it through its backoff, or give up (FATAL). One task per program drives all of it.

The task decides *when* something happened; what that does to the program's state is one
lookup in runtime/state.py's TRANSITIONS (state x event -> next state), made in `_fire` and
nowhere else. `want_up` is the operator's wish (s6's "want up"), not a state."""

import errno
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import anyio

from hive_init import log
from hive_init.config.model import Probe, ProgramSpec
from hive_init.health.probes import ProbeResult, ProbeStats, check
from hive_init.runtime import oom, resources
from hive_init.runtime.kind import Kind, PrepareError, kind_for
from hive_init.runtime.listen import held
from hive_init.runtime.output import Output
from hive_init.runtime.pid1 import describe_exit, signal_name
from hive_init.runtime.restart import RestartTracker
from hive_init.runtime.spawn import KILL_WAIT, Child, SpawnError, kill, spawn, wait_exit
from hive_init.runtime.state import DOWN, UP, Board, Event, State, next_state

# Before a readiness probe first passes it is tried sooner than its period: from this delay,
# doubling up to the period, so a program is READY within milliseconds of really being ready
# without probing often for the rest of its life.
FIRST_READY_DELAY = 0.02


class Program:
    def __init__(self, spec: ProgramSpec, board: Board, programs: dict[str, "Program"], buffer_lines: int = 1000,
                 *, kind: Kind | None = None, spawner: Callable[..., Child] = spawn):
        self.spec = spec
        self.name = spec.name
        self.board = board
        self.programs = programs
        self.kind: Kind = kind if kind is not None else kind_for(spec)
        self._spawn = spawner  # runtime.spawn.spawn; the unit tests give a fake one
        self.output = Output(spec.name, buffer_lines, spec.log_file)
        self.tracker = RestartTracker(spec)
        self.log = log.get_logger(program=spec.name)
        self.state = State.STOPPED
        self.reason = ""
        self.want_up = spec.autostart
        self.child: Child | None = None
        self.started_at: float | None = None  # time.monotonic() of the current attempt's start
        self.last_exit: int | None = None
        self.completed = False  # a oneshot that ran to success
        self.ready_probe: ProbeResult | None = None
        self.live_probe: ProbeResult | None = None
        self.probe_stats = {"readiness": ProbeStats(), "liveness": ProbeStats()}
        self._wakeup = anyio.Event()
        self._failure: str | None = None  # why a running child is being stopped to be restarted
        self.scope = anyio.CancelScope()  # the supervisor's handle on this program's task
        self._preparing: anyio.CancelScope | None = None
        self._oom_counts: tuple[int | None, int | None] | None = None  # the OOM kill counts at the spawn
        # set by the supervisor for restart_order = "start-first": takes a restart over (True) or not
        self.rolling: Callable[[str], bool] | None = None
        # called with (state, event, next state) at every transition (tests, observers)
        self.on_transition: Callable[[State, Event, State], None] | None = None

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
        """Seconds the current child has been running (monotonic: a clock step cannot bend it)."""
        return self.child.uptime() if self.child is not None and self.pid else None

    # ---- what operators ask ------------------------------------------------------------------
    def start(self) -> None:
        if self.want_up and self.state not in DOWN:
            return
        self.want_up = True
        self.completed = False
        self.tracker.reset()
        if self.state in DOWN:
            self._fire(Event.START, None if self.state is State.STOPPED else "start requested")
        self.board.changed()

    def request_stop(self) -> None:
        """Ask for the stop and return at once; the program's task carries it out."""
        self.want_up = False
        self._wakeup.set()
        if self._preparing is not None:
            self._preparing.cancel()
        self.board.changed()

    async def stop(self) -> None:
        self.request_stop()
        await self.board.until(lambda: self.state in DOWN)

    async def restart(self) -> None:
        await self.stop()
        self.start()

    def request_restart(self, reason: str) -> None:
        """Restart the running child through its normal stop (stop_signal, stop_timeout, then
        SIGKILL), counted by the restart policy like a crash, with `reason` as what is shown.
        The one way to restart a running program: liveness failures, memory limits and rolling
        restarts use it. Ignored when no child is running."""
        if self.pid is None or self._failure is not None or not self.want_up:
            return
        self.log.warning(reason)
        if self.rolling is not None and self.rolling(reason):
            return  # restart_order = "start-first": a new process replaces this one (runtime/rolling.py)
        self._restart(reason)

    def _restart(self, reason: str) -> None:
        self._failure = reason
        self._wakeup.set()

    def signal(self, signum: int) -> bool:
        """An operator's signal (`hive-init signal`): False if not running; a refusal is raised,
        for the control socket to answer with."""
        if self.child is None:
            return False
        if self.child.signal(signum):
            return True
        if self.child.denied:
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
        return False

    def signal_group(self, signum: int) -> bool:
        return self._send(self.child, signum, group=True) if self.child is not None else False

    def _send(self, child: Child, signum: int, group: bool | None = None) -> bool:
        """A signal of the program's own lifecycle (stop plan, kills): a refusal is logged, and the
        program then stays as it is (a shutdown still ends at its deadline)."""
        if child.signal(signum, group):
            return True
        if child.denied:
            self.log.error(f"cannot send {signal_name(signum)}: {os.strerror(errno.EPERM)} (is CAP_KILL dropped?)",
                           pid=child.pid)
        return False

    # ---- the program's own task ---------------------------------------------------------------
    async def run(self) -> None:
        async with anyio.create_task_group() as pumps:
            while True:
                await self.board.until(lambda: self.want_up)
                if await self._dependencies_met():
                    await self._run_until_down(pumps)

    def _fire(self, event: Event, reason: str | None = "", **fields: Any) -> None:
        """The one place a program's state changes: `event` meets the current state, the table
        gives the next one. reason None keeps the current reason."""
        before = self.state
        after = next_state(before, event)
        if after is None:
            self.log.error(f"bug: {event.name} cannot happen in {before.value}; state kept")
            return
        self._set(after, self.reason if reason is None else reason, **fields)
        if self.on_transition is not None:
            self.on_transition(before, event, after)

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
                    self._fire(Event.DEPENDENCY_FAILED, f"dependency {dep_name} {failure}")
                    return False
                waiting.append(f"{dep_name} ({condition})")
            if not waiting:
                return True
            if self.state is not State.STARTING or self.reason != f"waiting for {', '.join(waiting)}":
                self._fire(Event.WAITING, f"waiting for {', '.join(waiting)}")
            await self.board.next_change()
        if self.state is State.STARTING:
            self._fire(Event.CANCEL, "stop requested")
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
        preparing = "preparing" if self.spec.kind != "command" else ""
        self._fire(Event.DEPENDENCIES_MET, preparing)
        while True:
            code, stopped = await self._run_once(pumps)
            if stopped:
                # code None: stopped before anything was spawned
                self._fire(Event.CANCEL if code is None else Event.EXITED_STOPPED,
                           describe_exit(code) if code not in (None, 0, -self.spec.stop_signal) else "")
                return
            assert code is not None
            self.last_exit = code
            now = time.monotonic()
            uptime = now - self.started_at if self.started_at is not None else 0.0
            decision = self.tracker.after_exit(code, uptime, now)
            what = self._failure or await oom.exit_reason(self, code, self._oom_counts) or describe_exit(code)
            if decision.verdict == "done":
                self.completed = self.spec.oneshot or self.tracker.succeeded(code)
                self.want_up = False
                self._fire(Event.EXITED_DONE, what if not self.spec.oneshot else f"completed ({what})")
                return
            if decision.verdict in ("failed", "fatal"):
                self.want_up = False
                self._fire(Event.EXITED_FATAL, f"{what}; " + decision.reason, exit_code=code)
                return
            self._fire(Event.EXITED_RESTART, f"{what}; restarting in {decision.delay:.3g}s", exit_code=code)
            with anyio.move_on_after(decision.delay):
                await self.board.until(lambda: not self.want_up)
            if not self.want_up:
                self._fire(Event.CANCEL, "stopped during backoff")
                return
            self.tracker.restarting(time.monotonic())
            self._fire(Event.BACKOFF_ELAPSED, preparing)

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
            # the held sockets of `listen` (runtime/listen.py), as fds 3, 4, ...
            passed = {"listen_fds": held.passed(self.spec.listen)} if self.spec.listen else {}
            child = self._spawn(launch.argv, env=launch.env, cwd=launch.cwd, run_as=launch.run_as,
                                kill_group=self.spec.kill_group, on_exit=lambda _child: self._wakeup.set(), **passed)
        except (PrepareError, SpawnError) as e:
            self.log.error(f"cannot start: {e}")
            self.started_at = time.monotonic()
            if not self.want_up:
                return None, True
            return getattr(e, "code", 1), False
        self.child, self.started_at = child, time.monotonic()
        self._oom_counts = oom.after_spawn(self, child.pid)  # before any await: children inherit the score
        for fd, stream in ((child.stdout, "stdout"), (child.stderr, "stderr")):
            if fd is not None:
                pumps.start_soon(self._pump, child, fd, stream)
        self.log.info("spawned", pid=child.pid, command=" ".join(launch.argv))
        self._fire(Event.SPAWNED, None)
        try:
            async with anyio.create_task_group() as watchers:
                watchers.start_soon(self._watch_started, child)
                await self._wakeup.wait()
                watchers.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            # this task was cancelled (the program removed by a reload, the shutdown deadline):
            # the child must not outlive the task that watches it
            with anyio.CancelScope(shield=True):
                if child.code is None:
                    self.log.warning("killed (its task was cancelled)", pid=child.pid)
                    await kill(child)  # bounded: the reaper may be cancelled too
            raise
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
        self._fire(Event.RESTART if self._failure else Event.STOP, self._failure or "")
        try:
            for signum, wait in self.kind.stop_plan():
                self._send(child, signum)
                with anyio.move_on_after(wait):
                    await child.exited.wait()
                if child.code is not None:
                    return
                self.log.warning(f"still running {wait:g}s after {signal_name(signum)}")
            self._send(child, signal.SIGKILL, group=True)
            await child.exited.wait()
        except anyio.get_cancelled_exc_class():
            # the shutdown deadline passed, or a second TERM: no more grace
            with anyio.CancelScope(shield=True):
                if self._send(child, signal.SIGKILL, group=True):
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
            failure = f"did not start: {e}"  # handled as a failed start: stopped, then backoff
            self.log.error(failure)
            self._restart(failure)
            return
        probe = self.spec.readiness
        self.ready_probe = None
        # a oneshot without a probe is not "ready" while it runs: it is ready when it completes
        self._fire(Event.STARTED if probe or self.spec.oneshot else Event.STARTED_READY)
        async with anyio.create_task_group() as probes:
            if probe is not None:
                probes.start_soon(self._readiness, probe)
            if self.spec.liveness is not None:
                probes.start_soon(self._liveness, self.spec.liveness)
            if self.spec.memory_limit is not None:
                probes.start_soon(resources.watch_memory, self)

    async def _readiness(self, probe: Probe) -> None:
        await anyio.sleep(probe.initial_delay)
        successes = failures = 0
        delay = FIRST_READY_DELAY
        while True:
            result = await self._check(probe, "readiness")
            if result is None:
                pass  # a bug in the probe code: neither a success nor a failure
            elif result.ok:
                successes, failures = successes + 1, 0
                if successes >= probe.success_threshold and self.state is State.RUNNING:
                    self._fire(Event.PROBE_PASSED, "", probe_ms=round(result.latency * 1000, 1))
            else:
                successes, failures = 0, failures + 1
                if failures >= probe.failure_threshold and self.state is State.READY:
                    self._fire(Event.PROBE_FAILED, f"not ready: {result.message}")
            if self.state is State.READY:
                delay = probe.period
            else:
                delay = min(delay * 2, probe.period)
            await anyio.sleep(delay)

    async def _liveness(self, probe: Probe) -> None:
        await anyio.sleep(probe.initial_delay)
        failures = 0
        while True:
            result = await self._check(probe, "liveness")
            if result is not None:
                failures = 0 if result.ok else failures + 1
                if failures >= probe.failure_threshold:
                    self.request_restart(f"liveness probe failed {failures} times: {result.message}")
                    return
            await anyio.sleep(probe.period)

    async def _check(self, probe: Probe, which: str) -> ProbeResult | None:
        """One probe run, recorded; None when the probe code itself raised: that is a bug of
        ours, logged as one, and says nothing about the program."""
        try:
            result = await check(probe, self.kind)
        except Exception as e:
            tb = e.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            where = f" (at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})" if tb is not None else ""
            self.log.error(f"bug in the {which} probe, not counted: {type(e).__name__}: {e}{where}")
            return None
        if which == "readiness":
            self.ready_probe = result
        else:
            self.live_probe = result
        self.probe_stats[which].observe(result)
        return result
