"""The state parsing of hive-containers against engine output captured from real runs
(fixtures/README.md says which are captured and which are hand-written in Docker's format)."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from hive_containers.state import (
    Container,
    Health,
    HealthCheck,
    InitStatus,
    ParseError,
    Program,
    PublishedPort,
    assess,
    parse_init_status,
    parse_inspect,
    parse_ps_json,
    parse_ps_status,
    parse_ps_table,
    parse_time,
)
from tests.containers.conftest import fixture


def one(name: str) -> Container:
    [container] = parse_inspect(fixture(name))
    return container


# ------------------------------------------------------------------------------ inspect

def test_inspect_healthy():
    c = one("podman_inspect_healthy.json")
    assert c.running and c.status == "running" and c.exit_code == 0
    assert c.health.status == "healthy" and c.health.failing_streak == 0
    assert c.health.last.exit_code == 0 and c.health.last.output == "healthy: 2/2 programs ready"
    assert c.has_healthcheck and c.healthcheck_interval == 30.0
    assert [str(p) for p in c.ports] == ["0.0.0.0:48886->48886/tcp"]
    assert c.labels["com.docker.compose.service"] == "genie" and c.name.endswith("hive-genie_genie_1")
    assert c.started_at.tzinfo is not None and c.finished_at is None  # 0001-01-01: never finished
    assert 0 < c.uptime(c.started_at + timedelta(seconds=90)) == pytest.approx(90)
    assert "REDACTED" in fixture("podman_inspect_healthy.json")


def test_inspect_unhealthy_is_never_read_as_healthy():
    c = one("podman_inspect_unhealthy.json")
    assert c.running and c.health.status == "unhealthy" and c.health.failing_streak == 3
    assert c.health.last.exit_code == 1 and c.health.last.output == "unhealthy: api RUNNING (not ready: HTTP 503)"
    verdict = assess(c, None)
    assert not verdict.ok and verdict.summary == "health check unhealthy (3 failing in a row)"


def test_inspect_starting():
    # right after a restart: starting again, while the failing streak of before is still shown
    c = one("podman_inspect_starting.json")
    assert c.running and c.health.status == "starting"
    assert not assess(c, None).ok and assess(c, None).summary == "health check starting"


@pytest.mark.parametrize("name", ["podman_inspect_no_healthcheck.json",
                                  "docker_inspect_no_healthcheck.handwritten.json"])
def test_inspect_without_healthcheck(name):
    c = one(name)
    assert c.running and not c.has_healthcheck and c.health.status == "none" and c.healthcheck_interval is None
    ready = InitStatus(ready=True, programs=(Program("web", "READY", True, 7, 1.0, 0, "", False),))
    assert assess(c, ready).ok and assess(c, ready).summary == "ready (no health check)"
    assert not assess(c, InitStatus(False, failing=("web RUNNING",))).ok


def test_inspect_exited():
    c = one("podman_inspect_exited.json")
    assert not c.running and c.status == "exited" and c.exit_code == 3 and c.health.status == "none"
    assert c.uptime() is None and c.finished_at is not None
    assert assess(c, None).summary == "not running (exited 3)"


def test_docker_inspect_unhealthy():
    c = one("docker_inspect_unhealthy.handwritten.json")
    assert c.name == "hive-genie-genie-1"  # Docker's leading "/" dropped
    assert c.health.status == "unhealthy" and c.health.failing_streak == 3
    assert c.health.last.output == "unhealthy: api RUNNING (not ready: HTTP 503)"
    assert c.health.last.end == datetime(2025, 1, 10, 10, 1, 0, 300000, tzinfo=UTC)  # +01:00 offset
    assert [str(p) for p in c.ports] == ["0.0.0.0:48886->48886/tcp", "[::]:48886->48886/tcp"]


def test_docker_inspect_exited_keeps_its_last_health_but_is_not_running():
    c = one("docker_inspect_exited.handwritten.json")
    assert not c.running and c.exit_code == 137 and c.health.status == "unhealthy"
    assert [str(p) for p in c.ports] == ["0.0.0.0:48886->48886/tcp"]  # what it would publish
    assert assess(c, None).summary == "not running (exited 137)"


def test_health_is_read_word_for_word():
    base = one("podman_inspect_healthy.json")
    for raw, expected in (("healthy", "healthy"), ("unhealthy", "unhealthy"), ("starting", "starting"),
                          ("Unhealthy", "unhealthy")):
        text = fixture("podman_inspect_healthy.json").replace('"Status": "healthy"', f'"Status": "{raw}"')
        assert parse_inspect(text)[0].health.status == expected
    with pytest.raises(ParseError):
        parse_inspect(fixture("podman_inspect_healthy.json").replace('"Status": "healthy"',
                                                                     '"Status": "kinda healthy"'))
    assert base.health.status == "healthy"


def test_podman_4_healthcheck_spelling():
    # podman before 4.x's Docker-compatible "Health" wrote State.Healthcheck
    text = fixture("podman_inspect_unhealthy.json").replace('"Health":', '"Healthcheck":')
    assert parse_inspect(text)[0].health.status == "unhealthy"


def test_bad_inspect_output():
    for text in ("", "not json", "[{}]", '[{"State": 3}]'):
        with pytest.raises(ParseError):
            parse_inspect(text)
    assert parse_inspect("[]") == []


def test_stale_health():
    c = one("podman_inspect_healthy.json")
    end = c.health.last.end
    assert not c.health_is_stale(end + timedelta(seconds=60))
    assert c.health_is_stale(end + timedelta(seconds=70))  # two 30 s intervals and a margin


@pytest.mark.parametrize("text, expected", [
    ("2026-11-27T08:38:24.925625537Z", datetime(2026, 11, 27, 8, 38, 24, 925625, tzinfo=UTC)),
    ("2026-11-27 08:38:24.925625537 +0000 UTC", datetime(2026, 11, 27, 8, 38, 24, 925625, tzinfo=UTC)),
    ("2025-01-10T11:01:00.3+01:00", datetime(2025, 1, 10, 10, 1, 0, 300000, tzinfo=UTC)),
    ("2025-01-10T10:00:00Z", datetime(2025, 1, 10, 10, 0, tzinfo=UTC)),
    ("0001-01-01T00:00:00Z", None),
    ("", None),
])
def test_times(text, expected):
    assert parse_time(text) == expected


# ------------------------------------------------------------------------------ ps

@pytest.mark.parametrize("text, state, health, code", [
    ("Up 3 minutes (unhealthy)", "running", "unhealthy", None),  # Docker
    ("Up About a minute ago (unhealthy)", "running", "unhealthy", None),  # podman 4
    ("Up 2 hours (healthy)", "running", "healthy", None),
    ("Up 21 seconds ago (healthy)", "running", "healthy", None),
    ("Up 5 seconds (health: starting)", "running", "starting", None),  # Docker
    ("Up Less than a second ago (starting)", "running", "starting", None),  # podman
    ("Up 15 seconds ago", "running", None, None),
    ("Up 40 minutes (Paused)", "paused", None, None),
    ("Exited (0) 2 seconds ago", "exited", None, 0),
    ("Exited (137) 10 minutes ago", "exited", None, 137),
    ("Restarting (78) 3 seconds ago", "restarting", None, 78),
    ("Created", "created", None, None),
    ("Removal In Progress", "removing", None, None),
    ("Dead", "dead", None, None),
    ("something new", "unknown", None, None),
])
def test_ps_status(text, state, health, code):
    status = parse_ps_status(text)
    assert (status.state, status.health, status.exit_code) == (state, health, code)


def test_ps_unhealthy_is_not_healthy():
    # the old manager: `"Up" in status` → running, `"healthy" in status` → healthy
    assert parse_ps_status("Up 3 minutes (unhealthy)").health == "unhealthy"
    assert parse_ps_status("Up 3 minutes (healthy)").health == "healthy"


def test_podman_ps_json():
    [healthy] = parse_ps_json(fixture("podman_ps_healthy.json"))
    assert healthy.status.state == "running" and healthy.status.health == "healthy"
    assert healthy.labels["com.docker.compose.project"].endswith("hive-genie")
    assert healthy.ports == (PublishedPort(48886, "tcp", "", 48886),)
    [unhealthy] = parse_ps_json(fixture("podman_ps_unhealthy.json"))
    assert unhealthy.status_text.startswith("Up ") and unhealthy.status_text.endswith("(unhealthy)")
    assert unhealthy.status.health == "unhealthy"
    plain = {e.name.split("-")[1]: e for e in parse_ps_json(fixture("podman_ps_plain.json"))}
    assert plain["nohc"].status.state == "running" and plain["nohc"].status.health is None
    assert plain["exited"].status.state == "exited" and plain["exited"].status.exit_code == 3


def test_podman_ps_table():
    [entry] = parse_ps_table(fixture("podman_ps_unhealthy.txt"))
    assert entry.status_text == "Up About a minute ago (unhealthy)"
    assert entry.status.state == "running" and entry.status.health == "unhealthy"
    assert [str(p) for p in entry.ports] == ["0.0.0.0:48886->48886/tcp"]
    assert entry.name.endswith("hive-genie_genie_1")
    states = [(e.status.state, e.status.exit_code) for e in parse_ps_table(fixture("podman_ps_plain.txt"))]
    assert states == [("running", None), ("exited", 3)]


@pytest.mark.parametrize("name, parse", [("docker_ps.handwritten.jsonl", parse_ps_json),
                                         ("docker_ps.handwritten.txt", parse_ps_table)])
def test_docker_ps(name, parse):
    entries = {e.name: e for e in parse(fixture(name))}
    genie = entries["hive-genie-genie-1"]
    assert (genie.status.state, genie.status.health) == ("running", "unhealthy")
    assert [str(p) for p in genie.ports] == ["0.0.0.0:48886->48886/tcp", "[::]:48886->48886/tcp"]
    assert entries["hive-agent-agent-1"].status.health == "starting"
    assert entries["healthy-genie"].status.health == "healthy"
    assert entries["healthy-genie"].ports == (PublishedPort(48886, "tcp", "127.0.0.1", 18886),)
    assert entries["old-genie"].status.exit_code == 137 and entries["old-genie"].status.state == "exited"
    assert entries["paused-one"].status.state == "paused"
    assert entries["looping-genie"].status.state == "restarting"
    if name.endswith(".jsonl"):
        assert genie.labels == {"com.docker.compose.project": "hive-genie", "com.docker.compose.service": "genie",
                                "com.docker.compose.oneoff": "False"}


def test_ps_empty_and_bad():
    assert parse_ps_json("") == [] and parse_ps_json("[]") == [] and parse_ps_table("") == []
    with pytest.raises(ParseError):
        parse_ps_json("{nope")
    with pytest.raises(ParseError):
        parse_ps_table("NAMES  STATUS\n")


# ------------------------------------------------------------------------------ hive-init status --json

def test_init_status_ready():
    init = parse_init_status(fixture("init_status_ready.json"))
    assert init.ready and not init.error and init.failing == ()
    assert [(p.name, p.state, p.ready, p.critical) for p in init.programs] == [
        ("postgres", "READY", True, True), ("api", "READY", True, True)]
    assert assess(one("podman_inspect_healthy.json"), init).ok


def test_init_status_postgres_stopped():
    # hive-init leaves an operator-stopped program out of its readiness; the API is what fails
    init = parse_init_status(fixture("init_status_postgres_stopped.json"), returncode=1)
    assert not init.ready and init.failing == ("api RUNNING (not ready: HTTP 503)",)
    assert {p.name: p.state for p in init.programs} == {"postgres": "STOPPED", "api": "RUNNING"}
    verdict = assess(one("podman_inspect_healthy.json"), init)  # the engine's health not yet updated
    assert not verdict.ok
    assert verdict.summary == "not ready: api RUNNING (not ready: HTTP 503); critical program stopped: postgres"


def test_critical_program_stopped_counts_even_when_hive_init_says_ready():
    data = json.loads(fixture("init_status_postgres_stopped.json"))
    text = json.dumps({**data, "ready": True, "failing": []})
    init = parse_init_status(text)
    assert init.ready
    assert assess(one("podman_inspect_healthy.json"), init).summary == "critical program stopped: postgres"


def test_init_status_unreachable():
    init = parse_init_status("", "hive-init: hive-init is not running (no control socket at /run/hive-init.sock)\n", 2)
    assert not init.ready and init.error == "hive-init is not running (no control socket at /run/hive-init.sock)"
    verdict = assess(one("podman_inspect_healthy.json"), init)
    assert not verdict.ok and verdict.summary.startswith("hive-init: hive-init is not running")
    assert parse_init_status("{oops", "", 0).error.startswith("hive-init status --json answered")


def test_assess_absent_and_paused():
    assert assess(None, None).summary == "not created" and not assess(None, None).ok
    c = one("podman_inspect_healthy.json")
    paused = Container(**{**c.__dict__, "status": "paused"})
    assert assess(paused, None).summary == "paused"
    oom = Container(**{**one("podman_inspect_exited.json").__dict__, "oom_killed": True, "exit_code": 137})
    assert assess(oom, None).summary == "not running (exited 137, out of memory)"
    assert Health("unhealthy", 1, (HealthCheck(1, "x", None, None),)).last.output == "x"
    created = Container(**{**one("podman_inspect_exited.json").__dict__, "status": "created", "exit_code": 0})
    assert assess(created, None).summary == "not running (created, never started)"
    restarting = Container(**{**created.__dict__, "status": "restarting"})
    assert assess(restarting, None).summary == "not running (restarting)"
