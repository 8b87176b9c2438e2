"""`hive-init convert`'s options and tiers, through the real command line: --set, --root, --strict,
the exit status for what means nothing in hive-init against a real loss, and the output's mode."""

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

from hive_init import exits

SHAPES = Path(__file__).parent / "fixtures" / "shapes"


def convert(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hive_init", "convert", *args], capture_output=True, text=True,
                          timeout=60, env={**{k: v for k, v in os.environ.items() if k != "WORKERS"}, **(env or {})})


def test_boilerplate_is_exit_0_and_a_real_loss_exit_4(tmp_path):
    source = tmp_path / "s.conf"
    source.write_text("[unix_http_server]\nfile=/run/s.sock\n[inet_http_server]\nport=127.0.0.1:9001\n"
                      "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = "
                      "supervisor.rpcinterface:make_main_rpcinterface\n"
                      "[program:a]\ncommand=/bin/a\nstdout_events_enabled=true\nstderr_capture_maxbytes=1MB\n")
    out = convert(str(source))
    assert (out.returncode, out.stderr) == (exits.OK, "")
    assert "#   [inet_http_server]: hive-init has its own control socket" in out.stdout
    source.write_text(source.read_text() + "[fcgi-program:php]\nsocket=tcp://localhost:9000\ncommand=/usr/bin/php-cgi\n")
    out = convert(str(source))
    assert out.returncode == exits.CONVERT_INCOMPLETE
    assert out.stderr.splitlines() == [f"{source}:11: [fcgi-program:php]: not converted: hive-init has no FastCGI "
                                       "socket manager: run the program with its own socket as a [program:x]"]


def test_strict_makes_warnings_fail(tmp_path):
    source = tmp_path / "s.conf"
    source.write_text("[program:cron]\ncommand=/usr/sbin/cron -f >> /var/log/cron.log 2>&1\n")
    assert convert(str(source)).returncode == exits.OK
    strict = convert(str(source), "--strict")
    assert strict.returncode == exits.CONVERT_INCOMPLETE and "warning: converted to shell = true" in strict.stderr


def test_numprocs_from_set_or_the_environment(tmp_path):
    source = SHAPES / "workers.conf"
    missing = convert(str(source))
    assert missing.returncode == exits.CONFIG
    assert "give --set WORKERS=VALUE" in missing.stderr and len(missing.stderr.splitlines()) == 1
    from_env = tomllib.loads(convert(str(source), env={"WORKERS": "2", "QUEUES": "q"}).stdout)["programs"]
    assert [n for n in from_env if n.startswith("queue")] == ["queue_00", "queue_01"]
    from_set = tomllib.loads(convert(str(source), "--set", "WORKERS=4").stdout)["programs"]
    assert [n for n in from_set if n.startswith("queue")] == ["queue_00", "queue_01", "queue_02", "queue_03"]
    assert from_set["queue_00"]["priority"] == 40  # [group:laravel-worker] priority=40
    bad = convert(str(source), "--set", "WORKERS")
    assert bad.returncode == exits.USAGE and "expected NAME=VALUE" in bad.stderr


def test_whole_word_references_split_as_supervisord_does(tmp_path):
    source = tmp_path / "s.conf"
    source.write_text('[program:a]\ncommand=/bin/a %(ENV_ARGS)s "%(ENV_ARGS)s" --x=%(ENV_ARGS)s %(ENV_NONE)s\n')
    doc = tomllib.loads(convert(str(source), "--set", "ARGS=-v  -q", "--set", "NONE=").stdout)
    # with a value known, the command is what supervisord's expansion and split give: unquoted, split
    # at spaces; quoted, one argument; empty, no argument at all
    assert doc["programs"]["a"]["command"] == ["/bin/a", "-v", "-q", "-v  -q", "--x=-v", "-q"]
    unknown = convert(str(source))
    assert unknown.returncode == exits.OK and "%(ENV_ARGS)s is a whole argument" in unknown.stderr


def test_root_reads_absolute_includes_inside_the_image_tree(tmp_path):
    without = convert(str(SHAPES / "include_root.conf"))
    assert without.returncode == exits.CONFIG and "no [program:NAME] section" in without.stderr
    out = convert(str(SHAPES / "include_root.conf"), "--root", str(SHAPES / "root"))
    assert out.returncode == exits.OK
    assert list(tomllib.loads(out.stdout)["programs"]) == ["redis", "web"]


def test_the_output_is_private_when_the_input_is(tmp_path):
    public = tmp_path / "public.conf"
    public.write_text("[program:a]\ncommand=/bin/a\n")
    public.chmod(0o644)
    assert convert(str(public), "-o", str(tmp_path / "a.toml")).returncode == exits.OK
    assert stat.S_IMODE((tmp_path / "a.toml").stat().st_mode) == 0o644
    private = tmp_path / "private.conf"
    private.write_text("[program:a]\ncommand=/bin/a\n")
    private.chmod(0o640)
    assert convert(str(private), "-o", str(tmp_path / "b.toml")).returncode == exits.OK
    assert stat.S_IMODE((tmp_path / "b.toml").stat().st_mode) == 0o600


def test_the_output_is_private_when_it_holds_a_secret(tmp_path):
    source = tmp_path / "s.conf"
    source.write_text('[program:a]\ncommand=/bin/a\nenvironment=DATABASE_URL="postgresql://app:pw123@db/app"\n')
    source.chmod(0o644)
    assert convert(str(source), "-o", str(tmp_path / "c.toml")).returncode == exits.OK
    assert stat.S_IMODE((tmp_path / "c.toml").stat().st_mode) == 0o600


def test_the_converted_stop_chain_passes_check(tmp_path):
    out = tmp_path / "pg.toml"
    assert convert(str(SHAPES / "postgres_app.conf"), "-o", str(out)).returncode == exits.OK
    text = out.read_text().replace('user = "postgres"', "").replace('user = "www-data"', "")
    out.write_text(text)
    check = subprocess.run([sys.executable, "-m", "hive_init", "check", str(out)], capture_output=True, text=True,
                           env={**os.environ, "PGDATA": "/data"})
    assert check.returncode == 0 and check.stderr == "", check.stderr
