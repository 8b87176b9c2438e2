"""The probes themselves: exec (a command exits 0), tcp (a connection is accepted), http (a GET
answers 2xx/3xx). Each returns a ProbeResult; it raises only for a bug of its own code. The
timeout is the probe's own."""

import time
from urllib.parse import urlsplit

import anyio
import anyio.abc

from hive_init.config.model import Probe
from hive_init.runtime.kind import Kind, ProbeResult
from hive_init.runtime.spawn import child_environment, run_command

# Prometheus-style buckets for the probe duration histogram (seconds)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


__all__ = ["BUCKETS", "ProbeResult", "ProbeStats", "check"]  # ProbeResult lives with Kind, whose probe returns it


class ProbeStats:
    """Counts for the probe duration histogram, kept without importing prometheus_client."""

    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.count = 0
        self.sum = 0.0
        self.failures = 0

    def observe(self, result: ProbeResult) -> None:
        self.count += 1
        self.sum += result.latency
        if not result.ok:
            self.failures += 1
        for i, bound in enumerate(BUCKETS):
            if result.latency <= bound:
                self.counts[i] += 1
                break


async def check(probe: Probe, kind: Kind) -> ProbeResult:
    start = time.monotonic()
    try:
        with anyio.fail_after(probe.timeout):
            if probe.kind == "exec":
                ok, message = await _exec(probe, kind)
            elif probe.kind == "tcp":
                ok, message = await _tcp(str(probe.target))
            elif probe.kind == "http":
                ok, message = await _http(str(probe.target))
            else:
                result = await kind.probe(probe)
                ok, message = result.ok, result.message
    except TimeoutError:
        ok, message = False, f"timed out after {probe.timeout:g}s"
    except OSError as e:
        ok, message = False, e.strerror or str(e)
    except (anyio.BrokenResourceError, anyio.EndOfStream):
        ok, message = False, "connection closed"
    # anything else is a bug in the probe code, not a failing program: the caller (Program)
    # logs it as a bug and does not count it
    return ProbeResult(ok, time.monotonic() - start, message, time.time())


async def _exec(probe: Probe, kind: Kind) -> tuple[bool, str]:
    spec = kind.spec
    result = await run_command(probe.target or (), env=child_environment(spec.environment, spec.run_as, spec.environment_passthrough),
                               cwd=spec.directory, run_as=spec.run_as, output_limit=512)
    last = result.output.strip().splitlines()[-1:] or [""]
    return result.ok, (result.describe() + (f": {last[0][:200]}" if last[0] else ""))


async def _tcp(target: str) -> tuple[bool, str]:
    host, _, port = target.rpartition(":")
    stream = await anyio.connect_tcp(host, int(port))
    await stream.aclose()
    return True, "connected"


async def _http(url: str) -> tuple[bool, str]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname or "127.0.0.1"
    stream: anyio.abc.ByteStream
    if parts.scheme == "https":
        # servers often close without a TLS close_notify; that is not a failed probe
        stream = await anyio.connect_tcp(host, port, tls=True, tls_standard_compatible=False)
    else:
        stream = await anyio.connect_tcp(host, port)
    async with stream:
        request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: hive-init\r\nConnection: close\r\n\r\n"
        await stream.send(request.encode("latin-1"))
        head = b""
        while b"\r\n" not in head and len(head) < 8192:
            try:
                head += await stream.receive(1024)
            except anyio.EndOfStream:
                break
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or not fields[1].isdigit():
        return False, f"not an HTTP response: {status_line[:80]!r}"
    status = int(fields[1])
    return 200 <= status < 400, f"HTTP {status}"
