"""Program states, and the board every program's state change is announced on."""

import enum
from collections.abc import Callable

import anyio


class State(str, enum.Enum):
    STOPPED = "STOPPED"  # not running, and not asked to run (or waiting to be started)
    STARTING = "STARTING"  # waiting for its dependencies, being prepared, or spawned but not yet started
    RUNNING = "RUNNING"  # started; its readiness probe has not passed (yet, or any more)
    READY = "READY"  # started and ready (no readiness probe: ready once started)
    BACKOFF = "BACKOFF"  # exited; will be started again after a delay
    STOPPING = "STOPPING"  # asked to stop, waiting for it to exit
    EXITED = "EXITED"  # ended as it should (a completed oneshot, or no restart wanted)
    FATAL = "FATAL"  # gave up: too many restarts, a failed oneshot, or a dependency that failed


UP = frozenset({State.RUNNING, State.READY})
DOWN = frozenset({State.STOPPED, State.EXITED, State.FATAL})


class Event(str, enum.Enum):
    """What can happen to a program. Exits are told apart by what the restart policy decided,
    so that every (state, event) pair has exactly one next state."""

    START = "an operator asked to start it (start, restart)"
    WAITING = "dependency changed: some are not there yet"
    DEPENDENCY_FAILED = "dependency changed: one can never be there (FATAL, or exited for good)"
    DEPENDENCIES_MET = "dependency changed: all are there; preparing"
    SPAWNED = "the child is running"
    STARTED = "the kind says started; a readiness probe decides READY"
    STARTED_READY = "the kind says started; no readiness probe to wait for"
    PROBE_PASSED = "readiness probe passed success_threshold times"
    PROBE_FAILED = "readiness probe failed failure_threshold times"
    RESTART = "restart asked while a child runs: liveness failed, did not start, request_restart()"
    STOP = "stop asked while a child runs"
    CANCEL = "stop asked before a child was spawned (waiting, preparing, backoff)"
    EXITED_RESTART = "exited (or failed to start); the restart policy restarts it"
    EXITED_DONE = "exited as it should; no restart wanted"
    EXITED_FATAL = "exited badly with no restart wanted, or too many restarts"
    EXITED_STOPPED = "exited after a stop was asked"
    BACKOFF_ELAPSED = "the backoff delay is over"


def _exits() -> dict[Event, State]:
    return {Event.EXITED_RESTART: State.BACKOFF, Event.EXITED_DONE: State.EXITED,
            Event.EXITED_FATAL: State.FATAL, Event.EXITED_STOPPED: State.STOPPED}


# The whole lifecycle, as s6-supervise keeps it: state x event -> next state. A pair that is
# not here cannot happen; Program logs it as a bug and stays where it is. The README shows this
# table (rendered by `lifecycle_table`, and a test keeps the two the same).
TRANSITIONS: dict[State, dict[Event, State]] = {
    State.STOPPED: {
        Event.START: State.STOPPED,
        Event.WAITING: State.STARTING,
        Event.DEPENDENCY_FAILED: State.FATAL,
        Event.DEPENDENCIES_MET: State.STARTING,
    },
    State.STARTING: {
        Event.WAITING: State.STARTING,
        Event.DEPENDENCY_FAILED: State.FATAL,
        Event.DEPENDENCIES_MET: State.STARTING,
        Event.CANCEL: State.STOPPED,
        Event.SPAWNED: State.STARTING,
        Event.STARTED: State.RUNNING,
        Event.STARTED_READY: State.READY,
        Event.STOP: State.STOPPING,
        Event.RESTART: State.STOPPING,
        **_exits(),
    },
    State.RUNNING: {
        Event.PROBE_PASSED: State.READY,
        Event.STOP: State.STOPPING,
        Event.RESTART: State.STOPPING,
        **_exits(),
    },
    State.READY: {
        Event.PROBE_FAILED: State.RUNNING,
        Event.STOP: State.STOPPING,
        Event.RESTART: State.STOPPING,
        **_exits(),
    },
    State.STOPPING: _exits(),
    State.BACKOFF: {
        Event.BACKOFF_ELAPSED: State.STARTING,
        Event.CANCEL: State.STOPPED,
    },
    State.EXITED: {Event.START: State.STOPPED},
    State.FATAL: {Event.START: State.STOPPED},
}


def next_state(state: State, event: Event) -> State | None:
    """Where `event` takes a program in `state`; None when it cannot happen there."""
    return TRANSITIONS[state].get(event)


def lifecycle_table() -> str:
    """The table as Markdown, one row per event, one column per state (README "How it works")."""
    states = list(State)
    rows = ["| event \\ state | " + " | ".join(s.value for s in states) + " | the event |",
            "|---|" + "---|" * len(states) + "---|"]
    for event in Event:
        cells = [TRANSITIONS[s][event].value if event in TRANSITIONS[s] else "" for s in states]
        rows.append(f"| `{event.name}` | " + " | ".join(cells) + f" | {event.value} |")
    return "\n".join(rows) + "\n"


class Board:
    """A condition variable for the whole supervisor: every change wakes every waiter, each of
    which re-checks its own predicate. There are few programs, so this is cheap and simple."""

    def __init__(self) -> None:
        self._event = anyio.Event()
        self.version = 0

    def changed(self) -> None:
        event, self._event = self._event, anyio.Event()
        self.version += 1
        event.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._event.wait()

    async def next_change(self) -> None:
        await self._event.wait()
