"""PID 1 never dies and never stalls (issue #14): clients that stop reading, descriptor
exhaustion, idle HTTP floods, hostile configs at start and at reload, the reload race, a second
init on the same socket, squatted sockets, internal errors. Attacks an unprivileged user can make
are made by one, created here with a per-run name."""

import json
import os
import pwd
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.chaos.util import alive, http_get, unix_request, wait_http, wait_until
from tests.helpers import ROOT, needs_root

HIVE = [sys.executable, "-m", "hive_init"]


@pytest.fixture
def mallory():
    """An unprivileged user of its own for this run, removed afterwards."""
    if not ROOT:
        pytest.skip("needs root to create a user")
    name = f"hr{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], check=False)  # only this run's user's processes
        subprocess.run(["userdel", name], check=False)


def as_user(user: pwd.struct_passwd, code: str, python: str = sys.executable, **kwargs) -> subprocess.Popen:
    """Python code run as `user` (no groups, no capabilities)."""
    return subprocess.Popen(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
                             python, "-c", code], stdin=subprocess.DEVNULL, **kwargs)


HOLD_CONNECTIONS = """\
import socket, sys, time
socks = []
for _ in range({count}):
    s = socket.socket({family})
    s.connect({address!r})
    socks.append(s)
print("holding", len(socks), flush=True)
time.sleep(300)
"""


def hold_connections(user: pwd.struct_passwd, count: int, address, family: str = "socket.AF_INET") -> subprocess.Popen:
    proc = as_user(user, HOLD_CONNECTIONS.format(count=count, address=address, family=family),
                   stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # blocks until every connection is made (the kernel accepts them)
    assert line.startswith("holding"), line
    return proc


# ---- slow readers of `logs` -----------------------------------------------------------------------

FLOODER = 'import sys\nwhile True:\n    sys.stdout.write("x" * 16000 + "\\n")\n'


def test_a_follow_client_that_never_reads_loses_lines_not_the_init(start_init, tmp_path):
    """A raw follower and a `logs -n 1000` of 16 KB lines that never read, then `logs -f | sleep`:
    the init's 5 s send deadline raised TimeoutError out of its task group (exit 70)."""
    script = tmp_path / "flood.py"
    script.write_text(FLOODER)
    init = start_init(f"""
        [programs.flood]
        command = ["{sys.executable}", "{script}"]
    """)
    init.wait_state("flood", "READY")
    # a `logs -f` whose stdout is a pipe nobody reads (`| sleep`), as `| less` does
    sleeper = subprocess.Popen(f"{sys.executable} -m hive_init -s {init.socket} logs -f flood | sleep 60",
                               shell=True, start_new_session=True)
    watch_until = time.monotonic() + 8  # past the 5 s deadline that used to end the init
    try:
        with socket.socket(socket.AF_UNIX) as stuck, socket.socket(socket.AF_UNIX) as stuck_n:
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.connect(init.socket)
            stuck.sendall(b'{"cmd":"logs","name":"flood","lines":1000,"follow":true}\n')
            stuck_n.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck_n.connect(init.socket)
            stuck_n.sendall(b'{"cmd":"logs","name":"flood","lines":1000}\n')  # 16 MB of reply, never read
            wait_until(lambda: _closed_by_peer(stuck_n), 30, "the init to drop the reader of 16 MB")
            while time.monotonic() < watch_until:
                assert init.proc.poll() is None, "\n".join(init.raw[-20:])
                time.sleep(0.2)
            assert init.ctl("status").returncode == 0
            assert init.program("flood")["restarts"] == 0
    finally:
        os.killpg(sleeper.pid, 9)
        sleeper.wait()
    assert init.proc.poll() is None


def _closed_by_peer(sock: socket.socket) -> bool:
    """Read (and discard) what is there: True once the init has closed its end."""
    try:
        while True:
            sock.settimeout(0.2)
            if not sock.recv(1 << 20):
                return True
    except TimeoutError:
        return False
    except OSError:
        return True


# ---- descriptors and idle connections ------------------------------------------------------------

@needs_root
def test_descriptor_exhaustion_sheds_connections_not_the_init(start_init, mallory):
    """RLIMIT_NOFILE 64 and an unprivileged flood of 150 idle HTTP connections (the control socket
    is 0600: other users cannot connect to it at all):
    /livez still answers, `health` works, a crashing program is still restarted, a few log lines."""
    init = start_init("""
        [programs.crasher]
        command = ["sh", "-c", "sleep 0.3; exit 3"]
        max_restarts = -1
        backoff = { initial = "0.1s", max = "0.2s" }
        [programs.steady]
        command = ["sleep", "300"]
    """, http=True, prefix=["prlimit", "--nofile=64:64", "--"])
    wait_http(init)
    init.wait_state("steady", "READY")
    http_flood = hold_connections(mallory, 150, ("127.0.0.1", init.port))
    try:
        assert http_get(init.port, "/livez")[0] == 200
        before = _restarts(init)
        wait_until(lambda: _restarts(init) > before + 2, 30, "the crasher to be restarted again")
        wait_until(lambda: subprocess.run([*HIVE, "-s", init.socket, "health"], capture_output=True,
                                          timeout=30).returncode == 0, 30, "hive-init health to pass")
        assert init.proc.poll() is None
        assert http_get(init.port, "/livez")[0] == 200
    finally:
        http_flood.kill()
        http_flood.wait()
    shed_lines = [e for e in init.events() if "shedding" in e.get("msg", "")]
    assert len(shed_lines) <= 10, shed_lines
    assert not [e for e in init.lines if "Too many open files" in str(e)]
    assert init.stop() == 0


def _restarts(init) -> int:
    try:
        return init.program("crasher")["restarts"]
    except (AssertionError, ValueError, StopIteration):
        return -1


@needs_root
def test_livez_answers_whatever_the_number_of_idle_connections(start_init, mallory):
    """1,100 idle connections from an unprivileged user (the cap is 1,000): the oldest idle ones
    are closed to make room, /livez answers (it was 503 as long as they stayed)."""
    init = start_init("""
        [programs.steady]
        command = ["sleep", "300"]
    """, http=True)
    wait_http(init)
    flood = hold_connections(mallory, 1100, ("127.0.0.1", init.port))
    try:
        for _ in range(5):
            assert http_get(init.port, "/livez")[0] == 200
        assert init.proc.poll() is None
    finally:
        flood.kill()
        flood.wait()


# ---- hostile configs -------------------------------------------------------------------------------

def _hostile(tmp: Path) -> dict[str, tuple[str, dict[str, str]]]:
    """name -> (config text, environment) that must each be refused in one line."""
    fifo = tmp / "secret.fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    bad = tmp / "secret.bin"
    bad.write_bytes(b"\xff\xfe rotated")
    link = tmp / "secret.link"
    if not link.is_symlink():
        link.symlink_to("/dev/zero")
    secret_program = '[programs.s]\ncommand = ["sleep", "300"]\nenvironment = { P = "${DB_PASSWORD}" }\n'
    return {
        "deep arrays": ('[programs.a]\ncommand = ["true"]\nx = ' + "[" * 50000 + "]" * 50000 + "\n", {}),
        "deep tables": ('[programs.a]\ncommand = ["true"]\nx = ' + "{a=" * 3000 + "1" + "}" * 3000 + "\n", {}),
        "non-UTF-8 secret": (secret_program, {"DB_PASSWORD_FILE": str(bad)}),
        "/dev/zero secret": (secret_program, {"DB_PASSWORD_FILE": "/dev/zero"}),
        "FIFO secret": (secret_program, {"DB_PASSWORD_FILE": str(fifo)}),
        "link to /dev/zero": (secret_program, {"DB_PASSWORD_FILE": str(link)}),
    }


@pytest.mark.parametrize("case", ["deep arrays", "deep tables", "non-UTF-8 secret", "/dev/zero secret",
                                  "FIFO secret", "link to /dev/zero"])
def test_hostile_config_at_start_is_one_line_and_exit_78(tmp_path, case):
    text, env = _hostile(tmp_path)[case]
    path = tmp_path / "hive-init.toml"
    path.write_text(f'[init]\ncontrol_socket = "{tmp_path}/c.sock"\nhttp = false\n' + text)
    env = {k: v for k, v in os.environ.items() if k != "DB_PASSWORD"} | env
    result = subprocess.run([*HIVE, "run", "-c", str(path)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 78, result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0] and str(path) in lines[0], lines


@pytest.mark.parametrize("case", ["deep arrays", "non-UTF-8 secret", "/dev/zero secret", "FIFO secret",
                                  "link to /dev/zero"])
def test_hostile_config_at_reload_is_rejected_whole(start_init, tmp_path, case):
    good_secret = tmp_path / "good.secret"
    good_secret.write_text("Hunter2-good\n")
    text, env = _hostile(tmp_path)[case]
    init = start_init("""
        [programs.keep]
        command = ["sleep", "300"]
    """, env={"DB_PASSWORD_FILE": str(good_secret)} if "DB_PASSWORD_FILE" in env else None)
    pid = init.wait_state("keep", "READY")["pid"]
    if "DB_PASSWORD_FILE" in env:  # the file the init reads at reload is rewritten by someone else
        good_secret.unlink()
        target = env["DB_PASSWORD_FILE"]
        if target == "/dev/zero":
            good_secret.symlink_to("/dev/zero")
        else:
            os.rename(target, good_secret) if not Path(target).is_symlink() else good_secret.symlink_to(os.readlink(target))
    head = init.config_path.read_text().split("[programs.keep]")[0]
    init.config_path.write_text(head + '[programs.keep]\ncommand = ["sleep", "300"]\n' + text)
    result = init.ctl("reload", timeout=30)
    assert result.returncode == 78, (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert init.proc.poll() is None
    assert init.program("keep")["pid"] == pid
    assert [p["name"] for p in init.status()["programs"]] == ["keep"]


def test_a_reload_of_100000_dotted_keys_does_not_stall_the_loop(start_init):
    init = start_init("""
        [programs.keep]
        command = ["sleep", "300"]
    """, http=True)
    wait_http(init)
    pid = init.wait_state("keep", "READY")["pid"]
    head = init.config_path.read_text()
    init.config_path.write_text(head + "[programs.keep.environment]\n"
                                + "".join(f'k{i}.a = "v"\n' for i in range(100_000)))
    done = threading.Event()
    results = []

    def reload() -> None:
        results.append(json.loads(unix_request(init.socket, b'{"cmd":"reload"}\n', timeout=120)))
        done.set()

    worker = threading.Thread(target=reload)
    worker.start()
    answered_during = 0
    while not done.is_set() and answered_during < 20:
        status, _ = http_get(init.port, "/livez", timeout=60)
        answered_during += status == 200 and not done.is_set()
    worker.join(120)
    # one /livez may be answered before the init reads the reload; more means the loop ran meanwhile
    assert answered_during >= 2, "/livez waited for the reload to finish: the loop was blocked"
    assert results[0]["error"] == "invalid_config" and "programs.keep.environment.k0" in results[0]["message"]
    assert init.program("keep")["pid"] == pid


# ---- the reload race --------------------------------------------------------------------------------

def test_reload_changing_two_dependencies_of_a_waiting_program(start_init):
    """x waits for c1 (never ready) and c2; both change: _apply deleted c2 from the shared map
    while awaiting c1's stop, and x's dependency check raised KeyError('c2') (exit 70)."""
    init = start_init("""
        [programs.c1]
        command = ["sh", "-c", "trap 'sleep 0.5; exit 0' TERM; sleep 301 & wait"]
        readiness = { exec = ["false"], period = "0.2s" }
        [programs.c2]
        command = ["sleep", "302"]
        [programs.x]
        command = ["sleep", "303"]
        depends_on = ["c1", "c2"]
    """)
    init.wait_state("c2", "READY")
    wait_until(lambda: "waiting for c1" in (init.program("x")["reason"] or ""), 20, "x to wait for c1")
    text = init.config_path.read_text().replace("sleep 301", "sleep 311").replace('"302"', '"312"')
    init.config_path.write_text(text)
    result = init.ctl("reload", timeout=60)
    assert result.returncode == 0, (result.stdout, result.stderr, init.raw[-10:])
    assert "changed: c1, c2" in result.stdout
    init.wait_state("c2", "READY")
    assert init.proc.poll() is None
    assert "waiting for c1" in init.program("x")["reason"]


# ---- what is checked before anything is spawned -----------------------------------------------------

def test_a_second_init_on_the_same_socket_spawns_nothing(start_init, tmp_path):
    first = start_init("""
        [programs.a]
        command = ["sleep", "300"]
    """)
    first.wait_state("a", "READY")
    marker = tmp_path / "spawned"
    config = tmp_path / "second.toml"
    config.write_text(f'[init]\ncontrol_socket = "{first.socket}"\nhttp = false\n'
                      f'[programs.b]\ncommand = ["sh", "-c", "touch {marker}; sleep 300"]\n')
    result = subprocess.run([*HIVE, "run", "-c", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 73, result.stderr
    assert "another hive-init is running" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    assert first.ctl("status").returncode == 0  # the first one's socket is untouched


def test_http_port_taken_spawns_nothing(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        marker = tmp_path / "spawned"
        config = tmp_path / "c.toml"
        config.write_text(f'[init]\ncontrol_socket = "{tmp_path}/c.sock"\nhttp = "127.0.0.1:{port}"\n'
                          f'[programs.b]\ncommand = ["sh", "-c", "touch {marker}; sleep 300"]\n')
        result = subprocess.run([*HIVE, "run", "-c", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 73, result.stderr
    assert "Address already in use" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    assert not (tmp_path / "c.sock").exists()


@needs_root
def test_a_socket_squatted_by_another_user_is_refused_by_init_and_cli(open_tmp, mallory):
    open_tmp.chmod(0o1777)  # like /tmp: anyone may create a name first
    path = open_tmp / "control.sock"
    squatter = as_user(mallory, f"""
import socket, time
s = socket.socket(socket.AF_UNIX); s.bind({str(path)!r}); s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.settimeout(2)
    try:
        c.recv(100)
        c.sendall(b'{{"ok": true, "ready": true, "failing": [], "programs": []}}\\n')
    except OSError: pass
    c.close()
""", stdout=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout.readline().strip() == "ready"
        config = open_tmp / "c.toml"
        config.write_text(f'[init]\ncontrol_socket = "{path}"\nhttp = false\n[programs.a]\ncommand = ["sleep", "300"]\n')
        result = subprocess.run([*HIVE, "run", "-c", str(config)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 73 and "is not ours" in result.stderr, result.stderr
        status = subprocess.run([*HIVE, "-s", str(path), "stop", "a"], capture_output=True, text=True, timeout=30)
        assert status.returncode == 2 and "not talking to it" in status.stderr, status.stderr
        health = subprocess.run([*HIVE, "-s", str(path), "health"], capture_output=True, text=True, timeout=30)
        assert health.returncode == 1 and "not trusted" in health.stdout, health.stdout
    finally:
        squatter.kill()
        squatter.wait()


def test_control_commands_find_the_socket_of_the_config(start_init):
    init = start_init("""
        [programs.a]
        command = ["sleep", "300"]
    """)
    init.wait_state("a", "READY")
    env = {k: v for k, v in os.environ.items() if k not in ("HIVE_INIT_SOCKET", "HIVE_INIT_CONFIG")}
    for args, extra in ((["status", "-c", str(init.config_path)], {}),
                        (["-c", str(init.config_path), "status"], {}),
                        (["status"], {"HIVE_INIT_CONFIG": str(init.config_path)}),
                        (["health"], {"HIVE_INIT_CONFIG": str(init.config_path)})):
        result = subprocess.run([*HIVE, *args], capture_output=True, text=True, timeout=30, env=env | extra)
        assert result.returncode == 0, (args, result.stdout, result.stderr)


# ---- internal errors ----------------------------------------------------------------------------

def test_an_internal_error_names_the_innermost_exception_and_its_line(monkeypatch, capsys):
    from hive_init.exits import describe_internal_error

    def buggy() -> None:
        raise KeyError("c2")

    try:
        try:
            buggy()
        except KeyError as e:
            raise ExceptionGroup("unhandled errors in a TaskGroup", [ExceptionGroup("inner", [e])]) from None
    except ExceptionGroup as group:
        line = describe_internal_error(group)
        monkeypatch.setenv("HIVE_INIT_DEBUG", "1")
        describe_internal_error(group)
    assert line.startswith("internal error: KeyError: 'c2' (at ") and __file__ in line, line
    assert "ExceptionGroup" not in line
    assert "Traceback" in capsys.readouterr().err


# ---- programs of an init that died without stopping them ------------------------------------------

def test_programs_left_by_a_killed_init_are_stopped_by_the_next(start_init):
    """Not PID 1, SIGKILLed: its programs lived on for good (PostgreSQL included). The next init
    on the same socket stops them (their own stop signal) before it spawns anything."""
    config = """
        [programs.a]
        command = ["sleep", "300"]
    """
    first = start_init(config)
    pid = first.wait_state("a", "READY")["pid"]
    os.kill(first.init_pid, 9)
    first.proc.wait(10)
    assert alive(pid)
    second = start_init(config)
    second.wait_msg("stopping a program left running by a previous init", program="a")
    new_pid = second.wait_state("a", "READY")["pid"]
    wait_until(lambda: not alive(pid), 15, "the leftover to be stopped")
    assert new_pid != pid
    assert second.stop() == 0


@needs_root
def test_the_non_root_default_socket_lives_in_a_directory_of_its_own(open_tmp, mallory):
    """/tmp/hive-init-UID.sock could be created first by anyone; now the default is in a 0700
    directory of the user's own, and a directory someone else made is refused."""
    import shutil

    config = open_tmp / "c.toml"
    config.write_text('[init]\nhttp = false\n[programs.a]\ncommand = ["sleep", "300"]\n')
    directory = Path(f"/tmp/hive-init-{mallory.pw_uid}")
    # the test's interpreter may live under /root: the system one, with this project and its
    # venv's packages on the path, runs the init as the unprivileged user
    python = "/usr/bin/python3"
    site = next(Path(sys.prefix, "lib").glob("python3*/site-packages"), None)
    if not os.path.exists(python) or site is None or sys.version_info[:2] != (3, 11):
        pytest.skip("no interpreter another user can run")
    cwd = str(Path(__file__).resolve().parents[2])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "HIVE_INIT_", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = f"{cwd}:{site}"
    run = [python, "-m", "hive_init", "run", "-c", str(config)]
    try:
        directory.mkdir(mode=0o777)  # squatted by root (someone else), open to all
        squatted = as_user(mallory, python=python, code=f"import subprocess, sys; sys.exit(subprocess.run({run!r}).returncode)",
                           env=env, cwd=cwd, stderr=subprocess.PIPE, text=True)
        _, err = squatted.communicate(timeout=30)
        assert squatted.returncode == 73 and "is not ours alone" in err, err
        directory.rmdir()
        init = as_user(mallory, python=python, code=f"import os; os.execv({python!r}, {run!r})", env=env, cwd=cwd,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            sock = directory / "control.sock"
            wait_until(sock.exists, 20, "the init's socket in its own directory")
            assert directory.stat().st_uid == mallory.pw_uid and directory.stat().st_mode & 0o777 == 0o700
            status = as_user(mallory, python=python, code=f"import subprocess, sys; sys.exit(subprocess.run({[python, '-m', 'hive_init', 'status']!r}).returncode)",
                             env=env, cwd=cwd, stdout=subprocess.PIPE, text=True)
            out, _ = status.communicate(timeout=30)
            assert status.returncode in (0, 1) and "a " in out, out
        finally:
            init.terminate()
            init.wait(30)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
