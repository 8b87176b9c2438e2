"""The dependency graph between programs: its cycle check and the start order."""

from collections.abc import Mapping
from typing import Protocol


class _Node(Protocol):
    """What the graph reads of a program (read-only, so a frozen ProgramSpec fits)."""

    @property
    def priority(self) -> int: ...

    @property
    def depends_on(self) -> tuple[tuple[str, str], ...]: ...


def find_cycle(programs: Mapping[str, _Node]) -> list[str] | None:
    """A dependency cycle as a path [a, b, ..., a], or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(programs, WHITE)
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        color[name] = GREY
        stack.append(name)
        for dep, _ in programs[name].depends_on:
            if dep not in programs:
                continue
            if color[dep] == GREY:
                return stack[stack.index(dep):] + [dep]
            if color[dep] == WHITE and (cycle := visit(dep)):
                return cycle
        stack.pop()
        color[name] = BLACK
        return None

    for name in sorted(programs):
        if color[name] == WHITE and (cycle := visit(name)):
            return cycle
    return None


def start_order(programs: Mapping[str, _Node]) -> list[str]:
    """Dependencies before dependents; among programs free to go, lower priority first, then name."""
    remaining = {name: {dep for dep, _ in p.depends_on} for name, p in programs.items()}
    order: list[str] = []
    while remaining:
        free = sorted((n for n, deps in remaining.items() if not deps & remaining.keys()),
                      key=lambda n: (programs[n].priority, n))
        if not free:
            raise ValueError("dependency cycle")
        for name in free:
            order.append(name)
            del remaining[name]
    return order


def stop_waits(programs: Mapping[str, _Node]) -> dict[str, set[str]]:
    """Whom each program waits for before it is sent its stop signal at shutdown.

    supervisord's rule: reverse priority, a level at a time (a level starts stopping when every
    program of the higher levels is down; equal priorities together). hive-init's rule:
    dependents before their dependencies. Where the two disagree (a program depends on one of a
    higher priority), depends_on wins: a program's stop level is lifted to the highest level of
    what it depends on, so it stops with that level, still before its dependency. Every wait goes
    to the same or a higher level, and within a level only to dependents: no wait can be circular.
    """
    level: dict[str, int] = {}
    for name in start_order(programs):  # dependencies first: their level is known
        deps = [level[d] for d, _ in programs[name].depends_on if d in level]
        level[name] = max([programs[name].priority, *deps])
    waits: dict[str, set[str]] = {name: {o for o in programs if level[o] > level[name]} for name in programs}
    for name, program in programs.items():
        for dep, _ in program.depends_on:
            if dep in waits:
                waits[dep].add(name)
    return waits


def stop_chains(programs: Mapping[str, _Node], timeouts: Mapping[str, float]) -> dict[str, list[str]]:
    """For each program, the longest chain of stop timeouts that ends with it (itself last): the
    worst case before its own SIGKILL at shutdown, each program in the chain using its whole
    stop_timeout."""
    waits = stop_waits(programs)
    chains: dict[str, list[str]] = {}

    def chain(name: str) -> list[str]:
        if name not in chains:
            longest = max((chain(w) for w in waits[name]), key=lambda c: sum(timeouts[n] for n in c), default=[])
            chains[name] = [*longest, name]
        return chains[name]

    for name in programs:
        chain(name)
    return chains


def stop_budget_warning(programs: Mapping[str, _Node], timeouts: Mapping[str, float], shutdown_timeout: float) -> str | None:
    """One line when the longest stop chain cannot fit in shutdown_timeout, or None."""
    chains = stop_chains(programs, timeouts)
    over = {name: chain for name, chain in chains.items() if sum(timeouts[n] for n in chain) > shutdown_timeout}
    if not over:
        return None
    worst = max(over.values(), key=lambda c: sum(timeouts[n] for n in c))
    steps = " -> ".join(f"{n} {timeouts[n]:g}s" for n in worst)
    others = len(over) - 1
    return (f"programs.{worst[-1]}.stop_timeout: its stop chain ({steps} = {sum(timeouts[n] for n in worst):g}s) "
            f"cannot fit in shutdown_timeout ({shutdown_timeout:g}s): it would be SIGKILLed"
            + (f" ({others} more program{'s' if others > 1 else ''} too)" if others else "")
            + "; raise shutdown_timeout, and the container's stop grace above it")
