"""`hive-containers status`: for each service its container as the engine sees it, hive-init's
own view from inside (its programs), and the verdict of the two (`state.assess`); shown as a
table with a few lines per service below it, or as JSON. Exit 0 only when every one is healthy.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, TextIO

from hive_containers import state
from hive_containers.compose import Service
from hive_containers.engine import Engine
from hive_containers.exits import NOT_HEALTHY, OK
from hive_init.ctl import format_uptime

# what `status` learns of one service: its container, hive-init's view inside, the verdict
Report = tuple[Service, state.Container | None, state.InitStatus | None, state.Verdict]


def status(engine: Engine, services: list[Service], out: TextIO, as_json: bool = False) -> int:
    reports: list[Report] = []
    for s in services:
        container = engine.find(s)
        init = engine.init_status(container.id) if container is not None and container.running else None
        reports.append((s, container, init, state.assess(container, init)))
    if as_json:
        print(json.dumps({"ok": all(r[3].ok for r in reports), "engine": engine.name,
                          "services": [_report_json(*r) for r in reports]}, indent=2), file=out)
    else:
        _status_table(reports, engine.name, out)
    return OK if all(r[3].ok for r in reports) else NOT_HEALTHY


def _status_table(reports: list[Report], engine_name: str, out: TextIO) -> None:
    def say(text: str) -> None:
        print(text, file=out, flush=True)

    now = datetime.now(UTC)
    rows: list[tuple[str, ...]] = [("SERVICE", "STATE", "HEALTH", "UPTIME", "PORTS", "CONTAINER")]
    for s, c, _init, _verdict in reports:
        if c is None:
            rows.append((s.name, "absent", "-", "-", "-", "-"))
            continue
        rows.append((s.name, c.status, c.health.status if c.running else "-", format_uptime(c.uptime(now)),
                     ", ".join(map(str, c.ports)) or "-", c.name))
    _table(rows, out)
    for s, c, init, verdict in reports:
        say("")
        say(f"{s.name}: {verdict.summary}")
        if c is not None and c.running and c.health.last is not None:
            last = c.health.last
            ago = f"{(now - last.end).total_seconds():.0f}s ago" if last.end else "at an unknown time"
            say(f"  last health check {ago}: exit {last.exit_code}"
                + (f", {last.output}" if last.output else "")
                + (f" ({c.health.failing_streak} failing in a row)" if c.health.failing_streak else ""))
            if c.health_is_stale(now):
                say("  (older than two check intervals: nothing runs the checks, as with podman without "
                    f"systemd; `hive-containers up {s.name}`"
                    + (f" or `podman healthcheck run {c.name}`" if engine_name == "podman" else "")
                    + " runs one)")
        if init is not None and init.programs:
            rows = [("  PROGRAM", "STATE", "PID", "UPTIME", "RESTARTS", "READY", "INFO")]
            for p in init.programs:
                rows.append((f"  {p.name}", p.state, str(p.pid or "-"), format_uptime(p.uptime), str(p.restarts),
                             "yes" if p.ready else "no", p.reason))
            _table(rows, out)


def _table(rows: list[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print(("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1]).rstrip(), file=out)


def _report_json(s: Service, c: state.Container | None, init: state.InitStatus | None,
                 verdict: state.Verdict) -> dict[str, Any]:
    out: dict[str, Any] = {"service": s.name, "project": s.project, "ok": verdict.ok, "summary": verdict.summary}
    if c is None:
        out.update(container=None, state="absent", health=None)
        return out
    last = c.health.last
    out.update(
        container=c.name, id=c.id, image=c.image, state=c.status, running=c.running, exit_code=c.exit_code,
        health=c.health.status if c.running else None, failing_streak=c.health.failing_streak,
        last_health_check=None if last is None else {
            "exit_code": last.exit_code, "output": last.output, "end": last.end.isoformat() if last.end else None,
            "stale": c.health_is_stale()},
        started_at=c.started_at.isoformat() if c.started_at else None,
        uptime=None if (uptime := c.uptime()) is None else round(uptime, 1),
        restart_count=c.restart_count, ports=[str(p) for p in c.ports],
    )
    if init is not None:
        out["init"] = {"ready": init.ready, "failing": list(init.failing), "error": init.error or None,
                       "programs": [{"name": p.name, "state": p.state, "ready": p.ready, "pid": p.pid,
                                     "uptime": p.uptime, "restarts": p.restarts, "reason": p.reason}
                                    for p in init.programs]}
    return out
