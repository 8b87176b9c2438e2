"""An open-loop HTTP load: requests are sent on a fixed schedule (RATE per second) whatever the
server does, and each latency is counted from the request's scheduled time, so a server that
stalls is charged for the requests queued behind the stall (no coordinated omission).

keep-alive on: each request takes an idle connection from a pool (a new one when all are busy)
and gives it back after the answer; keep-alive off: a new connection per request, with
`Connection: close`. A raw asyncio client: its own cost per request is the same for both sides.
"""

import asyncio
import math
import statistics
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

TIMEOUT = 5.0


@dataclass
class Target:
    host: str
    port: int
    method: str
    path: str
    body: bytes = b""
    content_type: str = ""

    def request(self, keepalive: bool) -> bytes:
        head = [f"{self.method} {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}", "User-Agent: bench"]
        if self.body or self.method == "POST":
            head += [f"Content-Type: {self.content_type}", f"Content-Length: {len(self.body)}"]
        if not keepalive:
            head.append("Connection: close")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + self.body


XMLRPC_ALL_PROCESS_INFO = (b"<?xml version='1.0'?>\n<methodCall>\n<methodName>supervisor.getAllProcessInfo"
                           b"</methodName>\n<params>\n</params>\n</methodCall>\n")


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    connections: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)  # ConnectionRefusedError, ...: what failed how
    sent: int = 0  # requests started so far (sent - answered - errors: in flight)
    # (scheduled time on the monotonic clock, latency in seconds or None if it failed), in order of completion
    samples: list[tuple[float, float | None]] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)  # nearest rank
        return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]

    def summary(self) -> dict:
        return {"requests": len(self.latencies) + self.errors, "errors": self.errors, "statuses": self.statuses,
                "connections": self.connections, "p50_ms": self.percentile(50) * 1000,
                "p99_ms": self.percentile(99) * 1000,
                "mean_ms": statistics.fmean(self.latencies) * 1000 if self.latencies else float("nan")}


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the connection may be used again)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip().lower()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.read()
        return status, False
    return status, headers.get("connection") != "close"


async def _load(target: Target, rate: float, duration: float, keepalive: bool, result: LoadResult,
                until: "threading.Event | None" = None) -> None:
    loop = asyncio.get_running_loop()
    request = target.request(keepalive)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def one(scheduled: float) -> None:
        conn = None
        try:
            async with asyncio.timeout(TIMEOUT):
                if keepalive and idle:
                    conn = idle.pop()
                else:
                    conn = await asyncio.open_connection(target.host, target.port)
                    result.connections += 1
                reader, writer = conn
                writer.write(request)
                status, reusable = await _read_response(reader)
            result.latencies.append(loop.time() - scheduled)
            result.samples.append((scheduled, loop.time() - scheduled))
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if keepalive and reusable:
                idle.append(conn)
                conn = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError,
                IndexError) as e:
            result.errors += 1
            result.samples.append((scheduled, None))
            kind = type(e).__name__
            result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1
        finally:
            if conn is not None:
                conn[1].close()

    count = int(rate * duration)
    start = loop.time() + 0.02
    tasks = []
    for i in range(count):
        if until is not None and until.is_set():
            break
        scheduled = start + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
        result.sent += 1
    await asyncio.gather(*tasks)
    for _, writer in idle:
        writer.close()


async def _sampling(sample: Callable[[], None], every: float, done: asyncio.Event) -> None:
    while not done.is_set():
        sample()
        try:
            await asyncio.wait_for(done.wait(), every)
        except TimeoutError:
            pass


def run_load(target: Target, rate: float, duration: float, keepalive: bool,
             sample: Callable[[], None] | None = None, until: "threading.Event | None" = None,
             result: LoadResult | None = None) -> LoadResult:
    """The load, with `sample()` called every 100 ms meanwhile (the server's RSS). With `until`,
    it ends early once that event is set (`duration` is then the longest it may run); a
    `result` given is filled as the load runs (another thread may watch it)."""
    result = LoadResult() if result is None else result

    async def main() -> None:
        done = asyncio.Event()
        sampler = asyncio.create_task(_sampling(sample, 0.1, done)) if sample else None
        try:
            await _load(target, rate, duration, keepalive, result, until)
        finally:
            done.set()
            if sampler:
                await sampler

    asyncio.run(main())
    return result
