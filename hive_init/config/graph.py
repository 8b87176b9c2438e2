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
