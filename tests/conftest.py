import pytest

from tests.helpers import open_tmp, postgres_user, start_init  # noqa: F401  (fixtures)

# Markers whose tests run only when asked for by name in `-m` (`-m soak`, `-m "bench or soak"`):
# pytest's `-m` replaces an `-m` in addopts, so `-m "not image"` would otherwise run them too.
OPT_IN = ("soak", "bench")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    asked = config.getoption("markexpr", "") or ""
    skipped = [name for name in OPT_IN if name not in asked.replace("(", " ").replace(")", " ").split()]
    if not skipped:
        return
    keep, drop = [], []
    for item in items:
        (drop if any(item.get_closest_marker(name) for name in skipped) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


import hive_init.postgres  # noqa: E402

hive_init.postgres.register()  # as the CLI does: tests load configs and make kinds in-process
