"""`supervisorctl` for scripts written against supervisord: hive-init invoked under that name (a
symlink, as busybox does) accepts supervisorctl 4.x's command line and answers in its shape, with
its exit statuses (the LSB ones scripts test: `status` 3 when a named program is not running, 4
for an unknown name; `start` 7 when the program could not be started; 1 for a bad name or
usage). It is a client of the control socket like the `hive-init` control commands
(hive_init.ctl), with only the standard library, so it starts fast.

What has no meaning in hive-init is accepted and said so on stderr, never on stdout: `-s URL`,
`-u`, `-p` (hive-init is reached through its control socket), `-c FILE` when FILE is not a
hive-init config (a supervisord.conf). supervisord's groups do not exist in hive-init: `GROUP:NAME`
means NAME, and `GROUP:*` the programs named GROUP or GROUP followed by `_`, `-` or `.` (how
`hive-init convert` names a group's processes).
"""

import datetime
import os
import sys
import time
from collections.abc import Callable, Iterator

from hive_init.api.protocol import Client, Unreachable
from hive_init.healthcheck import socket_path

# LSB exit statuses, as supervisorctl 4.x uses them
OK = 0
GENERIC = 1  # supervisorctl's LSBInitExitStatuses.GENERIC: bad name, bad usage, unknown command
USAGE = 2  # a command given no argument it needs (supervisorctl's `start` with no name)
NOT_RUNNING_STATUS = 3  # LSBStatusExitStatuses.NOT_RUNNING
UNKNOWN_STATUS = 4  # LSBStatusExitStatuses.UNKNOWN: no such process, or the server cannot be reached
NOT_RUNNING = 7  # LSBInitExitStatuses.NOT_RUNNING
# hive-init's states as supervisord names them
STATE_NAMES = {"READY": "RUNNING", "RUNNING": "RUNNING", "STARTING": "STARTING", "STOPPED": "STOPPED",
               "BACKOFF": "BACKOFF", "STOPPING": "STOPPING", "EXITED": "EXITED", "FATAL": "FATAL"}
STOPPED_STATES = {"STOPPED", "EXITED", "FATAL"}  # supervisord's states.STOPPED_STATES
UP = {"RUNNING", "READY"}
TAIL_BYTES = 1600  # supervisorctl's `tail` without -N
WAIT_STEP = 0.05  # while waiting for a started program to be up: the control socket has no event for it


class Usage(Exception):
    pass


def note(text: str) -> None:
    print(f"supervisorctl: {text}", file=sys.stderr)


def main(argv: list[str]) -> int:
    try:
        options, action, args = _parse(argv)
    except Usage as e:
        print(f"Error: {e}")
        return USAGE
    if action in ("help", "version"):
        return _help() if action == "help" else _version()
    path = socket_path(options.get("socket"))
    try:
        client = Client(path)
    except Unreachable as e:
        print(f"unix://{path} no such file" if "no control socket" in str(e) else f"unix://{path} {e}")
        return UNKNOWN_STATUS if action == "status" else NOT_RUNNING
    try:
        command = COMMANDS.get(action)
        if command is None:
            print(f"*** Unknown syntax: {' '.join([action, *args])}")
            return GENERIC
        return command(Ctl(client, options), args)
    except Unreachable as e:
        note(str(e))
        return UNKNOWN_STATUS if action == "status" else NOT_RUNNING
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


def _parse(argv: list[str]) -> tuple[dict[str, str], str, list[str]]:
    """supervisorctl's getopt options, then the action and its arguments."""
    options: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        opt, _, inline = argv[i].partition("=")
        takes_value = opt in ("-c", "--configuration", "-s", "--serverurl", "-u", "--username", "-p", "--password",
                              "-r", "--history-file")
        if takes_value:
            if inline:
                value = inline
            elif len(opt) == 2 and len(argv[i]) > 2:
                value = argv[i][2:]
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                raise Usage(f"option {opt} requires an argument")
            if opt in ("-c", "--configuration"):
                _configuration(value, options)
            elif opt in ("-s", "--serverurl"):
                note(f"-s {value} ignored: hive-init is reached through its control socket ($HIVE_INIT_SOCKET)")
            elif opt in ("-u", "--username", "-p", "--password"):
                note(f"{opt} ignored: the control socket admits root and the init's own user")
        elif opt in ("-h", "--help"):
            return options, "help", []
        elif opt in ("-i", "--interactive"):
            note("-i ignored: no interactive shell")
        else:
            raise Usage(f"unknown option {opt}")
        i += 1
    rest = argv[i:]
    if not rest:
        note("no interactive shell in hive-init: showing the status")
        return options, "status", []
    return options, rest[0], rest[1:]


def _configuration(path: str, options: dict[str, str]) -> None:
    """-c FILE: a hive-init config gives its control socket (and `avail`/`reread` read it);
    supervisord's own file means nothing here."""
    try:
        import tomllib

        with open(path, "rb") as f:
            data = tomllib.load(f)
        init = data.get("init", {})
        if isinstance(data.get("programs"), dict):
            options["config"] = path
            if isinstance(init, dict) and isinstance(init.get("control_socket"), str) and init["control_socket"]:
                options["socket"] = init["control_socket"]
            return
    except (OSError, ValueError):
        pass
    note(f"-c {path} ignored: not a hive-init config (hive-init is reached through its control socket)")


class Ctl:
    def __init__(self, client: Client, options: dict[str, str]):
        self.client = client
        self.options = options
        self._programs: list[dict] | None = None
        self.failed = False  # a name was unknown

    def snapshot(self) -> dict:
        reply = self.client.request({"cmd": "status"})
        self._programs = reply["programs"]
        return reply

    @property
    def programs(self) -> list[dict]:
        if self._programs is None:
            self.snapshot()
        assert self._programs is not None
        return self._programs

    @property
    def names(self) -> list[str]:
        """The init's programs, in its order."""
        return [p["name"] for p in self.programs]

    def program(self, name: str) -> dict | None:
        return next((p for p in self.snapshot()["programs"] if p["name"] == name), None)

    def resolve(self, spec: str) -> list[str] | None:
        """NAME, GROUP:NAME, GROUP:* or all → program names; None when nothing matches."""
        names = self.names
        if spec == "all":
            return names
        group, sep, name = spec.partition(":")
        if sep and name == "*":
            found = [n for n in names if n == group or (n.startswith(group) and n[len(group):len(group) + 1] in "_-.")
                     and len(n) > len(group)]
            return found or None
        target = name if sep else spec
        return [target] if target in names else None

    def request(self, message: dict, wait: bool = False) -> dict:
        if wait:
            self.client.sock.settimeout(None)  # stopping waits for the program's own stop_timeout
        return self.client.request(message)


def _describe(p: dict) -> str:
    state = STATE_NAMES.get(p["state"], p["state"])
    if state == "RUNNING":
        return f"pid {p['pid']}, uptime {datetime.timedelta(seconds=int(p['uptime'] or 0))}"
    if state in ("FATAL", "BACKOFF"):
        return p["reason"] or f'unknown error (try "tail {p["name"]}")'
    if state in ("STOPPED", "EXITED"):
        # supervisord shows when it stopped; hive-init says why
        return p["reason"] or ("Not started" if p["last_exit"] is None else "")
    return p["reason"] or ""


def _status(ctl: Ctl, args: list[str]) -> int:
    reply = ctl.snapshot()
    status = OK
    if not args or "all" in args:
        shown = reply["programs"]
    else:
        shown = []
        for spec in args:
            names = ctl.resolve(spec)
            if names is None:
                what = "no such group" if spec.endswith(":*") else "no such process"
                print(f"{spec.removesuffix(':*')}: ERROR ({what})")
                status = UNKNOWN_STATUS
                continue
            shown += [p for p in reply["programs"] if p["name"] in names]
    width = max([30, *(len(p["name"]) for p in shown)]) + 3
    for p in shown:
        state = STATE_NAMES.get(p["state"], p["state"])
        print(f"{p['name']:<{width}}{state:<10}{_describe(p)}")
    if any(STATE_NAMES.get(p["state"]) in STOPPED_STATES for p in shown):
        status = NOT_RUNNING_STATUS
    return status


def _each(ctl: Ctl, args: list[str], verb: str) -> Iterator[str]:
    """The programs named, in the order given (all: start order); an unknown name is said where
    it comes, as supervisorctl does, and makes the exit status GENERIC."""
    if not args:
        raise Usage(f"{verb} requires a process name")
    done: set[str] = set()
    for spec in args:
        found = ctl.resolve(spec)
        if found is None:
            print(f"{spec}: ERROR (no such process)")
            ctl.failed = True
            continue
        for name in found:
            if name not in done:
                done.add(name)
                yield name


def _start(ctl: Ctl, args: list[str]) -> int:
    status = OK
    everything = args == ["all"]
    for name in _each(ctl, args, "start"):
        before = ctl.program(name)
        if before is None:
            continue
        if before["state"] in UP or before["state"] in ("STARTING", "BACKOFF"):
            if not everything:
                print(f"{name}: ERROR (already started)")
            continue
        reply = ctl.request({"cmd": "start", "name": name})
        if not reply.get("ok"):
            print(f"{name}: ERROR ({reply.get('message')})")
            status = GENERIC
            continue
        result = _wait_started(ctl, name)
        if result is None:
            print(f"{name}: started")
        else:
            print(f"{name}: ERROR ({result})")
            status = NOT_RUNNING
    return GENERIC if ctl.failed else status


def _wait_started(ctl: Ctl, name: str) -> str | None:
    """supervisorctl's `start` returns once the program is RUNNING (or could not be): the same here."""
    moved = False  # the start request turns EXITED and FATAL into STOPPED at once: only later ones count
    while True:
        p = ctl.program(name)
        if p is None:
            return "no such process"
        if p["state"] in UP:
            return None
        if p["state"] == "FATAL":
            return "spawn error"
        if p["state"] in ("EXITED", "STOPPED"):
            if moved:
                return "abnormal termination"
        else:
            moved = True
        time.sleep(WAIT_STEP)


def _stop(ctl: Ctl, args: list[str]) -> int:
    everything = args == ["all"]
    names = list(_each(ctl, args, "stop"))
    for name in reversed(names) if everything else names:  # all: the reverse of the start order
        p = ctl.program(name)
        if p is None:
            continue
        if p["state"] in ("STOPPED", "EXITED", "FATAL"):
            if not everything:
                print(f"{name}: ERROR (not running)")
            continue
        reply = ctl.request({"cmd": "stop", "name": name}, wait=True)
        print(f"{name}: stopped" if reply.get("ok") else f"{name}: ERROR ({reply.get('message')})")
    return GENERIC if ctl.failed else OK


def _restart(ctl: Ctl, args: list[str]) -> int:
    if not args:
        raise Usage("restart requires a process name")
    stopped = _stop(ctl, args)
    ctl.failed = False
    started = _start(ctl, args)
    return started if started != OK else stopped


def _signal(ctl: Ctl, args: list[str]) -> int:
    if len(args) < 2:
        print("Error: signal requires a signal name and a process name")
        return GENERIC
    signame, targets = args[0], args[1:]
    status = OK
    for name in _each(ctl, targets, "signal"):
        reply = ctl.request({"cmd": "signal", "name": name, "signal": signame})
        if reply.get("ok"):
            print(f"{name}: signalled")
        elif reply.get("error") == "bad_request":
            print(f"{name}: ERROR (bad signal name)")
            status = GENERIC
        else:
            print(f"{name}: ERROR (not running)")
            status = NOT_RUNNING
    return GENERIC if ctl.failed else status


def _tail(ctl: Ctl, args: list[str]) -> int:
    if not args:
        print("Error: too few arguments")
        return GENERIC
    if len(args) > 3:
        print("Error: too many arguments")
        return GENERIC
    size: int | None = TAIL_BYTES
    if args[0].startswith("-"):
        modifier = args.pop(0)[1:]
        if modifier == "f":
            size = None
        elif modifier.isdigit():
            size = int(modifier)
        else:
            print(f"Error: bad argument -{modifier}")
            return GENERIC
    if not args:
        print("Error: tail requires process name")
        return GENERIC
    name = args[0]
    channel = args[-1].lower() if len(args) > 1 else "stdout"
    if channel not in ("stdout", "stderr"):
        print(f"Error: bad channel {channel!r}")
        return GENERIC
    found = ctl.resolve(name)
    if found is None or len(found) != 1:
        print(f"{name}: ERROR (no such process name)")
        return GENERIC
    follow = size is None
    reply = ctl.request({"cmd": "logs", "name": found[0], "lines": 1000, "follow": follow})
    if not reply.get("ok"):
        print(f"{name}: ERROR ({reply.get('message')})")
        return GENERIC
    text = "".join(line["text"] + "\n" for line in reply["lines"] if line["stream"] == channel)
    sys.stdout.write(text[-size:] if size is not None else text[-TAIL_BYTES:])
    sys.stdout.flush()
    if follow:
        ctl.client.sock.settimeout(None)
        while True:
            for line in ctl.client.receive()["lines"]:
                if line["stream"] == channel:
                    sys.stdout.write(line["text"] + "\n")
            sys.stdout.flush()
    return OK


def _pid(ctl: Ctl, args: list[str]) -> int:
    reply = ctl.snapshot()
    if not args:
        print(reply["pid"])
        return OK
    if "all" in args:
        for p in reply["programs"]:
            print(p["pid"] or 0)
        return OK
    status = OK
    for spec in args:
        found = ctl.resolve(spec)
        if found is None:
            print(f"No such process {spec}")
            status = GENERIC
            continue
        for name in found:
            pid = next(p["pid"] for p in reply["programs"] if p["name"] == name) or 0
            print(pid)
            if pid == 0:
                status = NOT_RUNNING
    return status


def _no_arguments(command: str, args: list[str]) -> None:
    if args:
        raise Usage(f"{command} accepts no arguments")


def _config_programs(ctl: Ctl) -> dict | None:
    """The programs of the config file (-c, $HIVE_INIT_CONFIG or the default), read now, as
    supervisorctl's avail and reread see the file; None with a note when it cannot be read."""
    from hive_init.config import ConfigError, load
    from hive_init.paths import config_path

    try:
        return load(config_path(ctl.options.get("config"))).programs
    except ConfigError as e:
        note(str(e))
        return None


def _avail(ctl: Ctl, args: list[str]) -> int:
    """The programs of the file, in use or not; what runs when the file cannot be read."""
    _no_arguments("avail", args)
    running = set(ctl.names)
    specs = _config_programs(ctl)
    for name in ctl.names if specs is None else list(specs):
        spec = None if specs is None else specs[name]
        auto = "auto" if spec is None or spec.autostart else "manual"
        prio = "-" if spec is None else spec.priority
        print(f"{name:<32} {'in use' if name in running else 'avail':<9} {auto:<9} {prio}:{prio}")
    return OK


def _reread(ctl: Ctl, args: list[str]) -> int:
    _no_arguments("reread", args)
    specs = _config_programs(ctl)
    if specs is None:
        print("ERROR: CANT_REREAD: the config file is not valid (see above)")
        return GENERIC
    running, wanted = set(ctl.names), set(specs)
    changes = {**{n: "available" for n in wanted - running}, **{n: "disappeared" for n in running - wanted}}
    for name in sorted(changes):
        print(f"{name}: {changes[name]}")
    if not changes:
        print("No config updates to processes")
    note("hive-init applies the file on `update` (changed programs show there)")
    return OK


def _update(ctl: Ctl, args: list[str]) -> int:
    if args and args != ["all"]:
        note("update GROUP…: hive-init applies the whole file")
    reply = ctl.request({"cmd": "reload"}, wait=True)
    if not reply.get("ok"):
        print(f"ERROR: {reply.get('message')}")
        return GENERIC
    for name in reply.get("removed", []):
        print(f"{name}: stopped")
        print(f"{name}: removed process group")
    for name in reply.get("changed", []):
        print(f"{name}: stopped")
        print(f"{name}: updated process group")
    for name in reply.get("added", []):
        print(f"{name}: added process group")
    return OK


def _shutdown(ctl: Ctl, args: list[str]) -> int:
    _no_arguments("shutdown", args)
    import signal

    pid = ctl.snapshot()["pid"]
    try:
        # the control socket has no shutdown request: TERM is how hive-init is asked to stop
        os.kill(pid, signal.SIGTERM)
    except OSError as e:
        print(f"ERROR: cannot signal hive-init (pid {pid}): {e.strerror}")
        return GENERIC
    print("Shut down")
    return OK


def _help() -> int:
    print("supervisorctl (hive-init): status [NAME...], start|stop|restart NAME...|all, signal SIG NAME...|all,\n"
          "  tail [-f|-BYTES] NAME [stdout|stderr], pid [NAME...|all], avail, reread, update, shutdown, version")
    return OK


def _version() -> int:
    from hive_init import __version__

    print(__version__)
    return OK


def _usage_wrapped(command: Callable[[Ctl, list[str]], int]) -> Callable[[Ctl, list[str]], int]:
    """A command's usage errors in supervisorctl's words and statuses."""

    def run(ctl: Ctl, args: list[str]) -> int:
        try:
            return command(ctl, args)
        except Usage as e:
            print(f"Error: {e}")
            return USAGE if command in (_start, _stop, _restart) else GENERIC
    return run


COMMANDS = {name: _usage_wrapped(f) for name, f in {
    "status": _status, "start": _start, "stop": _stop, "restart": _restart, "signal": _signal, "tail": _tail,
    "pid": _pid, "avail": _avail, "reread": _reread, "update": _update, "shutdown": _shutdown,
}.items()}
