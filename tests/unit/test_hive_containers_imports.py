"""hive_containers is a host-side tool in the same distribution: it uses only the few pieces of
hive_init listed here, and hive_init never imports it (the PID-1 package stays lean). Imports
inside functions count too."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# what hive-containers borrows: reading "120s" (--timeout), uptimes as `status` shows them, and
# keeping passwords out of what it prints
ALLOWED = {"hive_init.config.durations", "hive_init.ctl", "hive_init.redact"}


def imported_modules(package: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names = out.setdefault(str(path.relative_to(REPO)), set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    return out


def test_hive_containers_uses_only_the_listed_parts_of_hive_init():
    used = {f: {m for m in mods if m == "hive_init" or m.startswith("hive_init.")}
            for f, mods in imported_modules("hive_containers").items()}
    beyond = {f: sorted(mods - ALLOWED) for f, mods in used.items() if mods - ALLOWED}
    assert not beyond, f"hive_containers imports more of hive_init than {sorted(ALLOWED)}: {beyond}"


def test_hive_init_never_imports_hive_containers():
    offenders = {f: sorted(m for m in mods if m.split(".")[0] == "hive_containers")
                 for f, mods in imported_modules("hive_init").items()}
    assert not {f: m for f, m in offenders.items() if m}
