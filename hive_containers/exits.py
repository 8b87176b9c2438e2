"""How a hive-containers command ends: its exit statuses (README: "hive-containers") and `Failure`,
the one way a command fails: one line, maybe a few lines of detail (the last health output, the
last log lines, the end of a build), and the exit status the command line returns.
"""

from __future__ import annotations

from collections.abc import Iterable

OK = 0
NOT_HEALTHY = 1  # not healthy, not running, not healthy within --timeout, or stopped but not cleanly
ENGINE = 2  # no engine, its daemon unreachable, or one of its commands failed
USAGE = 3  # bad command line, unknown service
CANNOT_START = 4  # a port already in use, the password unset, compose files not found or unreadable
BUILD = 5  # an image does not build


class Failure(Exception):
    def __init__(self, code: int, message: str, details: Iterable[str] = ()):
        super().__init__(message)
        self.code = code
        self.details = list(details)
