"""`kind = "postgres"`: the steps of a PostgreSQL program that the runtime calls.

prepare()   binaries, directories and ownership, a first boot if there is no cluster, the
            overrides, and no old server left holding the data directory; the server's command.
started()   the server accepts connections (as the superuser, over the socket); the bootstrap.
probe()     readiness: `SELECT 1` in the app's database as the app's role, over TCP with its
            password when PostgreSQL listens on TCP (as the app will connect), else the socket.
stop_plan() fast shutdown (SIGINT), then immediate (SIGQUIT); the runtime SIGKILLs last.
exited()    nothing of the old server may stay behind before a restart.
"""

import os
import signal
import time

import anyio
import asyncpg

from hive_init import log as logging
from hive_init import securefs
from hive_init.config.model import Probe, ProgramSpec, RunAs
from hive_init.health.probes import ProbeResult
from hive_init.postgres import binaries as binaries_mod
from hive_init.postgres import bootstrap, firstboot, layout, ownership, pidfile, processes
from hive_init.postgres.binaries import Binaries
from hive_init.postgres.spec import PostgresSpec
from hive_init.runtime import oom
from hive_init.runtime.kind import Kind, Launch, PrepareError
from hive_init.runtime.spawn import Child

IMMEDIATE_WAIT = 5.0


class PostgresKind(Kind):
    def __init__(self, spec: ProgramSpec):
        super().__init__(spec)
        assert isinstance(spec.options, PostgresSpec)
        self.pg: PostgresSpec = spec.options
        self.log = logging.get_logger(program=spec.name)
        self.binaries: Binaries | None = None

    # ---- before every start ---------------------------------------------------------------------
    @property
    def run_as(self) -> RunAs | None:
        """Whom PostgreSQL runs as: the configured user when hive-init is root; else hive-init's
        own user (None), which must then be the configured one if there is one."""
        run_as = self.spec.run_as
        if os.geteuid() == 0:
            return run_as
        if run_as is not None and run_as.uid != os.geteuid():
            raise PrepareError(f"cannot run PostgreSQL as user {run_as.user!r}: hive-init is not running as root "
                               "(leave user out to run it as hive-init's own user)")
        return None

    async def prepare(self) -> Launch:
        try:
            return await self._prepare()
        except OSError as e:  # a full disk, a read-only mount, a permission: a failed start, not a crash
            where = f" ({e.filename})" if e.filename else ""
            raise PrepareError(f"cannot prepare the data directory: {e.strerror or e}{where}") from None

    async def _prepare(self) -> Launch:
        pg = self.pg
        if self.binaries is None:
            self.binaries = await binaries_mod.find(pg.bin_dir)
            self.log.info(f"PostgreSQL {self.binaries.version} from {self.binaries.bin_dir} ({self.binaries.source})")
        run_as = self.run_as
        if os.geteuid() == 0 and (run_as is None or run_as.uid == 0):
            raise PrepareError("PostgreSQL refuses to run as root: set user (e.g. user = \"postgres\")")
        # every step that walks, reads or writes the disk runs in a worker thread: the init's loop
        # keeps reaping, answering /livez and the control socket meanwhile
        await anyio.to_thread.run_sync(ownership.make_private_dir, pg.socket_dir, run_as, "socket_dir")
        await self._ensure_cluster(run_as)
        changed = await anyio.to_thread.run_sync(ownership.fix_ownership, pg.data_dir, run_as)
        if changed:
            self.log.info(f"data_dir: {changed} entries given to user {run_as.user if run_as else os.geteuid()}")
        await anyio.to_thread.run_sync(self._check_version)
        await firstboot.apply_overrides(self._context(run_as), pg.data_dir)
        # a live server of this data directory that no one supervises is stopped (immediate
        # shutdown); a stale postmaster.pid is removed; then stray backends of a dead one are ended
        canonical = await anyio.to_thread.run_sync(layout.canonical_path, pg.data_dir)
        await pidfile.clear(pg.data_dir, canonical, self.uid, self.log)
        await processes.kill_leftovers(canonical, self.uid)
        argv = [self.binaries.path("postgres"), "-D", pg.data_dir, "-p", str(pg.port),
                "-h", pg.listen_addresses, "-k", pg.socket_dir]
        for key, value in pg.settings:
            argv += ["-c", f"{key}={value}"]
        env = self._context(run_as).env()
        # the postmaster's score is lowered after the spawn (runtime.oom); each backend resets its
        # own to normal when forked, as PostgreSQL documents, so the OOM killer takes a backend
        env.update(oom.postgres_environment())
        return Launch(tuple(argv), env, "/", run_as)

    def _context(self, run_as: RunAs | None) -> firstboot.Context:
        assert self.binaries is not None
        return firstboot.Context(self.spec, self.pg, self.binaries, run_as, self.log)

    @property
    def uid(self) -> int:
        """The user whose processes are PostgreSQL's: the only ones this kind ever signals."""
        run_as = self.run_as
        return run_as.uid if run_as is not None else os.geteuid()

    async def _remove_leftover(self, path: str) -> None:
        canonical = await anyio.to_thread.run_sync(layout.canonical_path, path)
        await processes.kill_users_of(canonical, self.uid, self.log)
        self.log.warning(f"removing {path}, left by an interrupted first boot")
        await anyio.to_thread.run_sync(layout.remove_tree, path)

    async def _ensure_cluster(self, run_as: RunAs | None) -> None:
        data_dir, uid, thread = self.pg.data_dir, self.uid, anyio.to_thread.run_sync
        for leftover in await thread(layout.siblings, data_dir, uid):
            await self._remove_leftover(leftover)
        found = await thread(layout.survey, data_dir)
        if found.state == "roll-forward":
            assert found.staging is not None
            canonical = await thread(layout.canonical_path, found.staging)
            await processes.kill_users_of(canonical, uid, self.log)
            self.log.warning("finishing an interrupted first boot (its cluster was complete)", data_dir=data_dir)
            await thread(layout.roll_forward, found.staging, data_dir)
            found = await thread(layout.survey, data_dir)
        leftovers = await thread(layout.inner_stagings, data_dir, uid)
        leftovers += await thread(firstboot.private_leftovers, data_dir, run_as)
        for staging in leftovers:
            await self._remove_leftover(staging)
        if found.state in ("missing", "empty"):
            if found.state == "empty":
                await thread(lambda: ownership.make_private_dir(data_dir, run_as, "data_dir",
                                                                ignore=frozenset(layout.IGNORED_ENTRIES)))
            await firstboot.first_boot(self._context(run_as), data_dir, found.state)
        elif not found.ours:
            self.log.info("data_dir holds a cluster made elsewhere (no hive-init marker): using it as it is; "
                          "init scripts are not run", data_dir=data_dir)

    def _check_version(self) -> None:
        assert self.binaries is not None
        path = os.path.join(self.pg.data_dir, "PG_VERSION")
        try:  # the postgres user's file: no link, no FIFO, bounded
            version = securefs.read_bounded(path, 64).decode("utf-8", "replace").strip()
        except OSError as e:
            raise PrepareError(f"cannot read {path}: {e.strerror}") from None
        major = self.binaries.major
        if major and version != major:
            raise PrepareError(
                f"data_dir {self.pg.data_dir} holds a PostgreSQL {version} cluster, but the binaries in "
                f"{self.binaries.bin_dir} are PostgreSQL {self.binaries.version}: upgrade the cluster "
                f"(pg_upgrade, or dump and restore), or set bin_dir to PostgreSQL {version}'s")

    # ---- after the spawn ------------------------------------------------------------------------
    async def started(self, child: Child) -> None:
        pg = self.pg
        try:
            conn = await bootstrap.wait_accepting(pg, pg.socket_dir, pg.data_dir, child, pg.startup_timeout)
            try:
                await bootstrap.bootstrap(conn, pg, pg.socket_dir, self.log)
            finally:
                try:
                    await conn.close(timeout=5)
                except Exception:
                    conn.terminate()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise PrepareError(f"cannot connect for the bootstrap: {bootstrap.describe_error(e)}") from None

    def stop_plan(self) -> list[tuple[int, float]]:
        return [(self.spec.stop_signal, self.spec.stop_timeout), (signal.SIGQUIT, IMMEDIATE_WAIT)]

    async def exited(self, code: int) -> None:
        """PostgreSQL makes every backend and auxiliary process the leader of a session of its own
        (setsid in InitPostmasterChild), so the SIGKILL the runtime sends to the postmaster's
        process group when it dies does not reach them: after a crash they live on, holding the
        old shared memory, and a new postmaster refuses to start. They work in the data
        directory: end every postgres process there, and wait until they are gone."""
        try:
            canonical = await anyio.to_thread.run_sync(layout.canonical_path, self.pg.data_dir)
            await processes.kill_leftovers(canonical, self.uid)
        except (PrepareError, OSError) as e:
            self.log.error(str(e))

    # ---- readiness ------------------------------------------------------------------------------
    async def probe(self, probe: Probe) -> ProbeResult:
        pg = self.pg
        start = time.monotonic()
        role, database = pg.ready_role, pg.ready_database
        password = pg.password_of(role)
        tcp = bool(pg.listen_addresses) and password is not None
        host = tcp_host(pg.listen_addresses) if tcp else pg.socket_dir
        how = f"{host}:{pg.port}" if tcp else "the unix socket"
        try:
            conn = await asyncpg.connect(host=host, port=pg.port, user=role, database=database, password=password,
                                         timeout=probe.timeout, ssl=_ssl(pg) if tcp else False,
                                         statement_cache_size=0,
                                         server_settings={"application_name": "hive-init probe"})
            try:
                value = await conn.fetchval("SELECT 1")
            finally:
                conn.terminate()
            ok = value == 1
            message = f"SELECT 1 as {role} in {database} over {how}" if ok else f"SELECT 1 returned {value!r}"
        except Exception as e:  # the probe reports, it never raises
            ok, message = False, f"{role}@{database} over {how}: {bootstrap.describe_error(e)}"
        return ProbeResult(ok, time.monotonic() - start, message, time.time())


def tcp_host(listen_addresses: str) -> str:
    first = listen_addresses.split(",")[0].strip()
    if first in ("*", "0.0.0.0"):
        return "127.0.0.1"
    if first == "::":
        return "::1"
    return first


def _ssl(pg: PostgresSpec) -> bool | str:
    enabled = dict(pg.settings).get("ssl", "off").lower() in ("on", "true", "yes", "1")
    return "prefer" if enabled else False
