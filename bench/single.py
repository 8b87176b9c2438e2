"""Single-command mode (`hive-init run -- CMD`) beside tini and dumb-init, in the same run.

    uv run python -m bench --only single            # 7 repetitions
    uv run python -m bench --only single --quick    # 2 repetitions, fewer signals

Each repetition runs the three inits in turn (hive-init, tini, dumb-init, hive-init, ...), every
one as a plain process (a subreaper: tini -s; dumb-init is one by default), CMD in a process
group of its own (tini -g), with the same children:

- resident memory: VmRSS of the init once `CMD` (sleep) runs;
- exec → child's first line: from just before the bench's fork of the init to the child's own
  $EPOCHREALTIME (bash; the same child for all three, so bash's own start is in every figure);
- signal forwarding: SIGUSR1 to the init → the child (Python, blocked in sigwaitinfo) has it,
  median over N signals (time.time() on both sides);
- child exit → init exit: the child's last $EPOCHREALTIME → the bench's wait4 returns.

hive-init's bytecode is compiled ahead (PYTHONPYCACHEPREFIX, see bench/common.py) as in an image.
"""

import os
import signal
import statistics
import subprocess
import sys
import time

from bench.common import BASH, HIVE_INIT, BenchError, child_env, rss_kib, wait_for

TINI = "/usr/bin/tini"
DUMB = "/usr/bin/dumb-init"
SIDES = {
    "hive-init": [HIVE_INIT, "run", "--"],
    "tini": [TINI, "-s", "-g", "--"],
    "dumb-init": [DUMB, "--"],
}
PEER = "tini"
FIGURES = [
    # key, title, unit, target (text), check(hive median, tini median) or None
    ("rss", "resident memory, `run -- sleep`", "MiB", "≤ 12 MiB", lambda h, t: h <= 12),
    ("first_line", "exec → child's first line", "ms", "≤ 40 ms", lambda h, t: h <= 40),
    ("forward", "signal forwarding latency (median of the signals)", "ms", "≤ 2× tini", lambda h, t: h <= 2 * t),
    ("exit", "child exit → init exit", "ms", "≤ 5 ms", lambda h, t: h <= 5),
]

RECEIVER = (
    "import signal, sys, time\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    signal.sigwaitinfo({signal.SIGUSR1})\n"
    "    print(repr(time.time()), flush=True)\n"
)


def available() -> list[str]:
    return [side for side, argv in SIDES.items() if os.access(argv[0], os.X_OK)]


def _start(side: str, argv: list[str], **kwargs) -> tuple[subprocess.Popen, float]:
    env = child_env()
    start = time.time()
    proc = subprocess.Popen(SIDES[side] + argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)
    return proc, start


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _stamp(path: str) -> float | None:
    try:
        with open(path) as f:
            text = f.read().split()
    except FileNotFoundError:
        return None
    return float(text[-1].replace(",", ".")) if text else None


def start_and_memory(side: str, directory: str) -> tuple[float, float]:
    """(exec → first line in ms, RSS in MiB)."""
    path = os.path.join(directory, f"first-{side}")
    proc, start = _start(side, [BASH, "-c", f'echo "$EPOCHREALTIME" > {path}; exec sleep 60'],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        first = wait_for(lambda: _stamp(path), 10, what=f"{side}'s child's first line")
        # the child execs sleep: then the init is in its steady state (its start is over)
        wait_for(lambda: any(os.path.realpath(f"/proc/{c}/exe").endswith("sleep") for c in _children(proc.pid)),
                 10, what="the child's sleep")
        time.sleep(0.2)  # memory settles (a measurement, not a synchronisation)
        rss = rss_kib(proc.pid) / 1024
    finally:
        _stop(proc)
        os.unlink(path) if os.path.exists(path) else None
    return (first - start) * 1000, rss


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def forwarding(side: str, signals: int) -> float:
    """Median ms from kill(init, USR1) to the child having it."""
    proc, _ = _start(side, [sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                     text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise BenchError(f"{side}: the receiver did not start")
        samples = []
        for _ in range(signals):
            sent = time.time()
            os.kill(proc.pid, signal.SIGUSR1)
            line = proc.stdout.readline()
            if not line:
                raise BenchError(f"{side}: the receiver is gone")
            samples.append((float(line) - sent) * 1000)
            time.sleep(0.005)  # apart: each signal measured alone (the kernel merges pending ones)
    finally:
        _stop(proc)
    return statistics.median(samples)


def exit_latency(side: str, directory: str) -> float:
    """ms from the child's last line to the init's exit as its parent sees it."""
    path = os.path.join(directory, f"exit-{side}")
    proc, _ = _start(side, [BASH, "-c", f'read -t 0.05; echo "$EPOCHREALTIME" > {path}; exit 3'],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status = os.waitpid(proc.pid, 0)
    gone = time.time()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 3:
        raise BenchError(f"{side}: exit status {proc.returncode}, not 3")
    stamp = _stamp(path)
    os.unlink(path)
    if stamp is None:
        raise BenchError(f"{side}: the child wrote no stamp")
    return (gone - stamp) * 1000


def measure(directory: str, reps: int, signals: int, verbose: bool = False) -> dict:
    sides = available()
    if "hive-init" not in sides:
        raise BenchError("hive-init's console script is missing")
    # a first start of each, not measured: hive-init's bytecode into the cache, files into the page cache
    for side in sides:
        start_and_memory(side, directory)
    samples: dict[str, dict[str, list[float]]] = {key: {side: [] for side in sides} for key, *_ in FIGURES}
    for rep in range(reps):
        for side in sides:
            first, rss = start_and_memory(side, directory)
            values = {"first_line": first, "rss": rss, "forward": forwarding(side, signals),
                      "exit": exit_latency(side, directory)}
            for key, value in values.items():
                samples[key][side].append(value)
                if verbose:
                    print(f"  [{rep}] single {key:<11} {side:<10} {value:.4g}", file=sys.stderr, flush=True)
    figures = []
    for key, title, unit, target, check in FIGURES:
        per = {side: _stats(samples[key][side]) for side in sides}
        h = per["hive-init"]["median"]
        t = per[PEER]["median"] if PEER in per else None
        ratio = [a / b for a, b in zip(samples[key]["hive-init"], samples[key].get(PEER, [])) if b]
        figures.append({"key": key, "title": title, "unit": unit, "target": target, "sides": per,
                        "ratio_to_tini": _stats(ratio) if ratio else None,
                        "target_met": bool(check(h, t if t is not None else float("nan"))),
                        "samples": samples[key]})
    return {"reps": reps, "signals": signals, "sides": sides, "figures": figures}


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _cell(st: dict | None, unit: str) -> str:
    if not st:
        return "n/a"
    fmt = (lambda x: f"{x:.2f}") if st["median"] < 10 else (lambda x: f"{x:.1f}")
    u = f" {unit}" if unit else ""
    return f"{fmt(st['median'])}{u}" + (f" ({fmt(st['min'])}–{fmt(st['max'])})" if st["n"] > 1 else "")


def markdown(result: dict) -> list[str]:
    sides = result["sides"]
    lines = ["", "## Single-command mode: hive-init beside tini and dumb-init", "",
             f"{result['reps']} repetitions, the three alternated; forwarding: the median of {result['signals']} "
             "SIGUSR1 per repetition. Cells: median (min–max) over the repetitions; ratio: hive-init/tini, "
             "pair by pair, median.", "",
             "| figure | " + " | ".join(sides) + " | ratio to tini | target | met |",
             "|---|" + "---|" * (len(sides) + 3)]
    for f in result["figures"]:
        cells = " | ".join(_cell(f["sides"].get(side), f["unit"]) for side in sides)
        ratio = f["ratio_to_tini"]
        lines.append(f"| {f['title']} | {cells} | {_cell(ratio, '') if ratio else '—'} | {f['target']} | "
                     f"{'yes' if f['target_met'] else '**no**'} |")
    return lines
