"""The dependency graph (hive_init/config/graph.py): the start order and the cycle check, on plain
records (no config file, no processes)."""

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hive_init.config.graph import find_cycle, start_order


@dataclass(frozen=True)
class Node:
    priority: int = 999
    depends_on: tuple[tuple[str, str], ...] = ()


def nodes(**deps: tuple[str, ...] | int) -> dict[str, Node]:
    """nodes(app=("db",), db=()) → programs whose depends_on name the given programs."""
    return {name: Node(depends_on=tuple((d, "started") for d in spec)) if isinstance(spec, tuple)
            else Node(priority=spec) for name, spec in deps.items()}


def test_dependencies_come_before_their_dependents():
    programs = nodes(app=("db", "cache"), worker=("app",), db=(), cache=())
    order = start_order(programs)
    assert order.index("db") < order.index("app") < order.index("worker")
    assert order.index("cache") < order.index("app")


def test_free_programs_go_by_priority_then_name():
    programs = {"b": Node(priority=10), "a": Node(priority=10), "z": Node(priority=1), "m": Node()}
    assert start_order(programs) == ["z", "a", "b", "m"]


def test_a_dependency_outranks_priority():
    programs = {"db": Node(priority=900), "app": Node(priority=1, depends_on=(("db", "ready"),))}
    assert start_order(programs) == ["db", "app"]


def test_a_dependency_on_an_unknown_program_does_not_block():
    # the loader reports unknown names; the order just ignores them
    assert start_order(nodes(app=("ghost",))) == ["app"]
    assert find_cycle(nodes(app=("ghost",))) is None


def test_a_cycle_is_reported_as_a_path_and_refused_by_the_order():
    programs = nodes(a=("b",), b=("c",), c=("a",), d=())
    cycle = find_cycle(programs)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    with pytest.raises(ValueError, match="cycle"):
        start_order(programs)


def test_a_program_that_depends_on_itself_is_a_cycle():
    assert find_cycle(nodes(a=("a",))) == ["a", "a"]


def test_no_programs():
    assert start_order({}) == [] and find_cycle({}) is None


@st.composite
def acyclic(draw: st.DrawFn) -> dict[str, Node]:
    """Random DAGs: each program depends only on programs earlier in a hidden order."""
    size = draw(st.integers(1, 12))
    names = [f"p{i}" for i in range(size)]
    programs = {}
    for i, name in enumerate(names):
        deps = draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
        programs[name] = Node(priority=draw(st.integers(0, 3)), depends_on=tuple((d, "started") for d in deps))
    return programs


@given(acyclic())
def test_every_dag_has_an_order_with_each_program_once_after_its_dependencies(programs):
    order = start_order(programs)
    assert sorted(order) == sorted(programs)
    for name, node in programs.items():
        for dep, _ in node.depends_on:
            assert order.index(dep) < order.index(name)
    assert find_cycle(programs) is None
