"""Settings from the environment, checked once at start with one-line errors.

HIVE_DATABASE_URL  postgresql://user:password@host:port/db (a SQLAlchemy-style
                   postgresql+psycopg:// or postgres:// URL is accepted; the +driver is dropped)
HIVE_DATABASE_PASSWORD  the password, if not in the URL (it then needs no URL-escaping);
                   it wins over a password in the URL
HIVE_API_PORT      the port to listen on (default from HIVE_SERVICE: genie 48886, agent 38886)
HIVE_SERVICE       genie or agent (default from the port: 48886 genie, 38886 agent)
HIVE_API_HOST      the address to listen on (default 0.0.0.0)
HIVE_LOG_LEVEL     debug, info, warning or error (default info)
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

SERVICE_PORTS = {"genie": 48886, "agent": 38886}
_SCHEME = re.compile(r"^(postgres|postgresql)(\+[A-Za-z0-9_.-]+)?://", re.IGNORECASE)


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    service: str
    database_url: str  # normalised to postgresql://, may hold the password: never log it (use safe_url)
    port: int
    database_password: str | None = None  # HIVE_DATABASE_PASSWORD, given to asyncpg apart from the URL
    host: str = "0.0.0.0"
    log_level: str = "info"

    @property
    def safe_url(self) -> str:
        return redact_url(self.database_url)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The password as it may appear in text: raw and percent-decoded."""
        found = {self.database_password or ""}
        try:
            password = urlsplit(self.database_url).password
        except ValueError:
            password = None
        if password:
            found |= {password, unquote(password)}
        return tuple(sorted(p for p in found if p))


def normalise_url(url: str) -> str:
    """postgresql+psycopg://… or postgres://… → postgresql://… (asyncpg speaks the plain form)."""
    url = url.strip()
    if not _SCHEME.match(url):
        raise SettingsError(f"HIVE_DATABASE_URL: expected a postgresql:// URL (got {redact_url(url)!r})")
    return _SCHEME.sub("postgresql://", url, count=1)


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, safe for logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "<unparsable URL>"


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    url = env.get("HIVE_DATABASE_URL", "").strip()
    if not url:
        raise SettingsError("HIVE_DATABASE_URL is not set (e.g. postgresql://hive:PASSWORD@127.0.0.1:5432/hive_genie)")
    database_url = normalise_url(url)

    service = env.get("HIVE_SERVICE", "").strip().lower() or None
    if service is not None and service not in SERVICE_PORTS:
        raise SettingsError(f"HIVE_SERVICE: expected genie or agent (got {service!r})")
    port_text = env.get("HIVE_API_PORT", "").strip()
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise SettingsError(f"HIVE_API_PORT: expected a port number (got {port_text!r})")
        port = int(port_text)
    else:
        port = SERVICE_PORTS[service or "genie"]
    if service is None:
        by_port = {p: s for s, p in SERVICE_PORTS.items()}
        if port not in by_port:
            raise SettingsError(f"HIVE_SERVICE is not set and port {port} is neither 48886 (genie) nor 38886 (agent)")
        service = by_port[port]

    log_level = env.get("HIVE_LOG_LEVEL", "info").strip().lower() or "info"
    if log_level not in ("debug", "info", "warning", "error"):
        raise SettingsError(f"HIVE_LOG_LEVEL: expected debug, info, warning or error (got {log_level!r})")
    return Settings(
        service=service,
        database_url=database_url,
        database_password=env.get("HIVE_DATABASE_PASSWORD") or None,
        port=port,
        host=env.get("HIVE_API_HOST", "").strip() or "0.0.0.0",
        log_level=log_level,
    )
