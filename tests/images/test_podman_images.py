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


@pytest.fixture(scope="module")
def genie_image(podman):
    run = f"t{os.getpid()}"
    base, genie = f"localhost/hive-init-base:{run}", f"localhost/hive-genie:{run}"
    ca = os.environ.get("HIVE_BUILD_EXTRA_CA", HOST_CA_BUNDLE)
    build_secrets = {"extra_ca": ca} if os.path.isfile(ca) else {}
    try:
        note("debian base (debootstrap, 0 when cached) s", round(podman.ensure_debian_base(), 1))
        note("build Dockerfile.base s", round(podman.build(str(REPO), "Dockerfile.base", base, secrets=build_secrets), 1))
        note("build images/genie s", round(podman.build(str(REPO), "images/genie/Dockerfile", genie,
                                                         {"BASE_IMAGE": base}, build_secrets), 1))
        note("base image size MB", round(podman.image_size(base) / 1e6))
        note("genie image size MB", round(podman.image_size(genie) / 1e6))
        yield genie
    finally:
        podman.remove(images=[genie, base])
        podman("image", "prune", "-f", check=False)  # the builder stage; the Debian base stays cached
        (ROOT / "last-run.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")


def test_image_metadata(podman, genie_image):
    config = podman.inspect(genie_image)["Config"]
    assert config["Entrypoint"] == ["hive-init", "run"]
    assert config["StopSignal"] in ("SIGTERM", "15")
    assert config["Healthcheck"]["Test"] == ["CMD", "hive-init", "health"], "built in OCI format?"
    assert config["Healthcheck"]["Interval"] == 30 * 10**9 and config["Healthcheck"]["Retries"] == 3
    assert "48886/tcp" in config["ExposedPorts"]
    assert "HIVE_API_PORT=48886" in config["Env"]
    assert any(e.startswith("PATH=/opt/hive/bin:") for e in config["Env"])
    history = podman("history", "--no-trunc", genie_image).stdout
    assert "BEGIN CERTIFICATE" not in history
    listing = podman("run", "--rm", "--entrypoint", "sh", genie_image, "-c",
                     "ls /tmp /usr/local/share/ca-certificates /etc/apt/apt.conf.d; id app; id postgres; "
                     "stat -c '%U %a %n' /var/lib/postgresql/data /run/postgresql /var/log/hive /app; "
                     "command -v gcc cc || echo no-compiler").stdout
    assert "build-ca" not in listing and "extra-ca" not in listing, listing
    assert "uid=1000(app)" in listing and "postgres 700 /var/lib/postgresql/data" in listing, listing
    assert "no-compiler" in listing


def test_genie_runs_stops_cleanly_and_keeps_its_data(podman, genie_image, tmp_path):
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
    try:
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
        time.sleep(2)
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
    finally:
        podman.remove(containers=[first, second], volumes=[volume, logs])


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
