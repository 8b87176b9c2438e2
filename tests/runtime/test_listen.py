"""`listen`: sockets hive-init binds once (as root, before any spawn) and passes to every
process of the program as fds 3, 4, ... with LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES
(sd_listen_fds). Real processes, real sockets; unix sockets attacked by the unprivileged user
who owns their directory (`nobody`)."""

import json
import os
import random
import socket
import stat
import subprocess

import pytest

from hive_init import exits
from tests.helpers import free_port, needs_root

PY = "/usr/bin/python3"  # a system interpreter: runnable by `nobody` (the venv's lives under /root)

# a child that reports what it was given, then answers every connection with its pid
REPORT_AND_SERVE = r'''
import json, os, socket, sys
fds = {}
for fd in range(3, 3 + int(os.environ.get("LISTEN_FDS", "0"))):
    s = socket.socket(fileno=os.dup(fd))
    fds[fd] = [s.family.name, str(s.getsockname()), os.get_inheritable(fd)]
    s.close()
print(json.dumps({"pid": os.getpid(), "uid": os.getuid(), "LISTEN_FDS": os.environ.get("LISTEN_FDS"),
                  "LISTEN_PID": os.environ.get("LISTEN_PID"), "LISTEN_FDNAMES": os.environ.get("LISTEN_FDNAMES"),
                  "fds": fds, "open": sorted(int(f) for f in os.listdir("/proc/self/fd"))}), flush=True)
import selectors
ready = selectors.DefaultSelector()  # epoll: hive-init sees it accept
for fd in range(3, 3 + int(os.environ.get("LISTEN_FDS", "0"))):
    ready.register(socket.socket(fileno=fd), selectors.EVENT_READ)
while True:
    for key, _ in ready.select():
        conn, _ = key.fileobj.accept()
        conn.recv(100)
        conn.sendall(str(os.getpid()).encode())
        conn.close()
'''


def program(listen: str, extra: str = "") -> str:
    return f"""
        [programs.api]
        command = ["{PY}", "-c", {json.dumps(REPORT_AND_SERVE)}]
        listen = {listen}
        {extra}
    """


def report(init) -> dict:
    line = init.wait_for(lambda e: e.get("program") == "api" and e.get("msg", "").startswith("{"), what="the report")
    return json.loads(line["msg"])


def ask(address, family=socket.AF_INET, timeout: float = 10) -> str:
    with socket.socket(family, socket.SOCK_STREAM) as c:
        c.settimeout(timeout)
        c.connect(address)
        c.sendall(b"hello")
        return c.recv(100).decode()


def low_port() -> int:
    for _ in range(50):
        port = random.randrange(600, 1000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.skip("no free port below 1024")


@needs_root
def test_the_program_gets_its_sockets_as_fds_3_and_4_as_sd_listen_fds_defines(start_init, tmp_path):
    port = low_port()  # below 1024: bound by root, then used by `nobody`
    sock_dir = tmp_path / "run"
    sock_dir.mkdir()
    init = start_init(program(f'["127.0.0.1:{port}", {{ address = "unix:{sock_dir}/api.sock", name = "local" }}]',
                              'user = "nobody"'))
    got = report(init)
    assert got["uid"] != 0
    assert got["LISTEN_FDS"] == "2" and got["LISTEN_FDNAMES"] == "api:local"
    assert got["LISTEN_PID"] == str(got["pid"])  # the child's own pid, not the wrapper's parent
    assert got["fds"]["3"][:2] == ["AF_INET", str(("127.0.0.1", port))]
    assert got["fds"]["4"][0] == "AF_UNIX"
    assert got["open"] == [0, 1, 2, 3, 4, 5]  # 5: listdir's own; nothing else of the init's
    assert ask(("127.0.0.1", port)) == str(got["pid"])
    assert ask(str(sock_dir / "api.sock"), socket.AF_UNIX) == str(got["pid"])
    info = os.stat(sock_dir / "api.sock")
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
    assert info.st_uid == got["uid"]  # the program's user by default
    assert init.program("api")["listen"] == [f"127.0.0.1:{port}", f"unix:{sock_dir}/api.sock"]
    assert init.stop() == 0
    assert not (sock_dir / "api.sock").exists()  # gone with the init that made it


def test_an_address_that_cannot_be_bound_is_a_config_error_before_anything_runs(start_init, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    marker = tmp_path / "spawned"
    init = start_init(f"""
        [programs.first]
        command = ["sh", "-c", "touch {marker}; sleep 30"]
        [programs.api]
        command = ["sleep", "30"]
        listen = ["127.0.0.1:0", "127.0.0.1:{port}"]
    """)
    try:
        assert init.wait() == exits.CONFIG
    finally:
        taken.close()
    assert f"programs.api.listen[1]: cannot bind 127.0.0.1:{port}: Address already in use" in "\n".join(init.raw)
    assert not marker.exists()
    assert "Traceback" not in "\n".join(init.raw)


def test_connections_wait_in_the_backlog_while_no_process_accepts(start_init):
    init = start_init(program('["127.0.0.1:0"]'))
    first = report(init)["pid"]
    address = init.program("api")["listen"][0]
    host, port = address.rsplit(":", 1)
    assert init.ctl("stop", "api").returncode == 0
    # no process accepts now; the connection is made all the same and waits
    waiting = socket.create_connection((host, int(port)), timeout=10)
    waiting.sendall(b"hello")
    assert init.ctl("start", "api").returncode == 0
    answer = waiting.recv(100).decode()
    waiting.close()
    assert answer and answer != str(first)  # answered by the next process


def test_a_missing_command_behind_the_wrapper_is_one_line_and_127(start_init):
    init = start_init("""
        [programs.api]
        command = ["/nonexistent/server"]
        listen = ["127.0.0.1:0"]
        restart = "never"
    """)
    init.wait_msg("cannot execute '/nonexistent/server': no such file or directory", "api")
    assert init.wait_state("api", "FATAL")["last_exit"] == 127


def test_a_reload_rejects_an_address_that_cannot_be_bound_and_touches_nothing(start_init):
    init = start_init(program('["127.0.0.1:0"]'))
    pid = report(init)["pid"]
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        text = init.config_path.read_text()
        init.config_path.write_text(text.replace('listen = ["127.0.0.1:0"]', f'listen = ["127.0.0.1:0", "127.0.0.1:{port}"]'))
        out = init.ctl("reload")
        assert out.returncode == exits.CONFIG
        assert f"programs.api.listen[1]: cannot bind 127.0.0.1:{port}" in out.stderr
    finally:
        taken.close()
    assert init.program("api")["pid"] == pid and init.program("api")["state"] == "READY"


def test_a_reload_that_adds_an_address_keeps_the_old_socket_and_rolls(start_init):
    init = start_init(program('["127.0.0.1:0"]'))
    old = report(init)["pid"]
    first = init.program("api")["listen"][0]
    host, port = first.rsplit(":", 1)
    added = free_port()
    text = init.config_path.read_text()
    init.config_path.write_text(text.replace('listen = ["127.0.0.1:0"]', f'listen = ["{first}", "127.0.0.1:{added}"]'))
    # a connection waiting in the backlog across the reload is answered: the same socket
    before = socket.create_connection((host, int(port)), timeout=10)
    before.sendall(b"hello")
    out = init.ctl("reload")
    assert out.returncode == 0, out.stderr
    assert before.recv(100)
    before.close()
    new = init.program("api")["pid"]
    assert new != old
    assert ask((host, int(port))) == str(new) and ask(("127.0.0.1", added)) == str(new)


# ---- unix sockets where an unprivileged user owns the directory ----------------------------

@pytest.fixture
def user_dir(open_tmp):
    """A directory owned by `nobody`, who may put anything in it."""
    d = open_tmp / "nobody-run"
    d.mkdir()
    os.chown(d, 65534, 65534)
    return d


def as_nobody(*command: str) -> None:
    subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command], check=True)


@needs_root
def test_a_link_put_where_the_socket_goes_is_not_followed(start_init, user_dir, open_tmp):
    target = open_tmp / "root-only"
    target.write_text("secret")
    target.chmod(0o600)
    as_nobody("ln", "-s", str(target), str(user_dir / "api.sock"))
    init = start_init(program(f'[{{ address = "unix:{user_dir}/api.sock", mode = "0666", user = "nobody" }}]'))
    assert init.wait() == exits.CONFIG
    assert "the path exists and is not a socket" in "\n".join(init.raw)
    info = os.stat(target)
    assert (stat.S_IMODE(info.st_mode), info.st_uid, target.read_text()) == (0o600, 0, "secret")
    assert os.path.islink(user_dir / "api.sock")  # not removed either


@needs_root
def test_a_link_on_the_way_to_the_socket_is_refused(start_init, user_dir, open_tmp):
    victim = open_tmp / "victim"
    victim.mkdir()
    (victim / "api.sock").write_text("not a socket")
    as_nobody("ln", "-s", str(victim), str(user_dir / "sub"))
    init = start_init(program(f'["unix:{user_dir}/sub/api.sock"]'))
    assert init.wait() == exits.CONFIG
    assert f"{user_dir}/sub is a symbolic link" in "\n".join(init.raw)
    assert (victim / "api.sock").read_text() == "not a socket"


@needs_root
def test_a_stale_socket_is_replaced_and_a_live_one_is_not(start_init, user_dir):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(user_dir / "stale.sock"))
    stale.close()  # the file stays, nobody listens
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(user_dir / "live.sock"))
    live.listen()
    try:
        init = start_init(program(f'["unix:{user_dir}/live.sock"]'))
        assert init.wait() == exits.CONFIG
        assert "another process listens on this socket" in "\n".join(init.raw)
        init = start_init(program(f'["unix:{user_dir}/stale.sock"]'))
        pid = report(init)["pid"]
        assert ask(str(user_dir / "stale.sock"), socket.AF_UNIX) == str(pid)
        assert [p.name for p in user_dir.iterdir()] and not any(p.name.startswith(".hive-init-") for p in user_dir.iterdir())
    finally:
        live.close()


# ---- rolling restarts ---------------------------------------------------------------------

def test_a_liveness_failure_restarts_a_start_first_program_beside_itself(start_init, tmp_path):
    sick = tmp_path / "sick"
    init = start_init(program('["127.0.0.1:0"]', f"""
        [programs.api.liveness]
        exec = ["sh", "-c", "test ! -e {sick}"]
        period = "200ms"
        initial_delay = "1s"
        failure_threshold = 1
    """))
    old = report(init)["pid"]
    sick.touch()
    init.wait_msg("rolling restart (liveness probe failed", "api")
    sick.unlink()
    line = init.wait_msg("serves; stopping pid", "api")
    new = init.program("api")["pid"]
    assert line["msg"].endswith(f"pid {new} serves; stopping pid {old}") and new != old
    host, port = init.program("api")["listen"][0].rsplit(":", 1)
    assert ask((host, int(port))) == str(new)


def test_a_new_process_that_fails_leaves_the_old_one_serving(start_init):
    init = start_init(program('["127.0.0.1:0"]', 'backoff = { initial = "50ms" }'))
    old = report(init)["pid"]
    text = init.config_path.read_text()
    init.config_path.write_text(text.replace(f'command = ["{PY}", "-c"', f'command = ["{PY}", "-c", "raise SystemExit(3)", "-c"'))
    out = init.ctl("reload")
    assert out.returncode == 0, out.stderr
    assert init.wait_msg("rolling restart given up: the new process exited before it accepted a connection", "api")
    assert init.wait_msg("reloaded")["kept"] == "api"
    host, port = init.program("api")["listen"][0].rsplit(":", 1)
    assert init.program("api")["pid"] == old and ask((host, int(port))) == str(old)
    # the old command, restarted the old way, still runs
    assert init.ctl("restart", "--stop-first", "api").returncode == 0
    assert init.wait_state("api", "READY")["pid"] != old
