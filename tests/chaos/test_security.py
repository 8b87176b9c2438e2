"""Security: no secret in anything the init shows, no descriptor of the init's in a child, a real
privilege drop, and config values that are passed literally (never through a shell)."""

import json
import os
import secrets
import sys

import pytest

from tests.chaos.util import PID1, http_get, wait_http
from tests.helpers import needs_root


def everything_shown(init) -> str:
    """Every byte a user or a scraper can get from the init, as one text."""
    parts = []
    for path in ("/health", "/readyz", "/livez", "/metrics", "/nope"):
        parts.append(http_get(init.port, path)[1].decode("utf-8", "replace"))
    for args in (("status", "--json"), ("status",), ("health",), ("logs", "app", "-n", "1000"),
                 ("logs", "failing", "-n", "1000")):
        out = init.ctl(*args)
        parts += [out.stdout, out.stderr]
    return "\n".join(parts)


def test_no_secret_is_ever_shown(start_init, tmp_path):
    password = "pw-" + secrets.token_hex(8)
    token = "tok-" + secrets.token_hex(8)
    url_password = "urlpw" + secrets.token_hex(8)
    kv_password = "kvpw" + secrets.token_hex(8)
    token_file = tmp_path / "api-token"
    token_file.write_text(token + "\n")
    init = start_init(f"""
        [programs.app]
        command = ["sh", "-c", "echo db=$DB_PASSWORD token=$API_TOKEN; echo \\"url=$1 $2\\" >&2; echo $DATABASE_URL; exec sleep 300",
                   "app", "postgresql://app:{url_password}@127.0.0.1:1/app", "--password={kv_password}"]
        [programs.app.environment]
        DB_PASSWORD = "${{DB_PASSWORD}}"
        API_TOKEN = "${{API_TOKEN}}"
        DATABASE_URL = "postgresql://app:${{DB_PASSWORD}}@127.0.0.1/app"
        [programs.app.readiness]
        exec = ["sh", "-c", "test -n \\"$DB_PASSWORD\\" && echo probing with $API_TOKEN"]
        period = "100ms"
        [programs.failing]
        command = ["sh", "-c", "echo cannot log in with $DB_PASSWORD >&2; exit 3"]
        environment = {{ DB_PASSWORD = "${{DB_PASSWORD}}" }}
        oneshot = true
        [programs.dependent]
        command = ["sleep", "300"]
        depends_on = {{ failing = "completed" }}
    """, http=True, env={"DB_PASSWORD": password, "API_TOKEN_FILE": str(token_file)})
    init.wait_state("app", "READY")
    init.wait_state("failing", "FATAL")
    init.wait_state("dependent", "FATAL")
    wait_http(init)
    init.signal(12)  # USR2: every program's state into the log
    init.wait_msg("status")
    shown = everything_shown(init)
    assert init.stop() == 0
    shown += "\n".join(init.raw)
    # the lines were there, with the secrets masked
    assert "db=*** token=***" in init.output("app")
    assert "cannot log in with ***" in init.output("failing")
    assert any(line.startswith("url=postgresql://app:***@127.0.0.1:1/app --password=***") for line in init.output("app"))
    for secret in (password, token, url_password, kv_password):
        assert secret not in shown


def test_a_failed_readiness_probe_shows_no_secret(start_init, tmp_path):
    password = "pw-" + secrets.token_hex(8)
    flag = tmp_path / "db-up"
    flag.touch()
    init = start_init(f"""
        [programs.app]
        command = ["sleep", "300"]
        environment = {{ DB_PASSWORD = "${{DB_PASSWORD}}" }}
        [programs.app.readiness]
        exec = ["sh", "-c", "test -e {flag} || {{ echo could not connect to postgresql://app:$DB_PASSWORD@db/app; exit 1; }}"]
        period = "100ms"
        failure_threshold = 1
    """, http=True, env={"DB_PASSWORD": password})
    init.wait_state("app", "READY")
    wait_http(init)
    flag.unlink()  # the database goes away: the probe fails, saying why
    init.wait_state("app", "RUNNING")
    shown = everything_shown(init)
    assert "could not connect" in shown
    assert password not in shown


FD_REPORT = """\
import json, os, sys
fds = []
for fd in range(1024):
    try:
        os.fstat(fd)
        fds.append(fd)
    except OSError:
        pass
report = json.dumps({"fds": fds, "stdin": os.readlink("/proc/self/fd/0")})
if len(sys.argv) > 1:  # written whole, then renamed: the test may look at any moment
    with open(sys.argv[1] + ".new", "w") as f:
        f.write(report)
    os.replace(sys.argv[1] + ".new", sys.argv[1])
else:
    print(report, flush=True)
"""


def test_children_get_no_descriptor_of_the_inits(start_init, tmp_path):
    script = tmp_path / "fds.py"
    script.write_text(FD_REPORT)
    probe_report = tmp_path / "probe-fds.json"
    init = start_init(f"""
        [programs.logged]
        command = ["sh", "-c", "echo to the log file; exec sleep 300"]
        log_file = "{tmp_path / 'logged.log'}"
        [programs.other]
        command = ["sleep", "300"]
        [programs.first]
        command = ["sh", "-c", "{sys.executable} {script}; exec sleep 300"]
        [programs.later]
        command = ["{sys.executable}", "{script}"]
        oneshot = true
        autostart = false
        [programs.later.readiness]
        exec = ["{sys.executable}", "{script}", "{probe_report}"]
        period = "100ms"
    """, http=True, pid1=PID1)
    init.wait_msg("to the log file", "logged")
    wait_http(init)
    first = json.loads(init.wait_for(lambda e: e.get("program") == "first" and "fds" in e.get("msg", ""))["msg"])
    # the init has its sockets, pipes of the other children and a log file open by now
    assert init.ctl("start", "later").returncode == 0
    later = json.loads(init.wait_for(lambda e: e.get("program") == "later" and "fds" in e.get("msg", ""))["msg"])
    assert first == later == {"fds": [0, 1, 2], "stdin": "/dev/null"}
    init.wait_state("later", "EXITED")
    if probe_report.exists():  # the probe ran while `later` did
        assert json.loads(probe_report.read_text()) == {"fds": [0, 1, 2], "stdin": "/dev/null"}
    assert init.stop() == 0


PRIVILEGES = """\
import json, os, socket, sys
out = {"resuid": os.getresuid(), "resgid": os.getresgid(), "groups": sorted(os.getgroups()),
       "home": os.environ.get("HOME"), "user": os.environ.get("USER")}
with open("/proc/self/status") as f:
    out["caps"] = {line.split(":")[0]: line.split()[1] for line in f if line.startswith("Cap")}
def attempt(name, action):
    try:
        action()
        out[name] = "ALLOWED"
    except PermissionError:
        out[name] = "denied"
    except OSError as e:
        out[name] = "error: " + e.strerror
attempt("setuid0", lambda: os.setuid(0))
attempt("setgid0", lambda: os.setgid(0))
attempt("setgroups", lambda: os.setgroups([0]))
attempt("read_root_only", lambda: open(sys.argv[1]).read())
attempt("write_root_dir", lambda: open(os.path.join(os.path.dirname(sys.argv[1]), "planted"), "w").close())
attempt("control_socket", lambda: socket.socket(socket.AF_UNIX).connect(os.environ["HIVE_INIT_SOCKET"]))
attempt("kill_init", lambda: os.kill(1 if int(sys.argv[2]) else os.getppid(), 15))
print(json.dumps(out), flush=True)
"""


@needs_root
@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="needs a system python3 that nobody can run")
def test_privilege_drop_to_nobody(start_init, open_tmp):
    import pwd

    nobody = pwd.getpwnam("nobody")
    script = open_tmp / "privileges.py"
    script.write_text(PRIVILEGES)
    root_only = open_tmp / "root-only"
    root_only.write_text("root's secret\n")
    root_only.chmod(0o600)
    is_nobody = f"import os, sys; sys.exit(0 if os.getresuid() == ({nobody.pw_uid},) * 3 and os.getgroups() == [{nobody.pw_gid}] else 1)"
    init = start_init(f"""
        [programs.drop]
        command = ["/usr/bin/python3", "{script}", "{root_only}", "{int(PID1)}"]
        user = "nobody"
        oneshot = true
        [programs.probed]
        command = ["sleep", "300"]
        user = "nobody"
        [programs.probed.readiness]
        exec = ["/usr/bin/python3", "-c", "{is_nobody}"]
        period = "100ms"
    """, pid1=PID1)
    init.wait_state("drop", "EXITED")
    init.wait_state("probed", "READY")  # its probe ran as nobody too
    out = json.loads(init.output("drop")[0])
    assert out["resuid"] == [nobody.pw_uid] * 3 and out["resgid"] == [nobody.pw_gid] * 3
    assert out["groups"] == [nobody.pw_gid]  # nobody's groups only: none of root's
    assert (out["home"], out["user"]) == (nobody.pw_dir, "nobody")
    assert all(int(out["caps"][name], 16) == 0 for name in ("CapInh", "CapPrm", "CapEff", "CapAmb")), out["caps"]
    denied = ("setuid0", "setgid0", "setgroups", "read_root_only", "write_root_dir", "control_socket", "kill_init")
    assert {name: out[name] for name in denied} == dict.fromkeys(denied, "denied")
    assert not (open_tmp / "planted").exists()
    assert init.proc.poll() is None
    assert init.stop() == 0


INJECTIONS = ['"; touch $PWNED; #', "$(touch $PWNED)", "`touch $PWNED`", "' ; touch $PWNED ; '", "| touch $PWNED",
              "&& touch $PWNED", "\n touch $PWNED", "x; touch $PWNED"]
ECHO = """\
import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(),
                  "env": [os.environ.get("EVIL%d" % i) for i in range(%d)], "expanded": os.environ.get("EXPANDED")}), flush=True)
"""


def test_config_values_are_passed_literally_never_through_a_shell(start_init, tmp_path):
    pwned = tmp_path / "pwned"
    script = tmp_path / "echo.py"
    script.write_text(ECHO.replace("range(%d)", f"range({len(INJECTIONS)})"))
    weird_dir = tmp_path / INJECTIONS[0]
    weird_dir.mkdir()
    toml = json.dumps  # a JSON string is a valid TOML basic string
    args = ", ".join(toml(value) for value in INJECTIONS)
    env = ", ".join(f"EVIL{i} = {toml(value)}" for i, value in enumerate(INJECTIONS))
    init = start_init(f"""
        [programs.echo]
        command = ["{sys.executable}", "{script}", {args}]
        directory = {toml(str(weird_dir))}
        environment = {{ {env}, EXPANDED = "${{INJECT}}" }}
        oneshot = true
        [programs.probed]
        command = ["sleep", "300"]
        directory = {toml(str(weird_dir))}
        [programs.probed.readiness]
        exec = ["{sys.executable}", "-c", "import sys; sys.exit(0)", {args}]
        period = "100ms"
    """, env={"PWNED": str(pwned), "INJECT": "$(touch $PWNED)"})
    init.wait_state("echo", "EXITED")
    init.wait_state("probed", "READY")
    out = json.loads(init.output("echo")[0])
    assert out == {"argv": INJECTIONS, "cwd": str(weird_dir), "env": INJECTIONS, "expanded": "$(touch $PWNED)"}
    assert init.stop() == 0
    assert not pwned.exists()
