"""SCRAM-SHA-256 password verifiers, computed here so that a plaintext password never reaches
the server (nor its statement log): `ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...'` stores the
verifier as it is (RFC 5802 / RFC 7677; the format is PostgreSQL's `pg_authid.rolpassword`)."""

import base64
import hashlib
import hmac
import os
import stringprep
import unicodedata

ITERATIONS = 4096  # PostgreSQL's default scram_iterations
SALT_BYTES = 16
PREFIX = "SCRAM-SHA-256$"


def saslprep(password: str) -> bytes:
    """The password as PostgreSQL's SCRAM uses it: SASLprep (RFC 4013) when it applies, else the
    raw UTF-8 bytes (PostgreSQL falls back to those for a password SASLprep prohibits)."""
    raw = password.encode("utf-8")
    if password.isascii():
        return raw
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c))
    text = unicodedata.normalize("NFKC", mapped)
    if not text:
        return raw
    prohibited = (
        stringprep.in_table_c12, stringprep.in_table_c21, stringprep.in_table_c22, stringprep.in_table_c3,
        stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7,
        stringprep.in_table_c8, stringprep.in_table_c9, stringprep.in_table_a1,
    )
    for c in text:
        if any(check(c) for check in prohibited):
            return raw
    # right-to-left text: no left-to-right character, and it must start and end right-to-left
    right_to_left = any(stringprep.in_table_d1(c) for c in text)
    if right_to_left and (any(stringprep.in_table_d2(c) for c in text) or not (
            stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1]))):
        return raw
    return text.encode("utf-8")


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return stored_key, server_key


def verifier(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    stored_key, server_key = _keys(password, salt, iterations)
    b64 = base64.b64encode
    return f"{PREFIX}{iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"


def matches(stored: str | None, password: str) -> bool:
    """Whether `stored` (a rolpassword) is a SCRAM verifier of `password`."""
    if not stored or not stored.startswith(PREFIX):
        return False
    try:
        head, keys = stored[len(PREFIX):].split("$", 1)
        iterations_text, salt_text = head.split(":", 1)
        stored_text, server_text = keys.split(":", 1)
        iterations = int(iterations_text)
        salt = base64.b64decode(salt_text, validate=True)
        want_stored = base64.b64decode(stored_text, validate=True)
        want_server = base64.b64decode(server_text, validate=True)
    except ValueError:
        return False
    if not 1 <= iterations <= 10_000_000:
        return False
    stored_key, server_key = _keys(password, salt, iterations)
    return hmac.compare_digest(stored_key, want_stored) and hmac.compare_digest(server_key, want_server)
