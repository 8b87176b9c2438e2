"""The Board (hive_init/runtime/state.py), the supervisor's one condition variable: every change
wakes every waiter, and a waiter returns once its own predicate holds. anyio, no processes."""

import anyio
import pytest

from hive_init.runtime.state import Board

pytestmark = pytest.mark.anyio


async def test_until_returns_at_once_when_the_predicate_already_holds():
    board = Board()
    with anyio.fail_after(5):  # a bound on a hang, not on speed
        await board.until(lambda: True)
    assert board.version == 0


async def test_every_waiter_wakes_and_each_rechecks_its_own_predicate():
    board = Board()
    state = {"db": "STARTING", "app": "STOPPED"}
    woke: list[str] = []

    async def wait_for(name: str, wanted: str) -> None:
        await board.until(lambda: state[name] == wanted)
        woke.append(name)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for, "db", "READY")
            tg.start_soon(wait_for, "app", "RUNNING")
            await anyio.wait_all_tasks_blocked()
            state["db"] = "READY"
            board.changed()
            await anyio.wait_all_tasks_blocked()
            assert woke == ["db"]  # app woke too, re-checked, and waits on
            state["app"] = "RUNNING"
            board.changed()
    assert woke == ["db", "app"]
    assert board.version == 2


async def test_a_change_before_the_wait_is_not_lost_by_until():
    # until() checks first: a change announced before anyone waits is seen in the state itself
    board = Board()
    ready = True
    board.changed()
    with anyio.fail_after(5):
        await board.until(lambda: ready)


async def test_next_change_waits_for_the_next_one_only():
    board = Board()
    board.changed()  # an earlier change does not satisfy a later next_change()
    seen = []

    async def watcher() -> None:
        await board.next_change()
        seen.append(board.version)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher)
            await anyio.wait_all_tasks_blocked()
            assert seen == []
            board.changed()
    assert seen == [2]
