"""Not a test: how long hive-init takes from its exec to PostgreSQL READY, on a cold boot (empty
data directory: initdb, temporary server, bootstrap, real start) and a warm one (existing
cluster). As root it runs as PID 1 of a new PID namespace, as in a container.

    uv run python tests/postgres/measure_boot.py [RUNS]

Prints the median, min and max of RUNS runs (default 5) of each, as wall time from the exec
(Python's own start included) and as hive-init's own time from its "starting" line to "ready".
"""

import datetime
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.postgres.conftest import free_port
from tests.postgres.test_e2e import APP, NAMESPACE, WAIT, init_config, said, start


def _ts(event: dict) -> float:
    return datetime.datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


def one(scratch: str, config: str) -> tuple[float, float]:
    begun = time.monotonic()
    init = start(scratch, config)
    try:
        ready = init.wait_for(said("ready"), WAIT)
        wall = time.monotonic() - begun
        first = init.wait_for(lambda e: e.get("msg") == "starting" and "target" not in e, WAIT)
        internal = _ts(ready) - _ts(first)
        assert init.stop(WAIT) == 0
    finally:
        init.close()
    return wall, internal


def report(name: str, samples: list[tuple[float, float]]) -> None:
    walls = [s[0] for s in samples]
    internals = [s[1] for s in samples]
    print(f"{name}: exec->READY median {statistics.median(walls):.3f}s (min {min(walls):.3f}, max {max(walls):.3f}); "
          f"hive-init 'starting'->READY median {statistics.median(internals):.3f}s "
          f"(min {min(internals):.3f}, max {max(internals):.3f})")


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    root = tempfile.mkdtemp(prefix="hive-pg-measure-", dir="/tmp")
    os.chmod(root, 0o755)
    try:
        cold, warm = [], []
        for i in range(runs):
            scratch = os.path.join(root, f"run{i}")
            os.makedirs(scratch, mode=0o755)
            config = init_config(scratch, free_port(), APP)
            cold.append(one(scratch, config))
            warm.append(one(scratch, config))
        print(f"{runs} runs each, {'as PID 1 in a new PID namespace' if NAMESPACE else 'as a plain process'}, "
              f"{os.cpu_count()} CPUs")
        report("cold boot (initdb + bootstrap)", cold)
        report("warm boot (existing cluster)  ", warm)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
