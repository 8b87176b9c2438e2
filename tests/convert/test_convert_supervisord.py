"""`hive-init convert`: real supervisord.conf files in, TOML out, checked field by field and with
hive-init's own loader; the stderr report and the exit statuses as documented."""

import os
import pwd
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hive_init import exits
from hive_init.config import loads
from hive_init.convert import command

FIXTURES = Path(__file__).parent / "fixtures"
REPORT = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): \[(?P<section>[^\]]+)\]( (?P<key>[a-z_]+))?: not converted: .+$")
WARNING = re.compile(r"^[^:]+:\d+: \[[^\]]+\]( [a-z_]+)?: warning: .+$")
# section and key names can be any text: for random input, only the shape of the line is checked
ANY_NOTE = re.compile(r"^[^:]+:\d+: \[.*\]( .*)?: (?P<kind>not converted|warning): .+$")


# supervisord's restart budget, as every converted program gets it (startsecs=1, startretries=3)
BUDGET = {"start_seconds": "1s", "start_retries": 3, "max_restarts": -1, "backoff": {"reset_after": "1s"}}


def run(capsys, source, output=None, **options):
    status = command(str(source), None if output is None else str(output), **options)
    out, err = capsys.readouterr()
    return status, out, err.splitlines()


def reports(lines):
    return [m.groupdict() for m in map(REPORT.match, lines) if m]


def loadable(text, env=None):
    """The output as hive-init loads it here: `user` lines naming users this machine lacks are
    dropped (they are facts of the image, not of the conversion)."""

    def known(match):
        try:
            pwd.getpwnam(match.group(1))
            return match.group(0)
        except KeyError:
            return ""

    return loads(re.sub(r'^user = "([^"]*)".*$', known, text, flags=re.M), "out.toml", env or {})


@pytest.fixture
def aio(tmp_path):
    shutil.copytree(FIXTURES / "aio", tmp_path / "aio")
    return tmp_path / "aio" / "supervisord.conf"


# -- the all-in-one PostgreSQL + uvicorn image --------------------------------------------------

def test_all_in_one_field_by_field(capsys, aio):
    status, out, err = run(capsys, aio)
    assert status == exits.OK  # only boilerplate left out (said in the header) and warnings
    doc = tomllib.loads(out)
    # the longest stop chain (10s + 10s + 60s, a level at a time) fits in shutdown_timeout
    assert doc["init"] == {"log_level": "warning", "shutdown_timeout": "85s",
                           "environment_passthrough": ["*"]}  # supervisord passes its whole environment
    programs = doc["programs"]
    assert list(programs) == ["postgres", "api", "health-monitor"]

    pg = programs["postgres"]
    # %(ENV_PGDATA)s comes from [supervisord] environment, so supervisord knew its value
    assert pg["command"] == ["/usr/lib/postgresql/16/bin/postgres", "-D", "/var/lib/postgresql/data",
                             "-c", "config_file=/etc/postgresql/postgresql.conf"]
    assert pg["user"] == "postgres"
    assert pg["priority"] == 100
    assert pg["restart"] == "always"
    assert pg["stop_signal"] == "INT"
    assert pg["stop_timeout"] == "60s"
    assert "log_file" not in pg  # /dev/stdout: hive-init copies the output to its stdout anyway
    assert "kill_group" not in pg  # hive-init's default (true) is kept
    assert pg["environment"] == {"PGDATA": "/var/lib/postgresql/data", "TZ": "UTC"}

    api = programs["api"]
    # quoted shell inside `bash -c '...'` is an argument, not shell syntax for the converter
    assert api["command"] == [
        "bash", "-c", "until pg_isready -h 127.0.0.1 -p 5432 -q; do sleep 1; done; "
                      "exec uvicorn app.main:app --host 0.0.0.0 --port ${API_PORT} --workers 2"]
    assert "shell" not in api
    assert api["directory"] == "/srv/app"
    assert api["user"] == "app"
    assert api["priority"] == 200
    assert api["restart"] == "on-failure"
    assert api["exit_codes"] == [0, 3]
    assert (api["start_seconds"], api["start_retries"], api["max_restarts"]) == ("1s", 10, -1)
    assert pg["start_seconds"] == "5s" and pg["backoff"] == {"reset_after": "5s"}
    assert api["kill_group"] is True
    assert api["log_file"] == "/var/log/app/api.log"
    assert api["log_file_max_size"] == "20MB"
    assert api["log_file_backups"] == 5
    here = str(aio.parent)
    assert api["environment"] == {
        "PGDATA": "/var/lib/postgresql/data", "TZ": "UTC",
        "DATABASE_URL": "postgresql://app@127.0.0.1:5432/app", "PYTHONUNBUFFERED": "1",
        "APP_HOME": f"{here}/../app",
    }

    mon = programs["health-monitor"]  # from the [include]d conf.d/monitor.conf
    assert mon["command"] == ["/usr/local/bin/healthmon", "--api", "http://127.0.0.1:${API_PORT}/health",
                              "--interval", "15"]
    assert mon["priority"] == 300
    assert mon["autostart"] is True
    assert mon["restart"] == "never"
    assert mon["stop_signal"] == "TERM"
    assert mon["kill_group"] is True
    assert "log_file" not in mon

    config = loadable(out, {"API_PORT": "8000"})
    assert config.start_order() == ["postgres", "api", "health-monitor"]
    assert config.programs["api"].command[2].endswith("--port 8000 --workers 2")
    assert config.programs["postgres"].stop_signal == 2
    assert config.programs["api"].stop_timeout == 10.0
    assert config.programs["postgres"].stop_timeout == 60.0


def test_all_in_one_report_and_comments(capsys, aio):
    status, out, err = run(capsys, aio)
    assert reports(err) == []
    # boilerplate that means nothing in hive-init: said in the header, not a loss
    header = out.split("\n[init]\n")[0]
    assert "#   [unix_http_server]: hive-init has its own control socket" in header
    assert "#   [rpcinterface:supervisor]: supervisord's own XML-RPC interface" in header
    assert "docker stop -t 90" in header
    assert all(REPORT.match(line) or WARNING.match(line) for line in err), err
    # every program table names where it came from
    assert f"# [program:postgres] from {aio}:23" in out
    assert f"# [program:api] from {aio}:35" in out
    assert f"# [program:health-monitor] from {aio.parent / 'conf.d' / 'monitor.conf'}:2" in out
    # the wait loop is recognised: depends_on is suggested (as a comment), and a readiness probe for it
    assert '# depends_on = ["postgres"]  # suggested: its command waits for PostgreSQL with pg_isready' in out
    assert '# readiness = { exec = ["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"] }' in out
    assert 'suggested for api: depends_on = ["postgres"]' in out.split("[init]")[0]
    assert 'start_seconds = "5s"  # startsecs=5' in out
    assert not any("startsecs" in line for line in err)
    # %(here)s depends on where the file is: written as resolved, with a warning
    assert any("%(here)s is written as" in line and ":40:" in line for line in err)


def test_complete_conversion_writes_the_file_and_exits_0(capsys, tmp_path):
    source = tmp_path / "supervisord.conf"
    source.write_text(
        "[supervisord]\nnodaemon=true\nuser=root\n\n"
        "[program:redis]\ncommand=redis-server --port 6379 --save ''\npriority=10\nautorestart=true\n"
        "stdout_logfile=/dev/fd/1\nstdout_logfile_maxbytes=0\nredirect_stderr=true\n\n"
        "[program:app]\ncommand=/app/bin/app --redis 127.0.0.1:6379   ; the app\n"
        "environment=REDIS_URL=\"redis://127.0.0.1:6379/0\"\n"
        "stdout_logfile=/var/log/app.log\nstdout_logfile_maxbytes=10MB\nstdout_logfile_backups=3\n"
        "stopwaitsecs=30\n"
    )
    output = tmp_path / "hive-init.toml"
    status, out, err = run(capsys, source, output)
    assert (status, out, err) == (exits.OK, "", [])
    doc = tomllib.loads(output.read_text())
    assert doc["programs"]["redis"] == {"command": ["redis-server", "--port", "6379", "--save", ""],
                                        "priority": 10, "restart": "always", **BUDGET}
    app = doc["programs"]["app"]
    assert app["command"] == ["/app/bin/app", "--redis", "127.0.0.1:6379"]
    assert app["priority"] == 999  # supervisord's default, written as the others have one
    assert app["restart"] == "on-failure" and app["exit_codes"] == [0]
    assert app["stop_timeout"] == "30s"
    assert (app["log_file"], app["log_file_max_size"], app["log_file_backups"]) == ("/var/log/app.log", "10MB", 3)
    assert app["environment"] == {"REDIS_URL": "redis://127.0.0.1:6379/0"}
    config = loadable(output.read_text())
    assert config.programs["app"].log_file.max_bytes == 10 * 1024 * 1024
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


# -- numprocs, groups, shell syntax, names --------------------------------------------------------

def test_numprocs_expands_into_named_programs(capsys):
    source = FIXTURES / "workers" / "supervisord.conf"
    status, out, err = run(capsys, source)
    assert status == exits.CONVERT_INCOMPLETE
    programs = tomllib.loads(out)["programs"]
    assert list(programs) == ["worker_01", "worker_02", "worker_03", "beat", "cron", "web_8080"]
    import platform

    for n in (1, 2, 3):
        w = programs[f"worker_0{n}"]
        assert w["command"] == ["celery", "-A", "proj", "worker", "--loglevel=INFO", "-n",
                                f"worker0{n}@{platform.node()}"]
        assert w["environment"] == {"C_FORCE_ROOT": "false", "WORKER_INDEX": str(n),
                                    "DJANGO_SETTINGS_MODULE": "proj.settings", "GROUP": "backend"}
        assert w["log_file"] == f"/var/log/worker/worker-{n}.log"
        assert w["log_file_max_size"] == "1GB"
        assert w["log_file_backups"] == 10  # supervisord's default, kept
        # in [group:backend], whose priority (999) is what orders it in supervisord
        assert (w["priority"], w["stop_timeout"], w["kill_group"], w["user"]) == (999, "600s", True, "nobody")
    assert programs["beat"]["directory"] == str(source.parent)  # %(here)s
    assert programs["beat"]["priority"] == 999
    cron = programs["cron"]
    assert cron == {"command": "/usr/sbin/cron -f >> /var/log/cron.log 2>&1", "shell": True,
                    "priority": 999, "restart": "always", **BUDGET}
    assert "# named 'web_8080': supervisord's name 'web@8080'" in out
    loadable(out)

    found = {(r["line"], r["section"], r["key"]) for r in reports(err)}
    assert found == {
        ("4", "supervisord", "umask"), ("5", "supervisord", "minfds"),
        ("21", "program:worker", "stderr_logfile"),  # once, not once per process
        ("32", "program:cron", "umask"), ("37", "program:web@8080", "nice"),
    }
    assert "# priority=998 ordered it inside [group:backend] only" in out
    assert len(reports(err)) == len(found)
    assert any("[program:cron] command: warning: converted to shell = true" in line for line in err)


def test_eventlisteners_and_fcgi_are_reported(capsys):
    source = FIXTURES / "events" / "supervisord.conf"
    status, out, err = run(capsys, source)
    assert status == exits.CONVERT_INCOMPLETE
    assert tomllib.loads(out)["programs"] == {"app": {"command": ["/usr/bin/python3", "-m", "http.server", "8080"],
                                                      "restart": "always", **BUDGET}}
    assert [(r["line"], r["section"], r["key"]) for r in reports(err)] == [
        ("9", "eventlistener:crashmail", None),
        ("13", "eventlistener:memmon", None),
        ("17", "fcgi-program:php", None),
    ]
    assert all(line.startswith(f"{source}:") for line in err)
    assert "# Not converted:" in out


def test_dollars_and_environment_references(capsys, tmp_path):
    source = tmp_path / "s.conf"
    source.write_text(
        "[program:x]\n"
        "command=/bin/echo $HOME %(ENV_GREETING)s 100%% %(ENV_PORT)s\n"  # supervisord passes $HOME as is
        "environment=PATH=\"/opt/bin:%(ENV_PATH)s\",PRICE=\"$5\",PORT=8080\n"
        "directory=%(ENV_APP_DIR)s\n"
        "stopsignal=15\n"
    )
    status, out, err = run(capsys, source)
    x = tomllib.loads(out)["programs"]["x"]
    # a literal `$` is doubled for hive-init, an environment reference becomes ${X}
    # %(ENV_PORT)s: the program's own environment, which supervisord knew when it read the file
    assert x["command"] == "/bin/echo $$HOME ${GREETING} 100% 8080" and x["shell"] is True
    assert x["environment"] == {"PATH": "/opt/bin:${PATH}", "PRICE": "$$5", "PORT": "8080"}
    assert x["directory"] == "${APP_DIR}"
    assert x["stop_signal"] == "TERM"
    config = loads(out, "out.toml", {"GREETING": "hi", "PATH": "/bin", "APP_DIR": "/srv"})
    assert config.programs["x"].command == ("/bin/sh", "-c", "/bin/echo $HOME hi 100% 8080")
    assert dict(config.programs["x"].environment) == {"PATH": "/opt/bin:/bin", "PRICE": "$5", "PORT": "8080"}
    assert status == exits.OK


def test_names_supervisord_wide_settings_and_values_from_the_environment(capsys, tmp_path):
    source = tmp_path / "s.conf"
    source.write_text(
        "[supervisord]\nuser=nobody\nenvironment=LANG=C.UTF-8\nloglevel=debug\n\n"
        "[program:a_b]\ncommand=/bin/one\n\n"
        "[program:a@b]\ncommand=/bin/two\nstartretries=%(ENV_RETRIES)s\n\n"
        "[program:___]\ncommand=/bin/three\nuser=root\nenvironment=LANG=\"en_US.UTF-8\"\n\n"
        "[program:x]\ncommand=/bin/four\nprocess_name=a_b\n\n"
        "[include]\nfiles=conf.d/*.conf\n"
    )
    status, out, err = run(capsys, source)
    doc = tomllib.loads(out)
    assert list(doc["programs"]) == ["a_b", "a_b-2", "program___", "a_b-3"]
    assert "# named 'a_b-2': supervisord's name 'a@b' (hive-init names use letters" in out
    assert "# named 'a_b-3': supervisord's name 'a_b' (already used)" in out
    one, two, three = doc["programs"]["a_b"], doc["programs"]["a_b-2"], doc["programs"]["program___"]
    assert one["user"] == "nobody" and one["environment"] == {"LANG": "C.UTF-8"}  # from [supervisord]
    assert three["user"] == "root" and three["environment"] == {"LANG": "en_US.UTF-8"}
    assert doc["init"] == {"log_level": "debug", "environment_passthrough": ["*"]}
    assert "start_retries" not in two  # a number hive-init cannot take from the environment: reported
    assert status == exits.CONVERT_INCOMPLETE
    assert [(r["line"], r["key"]) for r in reports(err)] == [("11", "startretries")]
    assert any("[include] files: warning: no file matches" in line for line in err)
    loadable(out)


# -- the exit statuses ---------------------------------------------------------------------------

def test_missing_source_is_no_input(capsys, tmp_path):
    status, out, err = run(capsys, tmp_path / "nope.conf")
    assert status == exits.NO_INPUT
    assert out == ""
    assert err == [f"{tmp_path / 'nope.conf'}: cannot read: No such file or directory"]


def test_missing_included_file_is_no_input(capsys, tmp_path):
    source = tmp_path / "s.conf"
    source.write_text("[program:a]\ncommand=/bin/a\n\n[include]\nfiles = extra.conf\n")
    status, out, err = run(capsys, source)
    assert status == exits.NO_INPUT
    assert len(err) == 1 and err[0].startswith(f"{source}:5: [include] files: ") and "No such file" in err[0]
    assert out == ""


@pytest.mark.parametrize("text, where, message", [
    ("command=/bin/a\n", ":1:", "before any [section]"),
    ("[program:a]\ncommand=/bin/a\nthis is not a setting\n", ":3:", "not a 'key = value' line"),
    ("[program:a]\ncommand=/bin/a\nautostart=maybe\n", ":3: [program:a] autostart:", "not a boolean"),
    ("[program:a]\ndirectory=/srv\n", ":1: [program:a] command:", "is missing"),
    ("[program:a]\ncommand=/bin/a %(nope)s\n", ":2: [program:a] command:", "no such name"),
    ("[program:a]\ncommand=/bin/a 100%\n", ":2: [program:a] command:", "%%"),
    ("[program:a]\ncommand=/bin/a\nnumprocs=2\n", ":3: [program:a] process_name:", "%(process_num)"),
    ("[program:a]\ncommand=/bin/a\nstopsignal=NOPE\n", ":3: [program:a] stopsignal:", "not a signal"),
    ("[program:a b]\ncommand=/bin/a\n", ":1: [program:a b]:", "invalid name"),
    ("[program:a]\ncommand=/bin/a 'unclosed\n", ":2: [program:a] command:", "No closing quotation"),
    ("[supervisord]\nnodaemon=true\n", "", "no [program:NAME] section"),
    ("[group:g]\nprograms=ghost\n[program:a]\ncommand=/bin/a\n", ":2: [group:g] programs:", "unknown program"),
])
def test_invalid_source_is_config(capsys, tmp_path, text, where, message):
    source = tmp_path / "s.conf"
    source.write_text(text)
    output = tmp_path / "out.toml"
    output.write_text("# the previous config\n")
    status, out, err = run(capsys, source, output)
    assert status == exits.CONFIG
    assert len(err) == 1, err
    assert err[0].startswith(f"{source}{where}"), err
    assert message in err[0]
    assert output.read_text() == "# the previous config\n"  # left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.toml", "s.conf"]


def test_never_overwrites_the_source(capsys, aio):
    before = aio.read_text()
    status, out, err = run(capsys, aio, aio)
    assert status == exits.USAGE
    assert "refusing to overwrite" in err[-1]
    assert aio.read_text() == before
    included = aio.parent / "conf.d" / "monitor.conf"
    assert run(capsys, aio, included)[0] == exits.USAGE


def test_unknown_user_is_a_warning_not_a_failure(capsys, tmp_path):
    source = tmp_path / "s.conf"
    source.write_text("[program:a]\ncommand=/bin/a\nuser=no-such-user-here\nautorestart=false\n")
    status, out, err = run(capsys, source)
    assert status == exits.OK
    assert tomllib.loads(out)["programs"]["a"]["user"] == "no-such-user-here"
    assert err == [f"{source}:3: [program:a] user: warning: no user 'no-such-user-here' on this machine: "
                   "written as is, checked without it (it must exist where hive-init runs)"]


def test_stdout_and_stderr_are_separate_in_a_subprocess(aio, tmp_path):
    uv = shutil.which("uv")
    # --no-sync: the environment is set up already; this checks the streams, not the install
    argv = [uv, "run", "--no-sync", "python"] if uv else [sys.executable]
    code = f"import sys; from hive_init.convert import command; sys.exit(command({str(aio)!r}, None))"
    proc = subprocess.run([*argv, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parents[2],
                          env={**os.environ, "API_PORT": "8000"})
    assert proc.returncode == exits.OK, proc.stderr
    assert "not converted" not in proc.stdout
    assert set(tomllib.loads(proc.stdout)["programs"]) == {"postgres", "api", "health-monitor"}
    lines = proc.stderr.splitlines()
    assert lines and all(REPORT.match(line) or WARNING.match(line) for line in lines), lines
    assert len(reports(lines)) == 0 and len(lines) == 2  # two warnings


# -- any input: a documented status, never a traceback -------------------------------------------

_KEYS = sorted({"command", "process_name", "numprocs", "numprocs_start", "priority", "autostart", "autorestart",
                "startsecs", "startretries", "exitcodes", "stopsignal", "stopwaitsecs", "stopasgroup", "killasgroup",
                "user", "redirect_stderr", "environment", "directory", "umask", "serverurl", "stdout_logfile",
                "stdout_logfile_maxbytes", "stdout_logfile_backups", "stderr_logfile", "stdout_syslog",
                "stderr_events_enabled", "files", "programs", "loglevel", "minfds", "nodaemon", "events", "nice"})
_VALUES = ["true", "false", "unexpected", "0", "1", "3", "-1", "999999999999", "10MB", "0,2", "300", "TERM", "9",
           "/bin/app --x", "bash -c 'until pg_isready; do sleep 1; done; exec app'", "a | b", "%(program_name)s",
           "%(ENV_HOME)s", "%(process_num)02d", "%(here)s/x", "%(nope)s", "100%", "%%", "A=1,B=\"x, y\"", "A=",
           "root", "nobody", "/dev/stdout", "AUTO", "NONE", "syslog", "/var/log/x.log", "*.conf", "missing.conf",
           "$HOME", "${X}", "'", "\"", "\\", "x\n    y", "w,x", ""]
_SECTIONS = ["program:a", "program:b", "program:a.b", "program:w@1", "supervisord", "group:g", "include",
             "eventlistener:e", "unix_http_server", "rpcinterface:r", "fcgi-program:f", "DEFAULT", "odd"]
_one_line = st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=["Cs"]), max_size=12)
_ini_value = st.one_of(st.sampled_from(_VALUES), _one_line,
                       st.lists(st.sampled_from(_VALUES), min_size=2, max_size=3).map(" ".join))
_setting = st.builds(lambda k, v: f"{k}={v}", st.sampled_from(_KEYS), _ini_value)
# a line that is not `key=value` makes the whole file invalid: rare, so most examples get converted
_body_line = st.integers(0, 19).flatmap(
    lambda n: st.text(max_size=20) if n == 0 else st.sampled_from(["", "; note"]) if n == 1 else _setting)
_section = st.builds(lambda name, body: "\n".join([f"[{name}]", *body]),
                     st.one_of(*[st.sampled_from(_SECTIONS)] * 4, st.text(min_size=1, max_size=8)),
                     st.lists(_body_line, max_size=8))
_ini_text = st.lists(_section, max_size=5).map("\n".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ini_text, st.booleans())
def test_any_text_gives_a_documented_status(text, with_command):
    import contextlib
    import io
    import tempfile

    if with_command:  # more of the examples get past "no program" to the conversion itself
        text = "[program:main]\ncommand=/bin/main\n" + text
    with tempfile.TemporaryDirectory() as tmp:
        source, output = Path(tmp, "supervisord.conf"), Path(tmp, "out.toml")
        source.write_text(text, encoding="utf-8", errors="surrogatepass")
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as out:
            status = command(str(source), str(output))
        assert status in (exits.OK, exits.CONVERT_INCOMPLETE, exits.NO_INPUT, exits.CONFIG), err.getvalue()
        assert out.getvalue() == ""
        lines = err.getvalue().splitlines()
        if status in (exits.OK, exits.CONVERT_INCOMPLETE):
            tomllib.loads(output.read_text())
            notes = [ANY_NOTE.match(line) for line in lines]
            assert all(notes), lines
            assert (status == exits.CONVERT_INCOMPLETE) == any(m["kind"] == "not converted" for m in notes)
        else:
            assert len(lines) == 1 and lines[0].startswith(str(source)), lines
            assert not output.exists()
