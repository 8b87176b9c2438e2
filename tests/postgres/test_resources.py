"""kind = "postgres" and the OOM killer, through the real init with the real PostgreSQL: the
postmaster gets the lowest score, each backend resets its own to normal when it is forked
(PG_OOM_ADJUST_FILE / PG_OOM_ADJUST_VALUE), the API above both; and the postgres program's
figures cover its whole tree, the backends included (checked against psutil)."""

import asyncio
import json
import os
import sys

import asyncpg
import psutil
import pytest

from hive_init import procfs
from hive_init.runtime import oom
from tests.postgres.conftest import free_port
from tests.postgres.test_e2e import APP, APP_PASSWORD, WAIT, init_config, postmaster_of, said, start

pytestmark = [pytest.mark.usefixtures("postgres_user")]


async def _hold_sessions(port: int, count: int) -> list[asyncpg.Connection]:
    return [await asyncpg.connect(host="127.0.0.1", port=port, user="app", password=APP_PASSWORD, database="appdb",
                                  ssl=False) for _ in range(count)]


def test_postmaster_protected_backends_normal_api_first(scratch):
    pg_port = free_port()
    config = init_config(scratch, pg_port, APP, f"""
        [programs.api]
        command = {json.dumps([sys.executable, "-c", "import time; time.sleep(3600)"])}
        depends_on = {{ postgres = "ready" }}
        oom_score_adj = 500
        """)
    init = start(scratch, config)
    loop = asyncio.new_event_loop()
    try:
        init.wait_for(said("ready", target="api"), WAIT)
        sessions = loop.run_until_complete(_hold_sessions(pg_port, 3))
        status = init.status()
        shown = {p["name"]: p for p in status["programs"]}
        # the init may be PID 1 of a namespace of its own: its PIDs are not ours
        postmaster = postmaster_of(init, os.path.join(scratch, "data"))
        api = next(p.pid for p in psutil.Process(init.init_pid).children() if "time.sleep(3600)" in " ".join(p.cmdline()))
        tree = [psutil.Process(postmaster), *psutil.Process(postmaster).children(recursive=True)]
        backends = [p for p in tree[1:] if "app appdb" in " ".join(p.cmdline())]
        assert len(backends) == 3, [p.cmdline() for p in tree]
        # without CAP_SYS_RESOURCE, -900..1000 is mapped onto 0..1000: -900 -> 0, 0 -> 474, 500 -> 737
        postmaster_score, normal, api_score = (-900, 0, 500) if oom.lowering_permitted() else (0, 474, 737)
        assert procfs.read_oom_score_adj(postmaster) == postmaster_score
        # every child of the postmaster (backends, checkpointer, walwriter...) is back at normal
        assert {procfs.read_oom_score_adj(p.pid) for p in tree[1:]} == {normal}
        assert procfs.read_oom_score_adj(api) == api_score
        assert (shown["postgres"]["oom_score_adj"], shown["api"]["oom_score_adj"]) == (postmaster_score, api_score)

        # the figures are the whole tree's: the backends are in them
        pg = shown["postgres"]
        assert pg["processes"] == len(tree)
        pss = sum(p.memory_full_info().pss for p in tree)
        assert abs(pg["pss_bytes"] - pss) < 0.1 * pss, (pg["pss_bytes"], pss)
        assert pg["memory_source"] == "pss"
        # RSS counts the shared memory once per process that touched it; PSS once in all
        assert pg["rss_bytes"] > pg["pss_bytes"]
        for conn in sessions:
            loop.run_until_complete(conn.close())
        assert init.stop(WAIT) == 0
    finally:
        loop.close()
        init.close()
