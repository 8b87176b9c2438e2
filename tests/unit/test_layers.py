"""One direction of dependencies: every import in hive_init (at the top of a module, inside a
function, or under TYPE_CHECKING: a type is a dependency too) goes to its own layer or one
below it, and no two modules import each other, however indirectly.

    leaf -> config -> runtime core -> health -> programs -> postgres -> api -> cli

`cli` wires the layers together: the supervisor is handed its endpoints and its reload, and
postgres registers its kind there, so nothing below has to know what sits above it."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).parents[2] / "hive_init"

# Lowest first. A module is in the layer of the longest name below that matches it (a package
# name covers its modules; "pkg.*" its modules but not the package). A new top-level module
# counts as a leaf, a new runtime/ module as `programs`, until it is placed here.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("leaf", ("hive_init", "hive_init.exits", "hive_init.redact", "hive_init.paths", "hive_init.log",
              "hive_init.procfs", "hive_init.errors")),
    ("config", ("hive_init.config",)),
    ("runtime core", ("hive_init.runtime", "hive_init.runtime.pid1", "hive_init.runtime.spawn",
                      "hive_init.runtime.output", "hive_init.runtime.restart", "hive_init.runtime.state",
                      "hive_init.runtime.kind", "hive_init.runtime.execwrap")),
    ("health", ("hive_init.health",)),
    ("programs", ("hive_init.runtime.program", "hive_init.runtime.supervisor", "hive_init.runtime.single",
                  "hive_init.runtime.*")),
    ("postgres", ("hive_init.postgres",)),
    ("api", ("hive_init.api",)),
    ("cli", ("hive_init.cli", "hive_init.__main__", "hive_init.ctl", "hive_init.healthcheck", "hive_init.convert",
             "hive_init.containers")),
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}


def layer_of(module: str) -> str:
    best, best_score = "leaf", -1.0
    for layer, prefixes in LAYERS:
        for prefix in prefixes:
            if prefix.endswith(".*"):  # the modules below a package, not the package itself
                base, score = prefix[:-2], len(prefix) - 1.5
                matches = module.startswith(base + ".")
            else:
                score = len(prefix)
                matches = module == prefix or module.startswith(prefix + ".")
            if matches and score > best_score:
                best, best_score = layer, score
    return best


def modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(path: pathlib.Path, known: set[str]) -> set[tuple[str, int]]:
    """(module imported, line) for every import statement anywhere in the file."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` imports the module pkg.mod when there is one
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        for name in names:
            if name == "hive_init" or name.startswith("hive_init."):
                while name not in known and "." in name:
                    name = name.rsplit(".", 1)[0]
                found.add((name, node.lineno))
    return found


def graph() -> dict[str, set[tuple[str, int]]]:
    mods = modules()
    known = set(mods)
    return {name: {(t, line) for t, line in imports(path, known) if t != name} for name, path in mods.items()}


def test_every_import_goes_down_or_sideways() -> None:
    upward = []
    for module, targets in graph().items():
        for target, line in sorted(targets):
            if target == "hive_init":
                continue  # the package itself: __version__
            if RANK[layer_of(target)] > RANK[layer_of(module)]:
                upward.append(f"{module}:{line} ({layer_of(module)}) imports {target} ({layer_of(target)})")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    edges = {m: {t for t, _ in ts if t != "hive_init"} for m, ts in graph().items()}
    # a package's __init__ importing its own modules is how a package presents itself, not a cycle
    for m in edges:
        edges[m] = {t for t in edges[m] if not t.startswith(m + ".")}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("module, layer", [
    ("hive_init.exits", "leaf"), ("hive_init.config.loader", "config"), ("hive_init.runtime.kind", "runtime core"),
    ("hive_init.health.probes", "health"), ("hive_init.runtime.supervisor", "programs"),
    ("hive_init.runtime.something_new", "programs"), ("hive_init.postgres.kind", "postgres"),
    ("hive_init.api.control", "api"), ("hive_init.cli", "cli"), ("hive_init.containers.engine", "cli"),
    ("hive_init.something_new", "leaf"),
])
def test_layer_of(module: str, layer: str) -> None:
    assert layer_of(module) == layer


def test_the_walker_sees_imports_inside_functions(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from hive_init.api import control\n"
                      "    import hive_init.postgres.kind\n")
    found = imports(source, {"hive_init.api", "hive_init.api.control", "hive_init.postgres", "hive_init.postgres.kind"})
    assert found == {("hive_init.api.control", 4), ("hive_init.postgres.kind", 5)}
