"""The whole: every program's task, the one reaper, signals, the endpoints; start order from the
dependency graph, stop order its reverse, all under one shutdown deadline; critical programs.

Shutdown is the supervisor's scope closing: programs are stopped dependents-first, then the
task group that owns every task is cancelled.

The supervisor imports nothing above it: the CLI hands it its endpoints (the control socket,
the HTTP endpoint) and how to reload the config.
"""

import dataclasses
import os
import signal
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol

import anyio

from hive_init import exits, log, redact
from hive_init.config.model import Config
from hive_init.runtime import oom, resources
from hive_init.runtime.listen import held
from hive_init.runtime.pid1 import SignalQueue, become_subreaper, reaper, signal_name
from hive_init.runtime.program import Program
from hive_init.runtime.spawn import KILL_WAIT  # also how long SIGKILLed programs get at the shutdown deadline
from hive_init.runtime.state import Board, State

SHUTDOWN = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# what _signals acts on; every other catchable signal is ignored (SignalQueue says how)
ACTIONS = (*SHUTDOWN, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD)
REPEAT_WINDOW = 0.5  # seconds: a second TERM/INT sooner than this is the same request delivered twice


class SupervisorView(Protocol):
    """What the read-only endpoints (HTTP: /livez, /readyz, /health, /metrics) may use of the
    supervisor; only the control socket is given the whole Supervisor, to act on it."""

    @property
    def config(self) -> Config: ...
    @property
    def programs(self) -> Mapping[str, Program]: ...
    @property
    def started_at(self) -> float: ...
    @property
    def reaper(self) -> Any: ...
    def ready(self) -> tuple[bool, list[str]]: ...
    def snapshot(self) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One endpoint the CLI hands in (the control socket, the HTTP endpoint). `bind(config)`
    runs before the first spawn and raises to refuse the start (a socket taken, a port in use);
    `serve(supervisor, bound, *, task_status)` runs once the programs are launched; `close(bound)`
    undoes a bind when a later one fails."""

    name: str
    bind: Callable[[Config], Any]
    serve: Callable[..., Coroutine[Any, Any, None]]
    close: Callable[[Any], None]


# applies the config file again (SIGHUP): returns what the control socket answers
Reload = Callable[["Supervisor"], Coroutine[Any, Any, Any]]


class Supervisor:
    def __init__(self, config: Config, *, endpoints: Sequence[Endpoint] = (), reload: Reload | None = None):
        self.config = config
        self.endpoints = tuple(endpoints)
        self._reload = reload
        self.board = Board()
        self.programs: dict[str, Program] = {}
        self.order: list[str] = config.start_order()
        self.log = log.get_logger()
        self.started_at = time.time()
        self._started_mono = time.monotonic()  # uptime: a wall-clock jump must not change it
        self.exit_status = exits.OK
        self.shutdown_reason = ""
        self.shutting_down = False
        self._shutdown = anyio.Event()
        self._grace: anyio.CancelScope | None = None
        self._forced = False
        self._first_signal_at = 0.0
        self._reloading = anyio.Lock()
        self.reaper = reaper
        oom.configure(list(config.programs.values()))
        for name in self.order:
            self.programs[name] = Program(config.programs[name], self.board, self.programs,
                                          config.init.output_buffer_lines)

    # ---- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> int:
        become_subreaper()
        os.environ["HIVE_INIT_SOCKET"] = self.config.init.control_socket
        log.sink.make_nonblocking()
        self.log.info("starting", config=self.config.path, programs=len(self.programs), pid=os.getpid())
        # what can fail without anything running fails here: the socket taken, the port in use
        sockets = self._bind_endpoints()
        recorder = self._stop_leftovers()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await tg.start(self._signals)
                # programs first: importing the endpoints' modules must not delay the first spawn
                for name in self.order:
                    self._launch(self.programs[name])
                await self._start_endpoints(tg, sockets)
                tg.start_soon(self._watch_critical)
                if recorder is not None:
                    tg.start_soon(self._record_running, recorder)
                await self._shutdown.wait()
                await self._stop_all()
                tg.cancel_scope.cancel()
        except BaseException:
            self._kill_left()
            raise
        if recorder is not None and all(p.pid is None for p in self.programs.values()):
            recorder.close()
        self.log.info("exited", status=self.exit_status, reason=self.shutdown_reason,
                      zombies_reaped=self.reaper.reaped_total)
        return self.exit_status

    def _launch(self, program: Program) -> None:
        async def own() -> None:
            with program.scope:
                await program.run()

        program.scope = anyio.CancelScope()
        self._tg.start_soon(own, name=f"program {program.name}")
        if program.spec.restart_order == "start-first":
            program.rolling = lambda reason: self._roll_soon(program, reason)

    def _roll_soon(self, program: Program, reason: str) -> bool:
        """A restart of a start-first program (a liveness failure): rolling, in a task of ours."""
        from hive_init.runtime.rolling import replacing, roll, rolls

        if replacing(program):
            return True  # its successor is on the way
        if not rolls(program) or self.shutting_down:
            return False
        self._tg.start_soon(roll, self, program, None, reason, name=f"rolling restart {program.name}")
        return True

    async def apply(self, config: Config) -> dict[str, list[str]]:
        """A new config on a running init (reload): the programs' differences only."""
        async with self._reloading:
            return await self._apply(config)

    async def _apply(self, config: Config) -> dict[str, list[str]]:
        # new addresses are bound before anything is touched: one that cannot be is a
        # ConfigError, and the reload is rejected whole (kept addresses stay the same sockets)
        await anyio.to_thread.run_sync(held.hold, config)
        old, new = self.config.programs, config.programs
        removed = [n for n in old if n not in new]
        changed = [n for n in old if n in new and old[n] != new[n]]
        added = [n for n in new if n not in old]
        if config.init != self.config.init:
            self.log.warning("[init] changes take effect at the next start of hive-init")
        redact.set_secrets(config.secrets)
        from hive_init.runtime.rolling import roll, rolls

        # a start-first program that serves is restarted beside itself, after the others
        rolling = [n for n in changed if rolls(self.programs[n], new[n])]
        for name in reversed(self.order):
            if name in removed or (name in changed and name not in rolling):
                program = self.programs[name]
                await program.stop()
                program.scope.cancel()
        # removed from the shared map only now, with no await before the new map is complete: a
        # program depending on two changed ones looks both up while the first one stops
        for name in removed + changed:
            if name not in rolling:  # a rolling one keeps its Program: roll() swaps its child
                del self.programs[name]
        self.config = dataclasses.replace(config, init=self.config.init)
        oom.configure(list(config.programs.values()))
        self.order = config.start_order()
        fresh = {}
        for name in self.order:
            if name in added or (name in changed and name not in rolling):
                fresh[name] = Program(new[name], self.board, self.programs, self.config.init.output_buffer_lines)
        # keep the dict in start order: status lists programs as they start
        ordered = {name: self.programs.get(name) or fresh[name] for name in self.order}
        self.programs.clear()
        self.programs.update(ordered)
        for program in fresh.values():
            self._launch(program)
        kept = []
        for name in rolling:
            if await roll(self, self.programs[name], new[name], "config changed") is not None:
                self.config.programs[name] = old[name]  # still running as before: the next reload tries again
                kept.append(name)
        held.release_unused(self.config)  # a stopped process's copy is gone with it
        self.board.changed()
        return {"added": added, "removed": removed, "changed": changed, "kept": kept}

    def request_shutdown(self, reason: str, status: int = exits.OK) -> None:
        if self._shutdown.is_set():
            return
        self.shutting_down = True
        self.shutdown_reason = reason
        self.exit_status = status
        self.log.info("shutting down", reason=reason)
        self._shutdown.set()
        self.board.changed()

    async def _stop_all(self) -> None:
        """Reverse priority a level at a time, dependents before their dependencies (graph.stop_waits),
        programs with nothing to wait for at the same time."""
        from hive_init.config.graph import stop_waits

        deadline = self.config.init.shutdown_timeout
        done = {name: anyio.Event() for name in self.programs}
        waits = stop_waits({name: program.spec for name, program in self.programs.items()})

        async def stop(name: str) -> None:
            for other in waits[name]:
                await done[other].wait()
            await self.programs[name].stop()
            done[name].set()

        with anyio.move_on_after(deadline) as self._grace:
            async with anyio.create_task_group() as tg:
                for name in reversed(self.order):
                    tg.start_soon(stop, name)
        self._grace = None
        left = [p for p in self.programs.values() if p.pid is not None]
        if left:
            if not self._forced:
                self.log.warning(f"shutdown_timeout ({deadline:g}s) reached: killing what is left",
                                 programs=",".join(p.name for p in left))
            # killed here, while the reaper still runs to report the exits, not after the task
            # group (the reaper's task included) is cancelled
            for program in left:
                program.signal_group(signal.SIGKILL)
            with anyio.move_on_after(KILL_WAIT):
                await self.board.until(lambda: all(p.pid is None for p in left))

    # ---- signals -----------------------------------------------------------------------------
    async def _signals(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        with SignalQueue(ACTIONS) as signals:
            task_status.started()
            reaper.reap()  # children that exited before the handler existed
            async for signum in signals:
                if signum == signal.SIGCHLD:
                    reaper.reap()
                elif signum in SHUTDOWN:
                    self._on_shutdown_signal(signum)
                elif signum == signal.SIGHUP:
                    # never awaited here: this loop must stay free to reap while programs stop
                    self._tg.start_soon(self._on_reload_signal)
                elif signum == signal.SIGUSR1:
                    for program in self.programs.values():
                        if program.output.file is not None:
                            program.output.file.reopen()
                    self.log.info("log files reopened (SIGUSR1)")
                elif signum == signal.SIGUSR2:
                    self.log_status()
                else:
                    self.log.debug("signal ignored", signal=signal_name(signum))

    def _on_shutdown_signal(self, signum: int) -> None:
        name = signal_name(signum)
        if not self.shutting_down:
            self._first_signal_at = time.monotonic()
            self.request_shutdown(f"received {name}")
        elif time.monotonic() - self._first_signal_at < REPEAT_WINDOW:
            # wrappers (`uv run`, `timeout`, a terminal's Ctrl-C to the whole group) deliver the
            # same signal twice within milliseconds: that is not an operator insisting
            self.log.info(f"received {name} again at once: ignored (send it again to skip the grace)")
        elif self._grace is not None and signum in (signal.SIGTERM, signal.SIGINT):
            self.log.warning(f"received {name} again: killing what is left")
            self._forced = True
            self._grace.cancel()

    async def _on_reload_signal(self) -> None:
        if self._reload is None:
            self.log.warning("SIGHUP: this supervisor was given no way to reload its config")
            return
        await self._reload(self)

    def log_status(self) -> None:
        for program in self.programs.values():
            self.log.info("status", program=program.name, state=program.state.value, pid=program.pid,
                          reason=program.reason)

    # ---- critical programs ----------------------------------------------------------------------
    async def _watch_critical(self) -> None:
        while True:
            for program in self.programs.values():
                if program.spec.critical and program.state in (State.FATAL, State.EXITED) and not program.completed \
                        and not self.shutting_down:
                    self.request_shutdown(f"critical program {program.name} is {program.state.value}: {program.reason}",
                                          exits.CRITICAL_FAILED)
            await self.board.next_change()

    # ---- endpoints -------------------------------------------------------------------------------
    def _bind_endpoints(self) -> list[tuple[Endpoint, Any]]:
        """Bound before the first spawn (binding is cheap; serving them waits for the programs):
        a second init on the same socket, or a port in use, exits with one line and nothing left."""
        bound: list[tuple[Endpoint, Any]] = []
        try:
            for endpoint in self.endpoints:
                bound.append((endpoint, endpoint.bind(self.config)))
        except BaseException:
            for endpoint, handle in bound:
                endpoint.close(handle)
            raise
        return bound

    async def _start_endpoints(self, tg: anyio.abc.TaskGroup, bound: list[tuple[Endpoint, Any]]) -> None:
        for endpoint, handle in bound:
            await tg.start(self._endpoint, endpoint, handle)

    async def _endpoint(self, endpoint: Endpoint, handle: Any, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """An endpoint's bug must not take the programs down unstopped: it is said in one line
        and becomes an orderly shutdown (exit 70), the programs stopped as on TERM."""
        try:
            await endpoint.serve(self, handle, task_status=task_status)
        except Exception as e:
            self.log.error(exits.describe_internal_error(e))
            self.request_shutdown(f"internal error in the {endpoint.name}", exits.SOFTWARE)

    def _stop_leftovers(self) -> Any:
        """Not PID 1 (whose death ends everything in its namespace): stop what a previous init on
        this socket left running, and keep a record of ours (runtime/leftovers.py says why)."""
        if os.getpid() == 1:
            return None
        from hive_init.runtime import leftovers

        try:
            path = leftovers.record_path(self.config.init.control_socket)
        except OSError as e:  # no private directory to keep it in: run, without the record
            self.log.warning(f"programs are not recorded for cleanup after a crash: {e.filename}: {e.strerror}")
            return None
        leftovers.stop_leftovers(path)
        return leftovers.Recorder(path)

    async def _record_running(self, recorder: Any) -> None:
        while True:
            recorder.update(self.programs)
            await self.board.next_change()

    def _kill_left(self) -> None:
        """The last resort when the supervisor itself fails: no program outlives it unstopped."""
        for program in self.programs.values():
            if program.pid is not None:
                program.signal_group(signal.SIGKILL)

    def ready(self) -> tuple[bool, list[str]]:
        """The container's readiness: every program that should be up is READY."""
        failing = [redact.redact(f"{p.name} {p.state.value}" + (f" ({p.reason})" if p.reason else ""))
                   for p in self.programs.values() if p.should_be_up and not p.ready]
        return not failing and not self.shutting_down, failing

    def snapshot(self) -> dict[str, Any]:
        ready, failing = self.ready()
        return {
            "ready": ready,
            "failing": failing,
            "shutting_down": self.shutting_down,
            "pid": os.getpid(),
            "uptime": round(time.monotonic() - self._started_mono, 3),
            "zombies_reaped": self.reaper.reaped_total,
            "orphans_reaped": self.reaper.orphans_reaped,
            "programs": [describe(p) for p in self.programs.values()],
            "container": resources.container(),
        }


def describe(p: Program) -> dict[str, Any]:
    probe = p.ready_probe
    uptime = p.uptime()
    return {
        "name": p.name,
        "state": p.state.value,
        "ready": p.ready,
        "pid": p.pid,
        "uptime": round(uptime, 3) if uptime is not None else None,
        "restarts": p.tracker.restarts_total,
        "last_exit": p.last_exit,
        "reason": redact.redact(p.reason),
        "critical": p.spec.critical,
        "listen": held.bound(p.spec.listen),
        "probe": None if probe is None else {
            "ok": probe.ok, "latency_ms": round(probe.latency * 1000, 2), "message": redact.redact(probe.message),
        },
        **resources.describe(p),
        "oom_score_adj": oom.effective(p.spec),
    }
