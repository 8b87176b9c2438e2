"""SCRAM-SHA-256 verifiers computed by hive-init (checked against a real server's logins in
test_cluster.py, non-ASCII password included) and SQL quoting."""

import base64
import hashlib
import hmac

from hive_init.postgres import scram
from hive_init.postgres.bootstrap import ident, literal


def test_a_verifier_has_postgresql_s_format_and_matches_its_password():
    v = scram.verifier("pencil", salt=b"0123456789abcdef")
    head, keys = v.split("$", 2)[1:]
    assert v.startswith("SCRAM-SHA-256$4096:") and head == "4096:" + base64.b64encode(b"0123456789abcdef").decode()
    stored, server = (base64.b64decode(k) for k in keys.split(":"))
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", b"0123456789abcdef", 4096)
    assert stored == hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    assert server == hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    assert scram.matches(v, "pencil") and not scram.matches(v, "pencil2")
    assert scram.verifier("pencil") != scram.verifier("pencil")  # a fresh salt each time


def test_matches_refuses_what_is_not_a_scram_verifier():
    for stored in (None, "", "md5" + "0" * 32, "SCRAM-SHA-256$x:y$z:w", "SCRAM-SHA-256$4096:!!$a:b", "plain"):
        assert not scram.matches(stored, "pencil")


def test_saslprep():
    assert scram.saslprep("plain ascii\x07") == b"plain ascii\x07"  # ASCII is used as it is
    assert scram.saslprep("I\u00adX") == b"IX"  # soft hyphen maps to nothing
    assert scram.saslprep("a\u00a0b") == b"a b"  # a non-ASCII space is a space
    assert scram.saslprep("\ufb01x") == b"fix"  # NFKC
    assert scram.saslprep("\u2168") == b"IX"
    assert scram.saslprep("a\u0007\u00e9") == "a\u0007\u00e9".encode()  # prohibited: raw bytes
    assert scram.saslprep("\u0627\u0031") == "\u0627\u0031".encode()  # RandALCat not at the end: raw


def test_quoting():
    assert ident("app") == '"app"' and ident('we"ird') == '"we""ird"' and ident("read-only") == '"read-only"'
    assert literal("it's") == "'it''s'"
