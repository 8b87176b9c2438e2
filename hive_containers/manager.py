"""up, down, restart, status and logs of the Genie and Agent containers, through their compose
files and whichever engine `engine.detect` found. Every failure is a `Failure`: one line, maybe
a few lines of detail (the last health output, the last log lines, the end of a build), and the
exit status the command line returns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from hive_containers import logline as logview
from hive_containers import ports, state
from hive_containers.compose import SERVICES, Service, load_service, read_env_file
from hive_containers.engine import BuildError, Engine, EngineError
from hive_init.config.durations import parse_duration
from hive_init.ctl import format_uptime

# what `status` learns of one service: its container, hive-init's view inside, the verdict
Report = tuple[Service, state.Container | None, state.InitStatus | None, state.Verdict]

# exit statuses (README: "hive-containers")
OK = 0
NOT_HEALTHY = 1  # not healthy, not running, not healthy within --timeout, or stopped but not cleanly
ENGINE = 2  # no engine, its daemon unreachable, or one of its commands failed
USAGE = 3  # bad command line, unknown service
CANNOT_START = 4  # a port already in use, the password unset, compose files not found or unreadable
BUILD = 5  # an image does not build

HEALTH_POLL = 1.0  # seconds between health checks while `up` waits


class Failure(Exception):
    def __init__(self, code: int, message: str, details: Iterable[str] = ()):
        super().__init__(message)
        self.code = code
        self.details = list(details)


@dataclass
class Manager:
    engine: Engine
    compose_dir: Path
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    project_prefix: str = ""
    extra_ca: str | None = None
    verbose: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    built: set[str] = field(default_factory=set)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def service(self, name: str) -> Service:
        return load_service(self.compose_dir, SERVICES[name], self.env, self.project_prefix)

    # ============================================================================ up
    def up(self, names: list[str], build: bool = False, timeout: float = 120.0) -> int:
        services = [self.service(n) for n in names]
        found = {s.name: self.engine.find(s) for s in services}
        for s in services:  # everything that can be checked before anything starts
            self._check_password(s)
            current = found[s.name]
            if current is None or not current.running:
                self._check_ports(s)
        for s in services:
            built = self._ensure_images(s, build)
            self._compose_up(s, recreate=built)
            self.wait_healthy(s, timeout)
        return OK

    def _check_password(self, s: Service) -> None:
        var = s.password_var
        if self.env.get(var) or self.env.get(f"{var}_FILE"):
            return
        dotenv = read_env_file(s.compose_file.parent / ".env")
        if dotenv.get(var) or dotenv.get(f"{var}_FILE"):
            return
        raise Failure(CANNOT_START, f"{s.name}: {var} is not set (nor {var}_FILE): the container would exit at "
                                    f"once; e.g. export {var}=\"$(openssl rand -hex 24)\" and keep it, the "
                                    f"database remembers it")

    def _check_ports(self, s: Service) -> None:
        for p in s.ports:
            if not p.host_port:
                continue
            if p.protocol == "tcp" and ports.in_use(p.host_port, p.host_ip, p.protocol):
                who = self.engine.published_elsewhere(p.host_port, s.project)
                who = f"container {who}" if who else (ports.owner(p.host_port) or "another process")
                raise Failure(CANNOT_START, f"{s.name}: port {p.host_port} is already in use (by {who}); "
                                            f"{s.name} publishes it ({s.compose_file})")

    def _ensure_images(self, s: Service, build: bool) -> bool:
        """Build the base and service images when asked or missing; True when something was built."""
        if s.dockerfile is None or s.build_context is None:
            return False  # an image-only service: compose pulls it
        todo: list[tuple[str, Path, Mapping[str, str]]] = []
        if (s.base_image and s.base_dockerfile and s.base_image not in self.built
                and (build or not self.engine.image_exists(s.base_image))):
            todo.append((s.base_image, s.base_dockerfile, {}))
        if s.image not in self.built and (build or todo or not self.engine.image_exists(s.image)):
            todo.append((s.image, s.dockerfile, s.build_args))
        for tag, dockerfile, args in todo:
            self.say(f"{s.name}: building {tag} ({dockerfile.relative_to(s.build_context)}"
                     f"{'' if self.verbose else '; -v shows the output'})")
            echo = (lambda line: print(f"  {line}", file=self.err, flush=True)) if self.verbose else None
            try:
                seconds = self.engine.build(dockerfile, s.build_context, tag, args, self.extra_ca, echo)
            except BuildError as e:
                details = [line if len(line) <= 300 else line[:300] + " …" for line in e.tail]
                if any("CERTIFICATE_VERIFY_FAILED" in line or "certificate verify failed" in line for line in e.tail):
                    details.append("(behind a TLS-intercepting proxy? give the build its CA: --extra-ca FILE or "
                                   "$HIVE_BUILD_EXTRA_CA)")
                raise Failure(BUILD, f"{s.name}: {e}; its last lines:", details) from None
            self.built.add(tag)
            self.say(f"{s.name}: built {tag} in {seconds:.0f}s")
        return bool(todo)

    def _compose_up(self, s: Service, recreate: bool = False) -> None:
        self.say(f"{s.name}: starting ({self.engine.name}, project {s.project})")
        # a new image under the same tag: podman-compose compares only the configuration
        args = ["up", "-d", "--no-build", *(["--force-recreate"] if recreate else []), s.name]
        result = self.engine.compose(s, *args, check=False, timeout=600)
        if self.verbose and result.output:
            print(result.output, file=self.err)
        created = self.engine.find(s)
        if result.returncode == 0 and created is not None:
            return
        text = result.output
        if "address already in use" in text.lower():
            port = next((str(p.host_port) for p in s.ports if str(p.host_port) in text), "")
            raise Failure(CANNOT_START, f"{s.name}: port {port or '?'} is already in use (the engine says: "
                                        f"{_line_with(text, 'address already in use')})")
        lines = [line for line in text.splitlines() if line.strip() and "level=" not in line][-10:]
        raise Failure(ENGINE, f"{s.name}: `compose up` failed (exit {result.returncode})" +
                      ("" if created else ": no container was created"), lines)

    def wait_healthy(self, s: Service, timeout: float) -> float:
        """Until the engine's health check says healthy. Under podman the checks are run from
        here (it schedules them with systemd timers, absent in most containers and CI)."""
        start = time.monotonic()
        container = self.engine.find(s)
        if container is None:
            raise Failure(NOT_HEALTHY, f"{s.name}: no container after `compose up`")
        restarts = container.restart_count
        while True:
            container = self.engine.inspect(container.id)
            if container is None:
                raise Failure(NOT_HEALTHY, f"{s.name}: the container disappeared while starting")
            if container.restart_count > restarts or container.status == "restarting":
                # (the exit status is gone by now: the restarted container reports 0)
                raise Failure(NOT_HEALTHY, f"{s.name}: the container exited before it was healthy and its "
                                           f"restart policy restarted it ({container.restart_count - restarts}x); "
                                           f"its last lines:", self._tail(container.id))
            if not container.running:
                code = container.exit_code
                raise Failure(NOT_HEALTHY, f"{s.name}: the container stopped before it was healthy"
                                           f"{f' (exit {code})' if code is not None else ''}; its last lines:",
                              self._tail(container.id))
            ran = self.engine.run_healthcheck(container.id)
            if ran is not None:
                container = self.engine.inspect(container.id) or container
                if ran.returncode == 0 and container.health.status == state.HEALTHY:
                    break
            elif container.health.status == state.HEALTHY:
                break
            if not container.has_healthcheck:
                init = self.engine.init_status(container.id)
                if init.ready:
                    break
            elapsed = time.monotonic() - start
            if elapsed > timeout:
                last = container.health.last
                details = []
                if last is not None:
                    details.append(f"last health check (exit {last.exit_code}): {last.output or '(no output)'}")
                details.append("last log lines:")
                details += self._tail(container.id)
                raise Failure(NOT_HEALTHY, f"{s.name}: not healthy after {timeout:g}s "
                                           f"(health: {container.health.status})", details)
            time.sleep(min(HEALTH_POLL, max(0.0, timeout - elapsed)) or 0.1)
        seconds = time.monotonic() - start
        where = ", ".join(f"port {p.host_port}" for p in container.ports if p.host_ip in ("", "0.0.0.0"))
        self.say(f"{s.name}: healthy in {seconds:.1f}s ({container.name}{', ' + where if where else ''})")
        return seconds

    def _tail(self, container: str, n: int = 15) -> list[str]:
        """The container's last lines, readable, a line repeated in a row shown once."""
        try:
            lines = self.engine.logs(container, tail=100)
        except EngineError as e:
            return [f"(no logs: {e})"]
        out: list[str] = []
        repeats = 0
        for line in (logview.render(logview.parse_line(line)) for line in lines):
            if out and line == out[-1]:
                repeats += 1
                continue
            if repeats:
                out[-1] += f"  (×{repeats + 1})"
                repeats = 0
            out.append(line)
        if repeats:
            out[-1] += f"  (×{repeats + 1})"
        return out[-n:]

    # ============================================================================ down / restart
    def down(self, names: list[str], volumes: bool = False) -> int:
        code = OK
        for s in (self.service(n) for n in names):
            container = self.engine.find(s)
            stopped = ""
            if container is not None and container.running:
                grace = _seconds(s.stop_grace_period, 10.0)
                start = time.monotonic()
                self.engine.compose(s, "stop", s.name, timeout=grace + 60)
                seconds = time.monotonic() - start
                after = self.engine.inspect(container.id)
                exit_code = after.exit_code if after else None
                if exit_code == 0:
                    stopped = f"stopped cleanly in {seconds:.1f}s (exit 0)"
                else:
                    code = NOT_HEALTHY
                    why = " (killed when the grace period ran out?)" if exit_code in (137, -9) else ""
                    stopped = f"stopped in {seconds:.1f}s, but not cleanly: exit {exit_code}{why}"
            elif container is not None:
                stopped = f"was not running ({container.status}" + (
                    f", exit {container.exit_code})" if container.exit_code is not None else ")")
            self.engine.compose(s, "down", *(["-v"] if volumes else []), timeout=120)
            if container is None:
                self.say(f"{s.name}: no container" + ("; volumes removed" if volumes else ""))
            else:
                removed = "container and volumes removed" if volumes else "container removed, volumes kept"
                self.say(f"{s.name}: {stopped}; {removed}")
        return code

    def restart(self, names: list[str], timeout: float = 120.0) -> int:
        for name in names:
            s = self.service(name)
            container = self.engine.find(s)
            if container is None or not container.running:
                self.up([name], timeout=timeout)
                continue
            grace = _seconds(s.stop_grace_period, 10.0)
            self.say(f"{s.name}: restarting {container.name}")
            self.engine.run("restart", "-t", str(int(grace)), container.id, timeout=grace + 60)
            self.wait_healthy(s, timeout)
        return OK

    # ============================================================================ status
    def status(self, names: list[str], as_json: bool = False) -> int:
        reports: list[Report] = []
        for s in (self.service(n) for n in names):
            container = self.engine.find(s)
            init = self.engine.init_status(container.id) if container is not None and container.running else None
            reports.append((s, container, init, state.assess(container, init)))
        if as_json:
            print(json.dumps({"ok": all(r[3].ok for r in reports), "engine": self.engine.name,
                              "services": [_report_json(*r) for r in reports]}, indent=2), file=self.out)
        else:
            self._status_table(reports)
        return OK if all(r[3].ok for r in reports) else NOT_HEALTHY

    def _status_table(self, reports: list[Report]) -> None:
        now = datetime.now(UTC)
        rows: list[tuple[str, ...]] = [("SERVICE", "STATE", "HEALTH", "UPTIME", "PORTS", "CONTAINER")]
        for s, c, _init, _verdict in reports:
            if c is None:
                rows.append((s.name, "absent", "-", "-", "-", "-"))
                continue
            rows.append((s.name, c.status, c.health.status if c.running else "-", format_uptime(c.uptime(now)),
                         ", ".join(map(str, c.ports)) or "-", c.name))
        _table(rows, self.out)
        for s, c, init, verdict in reports:
            self.say("")
            self.say(f"{s.name}: {verdict.summary}")
            if c is not None and c.running and c.health.last is not None:
                last = c.health.last
                ago = f"{(now - last.end).total_seconds():.0f}s ago" if last.end else "at an unknown time"
                self.say(f"  last health check {ago}: exit {last.exit_code}"
                         + (f", {last.output}" if last.output else "")
                         + (f" ({c.health.failing_streak} failing in a row)" if c.health.failing_streak else ""))
                if c.health_is_stale(now):
                    self.say("  (older than two check intervals: nothing runs the checks, as with podman without "
                             f"systemd; `hive-containers up {s.name}`"
                             + (f" or `podman healthcheck run {c.name}`" if self.engine.name == "podman" else "")
                             + " runs one)")
            if init is not None and init.programs:
                rows = [("  PROGRAM", "STATE", "PID", "UPTIME", "RESTARTS", "READY", "INFO")]
                for p in init.programs:
                    rows.append((f"  {p.name}", p.state, str(p.pid or "-"), format_uptime(p.uptime), str(p.restarts),
                                 "yes" if p.ready else "no", p.reason))
                _table(rows, self.out)

    # ============================================================================ logs
    def logs(self, name: str, follow: bool = False, program: str | None = None, lines: int = 100,
             raw: bool = False) -> int:
        s = self.service(name)
        container = self.engine.find(s)
        if container is None:
            raise Failure(NOT_HEALTHY, f"{s.name}: no container (start it: hive-containers up {s.name})")
        show = self._printer(program, raw)
        if not follow:
            history = self.engine.logs(container.id, tail=None if program else lines)
            for line in _last_matching(history, program, lines):
                show(line)
            return OK
        if program is None:
            return self._stream(self.engine.logs_argv(container.id, follow=True, tail=lines), show)
        # the last N lines of that program come from the whole history; then the stream from a
        # moment before, without the lines already shown
        since = (datetime.now(UTC) - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        history = self.engine.logs(container.id)
        for line in _last_matching(history, program, lines):
            show(line)
        seen = Counter(history)
        return self._stream(self.engine.logs_argv(container.id, follow=True, since=since), show, seen)

    def _printer(self, program: str | None, raw: bool) -> Callable[[str], None]:
        def show(line: str) -> None:
            parsed = logview.parse_line(line)
            if program is not None and not logview.belongs_to(parsed, program):
                return
            print(line if raw else logview.render(parsed), file=self.out, flush=True)
        return show

    def _stream(self, argv: list[str], show: Callable[[str], None], skip: Counter[str] | None = None) -> int:
        try:
            proc = subprocess.Popen(argv, env=self.engine.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True, errors="replace")
        except OSError as e:
            raise EngineError(f"cannot run {argv[0]}: {e.strerror or e}") from None
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                if skip and skip[line] > 0:
                    skip[line] -= 1
                    continue
                show(line)
        except KeyboardInterrupt:
            pass
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        return OK if proc.returncode in (0, -15, None) else ENGINE


# ================================================================================ helpers

def _last_matching(lines: list[str], program: str | None, n: int) -> list[str]:
    if program is not None:
        lines = [line for line in lines if logview.belongs_to(logview.parse_line(line), program)]
    return lines[-n:] if n > 0 else []


def _line_with(text: str, needle: str) -> str:
    for line in text.splitlines():
        if needle in line.lower():
            return line.strip()
    return needle


def _seconds(value: Any, default: float) -> float:
    try:
        return parse_duration(value) if value is not None else default
    except ValueError:
        return default



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
