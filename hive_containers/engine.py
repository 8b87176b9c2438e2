"""The container engine: Docker (with `docker compose`) when its daemon answers, else podman (with
podman-compose). Every call is a subprocess with a timeout; what it prints is read by the pure
functions of `state`. Failures become `EngineError` (one line) or `BuildError` (with the last
lines of the build), never a traceback.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hive_containers import state
from hive_containers.compose import Service
from hive_init.redact import Redactor, is_secret_name

ENGINES = ("docker", "podman")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PROJECT_LABEL = "com.docker.compose.project"  # set by docker compose and podman-compose alike
SERVICE_LABEL = "com.docker.compose.service"


class EngineError(Exception):
    """The engine is missing, unreachable, or one of its commands failed: one line."""


class BuildError(Exception):
    def __init__(self, message: str, tail: list[str]):
        super().__init__(message)
        self.tail = tail


@dataclass(frozen=True)
class Result:
    """stdout and stderr as the command wrote them (for parsing); `output` and `last_line` with
    secrets masked (for showing)."""
    returncode: int
    stdout: str
    stderr: str
    redact: Callable[[str], str] = str

    @property
    def output(self) -> str:
        return self.redact((self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).strip())

    def last_line(self) -> str:
        lines = [line for line in self.output.splitlines() if line.strip() and "level=" not in line]
        lines = lines or self.output.splitlines()
        return lines[-1].strip() if lines else f"exit status {self.returncode}"


def secret_redactor(env: Mapping[str, str]) -> Redactor:
    """Masks the values of *PASSWORD*/*SECRET*/*TOKEN*/*API_KEY* variables (compose puts them on
    podman's command line, and error output may show it)."""
    return Redactor(v for k, v in env.items() if is_secret_name(k) and len(v) >= 4)


class Engine:
    name = ""

    def __init__(self, binary: str, compose: list[str], env: Mapping[str, str] | None = None):
        self.binary = binary
        self.compose_argv = compose
        self.env = dict(os.environ if env is None else env)
        self.redact = secret_redactor(self.env)

    # ------------------------------------------------------------------ running commands
    def run(self, *args: str, timeout: float = 60, check: bool = True) -> Result:
        return self._run([self.binary, *args], timeout, check, f"{self.name} {' '.join(args[:2])}")

    def _run(self, argv: list[str], timeout: float, check: bool, what: str) -> Result:
        try:
            proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, errors="replace")
        except FileNotFoundError:
            raise EngineError(f"{argv[0]} is not installed") from None
        except subprocess.TimeoutExpired:
            raise EngineError(f"`{what}` did not answer within {timeout:.0f}s") from None
        except OSError as e:
            raise EngineError(f"cannot run {argv[0]}: {e.strerror or e}") from None
        result = Result(proc.returncode, proc.stdout, proc.stderr, self.redact)
        if check and proc.returncode != 0:
            raise EngineError(f"`{what}` failed (exit {proc.returncode}): {result.last_line()}")
        return result

    def compose(self, service: Service, *args: str, timeout: float = 300, check: bool = True) -> Result:
        argv = [*self.compose_argv, "-p", service.project, "-f", str(service.compose_file), *args]
        name = "docker compose" if self.name == "docker" else "podman-compose"
        return self._run(argv, timeout, check, f"{name} {args[0] if args else ''}".strip())

    # ------------------------------------------------------------------ reading state
    def find(self, service: Service) -> state.Container | None:
        """The service's container (running or not), found by the labels compose gives it."""
        entries = self.ps(f"label={PROJECT_LABEL}={service.project}", f"label={SERVICE_LABEL}={service.name}")
        if not entries:
            return None
        containers = [c for c in (self.inspect(e.id) for e in entries) if c is not None]
        # several (a scaled service, a leftover): the running one, else the one started last
        return max(containers, key=lambda c: (c.running, c.started_at or _EPOCH), default=None)

    def ps(self, *filters: str, all: bool = True) -> list[state.PsEntry]:
        args = ["ps", "--no-trunc", *(["-a"] if all else [])]
        for f in filters:
            args += ["--filter", f]
        try:
            return state.parse_ps_json(self.run(*args, "--format", self.ps_format).stdout)
        except state.ParseError as e:
            raise EngineError(f"{self.name} ps: {e}") from None

    ps_format = "json"

    def inspect(self, ref: str) -> state.Container | None:
        result = self.run("container", "inspect", ref, check=False)
        if result.returncode != 0:
            if "no such" in result.output.lower():
                return None
            raise EngineError(f"`{self.name} inspect {ref}` failed: {result.last_line()}")
        try:
            found = state.parse_inspect(result.stdout)
        except state.ParseError as e:
            raise EngineError(f"{self.name} inspect {ref}: {e}") from None
        return found[0] if found else None

    def image_exists(self, ref: str) -> bool:
        return self.run("image", "inspect", "--format", "{{.Id}}", ref, check=False, timeout=30).returncode == 0

    def init_status(self, container: str) -> state.InitStatus:
        """`hive-init status --json` inside the container."""
        try:
            result = self.run("exec", container, "hive-init", "status", "--json", timeout=20, check=False)
        except EngineError as e:
            return state.InitStatus(False, error=str(e))
        if result.returncode in (125, 126, 127) and not result.stdout.strip().startswith("{"):
            return state.InitStatus(False, error=f"cannot exec hive-init: {result.last_line()}")
        return state.parse_init_status(result.stdout, result.stderr, result.returncode)

    def published_elsewhere(self, port: int, exclude_project: str) -> str | None:
        """The running container (not of this project) that publishes `port`, if any."""
        for entry in self.ps(all=False):
            if entry.labels.get(PROJECT_LABEL) == exclude_project:
                continue
            if any(p.host_port == port for p in entry.ports):
                return entry.name
        return None

    # ------------------------------------------------------------------ health
    def run_healthcheck(self, container: str) -> Result | None:
        """Run the container's health check now, when the engine lets us (podman); None when
        the engine schedules it itself (Docker)."""
        return None

    # ------------------------------------------------------------------ images
    def build_argv(self, dockerfile: Path, context: Path, tag: str, args: Mapping[str, str],
                   extra_ca: str | None) -> list[str]:
        argv = [self.binary, "build", "-f", str(dockerfile), "-t", tag]
        for key, value in args.items():
            argv += ["--build-arg", f"{key}={value}"]
        if extra_ca:
            argv += ["--secret", f"id=extra_ca,src={extra_ca}"]
        return [*argv, str(context)]

    def popen(self, argv: list[str]) -> subprocess.Popen[str]:
        """`argv` started with the engine's environment, for the lines it prints as they come
        (stdout and stderr in one text pipe); EngineError when it cannot run at all."""
        try:
            return subprocess.Popen(argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True, errors="replace")
        except OSError as e:
            raise EngineError(f"cannot run {argv[0]}: {e.strerror or e}") from None

    def build(self, dockerfile: Path, context: Path, tag: str, args: Mapping[str, str], extra_ca: str | None,
              echo: Callable[[str], None] | None = None, timeout: float = 3600) -> float:
        """Build one image; the output goes to `echo` line by line (if given), its last lines into
        the BuildError when it fails. Returns the seconds it took."""
        argv = self.build_argv(dockerfile, context, tag, args, extra_ca)
        tail: deque[str] = deque(maxlen=15)
        start = time.monotonic()
        proc = self.popen(argv)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                line = self.redact(line.rstrip("\n"))
                tail.append(line)
                if echo:
                    echo(line)
                if time.monotonic() - start > timeout:
                    proc.kill()
                    break
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            raise BuildError(f"building {tag} from {dockerfile.name} failed (exit {proc.returncode})", list(tail))
        return time.monotonic() - start

    # ------------------------------------------------------------------ logs
    def logs_argv(self, container: str, follow: bool = False, tail: int | None = None,
                  since: str | None = None) -> list[str]:
        argv = [self.binary, "logs"]
        if follow:
            argv.append("-f")
        if tail is not None:
            argv += ["--tail", str(tail)]
        if since:
            argv += ["--since", since]
        return [*argv, container]

    def logs(self, container: str, tail: int | None = None) -> list[str]:
        result = self.run(*self.logs_argv(container, tail=tail)[1:], timeout=60, check=False)
        return (result.stdout + result.stderr).splitlines()


class Docker(Engine):
    name = "docker"
    ps_format = "{{json .}}"

    def __init__(self, binary: str, env: Mapping[str, str] | None = None):
        super().__init__(binary, [binary, "compose"], env)
        self.env.setdefault("DOCKER_BUILDKIT", "1")  # --secret needs BuildKit


class Podman(Engine):
    name = "podman"

    def __init__(self, binary: str, compose: list[str], env: Mapping[str, str] | None = None):
        super().__init__(binary, compose, env)
        self.env.setdefault("BUILDAH_FORMAT", "docker")  # the OCI format drops HEALTHCHECK

    def build_argv(self, dockerfile: Path, context: Path, tag: str, args: Mapping[str, str],
                   extra_ca: str | None) -> list[str]:
        argv = super().build_argv(dockerfile, context, tag, args, extra_ca)
        return [argv[0], "build", "--format", "docker", *argv[2:]]

    def run_healthcheck(self, container: str) -> Result | None:
        # without systemd podman never schedules the checks: this is the scheduler
        return self.run("healthcheck", "run", container, timeout=60, check=False)


# ---------------------------------------------------------------------------------- choosing one

def detect(choice: str | None = None, env: Mapping[str, str] | None = None) -> Engine:
    """The engine asked for (`--engine`, `$HIVE_ENGINE`), else Docker if its daemon answers, else
    podman. EngineError says why none can be used."""
    env = dict(os.environ if env is None else env)
    choice = (choice or env.get("HIVE_ENGINE") or "auto").lower()
    if choice not in ("auto", *ENGINES):
        raise ValueError(f"unknown engine {choice!r} (docker or podman)")
    path = env.get("PATH")
    docker = shutil.which("docker", path=path)
    podman = shutil.which("podman", path=path)
    if choice == "docker":
        if not docker:
            raise EngineError("docker is not installed (or not on PATH)")
        problem = _docker_problem(docker, env)
        if problem:
            raise EngineError(f"the Docker daemon is not reachable: {problem}")
        return _docker(docker, env)
    if choice == "podman":
        if not podman:
            raise EngineError("podman is not installed (or not on PATH)")
        return _podman(podman, env)
    docker_problem = _docker_problem(docker, env) if docker else None
    if docker and not docker_problem:
        return _docker(docker, env)
    if podman:
        return _podman(podman, env)
    if docker:
        raise EngineError(f"the Docker daemon is not reachable ({docker_problem}) and podman is not installed")
    raise EngineError("no container engine: neither docker nor podman is installed")


def _probe(argv: list[str], env: Mapping[str, str], timeout: float = 15) -> str | None:
    """None when the command succeeds, else its last line of output."""
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, errors="replace")
    except subprocess.TimeoutExpired:
        return f"`{' '.join(argv[:2])}` did not answer within {timeout:.0f}s"
    except OSError as e:
        return str(e.strerror or e)
    if proc.returncode == 0:
        return None
    lines = [line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


def _docker_problem(docker: str, env: Mapping[str, str]) -> str | None:
    return _probe([docker, "info", "--format", "{{.ServerVersion}}"], env)


def _docker(docker: str, env: Mapping[str, str]) -> Docker:
    if _probe([docker, "compose", "version"], env):
        raise EngineError("`docker compose` is not available (install the Docker Compose plugin)")
    return Docker(docker, env)


def _podman(podman: str, env: Mapping[str, str]) -> Podman:
    # (no `podman info` here: it takes over a second; podman has no daemon to be unreachable, and
    # a podman that does not work says so at its first command)
    compose = podman_compose(env)
    if compose is None:
        raise EngineError("podman-compose is not installed (pip install podman-compose)")
    return Podman(podman, compose, env)


def podman_compose(env: Mapping[str, str]) -> list[str] | None:
    """podman-compose on PATH, next to this Python (a venv), or as a module of it."""
    found = shutil.which("podman-compose", path=env.get("PATH"))
    if found:
        return [found]
    beside = Path(sys.executable).parent / "podman-compose"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    if importlib.util.find_spec("podman_compose") is not None:
        return [sys.executable, "-m", "podman_compose"]
    return None
