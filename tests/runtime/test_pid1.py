"""PID-1 duties, checked with the init as real PID 1 of a new PID namespace (root only)."""

import grp
import json
import pwd
import signal
import subprocess
import sys

import psutil
import pytest

from tests.helpers import needs_root

pytestmark = [needs_root, pytest.mark.pid1]

ORPHAN_MAKER = """
import os
for _ in range(1000):
    pid = os.fork()
    if pid == 0:
        if os.fork() == 0:   # the grandchild outlives its parent: an orphan for PID 1
            os._exit(0)
        os._exit(0)
    os.waitpid(pid, 0)
print("made 1000 orphans", flush=True)
"""


def test_1000_orphans_are_reaped_and_no_zombie_is_left(start_init, tmp_path):
    script = tmp_path / "orphans.py"
    script.write_text(ORPHAN_MAKER)
    init = start_init(f"""
        [programs.orphans]
        command = ["{sys.executable}", "{script}"]
        oneshot = true
        [programs.idle]
        command = ["sleep", "300"]
    """, pid1=True)
    init.wait_msg("made 1000 orphans", "orphans")
    init.wait_state("orphans", "EXITED")
    status = init.status()
    assert status["pid"] == 1
    # every orphan was reaped (the oneshot itself is reaped as a managed child)
    deadline_status = status
    for _ in range(100):
        if deadline_status["orphans_reaped"] >= 1000:
            break
        deadline_status = init.status()
    assert deadline_status["orphans_reaped"] >= 1000
    zombies = [p for p in psutil.Process(init.init_pid).children(recursive=True) if p.status() == psutil.STATUS_ZOMBIE]
    assert zombies == []
    assert init.stop() == 0


def test_init_is_pid_1_and_handles_term_though_the_kernel_gives_pid_1_no_default(start_init):
    init = start_init("""
        [programs.sleeper]
        command = ["sleep", "300"]
    """, pid1=True)
    init.wait_state("sleeper", "READY")
    assert init.status()["pid"] == 1
    # signals with no meaning for the init are handled (logged), not fatal
    for signum in (signal.SIGUSR2, signal.SIGWINCH, signal.SIGPIPE, signal.SIGALRM, signal.SIGTSTP):
        init.signal(signum)
    assert init.program("sleeper")["state"] == "READY"
    init.signal(signal.SIGTERM)
    assert init.wait() == 0


@pytest.fixture(scope="module")
def test_user():
    """A user with a supplementary group, made for the test and removed after it."""
    name, group = "hiveinit-test", "hiveinit-extra"
    subprocess.run(["groupadd", "-f", group], check=True)
    if subprocess.run(["id", name], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "-G", group, name], check=True)
    yield pwd.getpwnam(name), grp.getgrnam(group)
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["groupdel", group], capture_output=True)


def test_user_switch_sets_uid_gid_and_supplementary_groups(start_init, test_user, open_tmp):
    user, extra = test_user
    probe = open_tmp / "ids.py"
    probe.write_text("import os, json; print(json.dumps({'ids': os.getresuid() + os.getresgid(), "
                     "'groups': sorted(os.getgroups()), 'home': os.environ.get('HOME'), 'user': os.environ.get('USER')}))\n"
                     "try:\n    os.setuid(0)\n    print('REGAINED ROOT')\nexcept PermissionError:\n    print('no way back')\n")
    init = start_init(f"""
        [programs.who]
        command = ["/usr/bin/python3", "{probe}"]
        user = "{user.pw_name}"
        oneshot = true
    """, pid1=True)
    init.wait_state("who", "EXITED")
    out = init.output("who")
    ids = json.loads(out[0])
    assert ids["ids"] == [user.pw_uid] * 3 + [user.pw_gid] * 3
    assert extra.gr_gid in ids["groups"] and 0 not in ids["groups"]
    assert ids["user"] == user.pw_name
    assert out[1] == "no way back"


STORM = """
import os, signal, sys
for i in range(int(sys.argv[1])):
    if i == 5000:
        os.kill(1, signal.SIGTERM)  # the init, in the middle of the storm
    if os.fork() == 0:
        if os.fork() == 0:
            os._exit(0)
        os._exit(0)
"""


def test_a_term_during_a_sigchld_storm_is_not_lost(start_init, tmp_path):
    """asyncio hears of a signal through one byte per signal on a socket that a storm fills; the
    TERM sent in the middle of 10,000 exits must still end the init."""
    script = tmp_path / "storm.py"
    script.write_text(STORM)
    init = start_init(f"""
        [programs.storm]
        command = ["{sys.executable}", "{script}", "10000"]
        oneshot = true
        [programs.idle]
        command = ["sleep", "300"]
    """, pid1=True)
    assert init.wait(timeout=60) == 0
    assert any("received SIGTERM" in e.get("reason", "") for e in init.events())
    assert not any("signal wakeup fd" in line for line in init.raw)
