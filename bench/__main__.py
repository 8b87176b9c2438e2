"""hive-init against supervisord on the same work, side by side in one run.

    uv run python -m bench            # the full run (several minutes)
    uv run python -m bench --quick    # 1 repetition, smallest sizes (< 60 s): what CI runs

Writes the markdown table to stdout and bench/results/latest.md, everything (samples too) to
bench/results/latest.json. See bench/README.md.
"""

import argparse
import datetime
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import report, scenarios
from bench.common import (
    BENCH,
    GNU_TIME,
    HIVE_INIT,
    IS_ROOT,
    PYCACHE,
    SUPERVISORD,
    UNSHARE,
    BenchError,
    dump_json,
    make_root,
    postgres_user,
    prepare_pycache,
)
from bench.sides import HIVE, SIDES, SUP


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def _version(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip().split()[-1]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def machine() -> dict:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "root": IS_ROOT,
        "hive_init": _version([HIVE_INIT, "--version"]),
        "supervisord": _version([SUPERVISORD, "--version"]),
        "loadavg_start": _loadavg(),
    }


class Runner:
    def __init__(self, sizes: scenarios.Sizes, verbose: bool):
        self.sizes = sizes
        self.verbose = verbose
        self.samples: dict[str, dict[str, list[dict]]] = {}
        self.skipped: list[str] = []
        self.rep = 0

    def rec(self, figure: str, side: str, value: float, **extra: object) -> None:
        if figure not in report.BY_KEY:
            raise KeyError(figure)
        self.samples.setdefault(figure, {}).setdefault(side, []).append({"rep": self.rep, "value": value, **extra})
        if self.verbose:
            more = "".join(f" {k}={v}" for k, v in extra.items())
            print(f"  [{self.rep}] {figure:<22} {side:<12} {value:.4g}{more}", file=sys.stderr, flush=True)

    def attempt(self, what: str, fn: Callable[[], None]) -> bool:
        start = time.monotonic()
        try:
            fn()
        except (BenchError, OSError, subprocess.SubprocessError, AssertionError) as e:
            message = f"{what}: {type(e).__name__}: {e}"
            print(f"bench: {message}", file=sys.stderr, flush=True)
            if self.verbose:
                traceback.print_exc()
            self.skipped.append(message.splitlines()[0][:300])
            return False
        if self.verbose:
            print(f"bench: {what} took {time.monotonic() - start:.1f}s", file=sys.stderr, flush=True)
        return True

    def alternate(self, name: str, reps: int, run: Callable[[str, int], None],
                  sides: tuple[tuple[str, str], ...]) -> None:
        """A B A B …: every repetition runs each side once, in the same order."""
        for rep in range(reps):
            self.rep = rep
            for label, side in sides:
                self.attempt(f"{name} {label} #{rep + 1}", lambda side=side, rep=rep: run(side, rep))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 repetition, smallest sizes, < 60 s (CI smoke test)")
    parser.add_argument("--reps", type=int, help="repetitions (default 5; quick 1)")
    parser.add_argument("--orphans", type=int, help="orphans per burst (default 10000; quick 200)")
    parser.add_argument("--only", action="append", default=[],
                        choices=["basic", "probed", "pg", "orphans", "imports", "single", "zdt"], help="run only these scenarios")
    parser.add_argument("--out", default=str(BENCH / "results"), help="where latest.md and latest.json go")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (for debugging)")
    parser.add_argument("-v", "--verbose", action="store_true", help="every sample on stderr as it comes")
    args = parser.parse_args(argv)

    sizes = scenarios.QUICK if args.quick else scenarios.FULL
    if args.reps:
        sizes = scenarios.Sizes(**{**sizes.__dict__, "reps": args.reps,
                                   "orphans_reps": min(sizes.orphans_reps, args.reps)})
    if args.orphans:
        sizes = scenarios.Sizes(**{**sizes.__dict__, "orphans": args.orphans})
    only = set(args.only) or {"basic", "probed", "pg", "orphans", "imports", "single", "zdt"}
    started = time.monotonic()
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    info = machine()
    root = make_root()
    runner = Runner(sizes, args.verbose)
    prepare_pycache(warm=not sizes.quick)
    notes: list[str] = []
    imports = None
    sides = ((HIVE, HIVE), (SUP, SUP))
    setup: list[scenarios.PgSetup] = []
    found_imports: list[dict] = []
    found_single: list[dict] = []

    def make_template() -> None:
        runner.attempt("PostgreSQL template (first boot)",
                       lambda: setup.append(scenarios.pg_template(root, postgres_user())))

    def measure_imports() -> None:
        from bench import imports as imports_mod

        runner.attempt("imports", lambda: found_imports.append(imports_mod.measure(root, not sizes.quick)))

    # Quick mode (a smoke test): what measures no time runs in the background meanwhile
    background = []
    if sizes.quick:
        jobs = ([make_template] if only & {"pg", "zdt"} else []) + ([measure_imports] if "imports" in only else [])
        background = [threading.Thread(target=job, daemon=True) for job in jobs]
        for thread in background:
            thread.start()
        notes.append("quick mode: the PostgreSQL template and the import measurement ran in the background during the "
                     "basic and probed scenarios; one repetition, small sizes: the numbers are only indicative.")
    try:
        if "basic" in only:
            runner.alternate("basic", sizes.reps, lambda side, rep: scenarios.basic(side, sizes, root, runner.rec),
                             sides)
        if "probed" in only:
            runner.alternate("probed", sizes.reps, lambda side, rep: scenarios.probed(side, sizes, root, runner.rec),
                             sides)
        for thread in background:
            thread.join()
        if "pg" in only:
            if not sizes.quick:
                make_template()
            if setup:
                variants = ((HIVE, HIVE), (f"{SUP} (sleep 1)", SUP + ":1"), (f"{SUP} (sleep 0.1)", SUP + ":0.1"))

                def run_pg(side: str, rep: int) -> None:
                    name, _, retry = side.partition(":")
                    scenarios.pg(name, sizes, root, runner.rec, setup[0], retry or "1")

                runner.alternate("pg", sizes.reps, run_pg, variants)
        if "zdt" in only:
            if not sizes.quick and not setup:
                make_template()
            if setup:
                runner.alternate("zdt", min(sizes.reps, 2), lambda side, rep: scenarios.zdt(side, sizes, root, runner.rec,
                                                                                          setup[0]), sides)
        if "orphans" in only:
            if IS_ROOT and UNSHARE:
                runner.alternate("orphans", sizes.orphans_reps,
                                 lambda side, rep: scenarios.orphans(side, sizes, root, runner.rec), sides)
            else:
                runner.skipped.append("orphans: needs root and unshare (PID 1 of a new PID namespace): skipped")
        if "imports" in only and not sizes.quick:
            measure_imports()
        imports = found_imports[0] if found_imports else None
        if "single" in only:  # hive-init run -- CMD beside tini and dumb-init (bench/single.py)
            from bench import single as single_mod

            runner.attempt("single", lambda: found_single.append(single_mod.measure(
                root, 2 if sizes.quick else (args.reps or 7), 20 if sizes.quick else 50, args.verbose)))
    finally:
        if args.keep:
            print(f"bench: scratch kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    info["loadavg_end"] = _loadavg()
    notes[:0] = [
        "Both inits run as plain processes (hive-init a subreaper) except for the orphans figure, where each is PID 1 "
        "of a new PID namespace. Their stdout/stderr go to a file, as docker's log collector would take them.",
        "supervisord is configured the way containers use it: nodaemon=true, the programs' output on its stdout, "
        "a unix socket for supervisorctl and an inet_http_server for XML-RPC; everything else its defaults "
        "(autorestart=unexpected, startsecs=1, stopsignal=TERM, its 1 s poll tick).",
        "PostgreSQL: both sides start from a copy of the same cluster (made once by hive-init's first boot, shut down "
        "cleanly): a warm boot. The app is images/app (FastAPI + asyncpg); ready = its /api/v1/health answers 200. "
        "supervisord stops PostgreSQL with its default stopsignal (TERM: a smart shutdown; the app is stopped first).",
        f"Python bytecode: every process the bench starts uses PYTHONPYCACHEPREFIX={PYCACHE} (as a container image "
        "has its .pyc), so that no side recompiles its modules at each start.",
        "Control commands: the console scripts of the venv's bin/, as a HEALTHCHECK runs them; wall time from the "
        "bench's fork to the exit, peak RSS from /usr/bin/time -f %M"
        + ("" if GNU_TIME else " (missing here: from wait4, which also counts the bench's own RSS before the exec)")
        + ". hive-init: `hive-init health` and `hive-init status`; supervisord: `supervisorctl status` for both rows.",
        "supervisord spawns its programs on the first pass of its main loop, which comes after its first poll (1 s) "
        "unless some event wakes it: most of its start time. It notices a program's exit (or a stop) on the pass "
        "after the one that reaps it, so crash and stop times move in steps of its 1 s tick.",
    ]
    result = {
        "date": date,
        "mode": "quick" if sizes.quick else "full",
        "command": "uv run python -m bench" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])).rstrip(),
        "reps": sizes.reps,
        "orphans": sizes.orphans,
        "orphans_reps": sizes.orphans_reps,
        "sizes": sizes.__dict__,
        "sides": list(SIDES),
        "machine": info,
        "figures": report.summarize(runner.samples, SIDES),
        "imports": imports,
        "single": found_single[0] if found_single else None,
        "skipped": runner.skipped,
        "notes": notes,
        "duration_s": round(time.monotonic() - started, 1),
    }
    text = report.markdown(result)
    if result["single"]:
        from bench import single as single_mod

        text += "\n".join(single_mod.markdown(result["single"])) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dump_json(out / "latest.json", result)
    (out / "latest.md").write_text(text)
    print(text)
    print(f"bench: {result['duration_s']}s; wrote {out / 'latest.md'} and {out / 'latest.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
