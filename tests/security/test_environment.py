"""A program gets the environment the config declares, not the init's: the API in the images
saw POSTGRES_PASSWORD (the superuser's) and the raw HIVE_DB_PASSWORD, and with the superuser's
password `app` could log in as `postgres` and run commands as that OS user."""

import json
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

DUMP = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"


def _start(start_init, config: str, env: dict[str, str]):
    return start_init(config, pid1=True, env={"LANG": "C.UTF-8", "TZ": "Europe/Berlin", **env})


def _writable(path: Path) -> Path:
    path.touch()
    path.chmod(0o666)
    return path


def test_a_program_gets_only_what_the_config_sends_it(start_init, open_dir, app):
    superuser_pw = "Super-" + secrets.token_hex(8)
    role_pw = "Role-" + secrets.token_hex(8)
    out = _writable(open_dir / "env.json")
    init = _start(start_init, f"""
        [programs.api]
        command = ["python3", "-c", "{DUMP}", "{out}"]
        user = "{app.name}"
        oneshot = true
        restart = "never"
        [programs.api.environment]
        HIVE_DATABASE_PASSWORD = "${{HIVE_DB_PASSWORD}}"
    """, {"POSTGRES_PASSWORD": superuser_pw, "HIVE_DB_PASSWORD": role_pw, "EXTRA_SETTING": "on"})
    init.wait_state("api", "EXITED")
    env = json.loads(out.read_text())
    assert env["HIVE_DATABASE_PASSWORD"] == role_pw  # its own role's password, where the config sends it
    assert superuser_pw not in env.values()
    assert "HIVE_DB_PASSWORD" not in env and "EXTRA_SETTING" not in env
    assert env["LANG"] == "C.UTF-8" and env["TZ"] == "Europe/Berlin" and "PATH" in env
    assert env["USER"] == app.name and env["HOME"] == f"/home/{app.name}"  # its own, not root's
    assert "HIVE_INIT_SOCKET" in env  # `hive-init status` from inside a program
    assert init.stop() == 0


def test_environment_passthrough_widens_it_and_a_pattern_never_passes_a_secret(start_init, open_dir):
    token = "Tok-" + secrets.token_hex(8)
    out = _writable(open_dir / "env.json")
    init = _start(start_init, f"""
        [init]
        environment_passthrough = ["PATH", "LANG"]
        [programs.widened]
        command = ["python3", "-c", "{DUMP}", "{out}"]
        oneshot = true
        restart = "never"
        environment_passthrough = ["PATH", "HIVE_*", "EXTRA_SETTING", "API_TOKEN"]
        [programs.narrow]
        command = ["true"]
        oneshot = true
        restart = "never"
    """, {"HIVE_DB_PASSWORD": "Role-" + secrets.token_hex(8), "API_TOKEN": token, "HIVE_MODE": "x",
          "EXTRA_SETTING": "on"})
    init.wait_state("widened", "EXITED")
    widened = json.loads(out.read_text())
    assert widened["HIVE_MODE"] == "x" and widened["EXTRA_SETTING"] == "on" and widened["API_TOKEN"] == token
    assert "HIVE_DB_PASSWORD" not in widened and "LANG" not in widened
    assert init.stop() == 0


def test_config_errors_never_print_a_secret(tmp_path: Path):
    secret = "Hunter2-Secret-" + secrets.token_hex(4)
    secret_file = tmp_path / "pw"
    secret_file.write_text(secret + "\n")
    cases = {
        "user": ('[programs.a]\ncommand = ["true"]\nuser = "${DB_PASSWORD}"\n', {"DB_PASSWORD": secret}),
        "file": ('[programs.a]\ncommand = ["true"]\ngroup = "${API_TOKEN}"\nuser = "root"\n',
                 {"API_TOKEN_FILE": str(secret_file)}),
        "choice": ('[programs.a]\ncommand = ["true"]\nrestart = "${DB_PASSWORD}"\n', {"DB_PASSWORD": secret}),
    }
    for name, (text, env) in cases.items():
        config = tmp_path / f"{name}.toml"
        config.write_text(textwrap.dedent(text))
        result = subprocess.run([sys.executable, "-m", "hive_init", "check", str(config)], capture_output=True,
                                text=True, env={"PATH": "/usr/bin:/bin", **env}, timeout=30)
        assert result.returncode != 0, (name, result)
        assert secret not in result.stdout + result.stderr, (name, result.stderr)
        assert "***" in result.stderr, (name, result.stderr)
