"""The database side: a small asyncpg pool that is made in the background and survives restarts.

- At start, connecting is retried in the background (0.5 s doubling to 5 s) until the schema is
  in place; requests meanwhile get DatabaseUnavailable (→ 503), the process never exits for it.
- Once the pool exists it is kept: asyncpg replaces a closed connection on the next acquire,
  so after PostgreSQL restarts the pool reconnects by itself.
- Every connection-level failure (refused, reset, timeout, server shutting down or starting
  up, too many clients, bad credentials) is raised as DatabaseUnavailable.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from hive_app import vectors
from hive_app.logs import log
from hive_app.resources import Resource
from hive_app.settings import redact_url

POOL_MIN = 1
POOL_MAX = 5
CONNECT_TIMEOUT = 5.0  # one connection attempt
COMMAND_TIMEOUT = 5.0  # one statement; a hung server is "unavailable", not a hung request
ACQUIRE_TIMEOUT = 3.0  # waiting for a free (or new) pooled connection
RETRY_INITIAL, RETRY_MAX = 0.5, 5.0

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable, broken pipe
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.OperatorInterventionError,  # 57: admin/crash shutdown, cannot connect now, cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections, out of memory/disk
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # 28: bad password, no such role
    asyncpg.exceptions.InvalidCatalogNameError,  # 3D000: the database does not exist (yet)
    asyncpg.InterfaceError,  # connection closed underneath an operation
)


class DatabaseUnavailable(Exception):
    """The database cannot be reached right now; the request is answered with 503."""


class SchemaError(Exception):
    """The database answers but cannot hold this service's table as configured."""


def describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Database:
    def __init__(self, url: str, resource: Resource, password: str | None = None):
        self.url = url
        self.password = password  # None: the URL's own (if any)
        self.resource = resource
        self.pool: asyncpg.Pool | None = None
        self.last_error: str | None = "not connected yet"
        self._vector_schema = "public"
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()  # set once the first pool exists

    @property
    def state(self) -> str:
        return "connected" if self.pool is not None else "connecting"

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect_until_ready(), name="hive_app.db.connect")

    async def wait_connected(self, timeout: float) -> bool:
        """For callers that want to wait for the first pool (tests, scripts)."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            pass
        return self.pool is not None

    async def _connect_until_ready(self) -> None:
        delay = RETRY_INITIAL
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._setup()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.last_error = describe(e)
                if attempt == 1 or attempt % 10 == 0 or isinstance(e, SchemaError):
                    log.warning("database %s not ready (attempt %d): %s; retrying every %.1fs at most",
                                redact_url(self.url), attempt, self.last_error, RETRY_MAX)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            else:
                self.last_error = None
                log.info("database %s ready: table %s, pool of %d..%d connections",
                         redact_url(self.url), self.resource.table, POOL_MIN, POOL_MAX)
                self._connected.set()
                return

    async def _setup(self) -> None:
        conn = await asyncpg.connect(self.url, password=self.password, timeout=CONNECT_TIMEOUT,
                                     command_timeout=COMMAND_TIMEOUT)
        try:
            self._vector_schema = await ensure_schema(conn, self.resource)
        finally:
            await conn.close(timeout=CONNECT_TIMEOUT)
        self.pool = await asyncpg.create_pool(
            self.url,
            password=self.password,
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
            init=self._init_connection,
        )

    async def _init_connection(self, conn: asyncpg.Connection) -> None:
        await conn.set_type_codec("jsonb", schema="pg_catalog", encoder=json.dumps, decoder=json.loads)
        await conn.set_type_codec("vector", schema=self._vector_schema, encoder=vectors.encode,
                                  decoder=vectors.decode, format="text")

    @asynccontextmanager
    async def connection(self, timeout: float = ACQUIRE_TIMEOUT) -> AsyncIterator[asyncpg.Connection]:
        pool = self.pool
        if pool is None:
            raise DatabaseUnavailable(self.last_error or "not connected yet")
        try:
            async with pool.acquire(timeout=timeout) as conn:
                yield conn
        except CONNECTION_ERRORS as e:
            raise DatabaseUnavailable(describe(e)) from e

    async def ping(self, timeout: float) -> str | None:
        """None when `SELECT 1` answers within timeout, else why not."""
        if self.pool is None:
            return self.last_error or "not connected yet"
        try:
            async with asyncio.timeout(timeout):
                async with self.connection(timeout=timeout) as conn:
                    await conn.fetchval("SELECT 1", timeout=timeout)
        except TimeoutError:
            return f"no answer within {timeout}s"
        except DatabaseUnavailable as e:
            return str(e)
        return None

    async def close(self, timeout: float = 3.0) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        pool, self.pool = self.pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout)
            except (TimeoutError, *CONNECTION_ERRORS):
                pool.terminate()


async def ensure_schema(conn: asyncpg.Connection, resource: Resource) -> str:
    """The vector extension (created only when missing and allowed) and the service's table.

    Returns the schema that holds the vector type.
    """
    find = ("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'vector'")
    schema = await conn.fetchval(find)
    if schema is None:
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except asyncpg.InsufficientPrivilegeError:
            database = await conn.fetchval("SELECT current_database()")
            raise SchemaError(f"extension vector is missing in database {database} and this role may not create it "
                              f"(a superuser must run: CREATE EXTENSION vector)") from None
        schema = await conn.fetchval(find)
        log.info("created extension vector")
    await conn.execute(resource.create_table_sql)
    await conn.execute(resource.add_embedding_sql)
    found = await conn.fetchval(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attname = 'embedding' AND NOT attisdropped", resource.table)
    expected = f"vector({vectors.EMBEDDING_DIM})"
    if found != expected:
        raise SchemaError(f"{resource.table}.embedding is {found}, this app writes {expected} "
                          f"(EMBEDDING_DIM): migrate the column or rebuild the app")
    return schema
