"""hive-containers' command line without a working engine: every failure is one line and its exit
status, never a traceback. The Docker path runs against a stand-in `docker` (there is no Docker
daemon on these machines) that answers with the Docker-format fixtures."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.containers.conftest import FIXTURES, hive_containers

DOCKER = shutil.which("docker")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HIVE_", "DOCKER_")) and "PASSWORD" not in k}
    env.update(extra)
    return env


def one_line(run) -> str:
    assert "Traceback" not in run.err, run
    lines = run.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hive-containers: "), run
    return lines[0]


def test_no_engine_installed(tmp_path):
    run = hive_containers("status", env=clean_env(PATH=str(tmp_path)))
    assert run.code == 2
    assert one_line(run) == "hive-containers: no container engine: neither docker nor podman is installed"
    run = hive_containers("--engine", "podman", "status", env=clean_env(PATH=str(tmp_path)))
    assert run.code == 2 and one_line(run) == "hive-containers: podman is not installed (or not on PATH)"


@pytest.mark.skipif(DOCKER is None, reason="no docker client installed")
def test_docker_daemon_unreachable(tmp_path):
    (tmp_path / "docker").symlink_to(DOCKER)
    env = clean_env(PATH=str(tmp_path), DOCKER_HOST=f"unix://{tmp_path}/no-daemon.sock")
    run = hive_containers("--engine", "docker", "up", "genie", env=env)
    assert run.code == 2, run
    assert one_line(run).startswith("hive-containers: the Docker daemon is not reachable: Cannot connect to the "
                                    "Docker daemon at unix://"), run
    run = hive_containers("status", env=env)  # automatic: docker only, and it does not answer
    assert run.code == 2, run
    line = one_line(run)
    assert line.startswith("hive-containers: the Docker daemon is not reachable (Cannot connect") and \
        line.endswith("and podman is not installed"), run


@pytest.mark.skipif(DOCKER is None or shutil.which("podman") is None or os.geteuid() != 0,
                    reason="needs the docker client and podman as root")
def test_automatic_choice_falls_back_to_podman(tmp_path):
    from tests.images.podman import Podman

    for name in ("docker", "podman"):
        (tmp_path / name).symlink_to(shutil.which(name))
    env = {**Podman().env, **clean_env(PATH=f"{tmp_path}:/usr/sbin:/sbin",
                                       DOCKER_HOST=f"unix://{tmp_path}/no-daemon.sock")}
    env.update({k: v for k, v in Podman().env.items() if k.startswith("CONTAINERS_")})
    env["HIVE_PROJECT_PREFIX"] = "hct-none-"
    run = hive_containers("status", "--json", env=env)  # podman-compose: found next to this Python
    assert run.code == 1, run
    report = json.loads(run.out)
    assert report["engine"] == "podman" and [s["state"] for s in report["services"]] == ["absent", "absent"]


@pytest.mark.parametrize("args, message", [
    (["status", "nosuch"], "unknown service 'nosuch' (genie, agent or all)"),
    (["logs", "all"], "logs takes one service: genie or agent"),
    (["up", "genie", "--timeout", "soon"], None),
    (["frobnicate"], None),
    ([], None),
])
def test_bad_usage_is_3(args, message, tmp_path):
    run = hive_containers(*args, env=clean_env(PATH=str(tmp_path)))
    assert run.code == 3, run
    assert "Traceback" not in run.err
    if message:
        assert one_line(run) == f"hive-containers: {message}"


def test_unknown_engine_is_3(tmp_path):
    run = hive_containers("status", env=clean_env(PATH=str(tmp_path), HIVE_ENGINE="lxc"))
    assert run.code == 3 and one_line(run) == "hive-containers: $HIVE_ENGINE='lxc': docker or podman"


def test_compose_dir_missing_is_4(tmp_path):
    run = hive_containers("--compose-dir", str(tmp_path / "nope"), "status", env=clean_env(PATH=str(tmp_path)))
    assert run.code == 4
    assert one_line(run) == (f"hive-containers: compose files: {tmp_path / 'nope'} is not a folder; "
                             "use --compose-dir or $HIVE_COMPOSE_DIR")
    run = hive_containers("up", "genie", "--extra-ca", str(tmp_path / "ca.pem"), env=clean_env(PATH=str(tmp_path)))
    assert run.code == 4 and "no such file" in one_line(run)


# ------------------------------------------------------------------------------ the Docker path

FAKE_DOCKER = r'''#!{python}
"""A stand-in for the docker CLI: answers from the fixtures, logs each call."""
import json, sys
from pathlib import Path
fixtures = Path({fixtures!r})
args = sys.argv[1:]
with open({calls!r}, "a") as f:
    f.write(json.dumps(args) + "\n")
if args[:1] == ["info"] or args[:2] == ["compose", "version"]:
    print("27.0.0")
elif args[:1] == ["ps"]:
    lines = (fixtures / "docker_ps.handwritten.jsonl").read_text().splitlines()
    wanted = [a.split("=", 1)[1] for a in args if a.startswith("label=")]
    for line in lines:
        labels = json.loads(line)["Labels"]
        if all(w in labels.split(",") for w in wanted):
            print(line)
elif args[:2] == ["container", "inspect"] and args[2] == "3f1c2a9b8d7e":
    print((fixtures / "docker_inspect_unhealthy.handwritten.json").read_text())
elif args[:2] == ["container", "inspect"]:
    print("[]")
    print("Error: No such container: " + args[2], file=sys.stderr)
    sys.exit(1)
elif args[:1] == ["exec"]:
    print((fixtures / "init_status_postgres_stopped.json").read_text())
    sys.exit(1)
elif args[:1] == ["logs"]:
    sys.stdout.write((fixtures / "podman_logs_genie.txt").read_text())
else:
    print("fake docker: unexpected " + " ".join(args), file=sys.stderr)
    sys.exit(125)
'''


@pytest.fixture
def fake_docker(tmp_path: Path):
    calls = tmp_path / "calls.jsonl"
    script = tmp_path / "bin" / "docker"
    script.parent.mkdir()
    script.write_text(FAKE_DOCKER.format(python=sys.executable, fixtures=str(FIXTURES), calls=str(calls)))
    script.chmod(0o755)
    env = clean_env(PATH=str(script.parent))
    return env, lambda: [json.loads(line) for line in calls.read_text().splitlines()]


def test_docker_status_reads_unhealthy_as_unhealthy(fake_docker):
    env, calls = fake_docker
    run = hive_containers("status", "genie", env=env)
    assert run.code == 1, run
    lines = run.out.splitlines()
    assert lines[1].split()[:3] == ["genie", "running", "unhealthy"], run
    assert "0.0.0.0:48886->48886/tcp, [::]:48886->48886/tcp" in lines[1]
    assert "genie: health check unhealthy (3 failing in a row); not ready: api RUNNING (not ready: HTTP 503); " \
           "critical program stopped: postgres" in run.out
    assert "  postgres  STOPPED" in run.out
    made = calls()
    assert ["ps", "--no-trunc", "-a", "--filter", "label=com.docker.compose.project=hive-genie", "--filter",
            "label=com.docker.compose.service=genie", "--format", "{{json .}}"] in made
    assert ["container", "inspect", "3f1c2a9b8d7e"] in made
    assert ["exec", "3f1c2a9b8d7e6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b", "hive-init", "status",
            "--json"] in made
    assert not any(c[:1] == ["healthcheck"] for c in made)  # Docker schedules its own checks


def test_docker_status_json(fake_docker):
    env, _ = fake_docker
    run = hive_containers("status", "--json", env=env)
    assert run.code == 1, run
    report = json.loads(run.out)
    assert report["engine"] == "docker" and not report["ok"]
    genie, agent = report["services"]
    assert genie["health"] == "unhealthy" and genie["failing_streak"] == 3 and not genie["ok"]
    assert genie["last_health_check"]["output"] == "unhealthy: api RUNNING (not ready: HTTP 503)"
    assert agent["service"] == "agent" and agent["state"] == "absent"  # gone between ps and inspect


def test_docker_logs_of_one_program(fake_docker):
    env, calls = fake_docker
    run = hive_containers("logs", "genie", "--program", "api", "-n", "3", env=env)
    assert run.code == 0, run
    lines = run.out.splitlines()
    assert len(lines) == 3 and all(" api       | " in line or " hive-init | [api]" in line for line in lines), run
    full_id = "3f1c2a9b8d7e6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b"
    assert ["logs", full_id] in calls()  # all of it: the filter needs the whole history
    run = hive_containers("logs", "genie", "-n", "2", "--raw", env=env)
    assert [json.loads(line)["program"] for line in run.out.splitlines()] and len(run.out.splitlines()) == 2
    assert ["logs", "--tail", "2", full_id] in calls()
