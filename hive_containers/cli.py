"""`hive-containers`: up, down, restart, status and logs of the Genie and Agent containers, with
their real health. Exit statuses:

    0  done; for `status`, everything asked about is healthy
    1  not healthy: not running, health starting or unhealthy, a program not ready, not healthy
       within --timeout, or `down` stopped it but not cleanly
    2  the container engine: none installed, its daemon unreachable, one of its commands failed
    3  bad command line or unknown service
    4  cannot start: a port already in use, the password unset, compose files not found
    5  an image does not build
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

NAMES = ("genie", "agent")
PROG = "hive-containers"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own status would be 2, which here means "engine"
        self.print_usage(sys.stderr)
        print(f"{PROG}: {message}", file=sys.stderr)
        sys.exit(3)


def _duration(text: str) -> float:
    from hive_init.config.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _global_options(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--engine", choices=("docker", "podman"), default=default,
                   help="container engine (default: $HIVE_ENGINE, else Docker if its daemon answers, else podman)")
    p.add_argument("--compose-dir", default=default, help="folder holding genie/ and agent/ compose files "
                                                          "(default: $HIVE_COMPOSE_DIR, else images/ of this checkout)")
    p.add_argument("--project-prefix", default=default,
                   help="prefix of the compose project names, to run a separate copy (default: $HIVE_PROJECT_PREFIX)")
    p.add_argument("-v", "--verbose", action="store_true", default=False if default is None else default,
                   help="show the build and compose output")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Manage the Genie and Agent containers (compose files under images/) "
                                       "with Docker or podman, and report their real health.",
                epilog="exit: 0 ok/healthy, 1 not healthy or not running, 2 engine problem, 3 bad usage or "
                       "unknown service, 4 cannot start (port in use, password unset), 5 image build failed")
    _global_options(p, None)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    # the same options after the command too (`hive-containers status --engine podman`)
    common = _Parser(add_help=False)
    _global_options(common, argparse.SUPPRESS)

    up = sub.add_parser("up", parents=[common], help="build what is missing, start, and wait until healthy")
    up.add_argument("service", help="genie, agent or all")
    up.add_argument("--build", action="store_true", help="rebuild the base and service images first")
    up.add_argument("--timeout", type=_duration, default=120.0, help="how long to wait for healthy (default 120s)")
    up.add_argument("--extra-ca", help="CA certificate given to the builds (TLS-intercepting proxies; "
                                       "default: $HIVE_BUILD_EXTRA_CA)")
    down = sub.add_parser("down", parents=[common],
                          help="stop (within the grace period) and remove the container")
    down.add_argument("service", help="genie, agent or all")
    down.add_argument("--volumes", action="store_true", help="also remove its volumes: THE DATABASE IS DELETED")
    restart = sub.add_parser("restart", parents=[common], help="restart the container and wait until healthy")
    restart.add_argument("service", help="genie, agent or all")
    restart.add_argument("--timeout", type=_duration, default=120.0, help="how long to wait for healthy (default 120s)")
    restart.add_argument("--extra-ca", help="as for up (when the container has to be created)")
    status = sub.add_parser("status", parents=[common],
                            help="state, health, uptime, ports and programs; exit 0 only when healthy")
    status.add_argument("service", nargs="?", default="all", help="genie, agent or all (default)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    logs = sub.add_parser("logs", parents=[common], help="the container's output, readable; optionally one program's")
    logs.add_argument("service", help="genie or agent")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--program", help="only this program's lines (e.g. postgres, api, hive-init)")
    logs.add_argument("-n", "--lines", type=_count, default=100, help="how many recent lines (default 100)")
    logs.add_argument("--raw", action="store_true", help="print the JSON lines as they are")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (no second error at exit)
        except OSError:
            pass
        return 0


def _run(args: argparse.Namespace) -> int:
    from hive_containers import exits, manager
    from hive_containers.compose import ComposeError, default_compose_dir
    from hive_containers.engine import ENGINES, EngineError, detect

    def fail(code: int, message: str, details: Sequence[str] = ()) -> int:
        print(f"{PROG}: {message}", file=sys.stderr)
        for line in details:
            print(f"  {line}", file=sys.stderr)
        return code

    if args.service == "all":
        if args.command == "logs":
            return fail(exits.USAGE, "logs takes one service: genie or agent")
        names = list(NAMES)
    elif args.service in NAMES:
        names = [args.service]
    else:
        return fail(exits.USAGE, f"unknown service {args.service!r} (genie, agent or all)")

    compose_dir = args.compose_dir or os.environ.get("HIVE_COMPOSE_DIR")
    folder = Path(compose_dir) if compose_dir else default_compose_dir()
    if folder is None or not folder.is_dir():
        where = f"{folder} is not a folder" if folder else "not found next to this package nor in ./images"
        return fail(exits.CANNOT_START, f"compose files: {where}; use --compose-dir or $HIVE_COMPOSE_DIR")
    extra_ca = getattr(args, "extra_ca", None) or os.environ.get("HIVE_BUILD_EXTRA_CA") or None
    if extra_ca and args.command in ("up", "restart") and not os.path.isfile(extra_ca):
        return fail(exits.CANNOT_START, f"the extra CA {extra_ca} (--extra-ca, $HIVE_BUILD_EXTRA_CA): no such file")
    choice = args.engine or os.environ.get("HIVE_ENGINE") or None
    if choice is not None and choice.lower() not in ENGINES:
        return fail(exits.USAGE, f"$HIVE_ENGINE={choice!r}: docker or podman")
    try:
        engine = detect(choice)
        m = manager.Manager(
            engine=engine, compose_dir=folder, env=dict(os.environ),
            project_prefix=args.project_prefix if args.project_prefix is not None
            else os.environ.get("HIVE_PROJECT_PREFIX", ""),
            extra_ca=extra_ca,
            verbose=args.verbose,
        )
        if args.command == "up":
            return m.up(names, build=args.build, timeout=args.timeout)
        if args.command == "down":
            return m.down(names, volumes=args.volumes)
        if args.command == "restart":
            return m.restart(names, timeout=args.timeout)
        if args.command == "status":
            return m.status(names, as_json=args.json)
        return m.logs(names[0], follow=args.follow, program=args.program, lines=args.lines, raw=args.raw)
    except exits.Failure as e:
        return fail(e.code, str(e), e.details)
    except EngineError as e:
        return fail(exits.ENGINE, str(e))
    except ComposeError as e:
        return fail(exits.CANNOT_START, f"compose file: {e}")
    except OSError as e:
        return fail(exits.ENGINE, f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
    except Exception as e:  # a bug: still one line (the traceback with -v)
        if args.verbose:
            import traceback

            traceback.print_exc()
        return fail(70, f"internal error: {type(e).__name__}: {e}")


if __name__ == "__main__":
    sys.exit(main())
