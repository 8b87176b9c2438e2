"""The `hive-init` command line. Argument parsing only: each subcommand imports what it needs
when it runs, and `hive-init health` (run by Docker every few seconds) skips even argparse."""

import os
import sys

from hive_init.paths import DEFAULT_CONFIG, config_path

_EARLY_SIGNALS = (1, 2, 3, 15)  # HUP, INT, QUIT, TERM (numbers: `signal` is not imported for every command)


def _parser():  # -> argparse.ArgumentParser, imported here: the health check never needs it
    import argparse

    p = argparse.ArgumentParser(prog="hive-init", description="init and supervisor for all-in-one containers")
    p.add_argument("-V", "--version", action="store_true", help="print the version and exit")
    p.add_argument("-s", "--socket", help="control socket (default: $HIVE_INIT_SOCKET, or /run/hive-init.sock as root)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run as init: the programs of a config, or one command after --")
    run.add_argument("-c", "--config", help="config file (default: $HIVE_INIT_CONFIG, else " + DEFAULT_CONFIG + ")")
    run.add_argument("-r", "--rewrite", action="append", default=[], metavar="FROM:TO",
                     help="single-command mode: deliver signal TO when FROM arrives (TO may be 0: drop it)")
    run.add_argument("--child-only", action="store_true",
                     help="single-command mode: signal only the child, not its whole process group")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]: single-command mode")

    check = sub.add_parser("check", help="validate a config without running anything")
    check.add_argument("config", nargs="?", help="config file")
    check.add_argument("-c", "--config", dest="config_opt", help=argparse.SUPPRESS)

    status = sub.add_parser("status", help="programs and their states (exit 0 all ready, 1 not, 2 unreachable)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("names", nargs="*", help="only these programs")
    sub.add_parser("health", help="for HEALTHCHECK: exit 0 healthy, 1 not; one line on stdout")
    for name in ("start", "stop", "restart"):
        cmd = sub.add_parser(name, help=f"{name} a program")
        cmd.add_argument("name")
        if name == "restart":
            cmd.add_argument("--stop-first", action="store_true",
                             help="stop the old process before starting the new one (default with listen: "
                                  "start the new one, and stop the old one once the new one is READY)")
    sig = sub.add_parser("signal", help="send a signal to a program's process group")
    sig.add_argument("name")
    sig.add_argument("signal", help="name or number, e.g. HUP")
    logs = sub.add_parser("logs", help="a program's recent output")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-n", "--lines", type=int, default=100, help="how many recent lines (default 100)")
    sub.add_parser("reload", help="apply the config file again (same as SIGHUP)")
    convert = sub.add_parser("convert", help="turn a supervisord.conf into a hive-init config")
    convert.add_argument("source")
    convert.add_argument("-o", "--output", help="write here instead of stdout")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        # Held until the init's handlers are in place: a `docker stop` during the imports must
        # not be lost (PID 1) or kill us before we can stop the programs (subreaper).
        import signal

        signal.pthread_sigmask(signal.SIG_BLOCK, _EARLY_SIGNALS)
    if argv == ["health"] or (len(argv) == 3 and argv[0] in ("-s", "--socket") and argv[2] == "health"):
        from hive_init.healthcheck import main as health

        return health(argv[1] if len(argv) == 3 else None)
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
            return command(args.source, args.output)
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
    return exits.OK


def _run(args) -> int:  # args: argparse.Namespace
    from hive_init import exits

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if argv:
        if args.config:
            print("hive-init: run: give either -c CONFIG or -- CMD, not both", file=sys.stderr)
            return exits.USAGE
        return _run_single(argv, args.rewrite, not args.child_only)
    if args.rewrite or args.child_only:
        print("hive-init: run: --rewrite and --child-only are for single-command mode (-- CMD)", file=sys.stderr)
        return exits.USAGE
    from hive_init import log
    from hive_init.config import ConfigError, load

    _register_kinds()
    path = config_path(args.config)
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

    try:
        status = anyio.run(supervise)
    except Exception as e:  # a bug: say where, in one line, and let the container restart us
        import traceback

        frame = traceback.extract_tb(e.__traceback__)[-1]
        log.fatal(f"internal error: {type(e).__name__}: {e} (at {frame.filename}:{frame.lineno})")
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


def _endpoints(config):  # -> list of endpoints for the Supervisor (see runtime/supervisor.py)
    """The control socket, and the HTTP endpoint when configured. Each module is imported when
    its endpoint starts, after the programs were spawned: importing them must not delay that."""
    import anyio

    async def control(supervisor, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        from hive_init.api.control import serve_control

        await serve_control(supervisor, task_status=task_status)

    async def http(supervisor, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        from hive_init.api.http import serve_http

        await serve_http(supervisor, task_status=task_status)

    return [control] + ([http] if config.init.http is not None else [])


async def _reload(supervisor):  # SIGHUP: as the control socket's reload does it
    from hive_init.api.control import reload_config

    return await reload_config(supervisor)


def _run_single(argv: list[str], rewrites: list[str], group: bool) -> int:
    from hive_init import exits
    from hive_init.config.fields import parse_signal

    table: dict[int, int] = {}
    for item in rewrites:
        source, sep, target = item.partition(":")
        try:
            if not sep:
                raise ValueError("expected FROM:TO")
            table[parse_signal(source)] = 0 if target.strip() == "0" else parse_signal(target)
        except ValueError as e:
            print(f"hive-init: --rewrite {item}: {e}", file=sys.stderr)
            return exits.USAGE
    import anyio

    from hive_init.runtime.single import run_single

    return anyio.run(run_single, argv, table, group)


if __name__ == "__main__":
    sys.exit(main())
