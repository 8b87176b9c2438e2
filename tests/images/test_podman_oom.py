"""The Genie image in a real container with a 256 MB memory limit (podman --memory, the
capabilities of the compose file: no CAP_SYS_RESOURCE), and an API that starts leaking on cue.
The OOM killer takes the API (the most killable, as configs/genie.toml ranks it), hive-init says
so and restarts it; PostgreSQL is not touched and keeps every row the API acknowledged.

The leak is a sitecustomize module on PYTHONPATH that acts only in processes of the API's user
(uid 1000): once the test renames /leak/go away, it allocates 8 MB every 50 ms.

    uv run pytest -m image tests/images/test_podman_oom.py -s
"""

import json
import os
import secrets
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.images.podman import HOST_CA_BUNDLE, Podman, free_port, unavailable_reason

pytestmark = pytest.mark.image

REPO = Path(__file__).resolve().parents[2]
CAPS = ["--cap-drop", "ALL", *[a for cap in ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "KILL")
                               for a in ("--cap-add", cap)], "--security-opt", "no-new-privileges"]
LEAK = """
import os, threading, time
def leak():
    while True:
        try:
            os.rename("/leak/go", "/leak/went")  # one leaking process per cue
            break
        except OSError:
            time.sleep(0.2)
    held = []
    while True:
        held.append(bytearray(8 << 20))
        time.sleep(0.05)
if os.getuid() == 1000:
    threading.Thread(target=leak, daemon=True).start()
"""


@pytest.fixture(scope="module")
def genie(request):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    podman = Podman()
    run = f"oom{os.getpid()}"
    base, image = f"localhost/hive-init-base:{run}", f"localhost/hive-genie:{run}"
    ca = os.environ.get("HIVE_BUILD_EXTRA_CA", HOST_CA_BUNDLE)
    build_secrets = {"extra_ca": ca} if os.path.isfile(ca) else {}
    try:
        podman.ensure_debian_base()
        podman.build(str(REPO), "Dockerfile.base", base, secrets=build_secrets)
        podman.build(str(REPO), "images/genie/Dockerfile", image, {"BASE_IMAGE": base}, build_secrets)
        yield podman, image
    finally:
        podman.remove(images=[image, base])
        podman("image", "prune", "-f", check=False)


def programs(podman: Podman, ctr: str) -> dict:
    out = podman("exec", ctr, "hive-init", "status", "--json", check=False).stdout
    return {p["name"]: p for p in json.loads(out)["programs"]}


def test_a_leaking_api_is_the_one_killed_and_postgres_keeps_every_row(genie, tmp_path):
    podman, image = genie
    run = uuid.uuid4().hex[:8]
    ctr = f"hive-genie-oom-{run}"
    port = free_port()
    leak = tmp_path / "leak"
    leak.mkdir()
    leak.chmod(0o777)  # the API's user renames the cue
    (leak / "sitecustomize.py").write_text(LEAK)
    (leak / "sitecustomize.py").chmod(0o644)
    # programs get only the environment their config gives them: the API's table names the
    # leaking module's directory, in a copy of the image's own config mounted over it
    config = tmp_path / "hive-init.toml"
    text = (REPO / "configs" / "genie.toml").read_text()
    assert 'PYTHONUNBUFFERED = "1"\n' in text
    config.write_text(text.replace('PYTHONUNBUFFERED = "1"\n', 'PYTHONUNBUFFERED = "1"\nPYTHONPATH = "/leak"\n', 1))
    config.chmod(0o644)
    try:
        podman("run", "-d", "--name", ctr, "-e", f"HIVE_DB_PASSWORD={secrets.token_urlsafe(18)}",
               "-v", f"{config}:/etc/hive-init/hive-init.toml:ro",
               "-v", f"{leak}:/leak", "-p", f"127.0.0.1:{port}:48886",
               "--memory", "256m", "--memory-swap", "256m", *CAPS, image)
        podman.wait_healthy(ctr, timeout=120)
        before = programs(podman, ctr)
        postgres_pid = before["postgres"]["pid"]
        assert before["api"]["oom_score_adj"] > before["postgres"]["oom_score_adj"], before
        acknowledged = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            for i in range(20):
                r = client.post("/api/v1/sessions", json={"user_id": f"u-{i}", "session_data": {"i": i},
                                                          "embedding": [0.1, 0.2, 0.3]})
                assert r.status_code == 201, r.text
                acknowledged.append(r.json()["id"])
            (leak / "go").touch()
            # writes go on while the API leaks, until it is gone
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    r = client.post("/api/v1/sessions", json={"user_id": "during", "session_data": {},
                                                              "embedding": [0.3, 0.2, 0.1]})
                    if r.status_code == 201:
                        acknowledged.append(r.json()["id"])
                except httpx.HTTPError:
                    pass
                if programs(podman, ctr)["api"]["restarts"] >= 1:
                    break
                time.sleep(0.05)
            after = programs(podman, ctr)
            print(json.dumps(after, indent=1))
            api = after["api"]
            assert api["restarts"] >= 1, podman.logs(ctr)[-4000:]
            assert "OOM killer" in api["reason"] or "memory_limit" in api["reason"] or api["oom_kills"] \
                or api["memory_limit_restarts"], api
            # PostgreSQL was not touched: the same postmaster, never restarted
            assert after["postgres"]["pid"] == postgres_pid and after["postgres"]["restarts"] == 0, after
            assert after["postgres"]["state"] == "READY"
            podman.wait_healthy(ctr, timeout=60)
            for session_id in acknowledged:
                got = client.get(f"/api/v1/sessions/{session_id}")
                assert got.status_code == 200, (session_id, got.text)
        logs = podman.logs(ctr)
        assert "killed by the OOM killer" in logs or "above memory_limit" in logs, logs[-4000:]
        print(f"acknowledged rows kept: {len(acknowledged)}; api: {api['reason']}")
    finally:
        podman.remove(containers=[ctr])
