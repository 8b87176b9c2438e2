"""Running the real init for tests: as a subprocess, or as PID 1 of a new PID namespace when we
are root. Its JSON log lines are collected so that tests can wait for what a user would see."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (PID namespaces, user switching)")


def free_port() -> int:
    """A TCP port free on loopback now (the kernel picks it): two runs on one machine never meet."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_suffix() -> str:
    """A suffix for names on the machine (containers, networks, volumes, users) unique to this run."""
    return f"{os.getpid()}-{os.urandom(3).hex()}"


def wait_until(predicate: Callable[[], Any], timeout: float = 20, what: str = "", interval: float = 0.05) -> Any:
    """The one way tests wait for a condition they cannot be told about: poll `predicate` until it
    returns something true (which is returned) or `timeout` seconds pass (AssertionError naming
    `what`). The deadline is only a bound on waiting, never an assertion about speed: make it
    generous. Where the code under test says when something happened (a log line, an Event),
    wait for that instead (`Init.wait_for`, `wait_event`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def wait_event(event: threading.Event, timeout: float = 20, what: str = "") -> None:
    """Wait for an Event a test's own thread sets, with a deadline."""
    if not event.wait(timeout):
        raise AssertionError(f"timed out after {timeout}s waiting for {what or event}")


class Init:
    """hive-init running a config. `pid1=True` runs it as PID 1 in a new PID namespace."""

    def __init__(self, tmp: Path, config: str, pid1: bool = False, http: bool = False,
                 env: dict[str, str] | None = None, args: list[str] | None = None,
                 prefix: list[str] | None = None):
        self.tmp = tmp
        self.socket = str(tmp / "control.sock")
        self.port = free_port() if http else None
        head = f'[init]\ncontrol_socket = "{self.socket}"\nhttp = ' + (f'"127.0.0.1:{self.port}"' if http else "false") + "\n"
        config = textwrap.dedent(config)
        if "[init]" in config:
            config = config.replace("[init]\n", head, 1)
        else:
            config = head + config
        self.config_path = tmp / "hive-init.toml"
        self.config_path.write_text(config)
        command = [sys.executable, "-m", "hive_init", "run", "-c", str(self.config_path), *(args or [])]
        if pid1:
            command = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *command]
        command = [*(prefix or []), *command]  # e.g. prlimit --nofile=64:64 --, which execs what follows
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.pid1 = pid1
        self._readers = [threading.Thread(target=self._read, args=(s,), daemon=True)
                         for s in (self.proc.stdout, self.proc.stderr)]
        for r in self._readers:
            r.start()

    def _read(self, stream: Any) -> None:
        for raw in stream:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                event = json.loads(text)
            except ValueError:
                event = {"program": "?", "msg": text}
            with self._cond:
                self.raw.append(text)
                self.lines.append(event)
                self._cond.notify_all()

    @property
    def init_pid(self) -> int:
        """The init's PID as seen from here (inside the namespace it is 1)."""
        if not self.pid1:
            return self.proc.pid
        children = wait_until(lambda: psutil.Process(self.proc.pid).children(), 10,
                              "the init to start inside its namespace", interval=0.01)
        return children[0].pid

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20, what: str = "") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for event in self.lines[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and seen == len(self.lines) and not self._alive_readers()):
                    raise AssertionError(f"timed out waiting for {what or predicate}; log:\n" + "\n".join(self.raw[-40:]))
                self._cond.wait(min(left, 0.2))

    def _alive_readers(self) -> bool:
        return any(r.is_alive() for r in self._readers)

    def wait_msg(self, text: str, program: str | None = None, timeout: float = 20) -> dict[str, Any]:
        return self.wait_for(lambda e: text in e.get("msg", "") and (program is None or program in
                                                                     (e.get("program"), e.get("target"))),
                             timeout, what=f"{text!r} from {program}")

    def output(self, program: str) -> list[str]:
        with self._cond:
            return [e["msg"] for e in self.lines if e.get("program") == program and "stream" in e]

    def events(self, program: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.lines if e.get("program") == "hive-init" and (program is None or e.get("target") == program)]

    def ctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hive_init", "-s", self.socket, *args],
                              capture_output=True, text=True, timeout=timeout)

    def status(self) -> dict[str, Any]:
        out = self.ctl("status", "--json")
        assert out.returncode in (0, 1), out.stderr
        return json.loads(out.stdout)

    def program(self, name: str) -> dict[str, Any]:
        return next(p for p in self.status()["programs"] if p["name"] == name)

    def wait_state(self, name: str, state: str, timeout: float = 20) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def reached() -> dict[str, Any] | bool:
            nonlocal last
            if os.path.exists(self.socket):
                try:
                    last = self.program(name)
                    if last["state"] == state:
                        return last
                except (AssertionError, ValueError, StopIteration):
                    pass
            return self.proc.poll() is not None  # the init is gone: stop waiting

        try:
            found = wait_until(reached, timeout, f"{name} to reach {state}")
        except AssertionError:
            found = None
        if not isinstance(found, dict):
            raise AssertionError(f"{name} never reached {state} (last: {last}); log:\n" + "\n".join(self.raw[-30:]))
        return found

    def health(self) -> dict[str, Any]:
        """GET /health on its endpoint (`http=True`): the JSON body, also while it answers 503
        (not ready: the body is the same JSON)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            return json.load(e)

    def signal(self, signum: int) -> None:
        os.kill(self.init_pid, signum)

    def kill_group(self, timeout: float = 40) -> int:
        """SIGKILL to its whole process group (the init, and as PID 1 the `unshare` around it):
        an init that dies with nothing cleaned up; then wait. Its programs run in sessions of
        their own: as PID 1 the kernel kills them with it, else they outlive it."""
        os.killpg(self.proc.pid, signal.SIGKILL)  # start_new_session: its group is its PID
        return self.wait(timeout)

    def wait(self, timeout: float = 40) -> int:
        code = self.proc.wait(timeout)
        for r in self._readers:
            r.join(5)
        return code

    def stop(self, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                # programs run in sessions of their own: a subreaper init's would outlive it
                descendants = psutil.Process(self.init_pid).children(recursive=True)
                os.killpg(os.getpgid(self.init_pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError, AssertionError, psutil.Error):
                descendants = []
            for process in descendants:
                try:
                    process.kill()
                except psutil.Error:
                    pass
            self.proc.kill()
            self.proc.wait(10)


def starter(tmp_path: Path, cls: type = Init):
    """The body of the `start_init` fixtures: start inits of `cls`, close them all at the end."""
    started: list[Init] = []

    def start(config: str, **kwargs: Any) -> Init:
        init = cls(tmp_path, config, **kwargs)
        started.append(init)
        return init

    yield start
    for init in started:
        init.close()


@pytest.fixture
def start_init(tmp_path: Path):
    yield from starter(tmp_path)


@pytest.fixture
def open_tmp():
    """A temp dir other users can read (pytest's own lives under a 0700 dir): for switched users."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="hive-init-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_user() -> str | None:
    """As root, PostgreSQL runs as `postgres`: make sure that user exists."""
    if not ROOT:
        return None
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"],
                       check=True)
    return "postgres"
