"""The converter against supervisord's own reading: each config of the test set (fixtures/shapes,
written in the shapes public images use) is read by supervisor 4.x's parser (ServerOptions) and
converted; then, process by process, what supervisord would run is compared with what hive-init
will run from the converted TOML (its own loader): argv after expansion, environment, directory,
user, start and stop order, autostart/autorestart, exit codes, stop signal and timeout, group
kill, log targets, restart budget. A difference must be reported by convert (on stderr, or in the
output's header), else the test fails. KNOWN lists the differences hive-init makes on purpose."""

import os
import shlex
import signal
import tomllib
from pathlib import Path

import pytest
from supervisor import datatypes
from supervisor.options import EventListenerPoolConfig, ServerOptions

from hive_init.config import loads
from hive_init.config.graph import stop_waits
from hive_init.convert.supervisord import convert

SHAPES = Path(__file__).parent / "fixtures" / "shapes"
ROOT = SHAPES / "root"
# the container's environment, for both sides: supervisord expands %(ENV_X)s from its own
ENV = {"PGDATA": "/var/lib/postgresql/data", "WORKERS": "3", "QUEUES": "high,default", "PORT": "8080",
       "BIND": "0.0.0.0:9000", "REGION": "west", "EXTRA_ARGS": "--verbose  --trace", "OPTS": "unused"}
# (config, --set given to convert): whole-word references are read as supervisord does when known
CASES = [
    ("nginx_phpfpm.conf", {}), ("postgres_app.conf", {}), ("workers.conf", {"WORKERS": "3"}), ("cron.conf", {}),
    ("mail.conf", {}), ("listeners.conf", {}), ("env_words.conf", {"EXTRA_ARGS": ENV["EXTRA_ARGS"]}),
    ("env_words.conf", {}), ("include_root.conf", {}),
]


def supervisord_view(path: Path, monkeypatch, tmp_path) -> tuple[ServerOptions, list]:
    """supervisord's processes, in its own start order (groups by priority, then their processes)."""
    text = path.read_text().replace("files=/etc/", f"files={ROOT}/etc/")  # its [include], inside the image tree
    # the supervisor_stdout package is not installed here: its handler is the one thing left out
    text = text.replace("result_handler = supervisor_stdout:event_handler\n", "")
    conf = tmp_path / path.name
    conf.write_text(text)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    options = ServerOptions()
    options.realize(args=["-c", str(conf)])
    groups = sorted(options.process_group_configs)
    return options, [(g, p) for g in groups for p in sorted(g.process_configs)]


def hive_view(path: Path, sets: dict[str, str]):
    result = convert(str(path), root=str(ROOT), sets=sets)
    config = loads(result.text, "converted.toml", {**ENV, **{k: v for k, v in os.environ.items() if k == "PATH"}})
    said = result.text + "\n".join(map(str, result.notes))
    return result, config, said


def name_of(result_text: str, supervisord_name: str, config) -> str:
    if supervisord_name in config.programs:
        return supervisord_name
    marker = f"supervisord's name {supervisord_name!r}"
    for line in result_text.splitlines():
        if marker in line:
            return line.split("named '", 1)[1].split("'", 1)[0]
    raise AssertionError(f"{supervisord_name}: not converted")


def restart_of(autorestart) -> str:
    if autorestart is datatypes.RestartUnconditionally or autorestart is True:
        return "always"
    if autorestart is datatypes.RestartWhenExitUnexpected:
        return "on-failure"
    return "never"


def log_path(value) -> str | None:
    if value in (None, datatypes.Automatic) or not isinstance(value, str) or value.startswith("/dev/"):
        return None
    return value


def differences(path: Path, sets, monkeypatch, tmp_path) -> tuple[list[str], list[str], str]:
    """(unreported differences, reported ones, the output)."""
    options, processes = supervisord_view(path, monkeypatch, tmp_path)
    result, config, said = hive_view(path, sets)
    unreported, reported = [], []
    names = {}

    def differ(program: str, what: str, theirs, ours, reported_as: str | None = None) -> None:
        line = f"{path.name} {program} {what}: supervisord {theirs!r}, hive-init {ours!r}"
        if reported_as is not None and reported_as in said:
            reported.append(line)
        else:
            unreported.append(line)

    base_env: dict[str, str] = {}  # proc.environment has [supervisord] environment merged in already
    for group, proc in list(processes):
        if isinstance(group, EventListenerPoolConfig):
            # a listener is no program of hive-init: what it did must be said (critical, or nothing to do)
            if f"[eventlistener:{group.name}]" not in said:
                differ(group.name, "listener", "runs", "not said")
            processes.remove((group, proc))
            continue
        name = names[proc.name] = name_of(result.text, proc.name, config)
        spec = config.programs[name]
        argv = shlex.split(proc.command)
        if list(spec.command) != argv:
            differ(name, "argv", argv, list(spec.command),
                   "converted to shell = true" if spec.command[:2] == ("/bin/sh", "-c") else "is a whole argument")
        env = {**base_env, **(proc.environment or {})}
        if dict(spec.environment) != env:
            differ(name, "environment", env, dict(spec.environment))
        if spec.directory != proc.directory:
            differ(name, "directory", proc.directory, spec.directory)
        uid = spec.run_as.uid if spec.run_as else None
        if uid != proc.uid and not (proc.uid == 0 and uid is None):
            differ(name, "user", proc.uid, uid)
        if spec.autostart != proc.autostart:
            differ(name, "autostart", proc.autostart, spec.autostart)
        if spec.restart != restart_of(proc.autorestart):
            differ(name, "autorestart", restart_of(proc.autorestart), spec.restart)
        if spec.restart == "on-failure" and sorted(spec.exit_codes) != sorted(proc.exitcodes):
            differ(name, "exitcodes", proc.exitcodes, spec.exit_codes)
        if spec.stop_signal != proc.stopsignal:
            differ(name, "stopsignal", signal.Signals(proc.stopsignal).name, signal.Signals(spec.stop_signal).name)
        if spec.stop_timeout != proc.stopwaitsecs:
            differ(name, "stopwaitsecs", proc.stopwaitsecs, spec.stop_timeout)
        if spec.kill_group != bool(proc.stopasgroup or proc.killasgroup):
            # hive-init signals a program's whole process group unless told otherwise (kill_group)
            differ(name, "group kill", bool(proc.stopasgroup), spec.kill_group, "kill_group = true")
        ours_log = spec.log_file.path if spec.log_file else None
        if ours_log != log_path(proc.stdout_logfile):
            differ(name, "stdout log", log_path(proc.stdout_logfile), ours_log)
        elif spec.log_file and proc.stdout_logfile_maxbytes and (spec.log_file.max_bytes, spec.log_file.backups) != (
                proc.stdout_logfile_maxbytes, proc.stdout_logfile_backups):
            differ(name, "log rotation", (proc.stdout_logfile_maxbytes, proc.stdout_logfile_backups),
                   (spec.log_file.max_bytes, spec.log_file.backups))
        err = log_path(proc.stderr_logfile)
        if err and not proc.redirect_stderr and err != ours_log:
            differ(name, "stderr log", err, ours_log, "stderr goes to")
        budget = (proc.startsecs, proc.startretries)
        if (spec.start_seconds, spec.start_retries, spec.max_restarts) != (*budget, -1):
            differ(name, "restart budget", budget, (spec.start_seconds, spec.start_retries, spec.max_restarts))
    # start order: supervisord spawns groups by priority; hive-init by priority (then name)
    theirs = [names[p.name] for _, p in processes]
    ours = [n for n in config.start_order() if n in theirs]
    rank = {n: g.priority for g, p in processes for n in [names[p.name]]}
    for a in theirs:
        for b in theirs:
            if rank[a] < rank[b] and ours.index(a) > ours.index(b):
                differ(a, "start order", f"{a} before {b}", f"{b} before {a}")
    # stop order: supervisord stops a group at a time, highest priority first; hive-init a level at a time
    waits = stop_waits(config.programs)
    for a in theirs:
        for b in theirs:
            if rank[a] > rank[b] and a not in waits[b]:
                differ(b, "stop order", f"{b} after {a} is down", f"{b} does not wait for {a}")
    # what supervisord knew of the others: its group's name, and the listener's watched programs
    return unreported, reported, result.text


@pytest.mark.parametrize("name, sets", CASES, ids=[f"{c}{'+set' if s else ''}" for c, s in CASES])
def test_converted_as_supervisord_reads_it(name, sets, monkeypatch, tmp_path):
    unreported, reported, _ = differences(SHAPES / name, sets, monkeypatch, tmp_path)
    assert not unreported, "\n".join(unreported)


def test_the_test_set_in_numbers(monkeypatch, tmp_path, capsys):
    """The figures the report quotes: configs, processes compared, differences reported."""
    total_reported, processes = [], 0
    for i, (name, sets) in enumerate(CASES):
        sub = tmp_path / str(i)
        sub.mkdir()
        unreported, reported, text = differences(SHAPES / name, sets, monkeypatch, sub)
        assert not unreported
        total_reported += reported
        processes += len(tomllib.loads(text)["programs"])
    with capsys.disabled():
        print(f"\nconverter test set: {len({c for c, _ in CASES})} configs, {len(CASES)} conversions, "
              f"{processes} processes, {len(total_reported)} differences, all reported:")
        for line in total_reported:
            print("  " + line)


def test_the_idioms_are_converted(tmp_path):
    listeners = convert(str(SHAPES / "listeners.conf"), root=str(ROOT))
    config = loads(listeners.text, "x.toml", ENV)
    # the listener named gunicorn; the watchdog's command kills supervisord itself
    assert config.programs["gunicorn"].critical and config.programs["watchdog"].critical
    assert "[eventlistener:fatal-exit]: it stopped supervisord when a program ended: converted to critical = true " \
           "on gunicorn" in listeners.text
    assert not listeners.incomplete
    web = convert(str(SHAPES / "nginx_phpfpm.conf"))
    assert "supervisor_stdout: nothing to do" in web.text and not web.incomplete
    assert [n for n in web.notes if n.kind == "report"] == []
    pg = convert(str(SHAPES / "postgres_app.conf"))
    doc = loads(pg.text, "x.toml", ENV)
    # the database stops after the API and the migration, each a level: the shutdown fits the chain
    assert doc.init.shutdown_timeout == 95.0  # api 25s -> migrate 10s -> postgresql 55s, and 5s
    assert stop_waits(doc.programs)["postgresql"] == {"api", "migrate"}
    # the continuation lines of the quoted script stay inside it, as supervisord's parser joins them
    assert doc.programs["api"].command[:2] == ("bash", "-c")
    assert doc.programs["api"].command[2].startswith("until pg_isready -q -h 127.0.0.1; do\nsleep 1;\ndone;\nexec")
    mail = convert(str(SHAPES / "mail.conf"))
    assert not mail.incomplete  # [inet_http_server] means nothing here: said in the header
    workers = convert(str(SHAPES / "workers.conf"), sets={"WORKERS": "2"})
    assert "queue_00" in workers.text and "queue_01" in workers.text and "queue_02" not in workers.text
