"""Bad configs: each gives one line naming file, program and field, exit status 78, and nothing runs."""

import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hive_init.config import ConfigError, loads
from hive_init.config.durations import parse_duration

CASES = {
    "malformed TOML": ("[programs.api\ncommand = 1", "invalid TOML"),
    "unknown field": ('[programs.api]\ncommand = ["x"]\nrestrat = "always"',
                      "programs.api.restrat: unknown field (did you mean 'restart'?)"),
    "missing command": ("[programs.api]\nuser = \"root\"", "programs.api.command: is required"),
    "unknown user": ('[programs.api]\ncommand = ["x"]\nuser = "no-such-user-here"',
                     "programs.api.user: no such user 'no-such-user-here'"),
    "unknown dependency": ('[programs.api]\ncommand = ["x"]\ndepends_on = { db = "ready" }',
                           "programs.api.depends_on.db: no program named 'db'"),
    "cycle": ('[programs.a]\ncommand = ["x"]\ndepends_on = { c = "ready" }\n'
              '[programs.b]\ncommand = ["x"]\ndepends_on = { a = "started" }\n'
              '[programs.c]\ncommand = ["x"]\ndepends_on = { b = "completed" }',
              "programs: dependency cycle a -> c -> b -> a"),
    "bad duration": ('[programs.api]\ncommand = ["x"]\nstop_timeout = "soon"', "programs.api.stop_timeout: expected a duration"),
    "bad restart": ('[programs.api]\ncommand = ["x"]\nrestart = "sometimes"',
                    "programs.api.restart: must be one of always, on-failure, never (got 'sometimes')"),
    "string command without shell": ('[programs.api]\ncommand = "uvicorn app:app"', "programs.api.command: is a string"),
    "bad signal": ('[programs.api]\ncommand = ["x"]\nstop_signal = "TERMINATE"', "programs.api.stop_signal: expected a signal name"),
    "bad condition": ('[programs.a]\ncommand = ["x"]\n[programs.b]\ncommand = ["x"]\ndepends_on = { a = "healthy" }',
                      "programs.b.depends_on.a: must be one of started, ready, completed"),
    "unset variable": ('[programs.api]\ncommand = ["${HIVE_TEST_UNSET_VAR}"]', "programs.api.command[0]: ${HIVE_TEST_UNSET_VAR} is not set"),
    "no programs": ("[init]\nshutdown_timeout = \"5s\"", "no program is configured"),
    "bad probe": ('[programs.api]\ncommand = ["x"]\n[programs.api.readiness]\nperiod = "1s"', "programs.api.readiness: needs exactly one of"),
    "bad http address": ('[init]\nhttp = "localhost"\n[programs.api]\ncommand = ["x"]', "init.http: expected \"host:port\""),
    "NUL in an environment value": ('[programs.api]\ncommand = ["x"]\nenvironment = { A = "a\\u0000b" }',
                                    "programs.api.environment.A: must not contain a NUL character"),
    "NUL in a command": ('[programs.api]\ncommand = ["x", "a\\u0000b"]', "programs.api.command: must not contain a NUL character"),
    "oneshot always": ('[programs.api]\ncommand = ["x"]\noneshot = true\nrestart = "always"', "programs.api.restart: a oneshot"),
}


@pytest.mark.parametrize("name", CASES)
def test_each_bad_config_gives_one_line_naming_the_place(name, tmp_path):
    text, expected = CASES[name]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "hive_init", "check", str(path)], capture_output=True, text=True)
    assert out.returncode == 78
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"hive-init: {path}: ")
    assert expected in lines[0]


def test_run_with_a_bad_config_exits_78_and_starts_nothing(tmp_path):
    path = tmp_path / "bad.toml"
    marker = tmp_path / "started"
    path.write_text(f'[programs.a]\ncommand = ["touch", "{marker}"]\n[programs.b]\ncommand = ["x"]\nkill_grop = true')
    out = subprocess.run([sys.executable, "-m", "hive_init", "run", "-c", str(path)], capture_output=True, text=True)
    assert out.returncode == 78
    assert "programs.b.kill_grop: unknown field (did you mean 'kill_group'?)" in out.stderr
    assert not marker.exists()


def test_config_path_comes_from_the_environment(tmp_path):
    path = tmp_path / "from-env.toml"
    path.write_text('[programs.a]\ncommand = ["true"]')
    out = subprocess.run([sys.executable, "-m", "hive_init", "check"], capture_output=True, text=True,
                         env={"HIVE_INIT_CONFIG": str(path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and str(path) in out.stdout
    missing = subprocess.run([sys.executable, "-m", "hive_init", "check"], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin"})
    assert missing.returncode == 78 and "/etc/hive-init/hive-init.toml: cannot read config" in missing.stderr


def test_variables_defaults_and_secret_files(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t-value\n")
    config = loads(textwrap.dedent("""
        [programs.api]
        command = ["app", "${PORT:-8000}", "$${LITERAL}"]
        environment = { DB_PASSWORD = "${DB_PASSWORD}", MODE = "${MODE}" }
    """), "x.toml", env={"DB_PASSWORD_FILE": str(secret), "MODE": "prod"})
    api = config.programs["api"]
    assert api.command == ("app", "8000", "${LITERAL}")
    assert dict(api.environment) == {"DB_PASSWORD": "s3cr3t-value", "MODE": "prod"}
    assert "s3cr3t-value" in config.secrets


def test_durations():
    assert parse_duration("250ms") == 0.25
    assert parse_duration("2m") == 120
    assert parse_duration("1h30m") == 5400
    assert parse_duration(3) == 3.0
    assert parse_duration("1.5s") == 1.5
    for bad in ("", "-1s", "10 parsecs", True, [1]):
        with pytest.raises(ValueError):
            parse_duration(bad)


toml_scalars = st.one_of(st.integers(-10, 10**6), st.booleans(), st.text(max_size=12),
                         st.floats(allow_nan=False, allow_infinity=False), st.lists(st.text(max_size=5), max_size=3))
FIELDS = ["command", "restart", "depends_on", "oneshot", "stop_signal", "stop_timeout", "priority", "user",
          "max_restarts", "backoff", "readiness", "environment", "kill_group", "shell", "critical", "exit_codes",
          "log_file", "directory", "kind", "group", "restart_window", "autostart", "bogus"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FIELDS), toml_scalars, max_size=6))
def test_fuzzed_program_tables_give_a_config_or_the_one_line_error(fields):
    import json

    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in fields.items())
    try:
        loads(f"[programs.p]\n{body}\n", "fuzz.toml", env={})
    except ConfigError as e:
        assert "\n" not in str(e) and str(e).startswith("fuzz.toml: ")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzzed_text_never_raises_anything_but_config_error(text):
    try:
        loads(text, "fuzz.toml", env={})
    except ConfigError as e:
        assert "\n" not in str(e)
