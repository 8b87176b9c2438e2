"""The first boot of a cluster: initdb, the config overrides, a temporary server on a private
unix socket only, the bootstrap, the init scripts, a fast stop; all in a staging directory that
becomes the data directory only once everything has succeeded (see layout.py).

Every step that blocks (initdb's staging directory, decompressing an init script, fsyncs, tree
removal) runs in a worker thread, so that the init keeps reaping and answering meanwhile.

shutil, tempfile and gzip are imported where a first boot uses them: every boot imports this
module (apply_overrides, private_leftovers), and shutil with what it pulls in (bz2, lzma, zlib)
would stay resident for the container's life (0.36 MiB) for a first boot that happened once.
"""

import os
import signal
import stat
import time
from dataclasses import dataclass
from typing import Any

import anyio

from hive_init import __version__, securefs
from hive_init import log as logging
from hive_init.config.model import ProgramSpec, RunAs
from hive_init.postgres import bootstrap, layout, ownership, processes
from hive_init.postgres.binaries import Binaries
from hive_init.postgres.spec import PostgresSpec
from hive_init.runtime.kind import PrepareError
from hive_init.runtime.output import pump_lines
from hive_init.runtime.spawn import Child, SpawnError, child_environment, kill, run_command, spawn, wait_exit

CONF_MARK = "# hive-init: conf_file"
TEMP_STOP_TIMEOUT = 30.0
CONF_LIMIT = 4 * 1024 * 1024  # postgresql.conf / pg_hba.conf: far larger than any real one
# as root, first boots keep their private directories here: root's, 0711 (PostgreSQL's user may
# pass through to its own socket; nobody but root can list, add or rename anything in it)
ROOT_PRIVATE_BASE = "/run/hive-init-firstboot"
PRIVATE_MARKER = "hive-init-firstboot"  # root's file in each private directory: proof we made it
# variables that hold a password in the official image's conventions: never in a server's
# environment (the postmaster's is readable by every process of its user, COPY … TO PROGRAM
# included)
_PASSWORD_VARIABLES = ("POSTGRES_PASSWORD", "PGPASSWORD")


@dataclass
class Context:
    spec: ProgramSpec
    pg: PostgresSpec
    binaries: Binaries
    run_as: RunAs | None
    log: Any

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def uid(self) -> int:
        """The user whose processes a first boot starts (and may end)."""
        return self.run_as.uid if self.run_as is not None and os.geteuid() == 0 else os.geteuid()

    def env(self, **extra: str) -> dict[str, str]:
        """For PostgreSQL's own programs: no password in it (the program's `environment` table
        may carry POSTGRES_PASSWORD, the official image's way to give it to hive-init)."""
        env = child_environment(self.spec.environment, self.run_as, self.spec.environment_passthrough)
        for key in ("PGDATA", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGPASSFILE", "PGSERVICE"):
            env.pop(key, None)
        passwords = {p for p in [self.pg.superuser_password, *(r.password for r in self.pg.roles)] if p}
        for key in [k for k, v in env.items() if k in _PASSWORD_VARIABLES or v in passwords]:
            del env[key]
        env.update(extra)
        return env

    def tool(self, name: str) -> str:
        path = self.binaries.path(name)
        if os.access(path, os.X_OK):
            return path
        import shutil

        found = shutil.which(name)
        if found is None:
            raise PrepareError(f"{name} is needed for the first boot but is neither in {self.binaries.bin_dir} nor on PATH")
        return found


# ---- the overrides, applied on every boot ---------------------------------------------------------

async def apply_overrides(ctx: Context, data_dir: str) -> None:
    """In a worker thread (it reads and writes the postgres user's files); what it has to say is
    logged here, on the loop (the log sink is not for threads)."""
    notes: list[tuple[str, str]] = []
    await anyio.to_thread.run_sync(_apply_overrides, ctx, data_dir, notes)
    for level, message in notes:
        getattr(ctx.log, level)(message)


def _apply_overrides(ctx: Context, data_dir: str, notes: list[tuple[str, str]]) -> None:
    """conf_file: an `include_if_exists` line at the end of postgresql.conf (ours are marked, so
    a changed or removed conf_file is followed); hba_file: copied over pg_hba.conf."""
    pg = ctx.pg
    conf = os.path.join(data_dir, "postgresql.conf")
    try:  # the postgres user's file: not through a link, not a FIFO, bounded
        lines = securefs.read_bounded(conf, CONF_LIMIT).decode("utf-8", "surrogateescape").splitlines()
    except OSError as e:
        raise PrepareError(f"cannot read {conf}: {e.strerror}") from None
    kept = [line for line in lines if not line.endswith(CONF_MARK)]
    if pg.conf_file is not None:
        if not os.path.isfile(pg.conf_file):
            notes.append(("warning", f"conf_file {pg.conf_file} does not exist (yet): PostgreSQL skips it"))
        elif not ownership.readable_by(pg.conf_file, ctx.run_as):
            raise PrepareError(f"conf_file {pg.conf_file} is not readable by user "
                               f"{ctx.run_as.user if ctx.run_as else os.geteuid()} (PostgreSQL reads it)")
        kept.append(f"include_if_exists = {bootstrap.literal(pg.conf_file)}  {CONF_MARK}")
    if kept != lines:
        _replace(conf, "\n".join(kept) + "\n")
    if pg.hba_file is not None:
        hba = os.path.join(data_dir, "pg_hba.conf")
        try:
            wanted = securefs.read_bounded(pg.hba_file, CONF_LIMIT).decode("utf-8", "surrogateescape")
        except OSError as e:
            raise PrepareError(f"cannot read hba_file {pg.hba_file}: {e.strerror}") from None
        try:
            current: str | None = securefs.read_bounded(hba, CONF_LIMIT).decode("utf-8", "surrogateescape")
        except FileNotFoundError:
            current = None
        except OSError:
            current = None  # a link or a FIFO in its place: replaced below
        if current != wanted:
            _replace(hba, wanted)
            notes.append(("info", f"pg_hba.conf replaced by hba_file {pg.hba_file}"))


def _replace(path: str, text: str) -> None:
    """Atomically, as the file's owner would have it (0600, the PostgreSQL user's), by the
    directory's descriptor: the data directory is the postgres user's, and a link planted as
    the temporary name must not make root write through it."""
    directory, name = os.path.split(path)
    dir_fd = securefs.open_directory(directory)
    try:
        st = os.fstat(dir_fd)  # the data directory's owner is the file's
        tmp = f"{name}.hive-init.tmp"
        try:
            os.unlink(tmp, dir_fd=dir_fd)  # unlink removes a link, never what it points at
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        with open(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            os.fchmod(fd, 0o600)
            if os.geteuid() == 0:
                os.fchown(fd, st.st_uid, st.st_gid)
            f.write(text)
            f.flush()
            os.fsync(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


# ---- the first boot ------------------------------------------------------------------------------

async def first_boot(ctx: Context, data_dir: str, state: str) -> None:
    """`state` is the survey's: "missing" (build in a sibling, rename) or "empty" (build inside,
    move the entries up)."""
    if state == "missing":
        staging = layout.new_sibling(data_dir)
        parent = os.path.dirname(data_dir)
        try:
            ownership.make_dirs(parent)
        except OSError as e:
            raise PrepareError(f"cannot create {parent} for data_dir: {e.strerror}") from None
    else:
        staging = layout.new_inner(data_dir)
    try:
        ownership.make_dir(staging, 0o700)
        ownership.chown_to(staging, ctx.run_as)
    except OSError as e:
        raise PrepareError(f"cannot create {staging}: {e.strerror}") from None
    started = time.monotonic()
    ctx.log.info("first boot: no cluster in data_dir, creating one", data_dir=data_dir,
                 postgres=ctx.binaries.version, bin_dir=ctx.binaries.bin_dir)
    try:
        scripts = await _build(ctx, data_dir, staging)
        await anyio.to_thread.run_sync(layout.write_marker, staging, {
            "created_by": f"hive-init {__version__}",
            "postgres": ctx.binaries.version,
            "init_scripts": scripts,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        commit = layout.commit_sibling if state == "missing" else layout.roll_forward
        await anyio.to_thread.run_sync(commit, staging, data_dir)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_remove_unfinished, staging)
        raise
    ctx.log.info("first boot: done", seconds=round(time.monotonic() - started, 3), init_scripts=len(scripts))


def _remove_unfinished(staging: str) -> None:
    """A first boot that did not finish leaves nothing (one with its marker is rolled forward)."""
    if os.path.isdir(staging) and not os.path.isfile(os.path.join(staging, layout.MARKER)):
        layout.remove_tree(staging)


async def _build(ctx: Context, data_dir: str, staging: str) -> list[str]:
    private = await anyio.to_thread.run_sync(_private_dir, data_dir, ctx.run_as)
    try:
        await _initdb(ctx, staging, private)
        await apply_overrides(ctx, staging)
        failure: Exception | None = None
        scripts: list[str] = []
        async with anyio.create_task_group() as tg:  # the temporary server's output pump
            server = _start_temp_server(ctx, staging, private, tg)
            try:
                try:
                    scripts = await _setup(ctx, staging, private, server)
                except Exception as e:  # raised below: a task group would wrap it in an ExceptionGroup
                    failure = e
                code = await _stop_temp_server(ctx, server)
            except BaseException:  # cancelled (the shutdown deadline): no time to be gentle
                with anyio.CancelScope(shield=True):
                    await _kill_temp_server(ctx, server, staging)
                raise
            finally:
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        if code != 0:
            raise PrepareError(f"the temporary server did not stop cleanly ({server.describe_exit()})")
        return scripts
    finally:
        import shutil

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(private, ignore_errors=True))


async def _setup(ctx: Context, staging: str, private: str, server: Child) -> list[str]:
    conn = await bootstrap.wait_accepting(ctx.pg, private, staging, server, ctx.pg.startup_timeout)
    try:
        ctx.log.info("first boot: bootstrap (roles, databases, extensions)")
        await bootstrap.bootstrap(conn, ctx.pg, private, ctx.log)
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await conn.close(timeout=5)
            except Exception:
                conn.terminate()
    return await _run_scripts(ctx, staging, private)


def _private_base() -> str:
    """Where private directories are made: as root, a directory only root can write (made and
    checked here); else the user's runtime directory or the temp directory, where a directory of
    this user's and a marker file of this user's prove what is ours (another user cannot make
    either). Short: a unix socket path has 107 bytes."""
    if os.geteuid() != 0:
        import tempfile

        base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
        return base if len(base) <= 60 and os.path.isabs(base) else "/tmp"
    parent, name = os.path.split(ROOT_PRIVATE_BASE)
    parent_fd = securefs.open_directory(parent, create_mode=0o755)
    try:
        try:
            os.mkdir(name, 0o711, dir_fd=parent_fd)
        except FileExistsError:
            pass
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    finally:
        os.close(parent_fd)
    try:
        st = os.fstat(fd)
        if st.st_uid != 0:
            raise PrepareError(f"{ROOT_PRIVATE_BASE} belongs to uid {st.st_uid}, not to root: remove it")
        if stat.S_IMODE(st.st_mode) != 0o711:
            os.fchmod(fd, 0o711)
    finally:
        os.close(fd)
    return ROOT_PRIVATE_BASE


def _private_name_prefix() -> str:
    return "pg-" if os.geteuid() == 0 else "hive-init-pg-"


def _private_dir(data_dir: str, run_as: RunAs | None) -> str:
    """A new private directory (mkdtemp: a name nobody can guess or take first), 0700, the
    PostgreSQL user's, holding root's marker that names the data directory. Blocking."""
    import tempfile

    path = tempfile.mkdtemp(prefix=_private_name_prefix(), dir=_private_base())
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o700)  # whatever the umask is
        mark = os.open(PRIVATE_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                       dir_fd=fd)
        with open(mark, "w", encoding="utf-8") as f:
            f.write(layout.canonical_path(data_dir) + "\n")
        if run_as is not None and os.geteuid() == 0:
            os.fchown(fd, run_as.uid, run_as.gid)
    finally:
        os.close(fd)
    return path


def private_leftovers(data_dir: str, run_as: RunAs | None) -> list[str]:
    """Private directories of earlier first boots of this data directory that were killed: only
    those that prove they are ours (a real directory of PostgreSQL's user, 0700, with a marker of
    hive-init's own user naming this data directory). Blocking."""
    uid = run_as.uid if run_as is not None and os.geteuid() == 0 else os.geteuid()
    want = layout.canonical_path(data_dir)
    try:
        base = _private_base() if os.geteuid() != 0 else ROOT_PRIVATE_BASE
        base_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (OSError, PrepareError):
        return []
    found = []
    try:
        for name in os.listdir(base_fd):
            if not name.startswith(_private_name_prefix()):
                continue
            try:
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=base_fd)
            except OSError:  # a link, a file, gone: not ours
                continue
            try:
                st = os.fstat(fd)
                if st.st_uid != uid or stat.S_IMODE(st.st_mode) != 0o700:
                    continue
                try:
                    mark = securefs.open_regular(fd, PRIVATE_MARKER, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    if os.fstat(mark).st_uid != os.geteuid() or os.read(mark, 4097).decode("utf-8", "replace") != want + "\n":
                        continue
                finally:
                    os.close(mark)
                found.append(securefs.real_path_of(fd))
            finally:
                os.close(fd)
    finally:
        os.close(base_fd)
    return found


async def _initdb(ctx: Context, staging: str, private: str) -> None:
    pg = ctx.pg
    args = [ctx.binaries.path("initdb"), "-D", staging, "--encoding=UTF8", "--locale=C.UTF-8",
            "--auth-local=trust", "--auth-host=scram-sha-256", f"--username={pg.superuser}"]
    if pg.superuser_password is not None:
        pwfile = os.path.join(private, "pwfile")
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if ctx.run_as is not None and os.geteuid() == 0:
                os.fchown(fd, ctx.run_as.uid, ctx.run_as.gid)
            f.write(pg.superuser_password + "\n")
        args.append(f"--pwfile={pwfile}")
    try:
        await _run_initdb(ctx, args, staging)
    finally:
        if pg.superuser_password is not None:  # the password stays on disk only while initdb runs
            try:
                os.unlink(os.path.join(private, "pwfile"))
            except FileNotFoundError:
                pass


async def _run_initdb(ctx: Context, args: list[str], staging: str) -> None:
    pg = ctx.pg
    ctx.log.info("first boot: initdb", args=" ".join(a for a in args[3:] if not a.startswith("--pwfile"))
                 + (" " + " ".join(pg.initdb_args) if pg.initdb_args else ""))
    result = await run_command(args + list(pg.initdb_args), env=ctx.env(), cwd="/", run_as=ctx.run_as)
    if not result.ok and "invalid locale name" in result.output and "C.UTF-8" in result.output:
        ctx.log.warning("first boot: locale C.UTF-8 is not available here; using the C locale (--no-locale)")
        await anyio.to_thread.run_sync(_empty, staging)  # initdb empties it when it fails; make sure
        args[args.index("--locale=C.UTF-8")] = "--no-locale"
        result = await run_command(args + list(pg.initdb_args), env=ctx.env(), cwd="/", run_as=ctx.run_as)
    if not result.ok:
        raise PrepareError(f"initdb failed ({result.describe()}): {_last_line(result.output)}")
    for line in result.output.splitlines():
        # trust on the socket is deliberate (a private, 0700 directory): no warning for it
        if line.strip().startswith(("initdb: warning", "WARNING")) and '"trust"' not in line:
            ctx.log.warning(f"initdb: {line.strip()}")


def _empty(directory: str) -> None:
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            layout.remove_tree(path)
        else:
            os.unlink(path)


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "fatal" in line.lower()]
    return ((errors or lines or ["no output"])[-1])[:300]


def _start_temp_server(ctx: Context, staging: str, private: str, tg: anyio.abc.TaskGroup) -> Child:
    pg = ctx.pg
    argv = [ctx.binaries.path("postgres"), "-D", staging, "-p", str(pg.port), "-h", "", "-k", private]
    for key, value in pg.settings:
        argv += ["-c", f"{key}={value}"]
    ctx.log.info("first boot: temporary server on a private unix socket only", socket_dir=private)
    try:
        server = spawn(argv, env=ctx.env(), cwd="/", run_as=ctx.run_as, merge_stderr=True)
    except SpawnError as e:
        raise PrepareError(f"cannot start the temporary server: {e}") from None
    tg.start_soon(_pump, ctx.name, server)
    return server


async def _pump(name: str, child: Child) -> None:
    fd = child.stdout
    assert fd is not None
    try:
        await pump_lines(fd, lambda text: logging.child_line(name, "stderr", text))
    finally:
        child.close_pipes()


async def _stop_temp_server(ctx: Context, server: Child) -> int:
    """Fast shutdown (SIGINT to the postmaster alone), then immediate, then SIGKILL."""
    for signum, wait in ((signal.SIGINT, TEMP_STOP_TIMEOUT), (signal.SIGQUIT, 5.0)):
        server.signal(signum, group=False)
        with anyio.move_on_after(wait):
            await server.exited.wait()
        if server.code is not None:
            return server.code
        ctx.log.warning(f"temporary server still running {wait:g}s after {signal.Signals(signum).name}")
    await kill(server)
    return server.code if server.code is not None else -signal.SIGKILL


async def _kill_temp_server(ctx: Context, server: Child, staging: str) -> None:
    """Immediate shutdown, briefly; then SIGKILL to it and to every process working in the
    staging directory (its backends are not in its process group). Bounded: the reaper may not
    be running any more."""
    if server.code is None:
        server.signal(signal.SIGQUIT, group=False)
        if not await wait_exit(server, 2.0):
            server.signal(signal.SIGKILL, group=True)
    try:
        canonical = await anyio.to_thread.run_sync(layout.canonical_path, staging)
        await processes.kill_users_of(canonical, ctx.uid, ctx.log)
    except (PrepareError, OSError) as e:
        ctx.log.error(str(e))


# ---- init scripts ---------------------------------------------------------------------------------

def list_scripts(init_dir: str) -> list[str]:
    try:
        names = sorted(os.listdir(init_dir))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise PrepareError(f"cannot read init_dir {init_dir}: {e.strerror}") from None
    return [n for n in names if os.path.isfile(os.path.join(init_dir, n))]


async def _run_scripts(ctx: Context, staging: str, private: str) -> list[str]:
    pg = ctx.pg
    names = list_scripts(pg.init_dir)
    if not names:
        return []
    extra = {"PGHOST": private, "PGPORT": str(pg.port), "PGUSER": pg.superuser, "PGDATABASE": pg.scripts_database,
             "POSTGRES_USER": pg.superuser, "POSTGRES_DB": pg.scripts_database, "PGDATA": staging}
    if pg.superuser_password is not None:
        extra["PGPASSWORD"] = pg.superuser_password  # only used if a custom hba asks for it
    env = ctx.env(**extra)
    # psql and friends of the same installation come first for *.sh scripts, as in the image
    env["PATH"] = ctx.binaries.bin_dir + os.pathsep + env.get("PATH", os.defpath)
    ran: list[str] = []
    for name in names:
        path = os.path.join(pg.init_dir, name)
        if name.endswith(".sh"):
            argv = [path] if os.access(path, os.X_OK) else ["/bin/sh", path]
        elif name.endswith(".sql"):
            argv = _psql(ctx, path)
        elif name.endswith(".sql.gz"):
            import gzip

            unpacked = os.path.join(private, f"{len(ran)}-{name[:-3]}")
            try:
                await anyio.to_thread.run_sync(_gunzip, path, unpacked, ctx.run_as)
            except (OSError, EOFError, gzip.BadGzipFile) as e:
                raise PrepareError(f"init script {name}: cannot decompress: {e}") from None
            argv = _psql(ctx, unpacked)
        else:
            ctx.log.info(f"first boot: ignoring {name} in init_dir (not *.sh, *.sql or *.sql.gz)")
            continue
        ctx.log.info(f"first boot: running init script {name}")
        result = await run_command(argv, env=env, cwd="/", run_as=ctx.run_as, output_limit=256 * 1024)
        for line in result.output.splitlines():
            logging.child_line(ctx.name, "stdout", line)
        if not result.ok:
            raise PrepareError(f"init script {name} failed ({result.describe()}): {_last_line(result.output)}")
        ran.append(name)
    return ran


def _gunzip(path: str, unpacked: str, run_as: RunAs | None) -> None:
    """Blocking (a worker thread): into a new file of the private directory, PostgreSQL's user's."""
    import gzip
    import shutil

    fd = os.open(unpacked, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with gzip.open(path, "rb") as src, open(fd, "wb") as dst:
        if run_as is not None and os.geteuid() == 0:
            os.fchown(fd, run_as.uid, run_as.gid)
        shutil.copyfileobj(src, dst)


def _psql(ctx: Context, path: str) -> list[str]:
    return [ctx.tool("psql"), "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "--no-password", "-q", "-f", path]
