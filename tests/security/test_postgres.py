"""The attacks of #18 and #14 on the postgres kind: `postgres` steering root's ownership walk,
`mallory` steering root's first-boot cleanup, passwords in the postmaster's environment and in
its statement log, and a postmaster.pid that is a FIFO or a link to /dev/zero."""

import hashlib
import os
import secrets
import time
from pathlib import Path

import psutil

from hive_init.config.model import RunAs
from hive_init.postgres.ownership import fix_ownership
from tests.chaos.util import LivenessPoller, wait_http
from tests.helpers import free_port
from tests.security.conftest import snapshot, victim_file, wait_until

BOOT = 120.0  # a first boot on a busy machine: a bound on waiting only


def _config(base: Path, port: int, extra: str = "") -> str:
    return f"""
        [programs.postgres]
        kind = "postgres"
        user = "postgres"
        data_dir = "{base / 'data'}"
        socket_dir = "{base / 'sock'}"
        init_dir = "{base / 'initdb.d'}"
        port = {port}
        listen_addresses = "127.0.0.1"
        startup_timeout = "100s"
        log_file = "{base / 'log' / 'postgres.log'}"
        settings = {{ log_statement = "ddl" }}
        [programs.postgres.environment]
        POSTGRES_PASSWORD = "${{POSTGRES_PASSWORD}}"
        [[programs.postgres.roles]]
        name = "hive"
        password = "${{HIVE_DB_PASSWORD}}"
        {extra}
    """


def _postmaster(init) -> psutil.Process:
    def find():
        for child in psutil.Process(init.init_pid).children():
            try:
                if child.name() == "postgres":
                    return child
            except psutil.Error:
                pass
        return None
    return wait_until(find, BOOT, "the postmaster")


def test_mallory_cannot_steer_the_first_boots_cleanup(start_init, open_dir, mallory):
    """Before the fix a first boot looked for <tmp>/hive-init-pg-<sha256(realpath(data_dir))[:10]>-*,
    a name anyone can compute, and SIGKILLed every process working in each match."""
    import tempfile

    tag = hashlib.sha256(os.path.realpath(open_dir / "data").encode()).hexdigest()[:10]
    bait = Path(tempfile.gettempdir()) / f"hive-init-pg-{tag}-mallory"
    made = mallory.run(["mkdir", "-m", "0755", str(bait)])
    assert made.returncode == 0, made.stderr
    bystander = mallory.popen(["sleep", "300"], cwd=str(bait))
    try:
        init = start_init(_config(open_dir, free_port()), pid1=True,
                          env={"POSTGRES_PASSWORD": "S-" + secrets.token_hex(6), "HIVE_DB_PASSWORD": "H-" + secrets.token_hex(6)})
        init.wait_state("postgres", "READY", timeout=BOOT)
        assert bystander.poll() is None, "mallory's process was killed"
        assert bait.is_dir()
        assert init.stop() == 0
    finally:
        bystander.kill()
        bystander.wait()
        mallory.run(["rm", "-rf", str(bait)])


def test_no_password_in_the_postmaster_or_its_statement_log_and_a_hostile_pid_file(start_init, open_dir, postgres):
    superuser_pw = "Super-" + secrets.token_hex(8)
    env = {"POSTGRES_PASSWORD": superuser_pw, "HIVE_DB_PASSWORD": "First-" + secrets.token_hex(8)}
    port = free_port()
    init = start_init(_config(open_dir, port), pid1=True, env=env)
    init.wait_state("postgres", "READY", timeout=BOOT)
    assert init.stop() == 0
    # the next boot changes the role's password: ALTER ROLE … PASSWORD '<verifier>' in the
    # server's statement log (log_statement = ddl), on stdout, in the log file, in `logs`
    env["HIVE_DB_PASSWORD"] = "Second-" + secrets.token_hex(8)
    init = start_init(_config(open_dir, port), pid1=True, env=env, http=True)
    init.wait_state("postgres", "READY", timeout=BOOT)
    wait_until(lambda: any("ALTER ROLE" in line for line in init.output("postgres")), what="the ALTER ROLE line")
    postmaster = _postmaster(init)
    environ = Path(f"/proc/{postmaster.pid}/environ").read_bytes()
    assert superuser_pw.encode() not in environ and env["HIVE_DB_PASSWORD"].encode() not in environ
    assert b"POSTGRES_PASSWORD" not in environ
    logged = "\n".join(init.raw) + (open_dir / "log" / "postgres.log").read_text() + init.ctl("logs", "postgres", "-n", "1000").stdout
    assert "ALTER ROLE" in logged and "SCRAM-SHA-256$" not in logged
    for secret in (superuser_pw, env["HIVE_DB_PASSWORD"]):
        assert secret not in logged

    # postmaster.pid replaced by a FIFO, then by a link to /dev/zero, as postgres, and the
    # postmaster killed: the init must not freeze reading it (TERM, reaping, /livez all stop)
    wait_http(init)
    data = open_dir / "data"
    for plant in (f"rm -f {data}/postmaster.pid && mkfifo {data}/postmaster.pid",
                  f"rm -f {data}/postmaster.pid && ln -s /dev/zero {data}/postmaster.pid"):
        postmaster = _postmaster(init)
        restarts = init.program("postgres")["restarts"]
        poller = LivenessPoller(init.port, period=0.05, timeout=10.0)
        try:
            planted = postgres.run(["sh", "-c", f"{plant} && kill -KILL {postmaster.pid}"])
            assert planted.returncode == 0, planted.stderr
            wait_until(lambda restarts=restarts: init.program("postgres")["restarts"] > restarts
                       and init.program("postgres")["state"] == "READY", BOOT, "postgres back")
        finally:
            answers = poller.stop()
        assert answers and all(status == 200 for status, _ in answers), answers
    assert init.stop() == 0


# ---- the ownership walk, raced by postgres ---------------------------------------------------------

RENAME_EXCHANGE = 2
RACER = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = (s.encode() for s in sys.argv[1:3])
AT_FDCWD = -100
while not os.path.exists(sys.argv[3]):
    libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, 2)  # RENAME_EXCHANGE: the directory and the link swap places
"""


def test_postgres_cannot_steer_the_ownership_walk_to_a_root_file(open_dir, postgres):
    """fix_ownership walks the data directory as root on every start. `postgres` swaps a
    directory in it with a link to a directory of root's (renameat2 RENAME_EXCHANGE, over and
    over) while root walks: before the fix root lchown-ed `<data>/d/<name>` by path, resolved
    through the link to root's file of that name."""
    names = [f"f{i:04d}" for i in range(400)]
    victims = open_dir / "root-only"
    victims.mkdir(mode=0o755)
    for name in names:
        (victims / name).write_text("root's\n")
        (victims / name).chmod(0o600)
    before = snapshot(victims / names[0])
    data = open_dir / "data"
    data.mkdir(mode=0o700)
    inner = data / "d"
    inner.mkdir()
    for name in names:
        (inner / name).write_text("x")
    os.symlink(victims, data / "link")
    # everything root's at first, as a volume from another image may be: root walks it all
    run_as = RunAs("postgres", postgres.uid, postgres.gid, (), "/")
    stop = open_dir / "stop"
    for path in (data, inner):
        os.chown(path, postgres.uid, postgres.gid)
    racer = postgres.popen(["python3", "-c", RACER, str(inner), str(data / "link"), str(stop)])
    try:
        deadline = time.monotonic() + 20
        walks = 0
        while time.monotonic() < deadline and walks < 60:
            for entry in os.scandir(victims):
                assert entry.stat(follow_symlinks=False).st_uid == 0, f"root's {entry.name} was given to postgres"
            for root, _dirs, files in os.walk(data):  # root's again, so that the walk has work to do
                for name in files:
                    try:
                        os.lchown(os.path.join(root, name), 0, 0)
                    except OSError:
                        pass
            fix_ownership(str(data), run_as)
            walks += 1
    finally:
        stop.touch()
        racer.wait(10)
    for name in names:
        st = (victims / name).stat()
        assert st.st_uid == 0, f"root's {name} was given to postgres"
    assert snapshot(victims / names[0]) == before


def test_a_staging_directory_swapped_for_a_link_moves_nothing_of_roots(open_dir, postgres):
    """A complete staging directory is rolled forward by root, entry by entry. `postgres` owns
    the data directory it sits in, and swaps it for a link to a directory of root's between the
    survey and the move (here: the race already won): before the fix root listed and renamed
    the link's target's files into the data directory (where the ownership walk then gives them
    to postgres)."""
    from hive_init.postgres import layout

    victims = open_dir / "root-only"
    victim = victim_file(victims)
    (victims / layout.MARKER).write_text("{}")
    before = snapshot(victim)
    data = open_dir / "data"
    data.mkdir(mode=0o700)
    os.chown(data, postgres.uid, postgres.gid)
    staging = data / (layout.INNER_PREFIX + "swapped")
    planted = postgres.run(["ln", "-s", str(victims), str(staging)])
    assert planted.returncode == 0, planted.stderr
    try:
        layout.roll_forward(str(staging), str(data))
    except OSError:
        pass  # refused: a link where the staging directory was
    assert victim.exists() and snapshot(victim) == before
    assert not (data / "victim").exists()
