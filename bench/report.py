"""The figures, their statistics (median, min, max per side; the hive-init/supervisord ratio of
each pair measured in the same repetition), and the report as markdown and JSON."""

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    unit: str
    target: str = ""
    # whether the target is met, from (hive-init median, supervisord median, ratio median)
    check: Callable[[float, float, float | None], bool] | None = None
    note: str = ""


def _ratio_at_most(limit: float) -> Callable[[float, float, float | None], bool]:
    return lambda h, s, r: r is not None and r <= limit


FIGURES = [
    Figure("first_spawn", "start → first program spawned", "s", "ratio ≤ 0.1", _ratio_at_most(0.1),
           "from just before Popen of the init to the program's own $EPOCHREALTIME"),
    Figure("all_spawned", "start → all 5 programs spawned", "s"),
    Figure("pg_ready", "start → PostgreSQL + app ready (supervisord: pg_isready loop, sleep 1)", "s",
           note="the app's /api/v1/health answers 200, polled every 5 ms"),
    Figure("pg_ready_fast", "start → PostgreSQL + app ready (supervisord: pg_isready loop, sleep 0.1)", "s"),
    Figure("restart_default", "SIGKILL → restarted (hive-init backoff.initial = 100ms, the default)", "s",
           "ratio ≤ 0.2", _ratio_at_most(0.2)),
    Figure("restart_zero", "SIGKILL → restarted (hive-init backoff.initial = 0s)", "s", "ratio ≤ 0.2",
           _ratio_at_most(0.2)),
    Figure("stop_prompt", "TERM → init exited (3 sleepers + 2 others, all exit on TERM)", "s", "ratio ≤ 0.2",
           _ratio_at_most(0.2)),
    Figure("stop_pg", "TERM → init exited (PostgreSQL + app)", "s"),
    Figure("idle_wakeups", "idle wake-ups per 10 s, no probes (voluntary ctx switches, all threads)", "",
           "0 vs ~10", lambda h, s, r: h == 0),
    Figure("idle_wakeups_probed", "idle wake-ups per 10 s, http readiness probe on a web server (default period)",
           "", note="supervisord has no probes: same programs, nothing probed"),
    Figure("rss_idle", "init RSS, idle", "MiB", "ratio ≤ 1.3", _ratio_at_most(1.3)),
    Figure("pss_idle", "init PSS, idle", "MiB"),
    Figure("rss_serving", "init RSS, max while serving (hive-init /health; supervisord XML-RPC getAllProcessInfo)",
           "MiB"),
    Figure("pss_serving", "init PSS, max while serving", "MiB"),
    Figure("rss_pg", "init RSS, PostgreSQL + app running (hive-init: kind = \"postgres\", asyncpg loaded)", "MiB"),
    Figure("pss_pg", "init PSS, PostgreSQL + app running", "MiB"),
    Figure("cli_health_wall", "`hive-init health` vs `supervisorctl status`: wall time", "ms",
           "hive-init faster", lambda h, s, r: h < s),
    Figure("cli_health_maxrss", "`hive-init health` vs `supervisorctl status`: peak RSS", "MiB"),
    Figure("cli_status_wall", "`hive-init status` vs `supervisorctl status`: wall time", "ms"),
    Figure("cli_status_maxrss", "`hive-init status` vs `supervisorctl status`: peak RSS", "MiB"),
    Figure("http_p50_close", "health endpoint p50, open loop, keep-alive off", "ms"),
    Figure("http_p99_close", "health endpoint p99, open loop, keep-alive off", "ms"),
    Figure("http_p50_keepalive", "health endpoint p50, open loop, keep-alive on", "ms"),
    Figure("http_p99_keepalive", "health endpoint p99, open loop, keep-alive on", "ms"),
    Figure("zdt_restart_failed", "requests failed per restart of the app under 200 req/s (hive-init: held port, "
           "rolling; supervisord: `supervisorctl restart`)", "", "0", lambda h, s, r: h == 0,
           "each window: from the restart command until the new process answers, + 1 s"),
    Figure("zdt_restart_delayed", "requests delayed > 0.5 s per restart", ""),
    Figure("zdt_restart_slowest_ms", "slowest answered request in a restart window", "ms"),
    Figure("zdt_crash_failed", "requests failed per SIGKILL of the app (killed holding no accepted connection)", "",
           "0", lambda h, s, r: h == 0, "each window: from the SIGKILL until the new process answers, + 1 s"),
    Figure("zdt_crash_delayed", "requests delayed > 0.5 s per SIGKILL", ""),
    Figure("zdt_crash_slowest_ms", "slowest answered request in a crash window", "ms"),
    Figure("orphans_reaped", "orphans (burst) → all reaped, as PID 1", "s"),
    Figure("orphans_zombies_left", "zombies left at the end (orphans figure)", ""),
]
BY_KEY = {f.key: f for f in FIGURES}


def stats(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _ratio(h: float, s: float) -> float | None:
    if s == 0:
        return 0.0 if h == 0 else None
    return h / s


def summarize(samples: dict[str, dict[str, list[dict]]], sides: tuple[str, str]) -> list[dict]:
    """samples[figure][side] = [{"rep": i, "value": v, ...extra}]."""
    out = []
    hive, sup = sides
    for fig in FIGURES:
        per_side = samples.get(fig.key, {})
        h = [s["value"] for s in per_side.get(hive, [])]
        s_ = [s["value"] for s in per_side.get(sup, [])]
        by_rep_h = {x["rep"]: x["value"] for x in per_side.get(hive, [])}
        by_rep_s = {x["rep"]: x["value"] for x in per_side.get(sup, [])}
        ratios = [r for rep in sorted(by_rep_h) if rep in by_rep_s
                  for r in [_ratio(by_rep_h[rep], by_rep_s[rep])] if r is not None]
        entry = {
            "key": fig.key, "title": fig.title, "unit": fig.unit, "target": fig.target, "note": fig.note,
            hive: stats(h), sup: stats(s_), "ratio": stats(ratios),
            "samples": {side: per_side.get(side, []) for side in sides},
        }
        met = None
        if fig.check and entry[hive] and entry[sup]:
            met = bool(fig.check(entry[hive]["median"], entry[sup]["median"],
                                 entry["ratio"]["median"] if entry["ratio"] else None))
        entry["target_met"] = met
        out.append(entry)
    return out


def _num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    ax = abs(x)
    if ax == 0:
        return "0"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _cell(st: dict | None, unit: str) -> str:
    if not st:
        return "n/a"
    u = f" {unit}" if unit else ""
    if st["n"] == 1:
        return f"{_num(st['median'])}{u}"
    return f"{_num(st['median'])}{u} ({_num(st['min'])}–{_num(st['max'])})"


def markdown(result: dict) -> str:
    m = result["machine"]
    hive, sup = result["sides"]
    lines = [
        f"# hive-init vs supervisord — {result['mode']} run",
        "",
        f"- date: {result['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores, kernel {m['kernel']}, Python {m['python']}, "
        f"{'root' if m['root'] else 'not root'}; load average {m['loadavg_start']} at the start, "
        f"{m['loadavg_end']} at the end",
        f"- versions: hive-init {m['hive_init']}, supervisord {m['supervisord']}",
        f"- command: `{result['command']}`; {result['reps']} repetitions, sides alternated "
        f"({hive}, {sup}, {hive}, {sup}, …), orphans {result['orphans_reps']} repetition(s) of "
        f"{result['orphans']}",
        "- cells: median (min–max) over the repetitions; ratio: median of the hive-init/supervisord ratios "
        "of the pairs measured in the same repetition (min–max)",
        "",
        f"| figure | {hive} | {sup} | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for f in result["figures"]:
        met = {True: "yes", False: "**no**", None: ""}[f["target_met"]]
        ratio = _cell(f["ratio"], "")
        lines.append(f"| {f['title']} | {_cell(f[hive], f['unit'])} | {_cell(f[sup], f['unit'])} | {ratio} | "
                     f"{f['target']} | {met} |")
    details = []
    for f in result["figures"]:
        parts = []
        for side in (hive, sup):
            extras: dict[str, list[float]] = {}
            for sample in f["samples"].get(side, []):
                for k, v in sample.items():
                    if k not in ("rep", "value") and isinstance(v, (int, float)) and not isinstance(v, bool):
                        extras.setdefault(k, []).append(v)
            if extras:
                parts.append(f"{side}: " + ", ".join(f"{k} {_num(statistics.median(v))}" for k, v in extras.items()))
        if parts:
            details.append(f"- {f['title']} — " + "; ".join(parts))
    if details:
        lines += ["", "Details (medians):", ""] + details
    if result.get("skipped"):
        lines += ["", "Skipped or failed:"]
        lines += [f"- {s}" for s in result["skipped"]]
    imports = result.get("imports")
    if imports:
        lines += ["", "## What hive-init keeps resident: RSS per import",
                  "",
                  f"Measured in a fresh interpreter importing, in the order a running init imported them "
                  f"(`-X importtime` of `hive-init run`, endpoint and a postgres program configured), the "
                  f"{imports['modules']} modules a running init holds; each group is charged the RSS growth "
                  f"of its own modules. Interpreter alone: {imports['baseline_mib']:.1f} MiB; everything: "
                  f"{imports['total_mib']:.1f} MiB.",
                  "",
                  "| import | first imported by | incremental RSS "
                  "| alone in a fresh interpreter (with what it pulls in) |",
                  "|---|---|---|---|"]
        for g in imports["groups"]:
            alone = g.get("alone_mib")
            via = g.get("via") or ("—" if g["name"].startswith("everything") else "hive-init")
            lines.append(f"| {g['name']} | {via} | {g['mib']:.2f} MiB | "
                         f"{'' if alone is None else f'{alone:.2f} MiB'} |")
        for g in imports.get("lazy", []):
            alone = g.get("alone_mib")
            lines.append(f"| {g['name']} | the first /metrics | {g['mib']:.2f} MiB | "
                         f"{'' if alone is None else f'{alone:.2f} MiB'} |")
    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"
