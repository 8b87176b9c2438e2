"""Keeping secrets out of every line hive-init writes: log events, child output, status."""

import re
from collections.abc import Iterable

# The one list of what names a secret, for the whole project: variables and config keys whose
# name contains one of these hold a secret (config expansion remembers their values, children
# never get them through environment_passthrough's patterns, key=value text is masked).
SECRET_WORDS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "API_KEY", "PRIVATE_KEY")
SECRET_NAME = re.compile("|".join(SECRET_WORDS), re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    return SECRET_NAME.search(name) is not None


# scheme://user:password@host → scheme://user:***@host
_URL_CREDENTIALS = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@")
# PASSWORD=..., "password": "...", password '...' in key/value shaped text
# (not `${NAME_PASSWORD}` or `${NAME_PASSWORD:-…}`: a reference to a secret is not a secret)
_KEY_VALUE = re.compile(
    r"(?P<key>(?<![{\w.-])[\w.-]*(?:password|passwd|secret|token|api_key)[\w.-]*\b[\"']?\s*[=:]\s*[\"']?)"
    # a quoted value runs to its closing quote (spaces included), a bare one to a space or separator
    r"(?!\$\{)(?P<value>(?<=\")[^\"\n]+|(?<=')[^'\n]+|[^\s\"',;&]+)",
    re.IGNORECASE,
)
# a SCRAM verifier (what PostgreSQL stores, and what `log_statement` shows of ALTER ROLE …
# PASSWORD): enough to log in by replaying it against a server that trusts it, never shown
_SCRAM = re.compile(r"SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+")
# PASSWORD '…' in SQL (CREATE/ALTER ROLE/USER, in a statement log line), '' escapes included
_SQL_PASSWORD = re.compile(r"(?P<key>\bPASSWORD\s+)(?:E?'(?:[^']|'')*'|\$\$.*?\$\$)", re.IGNORECASE)
MASK = "***"


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()):
        # longest first, so a secret that contains another is masked whole
        self.secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        if "://" in text:
            text = _URL_CREDENTIALS.sub(rf"\g<head>{MASK}@", text)
        if "SCRAM-SHA-256$" in text:
            text = _SCRAM.sub(MASK, text)
        if ("ASSWORD" in text or "assword" in text) and "'" in text or "$$" in text:
            text = _SQL_PASSWORD.sub(lambda m: m.group("key") + "'" + MASK + "'", text)
        if "ass" in text or "ecret" in text or "oken" in text or "pi_key" in text or "PASS" in text:
            text = _KEY_VALUE.sub(lambda m: m.group("key") + (m.group("value") if m.group("value") == MASK else MASK), text)
        return text


redact = Redactor()


def set_secrets(secrets: Iterable[str]) -> None:
    global redact
    redact = Redactor(secrets)
