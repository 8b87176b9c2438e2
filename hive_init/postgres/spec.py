"""The fields of a `kind = "postgres"` program, read and checked at config load.

Light on imports on purpose: `hive-init check` and every config load come through here. The
official postgres image's variables (POSTGRES_USER, POSTGRES_PASSWORD[_FILE], POSTGRES_DB,
POSTGRES_INITDB_ARGS, PGDATA) are defaults, taken from the program's `environment` table first
and hive-init's own environment second; a field in the config always wins.
"""

import os
import re
import shlex
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hive_init.config.expand import read_secret_file
from hive_init.config.fields import Table
from hive_init.config.model import Probe

FIELDS = frozenset({
    "data_dir", "bin_dir", "port", "listen_addresses", "socket_dir", "init_dir", "initdb_args",
    "conf_file", "hba_file", "settings", "superuser", "superuser_password", "superuser_password_file",
    "roles", "databases", "ready_database", "ready_role", "startup_timeout",
})

DEFAULT_DATA_DIR = "/var/lib/postgresql/data"
DEFAULT_INIT_DIR = "/docker-entrypoint-initdb.d"
DEFAULT_PORT = 5432
DEFAULT_LISTEN = "localhost"
DEFAULT_STARTUP_TIMEOUT = 120.0
# PostgreSQL's NAMEDATALEN is 64: names are at most 63 bytes
MAX_NAME = 63
# sockaddr_un.sun_path is 108 bytes; PostgreSQL adds "/.s.PGSQL.<port>" and needs the NUL
MAX_SOCKET_DIR = 107 - len("/.s.PGSQL.65535")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$-]*\Z")
_SETTING = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
_RESERVED_ROLES = {"public", "none", "current_user", "session_user", "current_role"}
# settings that have a field of their own (the field is what hive-init itself uses to connect)
_OWN_FIELD = {"port": "port", "listen_addresses": "listen_addresses", "unix_socket_directories": "socket_dir",
              "data_directory": "data_dir", "hba_file": "hba_file"}


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    password: str | None = field(default=None, repr=False)
    login: bool = True
    superuser: bool = False
    createdb: bool = False


@dataclass(frozen=True, slots=True)
class Database:
    name: str
    owner: str
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PostgresSpec:
    data_dir: str
    bin_dir: str | None
    port: int
    listen_addresses: str
    socket_dir: str
    init_dir: str
    initdb_args: tuple[str, ...]
    conf_file: str | None
    hba_file: str | None
    settings: tuple[tuple[str, str], ...]
    superuser: str
    superuser_password: str | None = field(repr=False)
    roles: tuple[Role, ...]
    databases: tuple[Database, ...]
    ready_database: str
    ready_role: str
    scripts_database: str  # where init scripts run: POSTGRES_DB's database, else "postgres"
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT

    def role(self, name: str) -> Role | None:
        for role in self.roles:
            if role.name == name:
                return role
        return None

    def password_of(self, name: str) -> str | None:
        if name == self.superuser:
            return self.superuser_password
        role = self.role(name)
        return role.password if role is not None else None


def default_socket_dir(env: Mapping[str, str] | None = None) -> str:
    if os.geteuid() == 0:
        return "/run/postgresql"
    base = (os.environ if env is None else env).get("XDG_RUNTIME_DIR") or "/tmp"
    return os.path.join(base, f"hive-init-postgres-{os.geteuid()}")


def _environment(t: Table, base: Mapping[str, str]) -> dict[str, str]:
    """hive-init's environment (the one the config is loaded with), overlaid with the program's
    own `environment` table."""
    env = dict(base)
    own = t.data.get("environment")
    if isinstance(own, dict):
        env.update({k: str(v) for k, v in own.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)})
    return env


def parse_options(t: Table, secrets: set[str], environ: Mapping[str, str] | None = None
                  ) -> tuple[PostgresSpec, dict[str, Any]]:
    env = _environment(t, os.environ if environ is None else environ)
    user = t.data.get("user")
    if user in ("root", "0", 0):
        raise t.error("user", "PostgreSQL refuses to run as root: use an unprivileged user such as \"postgres\"")

    data_dir = _path(t, "data_dir", env.get("PGDATA") or DEFAULT_DATA_DIR,
                     "PGDATA" if not t.has("data_dir") and env.get("PGDATA") else None)
    bin_dir = _path(t, "bin_dir", None)
    port = t.integer("port", DEFAULT_PORT, minimum=1, maximum=65535)
    listen = _listen_addresses(t)
    socket_dir = _path(t, "socket_dir", default_socket_dir(env))
    if len(socket_dir.encode()) > MAX_SOCKET_DIR:
        raise t.error("socket_dir", f"is too long for a unix socket path (at most {MAX_SOCKET_DIR} bytes)")
    init_dir = _path(t, "init_dir", DEFAULT_INIT_DIR)
    conf_file = _path(t, "conf_file", None)
    hba_file = _path(t, "hba_file", None)
    initdb_args = _initdb_args(t, env)
    settings = _settings(t)
    startup_timeout = t.duration("startup_timeout", DEFAULT_STARTUP_TIMEOUT)
    if startup_timeout <= 0:
        raise t.error("startup_timeout", "must be more than 0")

    superuser = t.string("superuser", None) or env.get("POSTGRES_USER") or "postgres"
    _check_name(t, "superuser" if t.has("superuser") else None, superuser, "role", via="POSTGRES_USER")
    superuser_password = _password(t, "superuser_password", "superuser_password_file", secrets, env)

    roles = _roles(t, superuser, secrets)
    role_names = {r.name for r in roles} | {superuser}
    databases = _databases(t, superuser, role_names)
    names = [d.name for d in databases]
    # the official image: POSTGRES_DB (default POSTGRES_USER) is created, owned by the superuser
    env_db = env.get("POSTGRES_DB") or env.get("POSTGRES_USER")
    if env_db:
        if not _NAME.match(env_db) or len(env_db.encode()) > MAX_NAME:
            raise t.error(None, f"POSTGRES_DB / POSTGRES_USER {env_db!r} is not a valid database name")
        if env_db != "postgres" and env_db not in names:
            databases = (*databases, Database(env_db, superuser))
    scripts_database = env_db or "postgres"

    default_db = databases[0] if databases else None
    ready_database = t.string("ready_database", None)
    if ready_database is None:
        ready_database = default_db.name if default_db else "postgres"
    elif ready_database != "postgres" and ready_database not in {d.name for d in databases}:
        raise t.error("ready_database", f"no database named {ready_database!r} (add it to databases)")
    ready_role = t.string("ready_role", None)
    if ready_role is None:
        owner = next((d.owner for d in databases if d.name == ready_database), superuser)
        ready_role = owner
    elif ready_role not in role_names:
        raise t.error("ready_role", f"no role named {ready_role!r} (add it to roles)")
    role = next((r for r in roles if r.name == ready_role), None)
    if role is not None and not role.login:
        raise t.error("ready_role" if t.has("ready_role") else "roles",
                      f"the readiness probe logs in as role {ready_role!r}, which has login = false")

    spec = PostgresSpec(
        data_dir=data_dir, bin_dir=bin_dir, port=port, listen_addresses=listen, socket_dir=socket_dir,
        init_dir=init_dir, initdb_args=initdb_args, conf_file=conf_file, hba_file=hba_file, settings=settings,
        superuser=superuser, superuser_password=superuser_password, roles=roles, databases=databases,
        ready_database=ready_database, ready_role=ready_role, scripts_database=scripts_database,
        startup_timeout=startup_timeout,
    )
    defaults: dict[str, Any] = {
        "stop_signal": signal.SIGINT,
        "readiness": Probe(kind="postgres", target=None, period=5.0, timeout=3.0),
    }
    if os.geteuid() == 0 and not t.has("user"):
        defaults["user"] = "postgres"
    return spec, defaults


def _path(t: Table, key: str, default: str | None, via: str | None = None) -> Any:
    value = t.string(key, default)
    if value is None:
        return None
    if not value or not os.path.isabs(value):
        where = key if t.has(key) else None
        source = f" (from ${via})" if via else ""
        raise t.error(where, f"{key} must be an absolute path (got {value!r}{source})")
    return os.path.normpath(value)


def _listen_addresses(t: Table) -> str:
    value = t.raw("listen_addresses", DEFAULT_LISTEN)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ",".join(v.strip() for v in value)
    if not isinstance(value, str):
        raise t.error("listen_addresses", "expected a string like \"localhost\" or \"*\" (\"\" for the unix socket only)")
    parts = [p.strip() for p in value.split(",") if p.strip()]
    for part in parts:
        if any(c.isspace() or c in "'\"\\" for c in part):
            raise t.error("listen_addresses", f"{part!r} is not a host name or address")
    return ",".join(parts)


def _initdb_args(t: Table, env: Mapping[str, str]) -> tuple[str, ...]:
    args: list[str] = []
    from_env = env.get("POSTGRES_INITDB_ARGS", "")
    if from_env.strip():
        try:
            args += shlex.split(from_env)
        except ValueError as e:
            raise t.error(None, f"POSTGRES_INITDB_ARGS: {e}") from None
    args += t.string_list("initdb_args", (), allow_empty=True)
    for arg in args:
        name = arg.split("=", 1)[0]
        if name == "--pgdata" or arg.startswith("-D"):
            raise t.error("initdb_args", "the data directory comes from data_dir; remove -D/--pgdata")
        if name == "--username" or arg.startswith("-U"):
            raise t.error("initdb_args", "the superuser's name comes from superuser (or POSTGRES_USER); remove -U/--username")
        if name in ("--pwfile", "--pwprompt") or arg == "-W":
            raise t.error("initdb_args", "the superuser's password comes from superuser_password(_file); "
                                         "remove --pwfile/--pwprompt")
    return tuple(args)


def _settings(t: Table) -> tuple[tuple[str, str], ...]:
    table = t.table("settings", None)
    if table is None:
        return ()
    out = []
    for key, value in table.data.items():
        if not _SETTING.match(key):
            raise table.error(key, "is not a PostgreSQL setting name")
        if key in _OWN_FIELD:
            raise table.error(key, f"has a field of its own: set {_OWN_FIELD[key]} instead")
        if isinstance(value, bool):
            text = "on" if value else "off"
        elif isinstance(value, (int, float, str)):
            text = str(value)
        else:
            raise table.error(key, "expected a string, number or boolean")
        if "\0" in text or "\n" in text:
            raise table.error(key, "must be on one line")
        out.append((key, text))
    return tuple(out)


def _check_name(t: Table, key: str | None, name: str, what: str, via: str | None = None) -> None:
    source = f" (from ${via})" if via and key is None else ""
    if not _NAME.match(name):
        raise t.error(key, f"{name!r}{source} is not a valid {what} name (letters, digits, '_', '$', '-'; "
                           "not starting with a digit)")
    if len(name.encode()) > MAX_NAME:
        raise t.error(key, f"{what} name {name!r} is longer than {MAX_NAME} bytes")
    if what == "role":
        if name.lower() in _RESERVED_ROLES:
            raise t.error(key, f"{name!r}{source} is reserved in PostgreSQL and cannot be a role name")
        if name.startswith("pg_"):
            raise t.error(key, f"{name!r}{source}: role names starting with pg_ are reserved in PostgreSQL")


def _password(t: Table, key: str, file_key: str, secrets: set[str], env: Mapping[str, str] | None = None) -> str | None:
    if t.has(key) and t.has(file_key):
        raise t.error(file_key, f"give either {key} or {file_key}, not both")
    password = t.string(key, None)
    path = t.string(file_key, None)
    where: str | None = key
    if password is None and path is None and env is not None:
        if env.get("POSTGRES_PASSWORD"):
            password, where = env["POSTGRES_PASSWORD"], None
        elif env.get("POSTGRES_PASSWORD_FILE"):
            path, where = env["POSTGRES_PASSWORD_FILE"], None
    if path is not None:
        where = file_key if t.has(file_key) else None
        source = "" if where else " ($POSTGRES_PASSWORD_FILE)"
        if not os.path.isabs(path):
            raise t.error(where, f"password file{source} must be an absolute path (got {path!r})")
        try:
            password = read_secret_file(path)
        except OSError as e:
            raise t.error(where, f"cannot read password file {path}{source}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise t.error(where, f"password file {path}{source} is not UTF-8 text") from None
        if not password:
            raise t.error(where, f"password file {path}{source} is empty")
    if password is not None:
        if password == "":
            raise t.error(where, "must not be empty (leave it out for no password)")
        if "\0" in password:
            raise t.error(where, "must not contain a NUL character")
        secrets.add(password)
    return password


def _entries(t: Table, key: str) -> list[Table]:
    value = t.raw(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise t.error(key, f"expected a list of tables ([[programs.NAME.{key}]])")
    return [Table(v, t.file, f"{t.where}.{key}[{i}]") for i, v in enumerate(value)]


def _roles(t: Table, superuser: str, secrets: set[str]) -> tuple[Role, ...]:
    roles: list[Role] = []
    for entry in _entries(t, "roles"):
        name = entry.string("name")
        _check_name(entry, "name", name, "role")
        if name == superuser:
            raise entry.error("name", f"{name!r} is the superuser: set its password with superuser_password")
        if any(r.name == name for r in roles):
            raise entry.error("name", f"role {name!r} is listed twice")
        password = _password(entry, "password", "password_file", secrets)
        role = Role(name=name, password=password, login=entry.boolean("login", True),
                    superuser=entry.boolean("superuser", False), createdb=entry.boolean("createdb", False))
        entry.done()
        roles.append(role)
    return tuple(roles)


def _databases(t: Table, superuser: str, role_names: set[str]) -> tuple[Database, ...]:
    databases: list[Database] = []
    for entry in _entries(t, "databases"):
        name = entry.string("name")
        _check_name(entry, "name", name, "database")
        if name in ("template0", "template1"):
            raise entry.error("name", f"{name!r} is a template database PostgreSQL manages itself")
        if any(d.name == name for d in databases):
            raise entry.error("name", f"database {name!r} is listed twice")
        owner = entry.string("owner", superuser)
        if owner not in role_names:
            raise entry.error("owner", f"no role named {owner!r} (add it to roles)")
        extensions = entry.string_list("extensions", (), allow_empty=True)
        for ext in extensions:
            if not _NAME.match(ext) or len(ext.encode()) > MAX_NAME:
                raise entry.error("extensions", f"{ext!r} is not a valid extension name")
        entry.done()
        databases.append(Database(name=name, owner=owner, extensions=tuple(dict.fromkeys(extensions))))
    return tuple(databases)
