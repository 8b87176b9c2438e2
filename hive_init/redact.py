"""Keeping secrets out of every line hive-init writes: log events, child output, status."""

import re
from collections.abc import Iterable

# scheme://user:password@host → scheme://user:***@host
_URL_CREDENTIALS = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@")
# PASSWORD=..., "password": "...", password '...' in key/value shaped text
# (not `${NAME_PASSWORD}` or `${NAME_PASSWORD:-…}`: a reference to a secret is not a secret)
_KEY_VALUE = re.compile(
    r"(?P<key>(?<![{\w.-])[\w.-]*(?:password|passwd|secret|token|api_key)[\w.-]*\b[\"']?\s*[=:]\s*[\"']?)"
    r"(?!\$\{)(?P<value>[^\s\"',;&]+)",
    re.IGNORECASE,
)
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
        if "ass" in text or "ecret" in text or "oken" in text or "pi_key" in text or "PASS" in text:
            text = _KEY_VALUE.sub(lambda m: m.group("key") + (m.group("value") if m.group("value") == MASK else MASK), text)
        return text


redact = Redactor()


def set_secrets(secrets: Iterable[str]) -> None:
    global redact
    redact = Redactor(secrets)
