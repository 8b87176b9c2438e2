"""The converter's two small codecs, checked against the real thing on random input: its INI
reader against RawConfigParser as supervisord configures it, its TOML writer against tomllib."""

import configparser
import io
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hive_init.convert import _toml
from hive_init.convert._ini import Document, IniError

_piece = st.sampled_from(["[", "]", "=", ":", ";", "#", " ", "\t", "a", "B", "x_y", "%(", ")s", "\"", "'",
                          "program:", "DEFAULT", "\r", "\r\n", "\x0b", "\u00a0", "é"])
_junk = st.lists(_piece, max_size=8).map("".join)
_header = st.builds(lambda name: f"[{name}]", st.sampled_from(["program:a", "DEFAULT", "supervisord", "a]b", " x "]))
_setting = st.builds(lambda ws, k, sep, v: f"{ws}{k}{sep}{v}", st.sampled_from(["", "", " ", "\t", "    "]),
                     st.sampled_from(["command", "Key", "a b", "", "x"]), st.sampled_from(["=", " = ", ":", " : "]),
                     st.sampled_from(["", "v", "v ; c", "v;c", "v #c", "#", "a=b", "[x]"]))
_quiet = st.sampled_from(["", "  ", "; comment", "# comment", "   more", "\tmore ; c"])
_line = st.one_of(_junk, _header, _setting, _setting, _quiet, _quiet)
_text = st.tuples(st.sampled_from(["", "[program:a]", "[DEFAULT]"]), st.lists(_line, max_size=14)).map(
    lambda t: "\n".join([t[0], *t[1]]))


def _reference(text):
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";", "#"), strict=False)
    try:
        parser.read_file(io.StringIO(text, newline=None), "x.conf")  # as supervisord reads a file
    except configparser.Error:
        return None
    return {s: dict(parser.items(s)) for s in parser.sections()}, dict(parser.defaults())


@settings(max_examples=250, deadline=None)
@given(_text)
def test_ini_reader_agrees_with_rawconfigparser(text):
    doc = Document()
    try:
        doc.read(text, "x.conf")
        mine = ({name: {**{k: o.value for k, o in doc.defaults.items()},
                        **{k: o.value for k, o in s.options.items()}} for name, s in doc.sections.items()},
                {k: o.value for k, o in doc.defaults.items()})
    except IniError:
        mine = None
    assert mine == _reference(text)


def test_ini_reader_knows_lines_across_files():
    doc = Document()
    doc.read("[program:a]\ncommand = /bin/a  ; a comment\nenvironment = A=1,\n    B=2\n\n[program:b]\n", "main.conf")
    doc.read("\n[program:a]\ncommand=/bin/other\n", "more.conf")
    a = doc.sections["program:a"]
    assert (a.file, a.line) == ("main.conf", 1)
    assert (a.options["command"].value, a.options["command"].file, a.options["command"].line) == ("/bin/other", "more.conf", 3)
    env = a.options["environment"]
    assert (env.value, env.line) == ("A=1,\nB=2", 3)
    with pytest.raises(IniError) as e:
        Document().read("[a]\nk=v\n  \njunk\n", "bad.conf")
    assert (e.value.file, e.value.line) == ("bad.conf", 4)


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text(min_size=1))
def test_toml_strings_and_keys_round_trip(text, name):
    doc = f"{_toml.key(name)} = {_toml.string(text)}\n{_toml.comment(text)}\nlist = {_toml.value([text, 1, True])}\n"
    assert tomllib.loads(doc) == {name: text, "list": [text, 1, True]}


def test_toml_values():
    assert _toml.value({"exec": ["pg_isready", "-q"]}) == '{ exec = ["pg_isready", "-q"] }'
    assert _toml.key("web.1") == '"web.1"' and _toml.key("web-1") == "web-1"
    assert _toml.string('a"b\\c\n\x7f') == '"a\\"b\\\\c\\n\\u007F"'
    assert _toml.comment("two\nlines") == "# two\\nlines"
