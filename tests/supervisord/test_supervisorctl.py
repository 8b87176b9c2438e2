"""`supervisorctl` (hive-init under that name) against the real supervisorctl talking to the real
supervisord, on the same programs: the same output lines (pids and uptimes aside) and the same
exit statuses, for the commands scripts run."""

import re
import subprocess
import textwrap

import pytest

from tests.helpers import Init
from tests.supervisord.real import Supervisord, supervisorctl_link

PROGRAMS = """
    [program:web]
    command=sleep 1000
    [program:cron]
    command=sleep 1000
    autostart=false
    [program:bad]
    command=false
    startretries=0
    """
# the same programs, written for hive-init by hand (the converter has tests of its own)
TOML = """
    [programs.web]
    command = ["sleep", "1000"]
    [programs.cron]
    command = ["sleep", "1000"]
    autostart = false
    [programs.bad]
    command = ["false"]
    start_retries = 0
    restart = "on-failure"
    """
# (the command, whether its output is compared whole or only name and state per line)
SCRIPT = [
    ("status web", "line"), ("status cron", "line"), ("status nope", "line"), ("status web cron", "line"),
    ("status bad", "state"), ("status", "state"),
    ("start cron", "line"), ("start cron", "line"), ("start nope", "line"), ("start web nope", "line"),
    ("status cron", "line"), ("pid cron", "pid"),
    ("stop cron", "line"), ("stop cron", "line"), ("stop nope", "line"), ("pid cron", "line"), ("pid nope", "line"),
    ("signal HUP cron", "line"), ("signal HUP nope", "line"),
    ("restart web", "line"), ("start", "first"), ("tail nope", "line"),
]


def normal(text: str, how: str) -> list[str]:
    lines = text.splitlines()
    if how == "state":
        return sorted(" ".join(line.split()[:2]) for line in lines)
    if how == "first":
        return lines[:1]
    if how == "avail":  # NAME, in use|avail, auto|manual; sorted, without the priorities
        return sorted(" ".join(line.split()[:-1]) for line in lines)
    lines = [re.sub(r"pid \d+, uptime [\d:]+", "pid N, uptime U", line) for line in lines]
    if how == "pid":
        lines = ["N" if line.isdigit() and line != "0" else line for line in lines]
    return [line.rstrip() for line in lines]


@pytest.fixture
def both(tmp_path, start_init):
    (tmp_path / "sd").mkdir()
    real = Supervisord(tmp_path / "sd", PROGRAMS)
    init = start_init(TOML)
    init.wait_state("bad", "FATAL")
    init.wait_state("web", "READY")
    deadline_ok = real.ctl("status", "bad")
    assert "FATAL" in deadline_ok.stdout or "BACKOFF" in deadline_ok.stdout or "STARTING" in deadline_ok.stdout
    yield real, init
    real.close()


def ours(init: Init, tmp_path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([supervisorctl_link(tmp_path), *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HIVE_INIT_SOCKET": init.socket, **(env or {})})


def test_the_same_answers_and_exit_statuses(both, tmp_path):
    real, init = both
    # supervisord's bad program needs its startsecs to be seen FATAL; wait for it as for ours
    for _ in range(200):
        if "FATAL" in real.ctl("status", "bad").stdout and "RUNNING" in real.ctl("status", "web").stdout:
            break
        subprocess.run(["sleep", "0.05"])
    differences = []
    for command, how in SCRIPT:
        theirs = real.ctl(*command.split())
        mine = ours(init, tmp_path, *command.split())
        want, got = (normal(theirs.stdout, how), theirs.returncode), (normal(mine.stdout, how), mine.returncode)
        if want != got:
            differences.append(f"{command}: supervisorctl {want}, ours {got} (stderr {mine.stderr.strip()!r})")
    assert not differences, "\n".join(differences)


def test_server_options_are_ignored_with_a_note(both, tmp_path):
    _, init = both
    out = ours(init, tmp_path, "-s", "unix:///nowhere.sock", "-c", "/etc/supervisor/supervisord.conf", "status", "web")
    assert out.returncode == 0 and out.stdout.split()[:2] == ["web", "RUNNING"]
    assert "-s unix:///nowhere.sock ignored" in out.stderr and "-c /etc/supervisor/supervisord.conf ignored" in out.stderr


def test_unreachable_is_status_4(tmp_path):
    out = subprocess.run([supervisorctl_link(tmp_path), "status"], capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "HIVE_INIT_SOCKET": str(tmp_path / "none.sock")})
    assert out.returncode == 4 and "no such file" in out.stdout


def test_a_start_script_runs_supervisorctl_start(start_init, tmp_path):
    # the idiom of images whose entry script starts an autostart=false program (cron) itself
    link = supervisorctl_link(tmp_path)
    init = start_init(textwrap.dedent(f"""
        [programs.cron]
        command = ["sh", "-c", "echo cron-up; exec sleep 1000"]
        autostart = false
        [programs.boot]
        command = ["sh", "-c", "{link} start cron && echo boot-done"]
        oneshot = true
        environment = {{ PATH = "/usr/bin:/bin" }}
    """))
    init.wait_msg("cron-up", "cron")
    assert init.wait_msg("boot-done", "boot")
    assert init.wait_msg("cron: started", "boot")


def test_avail_and_reread_read_the_file_as_supervisorctl_does(both, tmp_path):
    """`avail` and `reread` compare the config file with what runs: the same names, states and
    auto/manual (supervisord's order and its priority numbers aside), before and after a program
    is added to the file and one removed from it, and the same usage error."""
    real, init = both
    env = {"HIVE_INIT_CONFIG": str(init.config_path)}

    def differences() -> list[str]:
        found = []
        for command, how in (("reread", "line"), ("avail", "avail"), ("avail x", "first"), ("reread x", "first")):
            theirs = real.ctl(*command.split())
            mine = ours(init, tmp_path, *command.split(), env=env)
            want, got = (normal(theirs.stdout, how), theirs.returncode), (normal(mine.stdout, how), mine.returncode)
            if want != got:
                found.append(f"{command}: supervisorctl {want}, ours {got} (stderr {mine.stderr.strip()!r})")
        return found

    assert differences() == []
    real.conf.write_text(real.conf.read_text().replace("[program:cron]", "[program:added]"))
    init.config_path.write_text(init.config_path.read_text().replace("[programs.cron]", "[programs.added]"))
    assert differences() == []
