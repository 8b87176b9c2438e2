"""`run [-c CONFIG]` and `status [--json] [NAME...]` skip argparse (it is most of their start-up
time). They must read the command line exactly as the parser does, or hand it to the parser:
every shape here is checked against the real parser, so an option added to it later and not to
the fast path shows up as a difference."""

import pytest

from hive_init.cli import _parser, _plain_run, _plain_status

STATUS = [
    ["status"], ["status", "--json"], ["status", "api", "db"], ["status", "--json", "api"],
    ["-s", "/run/x.sock", "status", "api", "--json"], ["-c", "/etc/c.toml", "-s", "/x", "status", "a"],
    ["--socket", "/x", "status"], ["--config", "/c.toml", "status", "--json"],
]
RUN = [["run"], ["run", "-c", "/c.toml"], ["run", "--config", "/c.toml"], ["run", "--config=/c.toml"]]
# what the fast paths leave to the parser: options they do not know, values that look like options
PARSER_ONLY = [["status", "-h"], ["status", "--jsn"], ["-s", "-x", "status"], ["status", "--", "api"],
               ["run", "-c", "-x"], ["run", "-c"], ["run", "--config="], ["run", "-c", "a", "-v"]]


@pytest.mark.parametrize("argv", STATUS, ids=" ".join)
def test_status_reads_as_the_parser_reads_it(argv):
    parsed = vars(_parser().parse_args(argv))
    parsed.pop("version")  # answered before any command is dispatched
    assert vars(_plain_status(argv)) == parsed


@pytest.mark.parametrize("argv", RUN, ids=" ".join)
def test_run_reads_as_the_parser_reads_it(argv):
    parsed = _parser().parse_args(argv)
    assert (_plain_run(argv) or None) == parsed.config


@pytest.mark.parametrize("argv", PARSER_ONLY, ids=" ".join)
def test_anything_else_is_the_parsers(argv):
    assert _plain_status(argv) is None and _plain_run(argv) is None
