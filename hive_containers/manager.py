"""The containers' lifecycle: up (everything that can be checked before anything starts, the
images built when missing, `compose up`, then the wait until healthy), down (a stop within the
grace period, told clean or not) and restart, through the compose files and whichever engine
`engine.detect` found. `Manager` is what the command line drives: `status` is report.py's and
`logs` logs.py's, given the same engine, services and output. Every failure is an
`exits.Failure`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from hive_containers import logs as container_logs
from hive_containers import ports, report, state
from hive_containers.compose import SERVICES, Service, load_service, read_env_file
from hive_containers.engine import BuildError, Engine
from hive_containers.exits import BUILD, CANNOT_START, ENGINE, NOT_HEALTHY, OK, Failure
from hive_init.config.durations import parse_duration

HEALTH_POLL = 1.0  # seconds between health checks while `up` waits


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
                                           f"its last lines:", container_logs.tail(self.engine, container.id))
            if not container.running:
                code = container.exit_code
                raise Failure(NOT_HEALTHY, f"{s.name}: the container stopped before it was healthy"
                                           f"{f' (exit {code})' if code is not None else ''}; its last lines:",
                              container_logs.tail(self.engine, container.id))
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
                details += container_logs.tail(self.engine, container.id)
                raise Failure(NOT_HEALTHY, f"{s.name}: not healthy after {timeout:g}s "
                                           f"(health: {container.health.status})", details)
            time.sleep(min(HEALTH_POLL, max(0.0, timeout - elapsed)) or 0.1)
        seconds = time.monotonic() - start
        where = ", ".join(f"port {p.host_port}" for p in container.ports if p.host_ip in ("", "0.0.0.0"))
        self.say(f"{s.name}: healthy in {seconds:.1f}s ({container.name}{', ' + where if where else ''})")
        return seconds

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

    # ============================================================================ status, logs
    def status(self, names: list[str], as_json: bool = False) -> int:
        return report.status(self.engine, [self.service(n) for n in names], self.out, as_json)

    def logs(self, name: str, follow: bool = False, program: str | None = None, lines: int = 100,
             raw: bool = False) -> int:
        return container_logs.show(self.engine, self.service(name), self.out, follow, program, lines, raw)


# ================================================================================ helpers

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
