"""`app` owns the log directory (/var/log/hive in the images) and root writes the API's log
file into it: the attack swaps the file, or a directory on the way, for a link to a root file
(the init's own config, in the report), and waits for root to reopen (USR1, logrotate's way),
rotate or truncate it."""

import json
import os
import secrets
import signal
import stat
from pathlib import Path

import pytest

from tests.security.conftest import snapshot, victim_file, wait_until

FLOOD = "while :; do echo '[programs.pwn]'; echo 'command = [\"id\"]'; sleep 0.02; done"


def _api(log_file: Path, app, extra: str = "") -> str:
    return f"""
        [programs.api]
        command = ["sh", "-c", {json.dumps(FLOOD)}]
        user = "{app.name}"
        log_file = "{log_file}"
        {extra}
    """


def _log_dir(open_dir: Path, app) -> Path:
    logs = open_dir / "log"
    logs.mkdir()
    os.chown(logs, app.uid, app.gid)
    return logs


@pytest.mark.parametrize("how", ["reopen", "truncate"])
def test_app_cannot_make_root_write_through_a_link_to_the_log_file(start_init, open_dir, app, how):
    victim = victim_file(open_dir / "root-only")
    before = snapshot(victim)
    logs = _log_dir(open_dir, app)
    log = logs / "api.log"
    extra = {"reopen": "", "truncate": "log_file_backups = 0\nlog_file_max_size = 300"}[how]
    init = start_init(_api(log, app, extra), pid1=True)
    init.wait_state("api", "READY")
    wait_until(lambda: log.exists() and log.stat().st_size > 0, what="the log file")
    # the attack, as app: the log file becomes a link to root's file
    planted = app.run(["sh", "-c", f"rm -f {log} && ln -s {victim} {log}"])
    assert planted.returncode == 0, planted.stderr
    if how == "reopen":
        init.signal(signal.SIGUSR1)
    # more lines: after a reopen, or past the size limit (300 bytes) where root truncates
    lines = len(init.output("api"))
    wait_until(lambda: len(init.output("api")) > lines + 40, what="more output")
    assert snapshot(victim) == before
    if how == "reopen":
        init.wait_msg("cannot write log file")
    assert init.program("api")["state"] == "READY"
    assert init.stop() == 0


def test_app_cannot_swap_a_directory_on_the_way_for_a_link(start_init, open_dir, app):
    victim_dir = open_dir / "root-only"
    victim = victim_file(victim_dir)
    before = snapshot(victim)
    logs = _log_dir(open_dir, app)
    sub = logs / "api"
    sub.mkdir()
    os.chown(sub, app.uid, app.gid)
    init = start_init(_api(sub / "victim", app), pid1=True)
    init.wait_state("api", "READY")
    wait_until(lambda: (sub / "victim").exists(), what="the log file")
    planted = app.run(["sh", "-c", f"mv {sub} {sub}.old && ln -s {victim_dir} {sub}"])
    assert planted.returncode == 0, planted.stderr
    init.signal(signal.SIGUSR1)
    lines = len(init.output("api"))
    wait_until(lambda: len(init.output("api")) > lines + 40, what="more output")
    assert snapshot(victim) == before
    assert sorted(os.listdir(victim_dir)) == ["victim"]
    init.wait_msg("cannot write log file")
    assert init.stop() == 0


def test_log_files_are_0640_redacted_and_beside_the_config(start_init, open_dir, app, mallory):
    password = "Pw-" + secrets.token_hex(8)
    logs = _log_dir(open_dir, app)
    old = logs / "api.log"
    old.write_text("")
    old.chmod(0o666)  # left world-readable and writable by an earlier run or by hand
    init = start_init(f"""
        [programs.api]
        command = ["sh", "-c", "echo connecting with $DB_PASSWORD; exec sleep 300"]
        user = "{app.name}"
        environment = {{ DB_PASSWORD = "${{DB_PASSWORD}}" }}
        log_file = "{old}"
        [programs.relative]
        command = ["sh", "-c", "echo relative; exec sleep 300"]
        log_file = "logs/relative.log"
    """, pid1=True, env={"DB_PASSWORD": password})
    init.wait_state("api", "READY")
    wait_until(lambda: "connecting" in old.read_text(), what="the line in the log file")
    st = old.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == 0 and st.st_gid == app.gid
    assert password not in old.read_text() and "connecting with ***" in old.read_text()
    # mallory can read none of it; app may read its own program's log, not write it
    assert mallory.run(["cat", str(old)]).returncode != 0
    assert app.run(["cat", str(old)]).returncode == 0
    assert app.run(["sh", "-c", f"echo forged >> {old}"]).returncode != 0
    # a relative log_file is beside the config file, wherever the init was started
    relative = init.config_path.parent / "logs" / "relative.log"
    wait_until(lambda: relative.exists() and "relative" in relative.read_text(), what="relative.log")
    assert stat.S_IMODE(relative.stat().st_mode) == 0o640
    assert init.stop() == 0
