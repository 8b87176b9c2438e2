"""hive-containers against the real Genie compose file under podman (root, no systemd, as set up by
tests/images/podman.py): up → healthy, status 0; PostgreSQL stopped through hive-init's control
socket → the API not ready, the container's health check unhealthy after its retries, status 1;
a restart seen as "starting"; down → stopped cleanly, volumes removed.

    uv run pytest -m image tests/containers -s
    HIVE_CAPTURE_FIXTURES=1 uv run pytest -m image tests/containers   # rewrites fixtures/ from this run

The images are tagged by a hash of their sources (conftest.image_tags) and kept, so a second run
builds nothing; the compose project gets a prefix of its own, so nothing of an operator's
`hive-genie` project is touched. Containers, volumes, the pod and the network are removed.
"""

import json
import os
import re
import secrets
import time
from datetime import UTC, datetime

import pytest

from hive_containers.state import parse_inspect, parse_time
from tests.containers.conftest import REPO, capture, hive_containers, image_tags, prune_test_images
from tests.helpers import free_port, run_suffix, wait_until

pytestmark = pytest.mark.image

SERVICE = "genie"
PORT = free_port()  # the host port this run publishes (HIVE_GENIE_PORT): never the documented 48886
PROJECT_LABEL = "com.docker.compose.project"
TIMINGS: dict[str, float] = {}


def note(key: str, seconds: float) -> None:
    TIMINGS[key] = round(seconds, 1)
    print(f"[hive-containers timing] {key}: {seconds:.1f}s", flush=True)


@pytest.fixture(scope="module")
def setup(podman):
    note("debian base (0 when cached)", podman.ensure_debian_base())
    suffix = run_suffix()
    prefix = f"hct{suffix}-"
    network = f"hct{suffix}_genie_network"  # per run, so two runs on one machine never share one
    project = f"{prefix}hive-genie"
    password = secrets.token_hex(16)
    tags = image_tags(SERVICE)
    env = dict(podman.env)
    for var in ("HIVE_COMPOSE_DIR", "HIVE_DB_PASSWORD_FILE", "POSTGRES_PASSWORD", "POSTGRES_PASSWORD_FILE"):
        env.pop(var, None)
    env.update(tags, HIVE_ENGINE="podman", HIVE_PROJECT_PREFIX=prefix, HIVE_DB_PASSWORD=password,
               HIVE_GENIE_PORT=str(PORT), HIVE_GENIE_NETWORK=network, HIVE_AGENT_NETWORK=f"hct{suffix}_agent_network")
    ca = os.environ.get("HIVE_BUILD_EXTRA_CA", "/etc/ssl/certs/ca-certificates.crt")
    if os.path.isfile(ca):  # the TLS-intercepting proxy here (see tests/images/podman.py)
        env["HIVE_BUILD_EXTRA_CA"] = ca
    try:
        yield {"env": env, "project": project, "password": password, "tags": tags}
    finally:
        ids = podman("ps", "-aq", "--filter", f"label={PROJECT_LABEL}={project}", check=False).stdout.split()
        podman.remove(containers=ids)
        volumes = podman("volume", "ls", "-q", "--filter", f"label=io.podman.compose.project={project}",
                         check=False).stdout.split()
        podman.remove(volumes=volumes)
        podman("pod", "rm", "-f", f"pod_{project}", check=False)
        podman("network", "rm", "-f", network, check=False)
        prune_test_images(podman, keep=set(tags.values()))
        # the builder stages left untagged by the builds: the recent ones stay as the layer cache
        # of the next build, older ones (and nothing a build running now may still use) go
        podman("image", "prune", "-f", "--filter", "until=30m", check=False)


def container_id(podman, project: str) -> str:
    ids = podman("ps", "-aq", "--no-trunc", "--filter", f"label={PROJECT_LABEL}={project}").stdout.split()
    assert len(ids) == 1, ids
    return ids[0]


def test_genie_up_status_unhealthy_down(podman, setup):
    env, project, password = setup["env"], setup["project"], setup["password"]
    secrets_ = (password,)

    # ---- up: builds what is missing (nothing when the tagged images exist), waits for healthy
    run = hive_containers("up", SERVICE, "--timeout", "180s", env=env, timeout=1800)
    print(run.out, run.err)
    assert run.code == 0, run
    assert re.search(rf"^{SERVICE}: healthy in [\d.]+s", run.out, re.M), run
    note("up genie (builds included when the images were missing)", run.seconds)
    ctr = container_id(podman, project)
    inspect = podman("inspect", ctr).stdout
    assert parse_inspect(inspect)[0].health.status == "healthy"
    capture("podman_inspect_healthy.json", inspect, secrets_)

    # ---- status: healthy, exit 0, table and JSON
    run = hive_containers("status", SERVICE, env=env)
    assert run.code == 0, run
    assert re.search(rf"^{SERVICE}\s+running\s+healthy\s+\S+\s+0\.0\.0\.0:{PORT}->48886/tcp", run.out, re.M), run
    assert re.search(r"^\s+postgres\s+READY", run.out, re.M) and re.search(r"^\s+api\s+READY", run.out, re.M), run
    run = hive_containers("status", SERVICE, "--json", env=env)
    assert run.code == 0, run
    report = json.loads(run.out)
    [genie] = report["services"]
    assert report["ok"] and genie["health"] == "healthy" and genie["state"] == "running", genie
    assert {p["name"]: p["state"] for p in genie["init"]["programs"]} == {"postgres": "READY", "api": "READY"}
    assert genie["ports"] == [f"0.0.0.0:{PORT}->48886/tcp"] and genie["uptime"] >= 0
    capture("init_status_ready.json", podman("exec", ctr, "hive-init", "status", "--json").stdout, secrets_)
    capture("podman_ps_healthy.json", podman("ps", "-a", "--no-trunc", "--format", "json", "--filter",
                                             f"label={PROJECT_LABEL}={project}").stdout, secrets_)

    # ---- logs: one program's lines, readable
    run = hive_containers("logs", SERVICE, "--program", "postgres", "-n", "5", env=env)
    assert run.code == 0, run
    lines = run.out.splitlines()
    assert 1 <= len(lines) <= 5 and all(re.match(r"^\d\d:\d\d:\d\d\.\d{3} (postgres |hive-init) *\| ", line)
                                        for line in lines), run
    assert password not in run.out
    capture("podman_logs_genie.txt", podman.logs(ctr), secrets_)

    # ---- PostgreSQL stopped for good (a stop through the control socket is never restarted)
    assert podman("exec", ctr, "hive-init", "stop", "postgres").stdout.strip() == "postgres: STOPPED"
    t0 = time.monotonic()
    # hive-init leaves an operator-stopped program out of its readiness; the API's readiness
    # probe (every 5 s, 3 failures) is what turns the container unhealthy
    health_inside = podman("exec", ctr, "hive-init", "health", check=False)
    print("hive-init health right after the stop:", health_inside.returncode, health_inside.stdout.strip())
    wait_until(lambda: podman("exec", ctr, "hive-init", "health", check=False).returncode == 1, 40,
               what="hive-init health says unhealthy", interval=0.5)
    note("postgres stopped → hive-init health unhealthy", time.monotonic() - t0)
    readyz = podman("exec", ctr, "python3", "-c", READYZ, check=False).stdout.strip()
    print("/readyz:", readyz)
    assert readyz.startswith("503"), readyz
    status_inside = podman("exec", ctr, "hive-init", "status", "--json", check=False)
    assert status_inside.returncode == 1
    capture("init_status_postgres_stopped.json", status_inside.stdout, secrets_)

    # still "healthy" to the engine, but status already reads hive-init's own view: exit 1
    run = hive_containers("status", SERVICE, env=env)
    assert run.code == 1, run
    # hive-init counts a critical program stopped by an operator against readiness at once
    assert "critical program stopped: postgres" in run.out and "not ready: postgres STOPPED" in run.out, run

    # the engine's health: podman counts failures only after the 60 s start period, then
    # unhealthy at the 3rd failure in a row (retries=3); nothing schedules the checks here
    started = parse_time(json.loads(podman("inspect", ctr).stdout)[0]["State"]["StartedAt"])
    wait = 61 - (datetime.now(UTC) - started).total_seconds()
    if wait > 0:
        print(f"waiting {wait:.0f}s for the end of the health check's start period")
        time.sleep(wait)  # not synchronisation: the engine's start period is 60 s of wall time
    codes = []
    for _ in range(5):
        codes.append(podman("healthcheck", "run", ctr, check=False).returncode)
        if podman.state(ctr)["Health"]["Status"] == "unhealthy":
            break
    assert codes == [1, 1, 1], codes
    inspect = podman("inspect", ctr).stdout
    capture("podman_inspect_unhealthy.json", inspect, secrets_)
    ps_json = podman("ps", "-a", "--no-trunc", "--format", "json", "--filter",
                     f"label={PROJECT_LABEL}={project}").stdout
    assert "(unhealthy)" in json.loads(ps_json)[0]["Status"], ps_json
    capture("podman_ps_unhealthy.json", ps_json, secrets_)
    capture("podman_ps_unhealthy.txt", podman("ps", "-a", "--filter", f"label={PROJECT_LABEL}={project}").stdout,
            secrets_)

    run = hive_containers("status", SERVICE, env=env)
    assert run.code == 1, run
    assert re.search(rf"^{SERVICE}\s+running\s+unhealthy\s", run.out, re.M), run
    assert "health check unhealthy (3 failing in a row)" in run.out, run
    run = hive_containers("status", "--json", env=env)  # all: agent absent too
    assert run.code == 1, run
    report = json.loads(run.out)
    by_name = {s["service"]: s for s in report["services"]}
    assert not report["ok"] and by_name["genie"]["health"] == "unhealthy" and not by_name["genie"]["ok"]
    assert by_name["genie"]["last_health_check"]["exit_code"] == 1
    assert by_name["genie"]["failing_streak"] == 3

    # ---- a restarted container is "starting" until its next check; `up` waits for healthy
    podman("restart", "-t", "30", ctr)
    inspect = podman("inspect", ctr).stdout
    assert parse_inspect(inspect)[0].health.status == "starting"
    capture("podman_inspect_starting.json", inspect, secrets_)
    run = hive_containers("status", SERVICE, env=env)
    assert run.code == 1 and "health check starting" in run.out, run
    run = hive_containers("up", SERVICE, env=env)
    assert run.code == 0 and f"{SERVICE}: healthy in" in run.out, run
    note("up on the restarted container", run.seconds)

    # ---- down: stopped within the grace period by hive-init's own shutdown, exit 0
    run = hive_containers("down", SERVICE, "--volumes", env=env)
    print(run.out, run.err)
    assert run.code == 0, run
    assert re.search(rf"^{SERVICE}: stopped cleanly in [\d.]+s \(exit 0\); container and volumes removed$", run.out,
                     re.M), run
    note("down genie", run.seconds)
    assert podman("ps", "-aq", "--filter", f"label={PROJECT_LABEL}={project}").stdout.strip() == ""
    assert podman("volume", "ls", "-q", "--filter", f"label=io.podman.compose.project={project}").stdout.strip() == ""
    run = hive_containers("status", SERVICE, env=env)
    assert run.code == 1 and f"{SERVICE}: not created" in run.out, run
    print("timings:", json.dumps(TIMINGS))


def test_port_in_use_is_named_before_anything_starts(podman, setup):
    env = setup["env"]
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # a port of our own, held: the agent is told to publish it
        holder.listen()
        agent_port = holder.getsockname()[1]
        run = hive_containers("up", "agent", env={**env, "AGENT_DB_PASSWORD": "x" * 16, "HIVE_AGENT_PORT": str(agent_port)})
    assert run.code == 4, run
    assert run.err.count("\n") == 1 and "Traceback" not in run.err, run
    assert re.match(rf"hive-containers: agent: port {agent_port} is already in use \(by \S+ \(pid {os.getpid()}\)\); "
                    r"agent publishes it \(\S+/agent/docker-compose.yml\)$", run.err), run
    assert run.out == "", run  # nothing built, nothing started


def test_password_unset_is_refused(podman, setup):
    env = {k: v for k, v in setup["env"].items() if not k.startswith("AGENT_DB_PASSWORD")}
    run = hive_containers("up", "agent", env=env)
    assert run.code == 4, run
    assert run.err.startswith("hive-containers: agent: AGENT_DB_PASSWORD is not set (nor AGENT_DB_PASSWORD_FILE)"), run


def test_an_image_that_does_not_build(podman, setup, tmp_path):
    """A compose dir whose Dockerfile fails: exit 5, one line, then the build's last lines."""
    (tmp_path / "genie").mkdir()
    (tmp_path / "agent").mkdir()
    tag = f"localhost/hive-broken:{os.getpid()}"
    compose = (REPO / "images/genie/docker-compose.yml").read_text()
    compose = compose.replace("context: ../..", f"context: {tmp_path}").replace(
        "dockerfile: images/genie/Dockerfile", "dockerfile: Dockerfile")
    (tmp_path / "genie/docker-compose.yml").write_text(compose)
    (tmp_path / "agent/docker-compose.yml").write_text((REPO / "images/agent/docker-compose.yml").read_text())
    (tmp_path / "Dockerfile").write_text("FROM localhost/debian:bookworm-slim\n"
                                         "RUN echo 'the step that breaks' && exit 3\n")
    env = {**setup["env"], "HIVE_GENIE_IMAGE": tag, "HIVE_BASE_IMAGE": "localhost/debian:bookworm-slim"}
    try:
        run = hive_containers("--compose-dir", str(tmp_path), "up", SERVICE, env=env)
    finally:
        podman.remove(images=[tag])
    assert run.code == 5, run
    first, *rest = run.err.splitlines()
    assert re.fullmatch(rf"hive-containers: genie: building {tag} from Dockerfile failed \(exit \d+\); its last lines:",
                        first), run
    assert any("the step that breaks" in line for line in rest) and all(line.startswith("  ") for line in rest), run
    assert "Traceback" not in run.err


def test_no_healthcheck_and_exited_containers(podman, setup):
    """Real inspect output of the other cases: no health check at all, and an exited container."""
    image = "localhost/debian:bookworm-slim"
    name = f"hct-nohc-{os.getpid()}"
    exited = f"hct-exited-{os.getpid()}"
    try:
        podman("run", "-d", "--name", name, image, "sleep", "60")
        podman("run", "--name", exited, image, "sh", "-c", "exit 3", check=False)
        running = podman("inspect", name).stdout
        stopped = podman("inspect", exited).stdout
        table = podman("ps", "-a", "--filter", "name=^hct-", "--no-trunc").stdout
        ps_json = podman("ps", "-a", "--filter", "name=^hct-", "--format", "json").stdout
    finally:
        podman.remove(containers=[name, exited])
    [c] = parse_inspect(running)
    assert c.running and c.health.status == "none" and not c.has_healthcheck
    [e] = parse_inspect(stopped)
    assert not e.running and e.exit_code == 3 and e.health.status == "none"
    capture("podman_inspect_no_healthcheck.json", running)
    capture("podman_inspect_exited.json", stopped)
    capture("podman_ps_plain.txt", table)
    capture("podman_ps_plain.json", ps_json)


READYZ = """
import urllib.request, urllib.error
try:
    r = urllib.request.urlopen('http://127.0.0.1:9900/readyz', timeout=5)
    print(r.status, r.read().decode().strip())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode().strip())
"""
