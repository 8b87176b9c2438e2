"""The redactor (hive_init/redact.py): what it masks in a line of text, and what it leaves alone."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hive_init.redact import MASK, Redactor


def test_a_known_secret_is_masked_wherever_it_appears():
    r = Redactor(["s3cr3t-value"])
    assert r("login with s3cr3t-value now; again:s3cr3t-value") == f"login with {MASK} now; again:{MASK}"


def test_the_longest_secret_is_masked_whole():
    r = Redactor(["abc", "abcdef"])
    assert r("x abcdef y abc") == f"x {MASK} y {MASK}"


def test_empty_secrets_are_ignored():
    assert Redactor(["", ""])("nothing to hide") == "nothing to hide"


@pytest.mark.parametrize(("line", "expected"), [
    ("postgresql://app:hunter2@db:5432/app", f"postgresql://app:{MASK}@db:5432/app"),
    ("redis://:pw@cache/0", f"redis://:{MASK}@cache/0"),
    ("see https://example.com/a:b", "see https://example.com/a:b"),  # no user:password@
])
def test_url_credentials(line, expected):
    assert Redactor()(line) == expected


@pytest.mark.parametrize(("line", "expected"), [
    ("DB_PASSWORD=hunter2", f"DB_PASSWORD={MASK}"),
    ("--password=hunter2 --user=app", f"--password={MASK} --user=app"),
    ('{"api_token": "abc123"}', f'{{"api_token": "{MASK}"}}'),
    ("client_secret: xyz", f"client_secret: {MASK}"),
    ("PGPASSWORD='pw'", f"PGPASSWORD='{MASK}'"),
    ("PGPASSWORD='p w' psql", f"PGPASSWORD='{MASK}' psql"),  # a quoted value is masked whole, spaces and all
    ('PGPASSWORD="p w; x" psql', f'PGPASSWORD="{MASK}" psql'),
])
def test_key_value_shaped_secrets(line, expected):
    assert Redactor()(line) == expected


@pytest.mark.parametrize("line", [
    'DB_PASSWORD = "${DB_PASSWORD}"',           # a reference to a secret is not one
    "password: ${APP_PASSWORD:-}",
    "the password was changed",                 # no key = value shape
    "tokenizer loaded",
])
def test_references_and_prose_are_left_alone(line):
    assert Redactor()(line) == line


def test_an_already_masked_value_stays_masked_once():
    r = Redactor(["hunter2"])
    assert r("DB_PASSWORD=hunter2") == f"DB_PASSWORD={MASK}"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40),
       st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789!#%", min_size=6, max_size=20))
def test_a_known_secret_never_survives(prefix, secret):
    out = Redactor([secret])(prefix + secret + prefix)
    assert secret not in out
