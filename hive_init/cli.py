"""The `hive-init` command line. Argument parsing only: each subcommand imports what it needs
when it runs, and `hive-init health` (run by Docker every few seconds) skips even argparse."""

import os
import sys

from hive_init.paths import DEFAULT_CONFIG, config_path


def _parser():  # -> argparse.ArgumentParser, imported here: the health check never needs it
    import argparse

    p = argparse.ArgumentParser(prog="hive-init", description="init and supervisor for all-in-one containers")
    p.add_argument("-V", "--version", action="store_true", help="print the version and exit")
    p.add_argument("-s", "--socket", help="control socket (default: $HIVE_INIT_SOCKET, or /run/hive-init.sock as root)")
    config_help = "control commands: talk to the init of this config (its [init] control_socket; default $HIVE_INIT_CONFIG)"
    p.add_argument("-c", "--config", dest="ctl_config", help=config_help)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def control(name: str, **kwargs):  # a control command: -c CONFIG also after its name
        cmd = sub.add_parser(name, **kwargs)
        cmd.add_argument("-c", "--config", dest="ctl_config", default=argparse.SUPPRESS, help=config_help)
        return cmd

    run = sub.add_parser("run", help="run as init: the programs of a config, or one command after --")
    run.add_argument("-c", "--config", help="config file (default: $HIVE_INIT_CONFIG, else " + DEFAULT_CONFIG + ")")
    run.add_argument("-r", "--rewrite", action="append", default=[], metavar="FROM:TO",
                     help="single-command mode: deliver signal TO when FROM arrives (TO may be 0: drop it)")
    run.add_argument("--child-only", action="store_true",
                     help="single-command mode: signal only the child, not its whole process group")
    run.add_argument("-e", "--success-exit", action="append", default=[], metavar="CODE",
                     help="single-command mode: exit 0 when the child exits with CODE (repeatable; tini -e)")
    run.add_argument("-p", "--parent-death-signal", action="append", default=[], metavar="SIG",
                     help="single-command mode: get SIG when our parent dies, and forward it (tini -p)")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="single-command mode: log each forwarded signal on stderr")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]: single-command mode")

    check = sub.add_parser("check", help="validate a config without running anything")
    check.add_argument("config", nargs="?", help="config file")
    check.add_argument("-c", "--config", dest="config_opt", help=argparse.SUPPRESS)

    status = control("status", help="programs and their states (exit 0 all ready, 1 not, 2 unreachable)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("names", nargs="*", help="only these programs")
    control("health", help="for HEALTHCHECK: exit 0 healthy, 1 not; one line on stdout")
    for name in ("start", "stop", "restart"):
        cmd = control(name, help=f"{name} a program")
        cmd.add_argument("name")
        if name == "restart":
            cmd.add_argument("--stop-first", action="store_true",
                             help="stop the old process before starting the new one (default with listen: "
                                  "start the new one, and stop the old one once the new one is READY)")
    sig = control("signal", help="send a signal to a program's process group")
    sig.add_argument("name")
    sig.add_argument("signal", help="name or number, e.g. HUP")
    logs = control("logs", help="a program's recent output")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-n", "--lines", type=int, default=100, help="how many recent lines (default 100)")
    control("reload", help="apply the config file again (same as SIGHUP)")
    convert = sub.add_parser("convert", help="turn a supervisord.conf into a hive-init config")
    convert.add_argument("source")
    convert.add_argument("-o", "--output", help="write here instead of stdout")
    convert.add_argument("--root", help="an image's file tree: absolute [include] paths are read inside it")
    convert.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                         help="the container's environment, for what must be known now (numprocs, whole-word %%(ENV_X)s)")
    convert.add_argument("--strict", action="store_true", help="warnings fail too (exit 4)")
    return p


def main(argv: list[str] | None = None) -> int:
    if argv is None and os.path.basename(sys.argv[0]) == "supervisorctl":  # the symlink the images install
        from hive_init.supervisorctl import main as supervisorctl

        return supervisorctl(sys.argv[1:])
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        # Blocked until the init's handlers are in place (hive_init/__init__.py did it on its
        # first line for the console script): a `docker stop` during the imports must not be
        # lost (PID 1) or kill us before we can stop the programs (subreaper).
        import hive_init

        hive_init.block_signals()
        config = _plain_run(argv)
        if config is not None:  # `run [-c CONFIG]`, what every container starts: no argparse, no single
            return _run_config(config or None)
        # `run -- CMD`: the lean path, before argparse and everything config mode needs
        from hive_init.runtime import single

        plan = single.parse(argv[1:])
        if plan is not None:
            return plan if isinstance(plan, int) else single.run(plan)
    if argv == ["health"] or (len(argv) == 3 and argv[0] in ("-s", "--socket") and argv[2] == "health"):
        from hive_init.healthcheck import main as health

        return health(argv[1] if len(argv) == 3 else None)
    status = _plain_status(argv)
    if status is not None:  # run by health checks and scripts every few seconds: no argparse either
        from hive_init import ctl

        try:
            return ctl.main(status)
        except KeyboardInterrupt:
            return 130
    from hive_init import exits

    args = _parser().parse_args(argv)
    if args.version:
        from hive_init import __version__

        print(f"hive-init {__version__}")
        return exits.OK
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "check":
            return _check(args.config or args.config_opt)
        if args.command == "convert":
            from hive_init.convert import command

            _register_kinds(runtime=False)
            return command(args.source, args.output, args.root, args.set, args.strict)
        if args.command is None:
            _parser().print_help()
            return exits.USAGE
        from hive_init import ctl

        return ctl.main(args)
    except KeyboardInterrupt:
        return 130


def _check(path: str | None) -> int:
    from hive_init import exits
    from hive_init.config import ConfigError, load

    _register_kinds(runtime=False)
    path = config_path(path)
    try:
        config = load(path)
    except ConfigError as e:
        print(f"hive-init: {e}", file=sys.stderr)
        return exits.CONFIG
    print(f"{path}: ok ({len(config.programs)} programs, start order: {', '.join(config.start_order())})")
    from hive_init.config.graph import stop_budget_warning

    warning = stop_budget_warning(config.programs, {n: p.stop_timeout for n, p in config.programs.items()},
                                  config.init.shutdown_timeout)
    if warning:
        print(f"hive-init: warning: {path}: {warning}", file=sys.stderr)
    return exits.OK


def _run(args) -> int:  # args: argparse.Namespace
    from hive_init import exits

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if argv:
        if args.config:
            print("hive-init: run: give either -c CONFIG or -- CMD, not both", file=sys.stderr)
            return exits.USAGE
        return _run_single(argv, args)
    if args.argv[:1] == ["--"]:
        print("hive-init: run: a command is missing after --", file=sys.stderr)
        return exits.USAGE
    if args.rewrite or args.child_only or args.success_exit or args.parent_death_signal or args.verbose:
        print("hive-init: run: --rewrite, --child-only, --success-exit, --parent-death-signal and --verbose "
              "are for single-command mode (-- CMD)", file=sys.stderr)
        return exits.USAGE
    return _run_config(args.config)


def _plain_run(argv: list[str]) -> str | None:
    """The config file of `run`, `run -c CONFIG`, `run --config CONFIG` or `run --config=CONFIG`
    ("" when none is given), None for anything else (argparse's turn). argparse, with the gettext
    lookups of its help texts, is ~10 ms of every start before the first spawn; these shapes mean
    the same to it, a value that looks like an option excepted (it would refuse it)."""
    if argv == ["run"]:
        return ""
    if len(argv) == 3 and argv[0] == "run" and argv[1] in ("-c", "--config") and not argv[2].startswith("-"):
        return argv[2]
    if len(argv) == 2 and argv[0] == "run" and argv[1].startswith("--config=") and len(argv[1]) > 9:
        return argv[1][9:]
    return None


def _plain_status(argv: list[str]):  # -> types.SimpleNamespace | None
    """`[-s SOCKET | -c CONFIG]... status [--json] [NAME...]` as argparse would read it, None for
    anything else (a value or name that looks like an option included: argparse's turn). Building
    the whole parser, its help texts looked up by gettext, is ~25 ms of a 50 ms command."""
    options = {"-s": "socket", "--socket": "socket", "-c": "ctl_config", "--config": "ctl_config"}
    found: dict[str, str | None] = {"socket": None, "ctl_config": None}
    i = 0
    while i + 1 < len(argv) and argv[i] in options and not argv[i + 1].startswith("-"):
        found[options[argv[i]]] = argv[i + 1]
        i += 2
    if argv[i:i + 1] != ["status"]:
        return None
    rest = argv[i + 1:]
    if any(token.startswith("-") and token != "--json" for token in rest):
        return None
    import types

    return types.SimpleNamespace(command="status", json="--json" in rest,
                                 names=[token for token in rest if token != "--json"], **found)


def _run_config(config_file: str | None) -> int:
    """Config mode: the programs of a config file, supervised until the container stops."""
    from hive_init import exits, log
    from hive_init.config import ConfigError, load

    _register_kinds()
    path = config_path(config_file)
    try:
        config = load(path)
        if any(spec.listen for spec in config.programs.values()):
            from hive_init.runtime.listen import held

            # as root, before anything is spawned: an address that cannot be bound is a config error
            held.hold(config)
    except ConfigError as e:
        log.fatal(str(e))
        return exits.CONFIG
    from hive_init import redact

    redact.set_secrets(config.secrets)
    log.configure(config.init.log_format, config.init.log_level, tuple(config.programs))
    import anyio

    from hive_init.runtime.supervisor import Supervisor

    async def supervise() -> int:
        return await Supervisor(config, endpoints=_endpoints(config), reload=_reload).run()

    from hive_init.api.listen import CannotListen

    try:
        status = anyio.run(supervise)
    except CannotListen as e:  # checked before the first spawn: nothing is left running
        log.fatal(str(e))
        status = exits.CANNOT_LISTEN
    except Exception as e:  # a bug: say where, in one line, and let the container restart us
        log.fatal(exits.describe_internal_error(e))
        status = exits.SOFTWARE
    if any(spec.listen for spec in config.programs.values()):
        from hive_init.runtime.listen import held

        held.release_all()  # unix socket files go with the init that made them
    log.sink.flush_blocking()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every child is gone and every line written: tearing down ~370 modules would only delay
    # the container's exit (by about 50 ms, measured).
    os._exit(status)


# ---- wiring: what the layers below may not import themselves -------------------------------------

def _register_kinds(runtime: bool = True) -> None:
    """The kinds beyond `command` make themselves known to the config (and, to run them, to the
    runtime). Cheap: each imports its modules only when a program of its kind is read or run."""
    from hive_init import postgres

    postgres.register(runtime=runtime)


def _endpoints(config):  # -> list[Endpoint] for the Supervisor (see runtime/supervisor.py)
    """The control socket, and the HTTP endpoint when configured: bound before the first spawn,
    so that a socket taken or a port in use stops the start with nothing running."""
    from hive_init.runtime.supervisor import Endpoint

    def bind_control(config):
        from hive_init.api.control import bind_control

        return bind_control(config.init.control_socket)

    def close_control(sock) -> None:
        from hive_init.api.control import close_bound

        close_bound(sock, config.init.control_socket)

    async def serve_control(supervisor, sock, *, task_status) -> None:
        from hive_init.api.control import serve_control

        await serve_control(supervisor, sock, task_status=task_status)

    def bind_http(config):
        from hive_init.api.http import bind_http

        return bind_http(*config.init.http)

    async def serve_http(supervisor, sock, *, task_status) -> None:
        from hive_init.api.http import serve_http

        await serve_http(supervisor, sock, task_status=task_status)

    endpoints = [Endpoint("control socket", bind_control, serve_control, close_control)]
    if config.init.http is not None:
        endpoints.append(Endpoint("health endpoint", bind_http, serve_http, lambda sock: sock.close()))
    return endpoints


async def _reload(supervisor):  # SIGHUP: as the control socket's reload does it
    from hive_init.api.control import reload_config

    return await reload_config(supervisor)


def _run_single(argv: list[str], args) -> int:  # args: argparse.Namespace
    """`-s SOCKET run -- CMD` and the like, which main()'s lean dispatch does not see."""
    from hive_init.runtime import single

    plan = single.plan(argv, args.rewrite, not args.child_only, args.success_exit, args.parent_death_signal,
                       args.verbose)
    return plan if isinstance(plan, int) else single.run(plan)


if __name__ == "__main__":
    sys.exit(main())
