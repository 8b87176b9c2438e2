"""The config field readers (hive_init/config/fields.py): each error is one line that names the
file and the field; unknown fields are caught with a suggestion. No config file, no processes."""

import signal

import pytest

from hive_init.config.errors import ConfigError
from hive_init.config.fields import Table, parse_signal, parse_size


def table(**data):
    return Table(data, "hive-init.toml", "programs.app")


def error_of(read) -> str:
    with pytest.raises(ConfigError) as e:
        read()
    text = str(e.value)
    assert "\n" not in text
    return text


def test_a_missing_required_field_names_its_place():
    assert error_of(lambda: table().string("command")) == "hive-init.toml: programs.app.command: is required"


def test_defaults_are_returned_as_given():
    t = table()
    assert t.string("user", None) is None
    assert t.duration("stop_timeout", 10.0) == 10.0
    assert t.integer("priority", 999) == 999
    assert t.string_list("args", ()) == ()


@pytest.mark.parametrize(("read", "value", "message"), [
    ("string", 3, "expected a string, got an integer"),
    ("boolean", "yes", "expected true or false, got a string"),
    ("integer", True, "expected an integer, got a boolean"),  # bool is an int in Python, not here
    ("integer", 1.5, "expected an integer, got a number"),
    ("number", "1", "expected a number, got a string"),
    ("string_list", "sleep 1", "expected a list of strings, got a string"),
    ("string_list", ["a", 1], "expected a list of strings, got a list"),
    ("string_list", [], "must not be empty"),
    ("table", [], "expected a table, got a list"),
])
def test_wrong_types(read, value, message):
    t = table(field=value)
    assert error_of(lambda: getattr(t, read)("field")) == f"hive-init.toml: programs.app.field: {message}"


def test_integer_bounds():
    assert error_of(lambda: table(n=0).integer("n", minimum=1)).endswith("programs.app.n: must be at least 1 (got 0)")
    assert error_of(lambda: table(n=9).integer("n", maximum=5)).endswith("must be at most 5 (got 9)")
    assert table(n=3).integer("n", minimum=1, maximum=5) == 3


def test_number_is_a_float_and_has_a_minimum():
    assert table(x=2).number("x") == 2.0 and isinstance(table(x=2).number("x"), float)
    assert error_of(lambda: table(x=-1).number("x", minimum=0)).endswith("must be at least 0 (got -1)")


def test_duration_size_signal_choice():
    t = table(d="1m30s", s="10MB", sig="term", c="always")
    assert t.duration("d") == 90.0
    assert t.size("s") == 10 * 1024 * 1024
    assert t.signal("sig") == signal.SIGTERM
    assert t.choice("c", ("always", "never")) == "always"
    assert error_of(lambda: table(d="soon").duration("d")).startswith("hive-init.toml: programs.app.d: expected a duration")
    assert "must be one of always, never (got 'sometimes')" in error_of(
        lambda: table(c="sometimes").choice("c", ("always", "never")))


def test_a_sub_table_names_its_whole_path():
    sub = table(readiness={"period": "x"}).table("readiness")
    assert error_of(lambda: sub.duration("period")).startswith("hive-init.toml: programs.app.readiness.period:")
    assert table().table("readiness", None) is None
    assert table(readiness={"exec": ["true"]}).sub("readiness", lambda t: t.string_list("exec")) == ("true",)


def test_an_unknown_field_is_a_typo_with_a_suggestion():
    t = table(comand=["x"])
    assert error_of(lambda: t.reject_unknown({"command", "user"})) == \
        "hive-init.toml: programs.app.comand: unknown field (did you mean 'command'?)"
    t = table(command=["x"], colour="red")
    t.string_list("command")
    assert error_of(t.done) == "hive-init.toml: programs.app.colour: unknown field"
    t = table(command=["x"])
    t.string_list("command")
    t.done()  # everything read: nothing to say


@pytest.mark.parametrize(("value", "number"), [
    ("TERM", signal.SIGTERM), ("SIGINT", signal.SIGINT), ("hup", signal.SIGHUP), (9, signal.SIGKILL),
    ("15", signal.SIGTERM), (" 10 ", signal.SIGUSR1),
])
def test_parse_signal(value, number):
    assert parse_signal(value) == number


@pytest.mark.parametrize("bad", ["NOPE", "SIG", 0, 100000, True, 1.5, None, "١٥"])  # "١٥": Arabic-Indic 15
def test_parse_signal_refuses(bad):
    with pytest.raises(ValueError):
        parse_signal(bad)


@pytest.mark.parametrize(("value", "size"), [
    (0, 0), (512, 512), ("1KB", 1024), ("1k", 1024), ("2MiB", 2 * 1024**2), ("1.5G", int(1.5 * 1024**3)),
    ("100", 100), ("100B", 100), (" 4 MB ", 4 * 1024**2),
])
def test_parse_size(value, size):
    assert parse_size(value) == size


@pytest.mark.parametrize("bad", [-1, True, "", "MB", "ten MB", "1TB", "1.2.3K", None])
def test_parse_size_refuses(bad):
    with pytest.raises(ValueError, match="expected a size like"):
        parse_size(bad)
