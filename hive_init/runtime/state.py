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
