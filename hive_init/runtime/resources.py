"""What each program's process tree uses, read from /proc when someone asks (status, a scrape),
never on a timer of its own; and `memory_limit`, watched only for the programs that have one.

The readings (hive_init.procfs) run in a worker thread: reading /proc for every process is
blocking I/O. The previous reading of each program is kept here (ProgramState.previous), so
that CPU% is the CPU time used between two readings over the time between them; the first
reading of a process gives its average since it started, as ps(1) does.

A program with `memory_limit` has one more task while it runs: it reads its own tree every
`memory_limit_for` seconds (one /proc scan plus its processes' smaps_rollup and fd
directories), and any other reading (status, scrape) counts too. Two readings above the limit
`memory_limit_for` apart, with none below in between, restart it through its normal stop
(Program.request_restart): so a leak is acted on between `memory_limit_for` and twice that
after it crossed the limit.
"""

import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from hive_init import procfs
from hive_init.config.model import ProgramSpec


class Watched(Protocol):
    """What this module reads of a program (runtime/program.py's Program is one); named here so
    that the program imports this module, not the other way round."""

    name: str
    spec: ProgramSpec
    log: Any
    child: Any

    @property
    def pid(self) -> int | None: ...

    def request_restart(self, reason: str) -> None: ...


CPU_WINDOW_MIN = 1.0  # seconds: a reading sooner than this after the previous one keeps its CPU%
WATCH_MIN_INTERVAL = 0.5  # seconds between a watcher's readings, whatever memory_limit_for says


@dataclass
class ProgramState:
    usage: procfs.TreeUsage | None = None  # the last reading
    cpu_percent: float | None = None
    previous: tuple[float, float, int] | None = None  # (monotonic time, cpu seconds, root pid): CPU% from here
    above_since: float | None = None  # monotonic time of the first reading above memory_limit
    memory_limit_restarts: int = 0
    oom_kills: int = 0


_states: "weakref.WeakKeyDictionary[Watched, ProgramState]" = weakref.WeakKeyDictionary()
_container: procfs.CgroupMemory | None = None
_container_oom_kills: int | None = None


def state_of(program: "Watched") -> ProgramState:
    state = _states.get(program)
    if state is None:
        state = _states[program] = ProgramState()
    return state


def _read_all(roots: dict[str, int]) -> tuple[dict[str, procfs.TreeUsage], procfs.CgroupMemory | None]:
    return procfs.trees(roots), procfs.cgroup_memory(procfs.own_cgroup())


async def refresh(programs: Iterable["Watched"]) -> None:
    """One reading of every running program (one /proc scan) and of the container's cgroup."""
    global _container, _container_oom_kills
    programs = list(programs)
    roots = {p.name: p.pid for p in programs if p.pid is not None}
    usages, container = await anyio.to_thread.run_sync(_read_all, roots)
    now = time.monotonic()
    for program in programs:
        record(program, usages.get(program.name) if program.pid == roots.get(program.name) else None, now)
    _container = container
    kills = container.oom_kills if container is not None else None
    if kills is not None and _container_oom_kills is not None and kills > _container_oom_kills:
        from hive_init import log

        log.get_logger().warning("the OOM killer killed a process in the container",
                                 oom_kills=kills, limit=container.limit if container else None)
    _container_oom_kills = kills


def record(program: "Watched", usage: procfs.TreeUsage | None, now: float) -> None:
    state = state_of(program)
    state.usage = usage
    if usage is None:
        state.cpu_percent, state.previous, state.above_since = None, None, None
        return
    previous = state.previous
    if previous is None or previous[2] != usage.root:
        child = program.child
        elapsed = now - child.started_at if child is not None and child.pid == usage.root else 0.0
        state.cpu_percent = 100 * usage.cpu_seconds / elapsed if elapsed > 0 else None
        state.previous = (now, usage.cpu_seconds, usage.root)
    elif now - previous[0] >= CPU_WINDOW_MIN:
        state.cpu_percent = 100 * max(0.0, usage.cpu_seconds - previous[1]) / (now - previous[0])
        state.previous = (now, usage.cpu_seconds, usage.root)
    _check_limit(program, state, usage, now)


def _check_limit(program: "Watched", state: ProgramState, usage: procfs.TreeUsage, now: float) -> None:
    limit = program.spec.memory_limit
    if limit is None or usage.memory <= limit:
        state.above_since = None
        return
    if state.above_since is None:
        state.above_since = now
        program.log.info(f"memory {format_bytes(usage.memory)} ({usage.memory_source}) is above memory_limit "
                         f"{format_bytes(limit)}: restarting it if it stays above for {program.spec.memory_limit_for:g}s")
        return
    if now - state.above_since >= program.spec.memory_limit_for:
        state.above_since = None
        state.memory_limit_restarts += 1
        program.request_restart(
            f"memory {format_bytes(usage.memory)} ({usage.memory_source}) above memory_limit {format_bytes(limit)} "
            f"for {program.spec.memory_limit_for:g}s")


async def watch_memory(program: "Watched") -> None:
    """While the program runs (the program's task cancels it when the child exits)."""
    interval = max(program.spec.memory_limit_for, WATCH_MIN_INTERVAL)
    while True:
        pid = program.pid
        if pid is None:
            return
        usage = await anyio.to_thread.run_sync(procfs.tree_usage, pid)
        if program.pid == pid:
            record(program, usage, time.monotonic())
        await anyio.sleep(interval)


def describe(program: "Watched") -> dict[str, Any]:
    """The fields of `status --json` (and /health): the last reading, None where there is none."""
    state = _states.get(program)
    usage = state.usage if state is not None and program.pid is not None else None
    return {
        "memory_bytes": usage.memory if usage else None,
        "memory_source": usage.memory_source if usage else None,
        "rss_bytes": usage.rss if usage else None,
        "pss_bytes": usage.pss if usage else None,
        "cpu_seconds": round(usage.cpu_seconds, 2) if usage else None,
        "cpu_percent": round(state.cpu_percent, 1) if usage and state and state.cpu_percent is not None else None,
        "processes": len(usage.processes) if usage else None,
        "fds": usage.fds if usage else None,
        "memory_limit": program.spec.memory_limit,
        "memory_limit_restarts": state.memory_limit_restarts if state else 0,
        "oom_kills": state.oom_kills if state else 0,
    }


def container() -> dict[str, Any] | None:
    """The container's memory cgroup at the last reading."""
    c = _container
    if c is None:
        return None
    return {"cgroup_version": c.version, "memory_limit": c.limit, "memory_usage": c.usage, "oom_kills": c.oom_kills,
            "memory_events": c.events}


def container_reading() -> procfs.CgroupMemory | None:
    return _container


def format_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}" if n < 10 else f"{n:.0f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n}"
