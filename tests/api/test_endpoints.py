"""The health endpoint and the control socket as Docker, Kubernetes and an operator use them."""

import json
import os
import socket
import stat
import subprocess
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT, wait_until


def get(init, path, method="GET"):
    request = urllib.request.Request(f"http://127.0.0.1:{init.port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


APP = """
    [programs.app]
    command = ["sleep", "300"]
    [programs.app.readiness]
    exec = ["test", "-e", "{flag}"]
    period = "100ms"
    failure_threshold = 1
    [programs.side]
    command = ["sleep", "300"]
"""


def test_readyz_health_and_the_health_command_follow_readiness(start_init, tmp_path):
    flag = tmp_path / "ready"
    init = start_init(APP.format(flag=flag), http=True)
    init.wait_state("app", "RUNNING")
    assert get(init, "/livez") == (200, "ok\n")
    status, body = get(init, "/readyz")
    assert status == 503 and "app RUNNING" in body
    health = init.ctl("health")
    assert health.returncode == 1 and health.stdout.startswith("unhealthy: app RUNNING")
    flag.touch()
    init.wait_state("app", "READY")
    assert get(init, "/readyz") == (200, "ready\n")
    health = init.ctl("health")
    assert (health.returncode, health.stdout) == (0, "healthy: 2/2 programs ready\n")
    status, body = get(init, "/health")
    snapshot = json.loads(body)
    assert status == 200 and snapshot["ready"] is True
    app = next(p for p in snapshot["programs"] if p["name"] == "app")
    assert app["state"] == "READY" and app["pid"] > 0 and app["probe"]["ok"] is True
    # readiness flips back when the probe fails, and /readyz says so
    flag.unlink()
    init.wait_state("app", "RUNNING")
    assert get(init, "/readyz")[0] == 503
    # a program that dies: 503 until it is back
    flag.touch()
    init.wait_state("app", "READY")
    os.kill(init.program("side")["pid"], 9)
    init.wait_for(lambda e: e.get("target") == "side" and e["msg"].startswith("backoff"), what="side's backoff")
    init.wait_state("side", "READY")
    assert get(init, "/readyz")[0] == 200


def test_nothing_on_the_http_port_changes_anything(start_init, tmp_path):
    init = start_init(APP.format(flag=tmp_path), http=True)
    init.wait_state("app", "READY")
    pid = init.program("app")["pid"]
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/health", "/stop", "/programs/app", "/readyz"):
            assert get(init, path, method)[0] == 405
    assert get(init, "/programs/app/stop")[0] == 404
    assert init.program("app")["pid"] == pid


def test_metrics_parse_with_prometheus_own_parser(start_init, tmp_path):
    init = start_init(APP.format(flag=tmp_path), http=True)
    init.wait_state("app", "READY")
    status, text = get(init, "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = [s for f in families.values() for s in f.samples]

    def value(name, **labels):
        return next(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))
    assert value("hive_program_up", program="app") == 1
    assert value("hive_program_ready", program="app") == 1
    assert value("hive_program_state", program="app", state="READY") == 1
    assert value("hive_program_restarts_total", program="app") == 0
    assert families["hive_probe_duration_seconds"].samples
    assert value("hive_init_resident_memory_bytes") > 1_000_000
    assert value("hive_zombies_reaped_total") >= 1  # the exec probes were reaped


def test_liveness_failure_restarts_the_program(start_init, tmp_path):
    alive = tmp_path / "alive"
    alive.touch()
    init = start_init(f"""
        [programs.app]
        command = ["sleep", "300"]
        backoff = {{ initial = "10ms" }}
        [programs.app.liveness]
        exec = ["test", "-e", "{alive}"]
        period = "100ms"
        failure_threshold = 2
    """)
    first = init.wait_state("app", "READY")["pid"]
    alive.unlink()
    init.wait_for(lambda e: e.get("target") == "app" and "liveness probe failed 2 times" in e["msg"], what="liveness")
    alive.touch()
    app = wait_until(lambda: (p := init.program("app"))["state"] == "READY" and p["pid"] != first and p, 20,
                     "a new, ready app process")
    assert app["restarts"] == 1


def test_status_table_and_exit_codes(start_init, tmp_path):
    init = start_init("""
        [programs.web]
        command = ["sleep", "300"]
        [programs.later]
        command = ["sleep", "300"]
        autostart = false
    """)
    init.wait_state("web", "READY")
    out = init.ctl("status")
    assert out.returncode == 0  # a program that is not meant to run does not make the container unready
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "READY", "MEM", "CPU%", "INFO"]
    states = {row.split()[0]: row.split()[1] for row in rows}
    assert states == {"web": "READY", "later": "STOPPED"}
    assert init.ctl("status", "later").returncode == 1
    assert init.ctl("status", "ghost").returncode == 3
    assert init.ctl("start", "later").returncode == 0
    init.wait_state("later", "READY")
    stop = init.ctl("stop", "web")
    assert (stop.returncode, stop.stdout) == (0, "web: STOPPED\n")
    assert init.ctl("status").returncode == 0
    unknown = init.ctl("restart", "ghost")
    assert unknown.returncode == 3 and unknown.stderr == "hive-init: no program named 'ghost'\n"
    assert init.ctl("signal", "later", "HUP").returncode == 0  # sleep dies of it, and is restarted
    init.wait_for(lambda e: e.get("target") == "later" and "killed by SIGHUP" in e["msg"], what="SIGHUP death")
    assert init.ctl("signal", "later", "NOSUCH").returncode == 1
    init.stop()
    gone = init.ctl("status")
    assert gone.returncode == 2 and "hive-init is not running" in gone.stderr and "Traceback" not in gone.stderr
    assert init.ctl("health").returncode == 1


def test_control_socket_is_0600(start_init, tmp_path):
    init = start_init('[programs.a]\ncommand = ["sleep", "300"]')
    init.wait_state("a", "READY")
    mode = os.stat(init.socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


@pytest.mark.skipif(not ROOT, reason="needs root to connect as another user")
def test_control_socket_refuses_other_users(open_tmp):
    from tests.helpers import Init

    init = Init(open_tmp, '[programs.a]\ncommand = ["sleep", "300"]')
    try:
        init.wait_state("a", "READY")
        probe = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                 "s.sendall(b'{\"cmd\":\"stop\",\"name\":\"a\"}\\n'); print(s.recv(1000).decode())")
        as_nobody = ["/usr/bin/python3", "-c", probe, init.socket]
        out = subprocess.run(as_nobody, capture_output=True, text=True, user="nobody")
        assert "PermissionError" in out.stderr  # 0600: the file system says no
        os.chmod(init.socket, 0o666)  # even if someone loosens the mode, the peer check holds
        out = subprocess.run(as_nobody, capture_output=True, text=True, user="nobody")
        assert '"error":"forbidden"' in out.stdout
        assert init.program("a")["state"] == "READY"
    finally:
        init.close()


def test_reload_applies_a_valid_config_and_rejects_an_invalid_one(start_init, tmp_path):
    init = start_init("""
        [programs.keep]
        command = ["sleep", "300"]
        [programs.change]
        command = ["sleep", "300"]
        [programs.drop]
        command = ["sleep", "300"]
    """)
    for name in ("keep", "change", "drop"):
        init.wait_state(name, "READY")
    keep_pid = init.program("keep")["pid"]
    head = init.config_path.read_text().split("[programs.keep]")[0]
    init.config_path.write_text(head + "[programs.keep]\ncommand = [\"sleep\", \"300\"]\n[programs.change]\n"
                                "command = [\"sleep\", \"301\"]\n[programs.added]\ncommand = [\"sleep\", \"300\"]\n")
    out = init.ctl("reload")
    assert out.returncode == 0 and "added: added; removed: drop; changed: change" in out.stdout
    init.wait_state("added", "READY")
    init.wait_state("change", "READY")
    names = [p["name"] for p in init.status()["programs"]]
    assert sorted(names) == ["added", "change", "keep"]
    assert init.program("keep")["pid"] == keep_pid
    # an invalid file is rejected whole; nothing running is touched
    good = init.config_path.read_text()
    init.config_path.write_text(good + "[programs.bad]\ncomand = [\"x\"]\n")
    out = init.ctl("reload")
    assert out.returncode == 78 and "programs.bad.comand: unknown field" in out.stderr
    assert init.program("keep")["pid"] == keep_pid
    # SIGHUP reloads too
    init.config_path.write_text(good.replace("[programs.added]", "[programs.renamed]"))
    init.signal(1)
    init.wait_state("renamed", "READY")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=st.one_of(st.binary(max_size=300), st.dictionaries(st.sampled_from(["cmd", "name", "lines", "signal", "follow"]),
       st.one_of(st.text(max_size=10), st.integers(), st.none(), st.booleans(), st.sampled_from(["status", "logs", "signal", "start"])))))
def test_fuzzed_control_requests_get_an_answer_and_the_init_survives(fuzz_init, request):
    data = request if isinstance(request, bytes) else json.dumps(request).encode()
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(fuzz_init.socket)
    s.sendall(data.replace(b"\n", b" ") + b"\n")
    reply = s.recv(100000)
    s.close()
    assert reply.endswith(b"\n")
    assert isinstance(json.loads(reply.split(b"\n")[0]), dict)
    assert fuzz_init.proc.poll() is None


@pytest.fixture(scope="module")
def fuzz_init(tmp_path_factory):
    from tests.helpers import Init

    init = Init(tmp_path_factory.mktemp("fuzz"), '[programs.a]\ncommand = ["sleep", "300"]\nstop_signal = "KILL"\n[programs.b]\ncommand = ["sleep", "300"]')
    init.wait_state("a", "READY")
    yield init
    init.close()


def test_a_critical_program_stopped_by_an_operator_makes_the_container_unhealthy(start_init):
    init = start_init("""
        [programs.db]
        command = ["sleep", "300"]
        critical = true
        [programs.extra]
        command = ["sleep", "300"]
    """)
    init.wait_state("db", "READY")
    assert init.ctl("health").returncode == 0
    assert init.ctl("stop", "extra").returncode == 0
    assert init.ctl("health").returncode == 0  # an ordinary program stopped on purpose: still healthy
    assert init.ctl("stop", "db").returncode == 0
    health = init.ctl("health")
    assert health.returncode == 1 and "db STOPPED" in health.stdout
    assert init.proc.poll() is None  # stopped by an operator: not a failure that ends the init
    assert init.ctl("start", "db").returncode == 0
    init.wait_state("db", "READY")
    assert init.ctl("health").returncode == 0
