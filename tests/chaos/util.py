"""What the chaos tests share: the init's own resources seen from outside (RSS, CPU, fds,
zombies), plain HTTP against the health endpoint, metrics, and an `Init` whose reader keeps up
with a flood (it counts child lines instead of keeping them, and can stop reading on purpose)."""

import collections
import http.client
import json
import os
import socket
import threading
import time
from typing import Any

import psutil
import pytest

from tests.helpers import ROOT, Init, starter, wait_until

# The init runs as PID 1 of a new PID namespace when we are root, else as a subreaper.
PID1 = ROOT
MODE = "pid1" if PID1 else "subreaper"
MB = 1024 * 1024


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def cpu_seconds(pid: int) -> float:
    """The process's own CPU time (user + system), children not included."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def open_fds(pid: int) -> dict[int, str]:
    """The process's descriptors and what each points to."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            pass
    return out


def fd_kinds(fds: dict[int, str]) -> collections.Counter[str]:
    """socket:[123] -> socket, pipe:[4] -> pipe, /dev/null -> /dev/null: what kinds, how many."""
    return collections.Counter(target.split(":[")[0] for target in fds.values())


def assert_no_fd_growth(pid: int, before: dict[int, str], timeout: float = 3.0) -> None:
    """Connections just closed by a client take a moment to be closed by the init: wait for that."""
    try:
        wait_until(lambda: len(open_fds(pid)) <= len(before), timeout, "the descriptors to be closed")
    except AssertionError:
        now = open_fds(pid)
        raise AssertionError(f"descriptors grew: before {fd_kinds(before)}, now {fd_kinds(now)}: {now}") from None


def zombies_under(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for child in children:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                out.append(child)
        except psutil.NoSuchProcess:
            pass
    return out


def alive(pid: int) -> bool:
    """Running (a zombie counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def http_get(port: int, path: str, method: str = "GET", timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def metric(port: int, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    status, body = http_get(port, "/metrics")
    assert status == 200, body
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no metric {name} {labels}")


def wait_http(init: Init, timeout: float = 20) -> None:
    init.wait_msg("health endpoint listening", timeout=timeout)


class Sampler:
    """Samples a process's RSS in the background: the peak matters, not only the end."""

    def __init__(self, pid: int, period: float = 0.05):
        self.pid = pid
        self.period = period
        self.peak = rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.peak = max(self.peak, rss(self.pid))
            except psutil.NoSuchProcess:
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


class LivenessPoller:
    """GET /livez over and over in the background, recording each answer and its latency."""

    def __init__(self, port: int, period: float = 0.1, timeout: float = 5.0):
        self.port = port
        self.period = period
        self.timeout = timeout
        self.answers: list[tuple[int | str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                status: int | str = http_get(self.port, "/livez", timeout=self.timeout)[0]
            except (OSError, http.client.HTTPException) as e:
                status = type(e).__name__
            self.answers.append((status, time.monotonic() - start))
            self._stop.wait(self.period)

    def stop(self) -> list[tuple[int | str, float]]:
        self._stop.set()
        self._thread.join(self.timeout + 5)
        return self.answers


class ChaosInit(Init):
    """An Init that remembers the processes it started, so that what a crashed init leaves behind
    (its programs, orphaned when it dies as a subreaper) is ended when the test is over: by PID,
    checked against the process's start time, never by name."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.started_processes: dict[int, psutil.Process] = {}
        super().__init__(*args, **kwargs)

    def remember(self) -> None:
        try:
            for process in psutil.Process(self.init_pid).children(recursive=True):
                self.started_processes.setdefault(process.pid, process)
        except (psutil.NoSuchProcess, AssertionError):
            pass

    def wait_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return super().wait_state(*args, **kwargs)
        finally:
            self.remember()

    def wait_msg(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return super().wait_msg(*args, **kwargs)
        finally:
            self.remember()

    def close(self) -> None:
        super().close()
        for process in self.started_processes.values():
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    process.kill()
            except psutil.Error:
                pass


@pytest.fixture
def start_init(tmp_path: Any) -> Any:
    """tests/helpers.py's fixture, with ChaosInit: nothing a test started outlives it."""
    yield from starter(tmp_path, ChaosInit)


class CountingInit(ChaosInit):
    """An Init for floods: the init's own events are kept (so `wait_msg`, `events` work), child
    lines are only counted per program (a flood of 100 MB would not fit in a list of dicts), and
    `pause()` stops reading the init's stdout altogether, as a stuck `docker logs` would."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.reading = threading.Event()
        self.reading.set()
        self.child_lines: collections.Counter[str] = collections.Counter()
        self.child_bytes: collections.Counter[str] = collections.Counter()
        self.child_tail: collections.deque[bytes] = collections.deque(maxlen=50)
        self.child_stderr: collections.deque[bytes] = collections.deque(maxlen=50)
        self.bytes_read = 0
        super().__init__(*args, **kwargs)

    def pause(self) -> None:
        self.reading.clear()

    def resume(self) -> None:
        self.reading.set()

    def _read(self, stream: Any) -> None:
        rest = b""
        while True:
            self.reading.wait()
            chunk = stream.read1(1 << 20)  # big reads, split in C: a flood must not outrun us
            if not chunk:
                if rest:
                    self._line(rest)
                return
            self.bytes_read += len(chunk)
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                self._line(line)

    def _line(self, raw: bytes) -> None:
        # a child's line is {"ts": "<24 chars>", "program": NAME, "stream": …}; an event of the
        # init's own has "level" where a child's line has "program"
        if raw[35:46] == b'"program": ':
            name = raw[47:raw.find(b'"', 47)].decode()
            self.child_lines[name] += 1
            self.child_bytes[name] += len(raw) + 1
            (self.child_stderr if b'"stream": "stderr"' in raw[47:120] else self.child_tail).append(raw[:300])
            return
        text = raw.decode("utf-8", "replace")
        try:
            event = json.loads(text)
        except ValueError:
            event = {"program": "?", "msg": text}
        with self._cond:
            self.raw.append(text)
            self.lines.append(event)
            self._cond.notify_all()


@pytest.fixture
def start_counting_init(tmp_path: Any) -> Any:
    started: list[CountingInit] = []

    def start(config: str, **kwargs: Any) -> CountingInit:
        init = CountingInit(tmp_path, config, **kwargs)
        started.append(init)
        return init

    yield start
    for init in started:
        init.resume()
        init.close()


def unix_request(path: str, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes to the control socket; everything it answers until it closes."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)  # so that the init closes once it has answered
        except TimeoutError:
            raise
        except OSError:
            pass  # the init may close on a bad request before reading it all: the reply is still there
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
