"""Program's lifecycle, transition by transition: the real Program and its state table, with a
fake spawner and a fake kind instead of processes (a mock only for what a unit test cannot
have: each case here would need a process that dies, hangs or answers probes on cue).

Every scenario asserts the exact path it takes through runtime/state.py's TRANSITIONS, and
test_every_transition_is_covered checks that together they take every entry of the table."""

import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, cast

import anyio
import pytest

from hive_init.config.model import Backoff, Probe, ProgramSpec
from hive_init.health.probes import ProbeResult
from hive_init.runtime.kind import Kind, PrepareError
from hive_init.runtime.program import Program
from hive_init.runtime.spawn import SpawnError
from hive_init.runtime.state import DOWN, TRANSITIONS, Board, Event, State, lifecycle_table

S, E = State, Event
DEADLINE = 10.0  # seconds any one scenario may take before it counts as hung
FAST = Backoff(initial=0.001, max=0.001, reset_after=1000.0)
PROBE = Probe(kind="postgres", target=None, period=0.001, timeout=5.0, failure_threshold=1)  # asks the kind


class FakeChild:
    """What Program needs of runtime.spawn.Child, for a process that exists only here: it exits
    when told to (exit()), or on a signal it is set to die of."""

    _next_pid = 10_000_000  # above any pid_max: never a real process

    def __init__(self, argv: Any, on_exit: Callable[["FakeChild"], None], dies_of: set[int],
                 code_on_signal: int | None):
        FakeChild._next_pid += 1
        self.pid = FakeChild._next_pid
        self.argv = argv
        self.code: int | None = None
        self.exited = anyio.Event()
        self.stdout = self.stderr = None
        self.leftovers_killed = False
        self.signals: list[int] = []
        self._on_exit = on_exit
        self._dies_of = dies_of
        self._code_on_signal = code_on_signal
        self._started = time.monotonic()

    def uptime(self) -> float:
        return time.monotonic() - self._started

    def signal(self, signum: int, group: bool | None = None) -> bool:
        if self.code is not None:
            return False
        self.signals.append(signum)
        if signum in self._dies_of or signum == signal.SIGKILL:
            self.exit(-signum if self._code_on_signal is None or signum == signal.SIGKILL else self._code_on_signal)
        return True

    def exit(self, code: int) -> None:
        self.code = code
        self.exited.set()
        self._on_exit(self)


class FakeSpawner:
    def __init__(self) -> None:
        self.children: list[FakeChild] = []
        self.fail: SpawnError | None = None
        self.dies_of: set[int] = {signal.SIGTERM.value}
        self.code_on_signal: int | None = None  # None: dies of the signal; else exits with this code

    def __call__(self, argv: Any, *, on_exit: Callable[[Any], None], **_: Any) -> FakeChild:
        if self.fail is not None:
            raise self.fail
        child = FakeChild(argv, on_exit, self.dies_of, self.code_on_signal)
        self.children.append(child)
        return child


class FakeKind(Kind):
    """A kind whose every step the test controls: preparation and start can be held or fail,
    and the probe answers what `healthy` says (or raises, for a bug in the probe code)."""

    def __init__(self, spec: ProgramSpec):
        super().__init__(spec)
        self.prepare_gate: anyio.Event | None = None
        self.prepare_error: str | None = None
        self.started_gate: anyio.Event | None = None
        self.started_error: str | None = None
        self.healthy = True
        self.probe_bug = False

    async def prepare(self):  # type: ignore[no-untyped-def]
        if self.prepare_gate is not None:
            await self.prepare_gate.wait()
        if self.prepare_error is not None:
            raise PrepareError(self.prepare_error)
        return await super().prepare()

    async def started(self, child: Any) -> None:
        if self.started_gate is not None:
            await self.started_gate.wait()
        if self.started_error is not None:
            raise PrepareError(self.started_error)

    async def probe(self, probe: Probe) -> ProbeResult:
        if self.probe_bug:
            raise RuntimeError("a bug in the probe")
        return ProbeResult(self.healthy, 0.0, "fine" if self.healthy else "refused", time.time())


def spec(name: str = "app", **fields: Any) -> ProgramSpec:
    return replace(ProgramSpec(name=name, command=("fake",), backoff=FAST, stop_timeout=5.0), **fields)


class World:
    """Programs on one board, each in its own task, as the supervisor runs them."""

    def __init__(self, tg: anyio.abc.TaskGroup, specs: list[ProgramSpec], seen: set[tuple[State, Event]]):
        self.board = Board()
        self.spawner = FakeSpawner()
        self.programs: dict[str, Program] = {}
        self.kinds: dict[str, FakeKind] = {}
        self.paths: dict[str, list[tuple[State, Event, State]]] = {}
        self.reasons: dict[str, list[str]] = {}  # the reason given with each transition
        self.tg = tg
        for s in specs:
            kind = self.kinds[s.name] = FakeKind(s)
            p = self.programs[s.name] = Program(s, self.board, self.programs, kind=kind,
                                                spawner=cast(Any, self.spawner))
            self.paths[s.name], self.reasons[s.name] = [], []

            def record(before: State, event: Event, after: State, name: str = s.name, p: Program = p) -> None:
                self.paths[name].append((before, event, after))
                self.reasons[name].append(p.reason)
                seen.add((before, event))

            p.on_transition = record

    def launch(self) -> None:
        for p in self.programs.values():
            async def own(p: Program = p) -> None:
                with p.scope:
                    await p.run()
            self.tg.start_soon(own)

    async def until(self, predicate: Callable[[], bool]) -> None:
        await self.board.until(predicate)

    async def state(self, name: str, state: State) -> Program:
        p = self.programs[name]
        await self.until(lambda: p.state is state)
        return p

    def child(self, n: int = -1) -> FakeChild:
        return self.spawner.children[n]

    def path(self, name: str = "app") -> list[tuple[State, Event, State]]:
        return self.paths[name]

    def events(self, name: str = "app") -> list[Event]:
        return [e for _, e, _ in self.paths[name]]


@asynccontextmanager
async def world(*specs: ProgramSpec, seen: set[tuple[State, Event]] | None = None, launch: bool = True):
    async with anyio.create_task_group() as tg:
        w = World(tg, list(specs) or [spec()], seen if seen is not None else set())
        with anyio.fail_after(DEADLINE):
            if launch:
                w.launch()
            yield w
        tg.cancel_scope.cancel()


UP_PATH = [E.DEPENDENCIES_MET, E.SPAWNED, E.STARTED_READY]


# ---- the scenarios: each a story a user could tell, with the exact path it takes ----------------

async def crash_backoff_restart_then_stop_and_start(seen: set) -> None:
    async with world(seen=seen) as w:
        await w.state("app", S.READY)
        w.child().exit(1)
        await w.until(lambda: len(w.spawner.children) == 2 and w.programs["app"].state is S.READY)
        p = w.programs["app"]
        assert p.tracker.restarts_total == 1 and p.last_exit == 1
        await p.stop()
        assert w.child().signals == [signal.SIGTERM] and p.state is S.STOPPED and p.reason == ""
        p.start()
        await w.state("app", S.READY)
        assert w.path() == [
            (S.STOPPED, E.DEPENDENCIES_MET, S.STARTING), (S.STARTING, E.SPAWNED, S.STARTING),
            (S.STARTING, E.STARTED_READY, S.READY),
            (S.READY, E.EXITED_RESTART, S.BACKOFF), (S.BACKOFF, E.BACKOFF_ELAPSED, S.STARTING),
            (S.STARTING, E.SPAWNED, S.STARTING), (S.STARTING, E.STARTED_READY, S.READY),
            (S.READY, E.STOP, S.STOPPING), (S.STOPPING, E.EXITED_STOPPED, S.STOPPED),
            (S.STOPPED, E.START, S.STOPPED),
            (S.STOPPED, E.DEPENDENCIES_MET, S.STARTING), (S.STARTING, E.SPAWNED, S.STARTING),
            (S.STARTING, E.STARTED_READY, S.READY),
        ]


async def readiness_probe_passes_fails_and_stop(seen: set) -> None:
    async with world(spec(readiness=PROBE)) as w:
        w.kinds["app"].healthy = False
        p = await w.state("app", S.RUNNING)
        w.kinds["app"].healthy = True
        await w.state("app", S.READY)
        w.kinds["app"].healthy = False
        await w.state("app", S.RUNNING)
        assert p.reason == "not ready: refused"
        await p.stop()
        assert w.path()[2:] == [
            (S.STARTING, E.STARTED, S.RUNNING), (S.RUNNING, E.PROBE_PASSED, S.READY),
            (S.READY, E.PROBE_FAILED, S.RUNNING), (S.RUNNING, E.STOP, S.STOPPING),
            (S.STOPPING, E.EXITED_STOPPED, S.STOPPED),
        ]
    seen.update((b, e) for b, e, _ in w.path())


async def liveness_failure_restarts_through_the_normal_stop(seen: set) -> None:
    async with world(spec(liveness=PROBE), seen=seen) as w:
        await w.state("app", S.READY)
        w.kinds["app"].healthy = False
        await w.until(lambda: len(w.spawner.children) == 2)
        w.kinds["app"].healthy = True
        await w.state("app", S.READY)
        assert w.child(0).signals == [signal.SIGTERM]  # stop_signal, not SIGKILL
        assert w.path()[3:6] == [(S.READY, E.RESTART, S.STOPPING), (S.STOPPING, E.EXITED_RESTART, S.BACKOFF),
                                 (S.BACKOFF, E.BACKOFF_ELAPSED, S.STARTING)]
        assert w.programs["app"].tracker.restarts_total == 1


async def request_restart_while_not_ready(seen: set) -> None:
    async with world(spec(readiness=PROBE), seen=seen) as w:
        w.kinds["app"].healthy = False
        p = await w.state("app", S.RUNNING)
        p.request_restart("memory limit reached")
        await w.until(lambda: len(w.spawner.children) == 2)
        assert w.path()[3:5] == [(S.RUNNING, E.RESTART, S.STOPPING), (S.STOPPING, E.EXITED_RESTART, S.BACKOFF)]
        assert w.reasons["app"][3:5] == ["memory limit reached", "memory limit reached; restarting in 0.001s"]


async def request_restart_with_restart_never_is_fatal_or_done(seen: set) -> None:
    # dies of TERM: a failure, no restart wanted -> FATAL
    async with world(spec(restart="never"), seen=seen) as w:
        p = await w.state("app", S.READY)
        p.request_restart("rolling restart")
        await w.state("app", S.FATAL)
        assert w.events()[3:] == [E.RESTART, E.EXITED_FATAL]
        assert p.reason.startswith("rolling restart; restart policy is never")
        p.start()  # from FATAL
        await w.state("app", S.READY)
        assert (S.FATAL, E.START, S.STOPPED) in w.path()
    # exits 0 on TERM (a graceful server): done -> EXITED
    async with world(spec(restart="never"), seen=seen) as w:
        w.spawner.code_on_signal = 0
        p = await w.state("app", S.READY)
        p.request_restart("rolling restart")
        await w.state("app", S.EXITED)
        assert w.events()[3:] == [E.RESTART, E.EXITED_DONE]
        p.start()  # from EXITED
        await w.state("app", S.READY)
        assert (S.EXITED, E.START, S.STOPPED) in w.path()


async def request_restart_is_ignored_without_a_running_child(seen: set) -> None:
    async with world(spec(autostart=False), seen=seen) as w:
        p = w.programs["app"]
        p.request_restart("nothing to restart")
        assert p.state is S.STOPPED and w.path() == [] and not w.spawner.children


async def exits_in_every_running_state(seen: set) -> None:
    # READY, restart never: exit 0 -> EXITED, exit 1 -> FATAL
    for code, verdict, final in ((0, E.EXITED_DONE, S.EXITED), (1, E.EXITED_FATAL, S.FATAL)):
        async with world(spec(restart="never"), seen=seen) as w:
            await w.state("app", S.READY)
            w.child().exit(code)
            await w.state("app", final)
            assert w.events() == UP_PATH + [verdict]
    # RUNNING (readiness not passed yet): exit 1 -> BACKOFF, then restart-never exits
    async with world(spec(readiness=PROBE), seen=seen) as w:
        w.kinds["app"].healthy = False
        await w.state("app", S.RUNNING)
        w.child().exit(1)
        await w.until(lambda: len(w.spawner.children) == 2)
        assert (S.RUNNING, E.EXITED_RESTART, S.BACKOFF) in w.path()
    for code, verdict, final in ((0, E.EXITED_DONE, S.EXITED), (1, E.EXITED_FATAL, S.FATAL)):
        async with world(spec(readiness=PROBE, restart="never"), seen=seen) as w:
            w.kinds["app"].healthy = False
            await w.state("app", S.RUNNING)
            w.child().exit(code)
            await w.state("app", final)
            assert w.events()[-1] is verdict and w.path()[-1][0] is S.RUNNING
    # STARTING (spawned, the kind has not said started): each verdict
    for restart, code, verdict in (("always", 1, E.EXITED_RESTART), ("never", 0, E.EXITED_DONE),
                                   ("never", 1, E.EXITED_FATAL)):
        async with world(spec(restart=restart), launch=False, seen=seen) as w:
            w.kinds["app"].started_gate = anyio.Event()
            w.launch()
            await w.until(lambda: bool(w.spawner.children))
            w.child().exit(code)
            await w.until(lambda: w.programs["app"].state is not S.STARTING)
            assert w.path()[2] == (S.STARTING, verdict, TRANSITIONS[S.STARTING][verdict])


async def oneshot_completes(seen: set) -> None:
    async with world(spec(oneshot=True, restart="never"), seen=seen) as w:
        p = await w.state("app", S.RUNNING)  # a oneshot is not ready while it runs
        assert not p.ready
        w.child().exit(0)
        await w.state("app", S.EXITED)
        assert p.ready and p.completed and p.reason == "completed (exit status 0)"
        assert w.events() == [E.DEPENDENCIES_MET, E.SPAWNED, E.STARTED, E.EXITED_DONE]


async def exit_at_the_moment_of_a_stop(seen: set) -> None:
    """The child exits by itself in the same instant a stop is asked: stopped, not restarted."""
    for probe_healthy, held in ((None, True), (False, False), (True, False)):
        async with world(spec(readiness=PROBE if probe_healthy is not None else None), launch=False,
                         seen=seen) as w:
            kind = w.kinds["app"]
            if held:
                kind.started_gate = anyio.Event()
            if probe_healthy is not None:
                kind.healthy = probe_healthy
            w.launch()
            want = S.STARTING if held else S.READY if probe_healthy else S.RUNNING
            p = w.programs["app"]
            await w.until(lambda p=p, want=want: bool(w.spawner.children) and p.state is want)
            w.child().exit(0)
            p.request_stop()
            await w.state("app", S.STOPPED)
            assert w.path()[-1] == (want, E.EXITED_STOPPED, S.STOPPED) and not w.child().signals


async def stop_while_starting_or_preparing(seen: set) -> None:
    # spawned, not started: the child is stopped
    async with world(launch=False, seen=seen) as w:
        w.kinds["app"].started_gate = anyio.Event()
        w.launch()
        await w.until(lambda: bool(w.spawner.children))
        await w.programs["app"].stop()
        assert w.events()[2:] == [E.STOP, E.EXITED_STOPPED]
    # still preparing (PostgreSQL's first boot): the preparation is cancelled, nothing spawned
    async with world(launch=False, seen=seen) as w:
        w.kinds["app"].prepare_gate = anyio.Event()
        w.launch()
        p = await w.state("app", S.STARTING)
        await p.stop()
        assert w.events() == [E.DEPENDENCIES_MET, E.CANCEL] and not w.spawner.children


async def stop_during_backoff(seen: set) -> None:
    async with world(spec(backoff=Backoff(initial=3600.0, max=3600.0)), seen=seen) as w:
        await w.state("app", S.READY)
        w.child().exit(1)
        p = await w.state("app", S.BACKOFF)
        await p.stop()
        assert p.reason == "stopped during backoff"
        assert w.path()[-2:] == [(S.READY, E.EXITED_RESTART, S.BACKOFF), (S.BACKOFF, E.CANCEL, S.STOPPED)]


async def failed_starts(seen: set) -> None:
    # the kind cannot prepare: handled like a crash
    async with world(launch=False, seen=seen) as w:
        w.kinds["app"].prepare_error = "data directory is not ours"
        w.launch()
        await w.until(lambda: w.programs["app"].tracker.restarts_total >= 1)
        assert w.path()[:2] == [(S.STOPPED, E.DEPENDENCIES_MET, S.STARTING), (S.STARTING, E.EXITED_RESTART, S.BACKOFF)]
    # the command cannot be executed, restart never: FATAL at once
    async with world(spec(restart="never"), launch=False, seen=seen) as w:
        w.spawner.fail = SpawnError("fake: not found", 127)
        w.launch()
        p = await w.state("app", S.FATAL)
        assert p.last_exit == 127 and w.events() == [E.DEPENDENCIES_MET, E.EXITED_FATAL]
    # spawned, but the kind says it did not start: stopped through its stop, then backoff
    async with world(launch=False, seen=seen) as w:
        w.kinds["app"].started_error = "no answer on the socket"
        w.launch()
        await w.until(lambda: w.programs["app"].tracker.restarts_total >= 1)
        assert w.path()[2:4] == [(S.STARTING, E.RESTART, S.STOPPING), (S.STOPPING, E.EXITED_RESTART, S.BACKOFF)]
        assert w.child(0).signals == [signal.SIGTERM]


async def too_many_restarts(seen: set) -> None:
    async with world(spec(max_restarts=1), seen=seen) as w:
        await w.state("app", S.READY)
        w.child().exit(1)
        await w.until(lambda: len(w.spawner.children) == 2 and w.programs["app"].state is S.READY)
        w.child().exit(1)
        p = await w.state("app", S.FATAL)
        assert "max_restarts = 1" in p.reason and w.path()[-1] == (S.READY, E.EXITED_FATAL, S.FATAL)


async def dependencies(seen: set) -> None:
    db = spec("db", readiness=PROBE)
    cache = spec("cache", readiness=PROBE)
    app = spec("app", depends_on=(("db", "ready"), ("cache", "ready")))
    async with world(db, cache, app, seen=seen) as w:
        w.kinds["db"].healthy = w.kinds["cache"].healthy = False
        p = await w.state("app", S.STARTING)
        await w.until(lambda: p.reason == "waiting for db (ready), cache (ready)")
        w.kinds["db"].healthy = True
        await w.until(lambda: p.reason == "waiting for cache (ready)")
        w.kinds["cache"].healthy = True
        await w.state("app", S.READY)
        assert w.path("app")[:3] == [(S.STOPPED, E.WAITING, S.STARTING), (S.STARTING, E.WAITING, S.STARTING),
                                     (S.STARTING, E.DEPENDENCIES_MET, S.STARTING)]
    # stopped while waiting
    async with world(spec("db", autostart=False), spec("app", depends_on=(("db", "started"),)), seen=seen) as w:
        p = await w.state("app", S.STARTING)
        await p.stop()
        assert p.reason == "stop requested" and w.events("app") == [E.WAITING, E.CANCEL]
    # the dependency fails while the dependent waits, and before a dependent is started
    db = spec("db", restart="never", readiness=PROBE)
    async with world(db, spec("app", depends_on=(("db", "ready"),)), spec("late", autostart=False,
                     depends_on=(("db", "ready"),)), seen=seen) as w:
        w.kinds["db"].healthy = False
        await w.state("db", S.RUNNING)
        await w.state("app", S.STARTING)
        w.child().exit(1)
        p = await w.state("app", S.FATAL)
        assert p.reason.startswith("dependency db is FATAL") and w.events("app") == [E.WAITING, E.DEPENDENCY_FAILED]
        w.programs["late"].start()
        await w.state("late", S.FATAL)
        assert w.path("late") == [(S.STOPPED, E.START, S.STOPPED), (S.STOPPED, E.DEPENDENCY_FAILED, S.FATAL)]


SCENARIOS: list[Callable[[set], Awaitable[None]]] = [
    crash_backoff_restart_then_stop_and_start, readiness_probe_passes_fails_and_stop,
    liveness_failure_restarts_through_the_normal_stop, request_restart_while_not_ready,
    request_restart_with_restart_never_is_fatal_or_done, request_restart_is_ignored_without_a_running_child,
    exits_in_every_running_state, oneshot_completes, exit_at_the_moment_of_a_stop,
    stop_while_starting_or_preparing, stop_during_backoff, failed_starts, too_many_restarts, dependencies,
]


@pytest.mark.anyio
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_scenario(scenario: Callable[[set], Awaitable[None]]) -> None:
    await scenario(set())


@pytest.mark.anyio
async def test_every_transition_is_covered() -> None:
    seen: set[tuple[State, Event]] = set()
    for scenario in SCENARIOS:
        await scenario(seen)
    table = {(state, event) for state, events in TRANSITIONS.items() for event in events}
    assert table - seen == set(), "transitions no scenario takes"
    assert seen <= table


# ---- the table itself and the rest of Program's duties ----------------------------------------

def test_the_table_is_whole() -> None:
    assert set(TRANSITIONS) == set(State)
    reached = {after for events in TRANSITIONS.values() for after in events.values()}
    assert reached == set(State)  # every state can be entered
    used = {event for events in TRANSITIONS.values() for event in events}
    assert used == set(Event)
    for state in DOWN:
        assert TRANSITIONS[state].get(E.START) is S.STOPPED  # an operator can always start again


def test_the_readme_shows_the_table() -> None:
    import pathlib

    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
    assert lifecycle_table() in readme, "README's lifecycle table is not runtime/state.py's: paste lifecycle_table()"


@pytest.mark.anyio
async def test_a_cancelled_program_task_kills_its_child() -> None:
    async with world() as w:
        p = await w.state("app", S.READY)
        p.scope.cancel()
        await w.child().exited.wait()
        assert w.child().signals == [signal.SIGKILL] and p.pid is None


@pytest.mark.anyio
async def test_a_bug_in_the_probe_code_is_logged_as_a_bug_not_a_failing_program(capfd: pytest.CaptureFixture) -> None:
    async with world(spec(readiness=PROBE, liveness=PROBE)) as w:
        p = await w.state("app", S.READY)
        w.kinds["app"].probe_bug = True
        before = p.probe_stats["liveness"].count
        # a bug is not counted as a probe run: wait for it in the log
        with anyio.fail_after(DEADLINE):
            while capfd.readouterr().out.count("bug in the liveness probe") < 1:
                await anyio.sleep(PROBE.period)  # polling the captured log, with a deadline
        assert p.state is S.READY and len(w.spawner.children) == 1 and w.child().code is None
        assert p.probe_stats["liveness"].count == before


@pytest.mark.anyio
async def test_uptime_is_monotonic(monkeypatch: pytest.MonkeyPatch) -> None:
    async with world() as w:
        p = await w.state("app", S.READY)
        monkeypatch.setattr(time, "time", lambda: 0.0)  # the wall clock stepped back to 1970
        uptime = p.uptime()
        assert uptime is not None and 0 <= uptime < 3600


@pytest.mark.anyio
async def test_an_event_the_table_has_no_cell_for_is_a_bug_and_changes_nothing(capfd: pytest.CaptureFixture) -> None:
    async with world() as w:
        p = await w.state("app", S.READY)
        p._fire(E.BACKOFF_ELAPSED, "should not happen")
        assert p.state is S.READY and p.reason == "" and w.path()[-1][2] is S.READY
        assert "bug: BACKOFF_ELAPSED cannot happen in READY; state kept" in capfd.readouterr().out
