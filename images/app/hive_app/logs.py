"""Logging: one logger for the app ("hive_app"), passwords redacted, probe requests kept quiet."""

import logging
from typing import Any

log = logging.getLogger("hive_app")

# the probes of hive-init (and of Docker/Kubernetes) call these every few seconds
QUIET_PATHS = ("/api/v1/health", "/api/v1/live")


class Redact(logging.Filter):
    """Replaces each secret in a record's message by *** (the message is formatted first)."""

    def __init__(self, secrets: tuple[str, ...]):
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for secret in self.secrets:
            redacted = redacted.replace(secret, "***")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class OneLine(logging.Filter):
    """Turns a record's traceback into one `Type: message` suffix (asyncpg's pool logs a full
    traceback each time it fails to reconnect while the database is down)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            text = str(error).strip()
            record.msg = f"{record.getMessage()}: {type(error).__name__}" + (f": {text}" if text else "")
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


# logger filters only see records made by that very logger, so each logging module is named
_LOGGERS = ("hive_app", "asyncpg.pool")


def install_redaction(secrets: tuple[str, ...]) -> None:
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        for f in list(logger.filters):
            if isinstance(f, (Redact, OneLine)):
                logger.removeFilter(f)
        if name != "hive_app":
            logger.addFilter(OneLine())
        logger.addFilter(Redact(secrets))


class QuietProbes(logging.Filter):
    """Drops uvicorn access lines of successful probe requests; failures are still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            path, status = args[2], args[4]
            if isinstance(path, str) and path.split("?", 1)[0] in QUIET_PATHS and isinstance(status, int) and status < 400:
                return False
        return True


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's and the app's lines on stderr, without timestamps (the supervisor adds its own)."""
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
        "filters": {"quiet_probes": {"()": "hive_app.logs.QuietProbes"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain"},
            "access": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain",
                       "filters": ["quiet_probes"]},
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "uvicorn.error": {"level": upper},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "hive_app": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "asyncpg": {"handlers": ["stderr"], "level": upper, "propagate": False},
        },
    }
