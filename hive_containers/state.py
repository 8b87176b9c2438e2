"""What the container engine says, read into typed values: pure functions, no engine needed.

Each function takes the engine's raw output as text (`inspect` JSON, `ps` JSON or table lines,
`hive-init status --json` run inside the container) and returns frozen dataclasses. Docker and
podman differ in small ways (podman's `ps --format json` is one JSON array, Docker's is one
object per line; podman's ports are a list of objects, Docker's a string; podman 4 also names
the health `Healthcheck`), and both spellings are accepted.

Health is only ever read from `.State.Health.Status` of `inspect`, or from the exact
parenthesised word at the end of a `ps` STATUS ("Up 3 minutes (unhealthy)"): never from a
substring, since "unhealthy" contains "healthy".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

STARTING, HEALTHY, UNHEALTHY, NONE = "starting", "healthy", "unhealthy", "none"
HEALTH_VALUES = (STARTING, HEALTHY, UNHEALTHY, NONE)


class ParseError(ValueError):
    """The engine's output is not what it should be (the message says what was expected)."""


# ------------------------------------------------------------------------------------------ inspect

@dataclass(frozen=True)
class HealthCheck:
    """One run of the container's health check, as the engine logged it."""
    exit_code: int
    output: str
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True)
class Health:
    status: str  # starting, healthy, unhealthy, none
    failing_streak: int = 0
    log: tuple[HealthCheck, ...] = ()

    @property
    def last(self) -> HealthCheck | None:
        return self.log[-1] if self.log else None


@dataclass(frozen=True)
class PublishedPort:
    container_port: int
    protocol: str
    host_ip: str
    host_port: int

    def __str__(self) -> str:
        host = self.host_ip or "0.0.0.0"
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.host_port}->{self.container_port}/{self.protocol}"


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    image: str
    status: str  # created, running, paused, restarting, exited, dead, removing (podman: also stopped, configured)
    running: bool
    exit_code: int | None
    started_at: datetime | None
    finished_at: datetime | None
    health: Health
    has_healthcheck: bool
    healthcheck_interval: float | None = None  # seconds
    restart_count: int = 0
    oom_killed: bool = False
    error: str = ""
    ports: tuple[PublishedPort, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)

    def health_is_stale(self, now: datetime | None = None) -> bool:
        """The last check ended more than two intervals ago: nothing runs the checks (podman
        without systemd), so the health shown is old news."""
        last = self.health.last
        if not self.running or last is None or last.end is None or self.healthcheck_interval is None:
            return False
        now = now or datetime.now(UTC)
        return (now - last.end).total_seconds() > 2 * self.healthcheck_interval + 5

    def uptime(self, now: datetime | None = None) -> float | None:
        """Seconds since it started, while it runs."""
        if not self.running or self.started_at is None:
            return None
        now = now or datetime.now(UTC)
        return max(0.0, (now - self.started_at).total_seconds())


_TIME = re.compile(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.(\d+))?\s*(Z|[+-]\d\d:?\d\d)?(?:\s+[A-Z]{2,5})?$")


def parse_time(value: object) -> datetime | None:
    """RFC 3339 with nanoseconds as Docker and podman write it ("2025-01-02T03:04:05.123456789Z",
    "…+00:00", podman's Go default "2025-01-02 03:04:05.1 +0000 UTC"); None for the zero time."""
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    m = _TIME.match(value.strip())
    if not m:
        raise ParseError(f"not a timestamp: {value!r}")
    day, clock, fraction, zone = m.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    if zone in (None, "Z"):
        zone = "+00:00"
    elif ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    return datetime.fromisoformat(f"{day}T{clock}.{micro}{zone}")


def parse_inspect(raw: str) -> list[Container]:
    """`docker inspect CONTAINER…` / `podman inspect CONTAINER…` (a JSON array) → containers."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ParseError(f"inspect output is not JSON: {e}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ParseError("inspect output is not a JSON array")
    return [container_from_inspect(item) for item in data]


def container_from_inspect(item: dict[str, Any]) -> Container:
    if not isinstance(item, dict) or not isinstance(item.get("State"), dict):
        raise ParseError("inspect output has no State: not a container?")
    state = item["State"]
    config = item.get("Config") or {}
    status = str(state.get("Status") or ("running" if state.get("Running") else "unknown")).lower()
    running = bool(state["Running"]) if "Running" in state else status == "running"
    has_healthcheck = _has_healthcheck(item)
    return Container(
        id=str(item.get("Id") or item.get("ID") or ""),
        name=str(item.get("Name") or "").lstrip("/"),
        image=str(config.get("Image") or item.get("ImageName") or item.get("Image") or ""),
        status=status,
        running=running,
        exit_code=state.get("ExitCode") if isinstance(state.get("ExitCode"), int) else None,
        started_at=parse_time(state.get("StartedAt")),
        finished_at=parse_time(state.get("FinishedAt")),
        health=_health(state, has_healthcheck),
        has_healthcheck=has_healthcheck,
        healthcheck_interval=_healthcheck_interval(item) if has_healthcheck else None,
        restart_count=int(item.get("RestartCount") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        error=str(state.get("Error") or ""),
        ports=_inspect_ports(item),
        labels=dict(config.get("Labels") or {}),
    )


def _has_healthcheck(item: dict[str, Any]) -> bool:
    config = item.get("Config") or {}
    check = config.get("Healthcheck") or item.get("Healthcheck")
    if not isinstance(check, dict):
        return False
    test = check.get("Test") or []
    return bool(test) and test[0] != "NONE"


def _healthcheck_interval(item: dict[str, Any]) -> float:
    check = (item.get("Config") or {}).get("Healthcheck") or item.get("Healthcheck") or {}
    return (check.get("Interval") or 30 * 10**9) / 1e9  # nanoseconds; 30 s is both engines' default


def _health(state: dict[str, Any], has_healthcheck: bool) -> Health:
    # Docker: State.Health only when there is a check; podman 4.x: State.Health (and the older
    # State.Healthcheck), with an empty Status when the container has no check
    raw = state.get("Health")
    if not isinstance(raw, dict) or not raw.get("Status"):
        raw = state.get("Healthcheck") if isinstance(state.get("Healthcheck"), dict) else raw
    if not isinstance(raw, dict) or not raw.get("Status"):
        return Health(STARTING if has_healthcheck else NONE)
    status = str(raw["Status"]).strip().lower()
    if status not in (STARTING, HEALTHY, UNHEALTHY):
        raise ParseError(f"unknown health status {raw['Status']!r}")
    log = tuple(
        HealthCheck(exit_code=int(entry.get("ExitCode", -1)), output=str(entry.get("Output") or "").strip(),
                    start=parse_time(entry.get("Start")), end=parse_time(entry.get("End")))
        for entry in raw.get("Log") or () if isinstance(entry, dict)
    )
    return Health(status, int(raw.get("FailingStreak") or 0), log)


def _inspect_ports(item: dict[str, Any]) -> tuple[PublishedPort, ...]:
    ports = ((item.get("NetworkSettings") or {}).get("Ports")) or {}
    if not ports and not (item.get("State") or {}).get("Running"):
        # a container that does not run publishes nothing: what it would publish is in HostConfig
        ports = (item.get("HostConfig") or {}).get("PortBindings") or {}
    out = []
    for key, bindings in ports.items():
        number, _, proto = key.partition("/")
        for binding in bindings or ():
            if binding.get("HostPort"):
                out.append(PublishedPort(int(number), proto or "tcp", str(binding.get("HostIp") or ""),
                                         int(binding["HostPort"])))
    return tuple(sorted(set(out), key=lambda p: (p.container_port, p.host_port, p.host_ip)))


# ------------------------------------------------------------------------------------------ ps

@dataclass(frozen=True)
class PsStatus:
    """The STATUS column of `ps`, e.g. "Up 3 minutes (unhealthy)", "Exited (0) 2 seconds ago"."""
    state: str  # running, paused, restarting, exited, created, dead, removing, stopping, unknown
    health: str | None  # starting, healthy, unhealthy; None when the column says nothing of it
    exit_code: int | None = None


_PS_HEALTH = {"healthy": HEALTHY, "unhealthy": UNHEALTHY, "health: starting": STARTING, "starting": STARTING}
_PS_TAIL = re.compile(r"\s*\((healthy|unhealthy|health: starting|starting|paused)\)\s*$", re.IGNORECASE)
_PS_EXITED = re.compile(r"^Exited \((-?\d+)\)", re.IGNORECASE)
_PS_RESTARTING = re.compile(r"^Restarting \((-?\d+)\)", re.IGNORECASE)


def parse_ps_status(text: str) -> PsStatus:
    """The STATUS text of Docker's and podman's `ps` → state and health, word for word."""
    text = text.strip()
    rest, health, paused = text, None, False
    while True:  # "Up 2 minutes (Paused)" and "Up 2 minutes (healthy)"; Docker shows one at a time
        m = _PS_TAIL.search(rest)
        if not m:
            break
        word = m.group(1).lower()
        if word == "paused":
            paused = True
        else:
            health = _PS_HEALTH[word]
        rest = rest[:m.start()]
    if m := _PS_EXITED.match(rest):
        return PsStatus("exited", health, int(m.group(1)))
    if m := _PS_RESTARTING.match(rest):
        return PsStatus("restarting", health, int(m.group(1)))
    first = rest.split(" ", 1)[0].lower()
    if first == "up":
        return PsStatus("paused" if paused else "running", health)
    if rest.lower().startswith("removal in progress"):
        return PsStatus("removing", health)
    state = {"created": "created", "dead": "dead", "stopping": "stopping", "stopped": "exited",
             "paused": "paused", "initialized": "created", "configured": "created"}.get(first, "unknown")
    return PsStatus(state, health)


@dataclass(frozen=True)
class PsEntry:
    id: str
    names: tuple[str, ...]
    image: str
    status_text: str
    status: PsStatus
    ports: tuple[PublishedPort, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.names[0] if self.names else self.id[:12]


def parse_ps_json(raw: str) -> list[PsEntry]:
    """`podman ps --format json` (one JSON array) or `docker ps --format '{{json .}}'` (one object
    per line) → entries."""
    raw = raw.strip()
    if not raw:
        return []
    try:
        if raw.startswith("["):
            items = json.loads(raw)
        else:
            items = [json.loads(line) for line in raw.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise ParseError(f"ps output is not JSON: {e}") from None
    return [_ps_entry(item) for item in items]


def _ps_entry(item: dict[str, Any]) -> PsEntry:
    names = item.get("Names") or []
    if isinstance(names, str):  # Docker: "a,b"
        names = [n for n in names.split(",") if n]
    labels = item.get("Labels") or {}
    if isinstance(labels, str):  # Docker: "k=v,k2=v2"
        labels = dict(pair.partition("=")[::2] for pair in labels.split(",") if pair)
    status_text = str(item.get("Status") or "")
    status = parse_ps_status(status_text)
    state = str(item.get("State") or "").lower()
    if state and status.state == "unknown":
        status = PsStatus(state, status.health, status.exit_code)
    return PsEntry(id=str(item.get("Id") or item.get("ID") or ""), names=tuple(names),
                   image=str(item.get("Image") or ""), status_text=status_text, status=status,
                   ports=_ps_ports(item.get("Ports")), labels=dict(labels))


_PORT_TEXT = re.compile(r"^(?:(?P<ip>\[[^\]]*\]|[\d.]+|[0-9a-f:]+):)?(?P<host>\d+)(?:-(?P<hostend>\d+))?->"
                        r"(?P<ctr>\d+)(?:-(?P<ctrend>\d+))?/(?P<proto>\w+)$")


def _ps_ports(ports: object) -> tuple[PublishedPort, ...]:
    out: list[PublishedPort] = []
    if isinstance(ports, str):  # Docker: "0.0.0.0:48886->48886/tcp, :::48886->48886/tcp"
        out = parse_port_text(ports)
    elif isinstance(ports, list):
        # podman: [{"host_ip": "", "container_port": 48886, "host_port": 48886, "range": 1, "protocol": "tcp"}]
        for p in ports:
            if not isinstance(p, dict) or not p.get("host_port"):
                continue
            for i in range(int(p.get("range") or 1)):
                out.append(PublishedPort(int(p["container_port"]) + i, str(p.get("protocol") or "tcp"),
                                         str(p.get("host_ip") or ""), int(p["host_port"]) + i))
    return tuple(sorted(set(out), key=lambda p: (p.container_port, p.host_port, p.host_ip)))


def parse_port_text(text: str) -> list[PublishedPort]:
    """The PORTS column: "0.0.0.0:48886->48886/tcp, :::48886->48886/tcp" (ranges "a-b->c-d")."""
    out = []
    for part in text.split(","):
        m = _PORT_TEXT.match(part.strip())
        if not m:
            continue  # exposed but not published ("48886/tcp")
        host, ctr = int(m.group("host")), int(m.group("ctr"))
        count = int(m.group("hostend") or host) - host + 1
        ip = (m.group("ip") or "").strip("[]")
        for i in range(count):
            out.append(PublishedPort(ctr + i, m.group("proto"), ip, host + i))
    return out


def parse_ps_table(raw: str) -> list[PsEntry]:
    """The default `ps` table of either engine (CONTAINER ID  IMAGE  …  STATUS  PORTS  NAMES):
    the columns are where the header's titles start."""
    lines = [line for line in raw.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0]
    titles = [m for m in re.finditer(r"\S+(?: \S+)*", header)]
    if not titles or titles[0].group() != "CONTAINER ID":
        raise ParseError("ps output does not start with the CONTAINER ID header")
    starts = [(m.group(), m.start()) for m in titles]
    entries = []
    for line in lines[1:]:
        cells = {}
        for i, (title, start) in enumerate(starts):
            end = starts[i + 1][1] if i + 1 < len(starts) else len(line)
            cells[title] = line[start:end].strip()
        status_text = cells.get("STATUS", "")
        names = tuple(n for n in cells.get("NAMES", "").split(",") if n)
        entries.append(PsEntry(id=cells.get("CONTAINER ID", ""), names=names, image=cells.get("IMAGE", ""),
                               status_text=status_text, status=parse_ps_status(status_text),
                               ports=tuple(parse_port_text(cells.get("PORTS", "")))))
    return entries


# ------------------------------------------------------------------------------------------ hive-init status --json

@dataclass(frozen=True)
class Program:
    name: str
    state: str
    ready: bool
    pid: int | None
    uptime: float | None
    restarts: int
    reason: str
    critical: bool


@dataclass(frozen=True)
class InitStatus:
    """hive-init's view from inside the container; `error` when it could not be asked."""
    ready: bool
    failing: tuple[str, ...] = ()
    programs: tuple[Program, ...] = ()
    shutting_down: bool = False
    error: str = ""


def parse_init_status(stdout: str, stderr: str = "", returncode: int = 0) -> InitStatus:
    """`hive-init status --json` as run through `exec` (exit 0 all ready, 1 not, 2 unreachable)."""
    text = stdout.strip()
    if not text.startswith("{"):
        reason = (stderr.strip() or stdout.strip() or f"hive-init status exited {returncode}").splitlines()[-1]
        return InitStatus(False, error=reason.removeprefix("hive-init: "))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return InitStatus(False, error=f"hive-init status --json answered something else than JSON: {e}")
    programs = tuple(
        Program(name=str(p.get("name")), state=str(p.get("state")), ready=bool(p.get("ready")), pid=p.get("pid"),
                uptime=p.get("uptime"), restarts=int(p.get("restarts") or 0), reason=str(p.get("reason") or ""),
                critical=bool(p.get("critical")))
        for p in data.get("programs") or ()
    )
    return InitStatus(ready=bool(data.get("ready")), failing=tuple(data.get("failing") or ()), programs=programs,
                      shutting_down=bool(data.get("shutting_down")))


# ------------------------------------------------------------------------------------------ the verdict

@dataclass(frozen=True)
class Verdict:
    ok: bool
    summary: str  # one line: "healthy", "not running (exited 0)", "unhealthy: api RUNNING (...)"


def assess(container: Container | None, init: InitStatus | None) -> Verdict:
    """Healthy only when the container runs, the engine's health check says healthy (or the
    container has none) and hive-init inside says every program that should be up is ready."""
    if container is None:
        return Verdict(False, "not created")
    if container.status == "paused":
        return Verdict(False, "paused")
    if not container.running:
        detail = container.status
        if container.status in ("exited", "stopped") and container.exit_code is not None:
            detail = f"exited {container.exit_code}"
        elif container.status in ("created", "configured", "initialized"):
            detail = "created, never started"
        if container.oom_killed:
            detail += ", out of memory"
        return Verdict(False, f"not running ({detail})")
    problems = []
    if container.health.status == UNHEALTHY:
        streak = container.health.failing_streak
        problems.append("health check unhealthy" + (f" ({streak} failing in a row)" if streak else ""))
    elif container.health.status == STARTING:
        problems.append("health check starting")
    if init is not None:
        if init.error:
            problems.append(f"hive-init: {init.error}")
        elif init.shutting_down:
            problems.append("hive-init is shutting down")
        else:
            if not init.ready:
                problems.append("not ready: " + ("; ".join(init.failing) or "?"))
            # said in so many words: a stopped critical program (the database) leaves the
            # service unusable (hive-init's readiness counts it too, since 0.1)
            stopped = [p.name for p in init.programs if p.critical and p.state in ("STOPPED", "FATAL", "EXITED")]
            if stopped:
                problems.append("critical program stopped: " + ", ".join(stopped))
    if problems:
        return Verdict(False, "; ".join(problems))
    return Verdict(True, "healthy" if container.health.status == HEALTHY else "ready (no health check)")
