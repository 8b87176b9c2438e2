"""The real images, built and run with podman: Dockerfile.base, then the Genie image on it.

One container on a named volume: healthy (HEALTHCHECK driven by hand, there is no systemd to
schedule it), the API answers on the published port, `podman stop` ends it cleanly within the
grace period (PostgreSQL shut down, no recovery at the next start), and a new container on the
same volume finds the data again. Timings go to stdout (`-s`) and to
/var/tmp/hive-init-podman/last-run.json.

    uv run pytest -m image tests/images/test_podman_images.py -s

Skipped when podman is missing or we are not root; `.ci/run` installs podman, runc, debootstrap.
HIVE_BUILD_EXTRA_CA names the CA bundle given to the builds as the `extra_ca` secret (default:
the host's /etc/ssl/certs/ca-certificates.crt, for the TLS-intercepting proxy here).
"""

import json
import os
import re
import secrets
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.images.podman import HOST_CA_BUNDLE, ROOT, Podman, free_port, unavailable_reason

pytestmark = pytest.mark.image

REPO = Path(__file__).resolve().parents[2]
GRACE = 30  # compose's stop_grace_period; hive-init's shutdown_timeout is 25 s
# what the compose file grants (cap_drop ALL + these, no-new-privileges, 512 MB)
HARDENING = ["--cap-drop", "ALL", *[a for cap in ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "KILL")
                                    for a in ("--cap-add", cap)],
             "--security-opt", "no-new-privileges", "--memory", "512m"]
TIMINGS: dict[str, object] = {}


def note(key: str, value: object) -> None:
    TIMINGS[key] = value
    print(f"[image timing] {key}: {value}", flush=True)


@pytest.fixture(scope="module")
def podman():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    return Podman()


SERVICES = {
    # service: (API port, password variable, collection, a row to create)
    "genie": (48886, "HIVE_DB_PASSWORD", "/api/v1/sessions",
              {"user_id": "u-1", "session_data": {"k": "v"}, "embedding": [0.1, 0.2, 0.3]}),
    "agent": (38886, "AGENT_DB_PASSWORD", "/api/v1/deployments",
              {"agent_config": {"model": "m"}, "deployment_status": "running", "embedding": [0.3, 0.2, 0.1]}),
}


@pytest.fixture(scope="module")
def images(podman):
    run = f"t{os.getpid()}"
    base = f"localhost/hive-init-base:{run}"
    built = {service: f"localhost/hive-{service}:{run}" for service in SERVICES}
    ca = os.environ.get("HIVE_BUILD_EXTRA_CA", HOST_CA_BUNDLE)
    build_secrets = {"extra_ca": ca} if os.path.isfile(ca) else {}
    try:
        note("debian base (debootstrap, 0 when cached) s", round(podman.ensure_debian_base(), 1))
        note("build Dockerfile.base s", round(podman.build(str(REPO), "Dockerfile.base", base, secrets=build_secrets), 1))
        note("base image size MB", round(podman.image_size(base) / 1e6))
        for service, tag in built.items():
            note(f"build images/{service} s", round(podman.build(str(REPO), f"images/{service}/Dockerfile", tag,
                                                                  {"BASE_IMAGE": base}, build_secrets), 1))
            note(f"{service} image size MB", round(podman.image_size(tag) / 1e6))
        yield built
    finally:
        podman.remove(images=[*built.values(), base])
        podman("image", "prune", "-f", check=False)  # the builder stage; the Debian base stays cached
        (ROOT / "last-run.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")


@pytest.fixture
def containers(podman):
    """Names of containers and volumes to remove after the test, whatever happens."""
    made: dict[str, list[str]] = {"containers": [], "volumes": []}
    yield made
    podman.remove(containers=made["containers"], volumes=made["volumes"])


@pytest.mark.parametrize("service", SERVICES)
def test_image_metadata(podman, images, service):
    image, port = images[service], SERVICES[service][0]
    inspected = podman.inspect(image)
    config = inspected["Config"]
    assert config["Entrypoint"] == ["hive-init", "run"]
    assert config["StopSignal"] in ("SIGTERM", "15")
    # podman shows the healthcheck next to Config, docker inside it; the OCI format drops it
    healthcheck = inspected.get("Healthcheck") or config.get("Healthcheck")
    assert healthcheck and healthcheck["Test"] == ["CMD", "hive-init", "health"], "built in OCI format?"
    assert healthcheck["Interval"] == 30 * 10**9 and healthcheck["Timeout"] == 10 * 10**9
    assert healthcheck["StartPeriod"] == 60 * 10**9 and healthcheck["Retries"] == 3
    assert f"{port}/tcp" in config["ExposedPorts"]
    assert f"HIVE_API_PORT={port}" in config["Env"]
    assert any(e.startswith("PATH=/opt/hive/bin:") for e in config["Env"])
    history = podman("history", "--no-trunc", image).stdout
    assert "BEGIN CERTIFICATE" not in history
    listing = podman("run", "--rm", "--entrypoint", "sh", image, "-c",
                     "ls /tmp /usr/local/share/ca-certificates /etc/apt/apt.conf.d; id app; id postgres; "
                     "stat -c '%U %a %n' /var/lib/postgresql/data /run/postgresql /var/log/hive /app; "
                     "command -v gcc cc || echo no-compiler").stdout
    assert "build-ca" not in listing and "extra-ca" not in listing, listing
    assert "uid=1000(app)" in listing and "postgres 700 /var/lib/postgresql/data" in listing, listing
    assert "no-compiler" in listing


def test_genie_runs_stops_cleanly_and_keeps_its_data(podman, images, containers, tmp_path):
    genie_image = images["genie"]
    run = uuid.uuid4().hex[:8]
    volume, logs = f"hive-genie-data-{run}", f"hive-genie-logs-{run}"
    first, second = f"hive-genie-a-{run}", f"hive-genie-b-{run}"
    port = free_port()
    password = secrets.token_urlsafe(18)
    password_file = tmp_path / "hive_db_password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o644)
    common = ["-p", f"127.0.0.1:{port}:48886", "-v", f"{volume}:/var/lib/postgresql/data",
              "-v", f"{logs}:/var/log/hive", *HARDENING]
    containers["containers"] += [first, second]
    containers["volumes"] += [volume, logs]
    podman("volume", "create", volume)
    podman("volume", "create", logs)
    start = time.monotonic()
    podman("run", "-d", "--name", first, "-e", f"HIVE_DB_PASSWORD={password}", *common, genie_image)
    note("first start to healthy s", round(podman.wait_healthy(first, timeout=120), 1))
    note("first start (run + healthy) s", round(time.monotonic() - start, 1))
    assert podman("inspect", "--format", "{{.State.Health.Status}}", first).stdout.strip() == "healthy"

    pid1 = podman("exec", first, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert any(part.endswith("hive-init") for part in pid1) and "run" in pid1, pid1
    status = podman("exec", first, "hive-init", "status").stdout
    print(status)
    assert re.search(r"postgres", status) and re.search(r"api", status), status
    users = podman("exec", first, "python3", "-c", PROCESS_USERS).stdout
    assert re.search(r"^postgres postgres", users, re.M) and re.search(r"^app python", users, re.M), users

    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=5) as client:
        t0 = time.monotonic()
        health = client.get("/api/v1/health")
        note("health answer ms", round((time.monotonic() - t0) * 1000, 1))
        assert health.status_code == 200 and health.json() == {"status": "ok", "database": "ok"}
        created = client.post("/api/v1/sessions", json={"user_id": "u-1", "session_data": {"k": "v"},
                                                       "embedding": [0.1, 0.2, 0.3]})
        assert created.status_code == 201, created.text
        session = created.json()
        assert client.get(f"/api/v1/sessions/{session['id']}").json() == session
        found = client.post("/api/v1/sessions/search", json={"embedding": [0.1, 0.2, 0.3], "limit": 1}).json()
        assert found[0]["id"] == session["id"]

        # PostgreSQL killed: hive-init restarts it (crash recovery), the API rides it out with
        # 503s and its pool reconnects; the API process itself is not restarted
        api_pid = programs(podman, first)["api"]["pid"]
        podman("exec", first, "hive-init", "signal", "postgres", "KILL")
        t0 = time.monotonic()
        codes = []
        while time.monotonic() - t0 < 30:
            codes.append(client.get("/api/v1/health").status_code)
            if codes[-1] == 200 and programs(podman, first)["postgres"]["restarts"] >= 1:
                break
            time.sleep(0.1)
        note("PostgreSQL killed → API healthy again s", round(time.monotonic() - t0, 1))
        assert codes[-1] == 200 and set(codes) <= {200, 503}, codes
        after = programs(podman, first)
        assert after["api"]["pid"] == api_pid and after["api"]["restarts"] == 0, after
        assert client.get(f"/api/v1/sessions/{session['id']}").json() == session
    time.sleep(2)  # not synchronisation: a quiet moment before the figure for the notes
    note("memory at rest", podman.memory_usage(first))

    start = time.monotonic()
    podman("stop", "-t", str(GRACE), first, timeout=GRACE + 30)
    stop_seconds = time.monotonic() - start
    note("podman stop s", round(stop_seconds, 1))
    state = podman.state(first)
    output = podman.logs(first)
    assert state["ExitCode"] == 0, f"exit {state['ExitCode']} after {stop_seconds:.1f}s:\n{output[-5000:]}"
    assert stop_seconds < GRACE, output[-5000:]
    assert "database system is shut down" in output, output[-5000:]
    assert password not in output

    podman("run", "-d", "--name", second, "-e", "HIVE_DB_PASSWORD_FILE=/run/secrets/hive_db_password",
           "-v", f"{password_file}:/run/secrets/hive_db_password:ro", *common, genie_image)
    note("second start to healthy s", round(podman.wait_healthy(second, timeout=120), 1))
    with httpx.Client(base_url=base, timeout=5) as client:
        again = client.get(f"/api/v1/sessions/{session['id']}")
        assert again.status_code == 200 and again.json() == session
    output = podman.logs(second)
    assert "automatic recovery" not in output and "was interrupted" not in output, output[-5000:]
    podman("stop", "-t", str(GRACE), second, timeout=GRACE + 30)
    assert podman.state(second)["ExitCode"] == 0, podman.logs(second)[-5000:]
    files = podman("run", "--rm", "-v", f"{logs}:/var/log/hive", "--entrypoint", "ls", genie_image,
                   "/var/log/hive").stdout.split()
    assert {"api.log", "postgres.log"} <= set(files), files


def test_agent_runs_and_stops_cleanly(podman, images, containers):
    port, password_var, collection, row = SERVICES["agent"]
    name, volume = f"hive-agent-{uuid.uuid4().hex[:8]}", f"hive-agent-data-{uuid.uuid4().hex[:8]}"
    containers["containers"].append(name)
    containers["volumes"].append(volume)
    host_port = free_port()
    podman("run", "-d", "--name", name, "-p", f"127.0.0.1:{host_port}:{port}", "-v",
           f"{volume}:/var/lib/postgresql/data", "-e", f"{password_var}={secrets.token_hex(16)}", *HARDENING,
           images["agent"])
    note("agent start to healthy s", round(podman.wait_healthy(name, timeout=120), 1))
    with httpx.Client(base_url=f"http://127.0.0.1:{host_port}", timeout=5) as client:
        assert client.get("/api/v1/health").json() == {"status": "ok", "database": "ok"}
        created = client.post(collection, json=row)
        assert created.status_code == 201, created.text
        assert client.get(f"{collection}/{created.json()['id']}").json() == created.json()
    status = podman("exec", name, "hive-init", "status").stdout
    assert "postgres" in status and "api" in status, status
    start = time.monotonic()
    podman("stop", "-t", str(GRACE), name, timeout=GRACE + 30)
    note("agent podman stop s", round(time.monotonic() - start, 1))
    assert podman.state(name)["ExitCode"] == 0, podman.logs(name)[-5000:]
    assert "database system is shut down" in podman.logs(name)


def programs(podman: Podman, ctr: str) -> dict[str, dict]:
    status = json.loads(podman("exec", ctr, "hive-init", "status", "--json", check=False).stdout)
    return {p["name"]: p for p in status["programs"]}


# each process of the container as "user command", for the check that nothing but hive-init is root
PROCESS_USERS = r"""
import os, pwd
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        uid = os.stat(f'/proc/{pid}').st_uid
        cmd = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\0')[0].decode()
    except OSError:
        continue
    print(pwd.getpwuid(uid).pw_name, os.path.basename(cmd))
"""
