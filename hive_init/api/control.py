"""The control socket: a unix socket (mode 0600) speaking the line protocol of api/protocol.py.
It is the only way to change anything in a running init: start, stop, restart, signal, reload.
Only root and the init's own user may use it (checked with SO_PEERCRED)."""

import json
import os
import socket
import struct
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream

from hive_init import log, redact
from hive_init.api.protocol import MAX_REQUEST, encode
from hive_init.config import ConfigError, load
from hive_init.runtime.pid1 import signal_name

if TYPE_CHECKING:
    from hive_init.runtime.supervisor import Supervisor

MAX_CLIENTS = 32
REQUEST_TIMEOUT = 5.0


async def serve_control(supervisor: "Supervisor", *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    path = supervisor.config.init.control_socket
    _claim(path)
    listener = await SocketListener.from_socket(_bind(path))
    limiter = anyio.CapacityLimiter(MAX_CLIENTS)
    task_status.started()
    try:
        async with listener:
            await listener.serve(lambda stream: _client(supervisor, stream, limiter))
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def _bind(path: str) -> socket.socket:
    """The socket is born 0600 (no window where others could connect). The umask is process-wide,
    so it is changed only around the synchronous bind: no other task runs meanwhile."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    sock.listen(MAX_CLIENTS)
    sock.setblocking(False)
    return sock


def _claim(path: str) -> None:
    """Remove a stale socket left by a killed init, but never steal a live one's."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
    else:
        raise RuntimeError(f"another hive-init is running (control socket {path} answers)")
    finally:
        probe.close()


def _peer_allowed(stream: SocketStream) -> bool:
    raw = stream.extra(SocketAttribute.raw_socket)
    _pid, uid, _gid = struct.unpack("3i", raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid in (0, os.geteuid())


async def _client(supervisor: "Supervisor", stream: SocketStream, limiter: anyio.CapacityLimiter) -> None:
    async with stream:
        if limiter.available_tokens == 0:
            await _send(stream, _error("busy", "too many control connections"))
            return
        async with limiter:
            allowed = _peer_allowed(stream)
            buffer = b""
            while True:
                with anyio.move_on_after(REQUEST_TIMEOUT):
                    while b"\n" not in buffer:
                        try:
                            data = await stream.receive(65536)
                        except (anyio.EndOfStream, anyio.BrokenResourceError):
                            return
                        buffer += data
                        if len(buffer) > MAX_REQUEST:
                            await _send(stream, _error("bad_request", "request too long"))
                            return
                if b"\n" not in buffer:
                    return  # idle or too slow: the connection is not worth a slot
                line, _, buffer = buffer.partition(b"\n")
                if not allowed:  # answered only after the request is read: every request gets a reply
                    await _send(stream, _error("forbidden", "only root and the init's user may use the control socket"))
                    return
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                        raise ValueError
                except (ValueError, RecursionError):
                    await _send(stream, _error("bad_request", "expected one JSON object with a \"cmd\" per line"))
                    return
                try:
                    if request["cmd"] == "logs" and request.get("follow"):
                        await _follow(supervisor, stream, request)
                        return
                    await _send(stream, await handle(supervisor, request))
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return


async def _send(stream: SocketStream, message: dict) -> None:
    with anyio.fail_after(REQUEST_TIMEOUT):
        await stream.send(encode(message))


def _error(code: str, message: str) -> dict:
    return {"ok": False, "error": code, "message": message}


async def handle(supervisor: "Supervisor", request: dict) -> dict:
    cmd = request["cmd"]
    if cmd in ("status", "health"):
        return {"ok": True, **supervisor.snapshot()}
    if cmd == "reload":
        return await reload_config(supervisor)
    if cmd not in ("start", "stop", "restart", "signal", "logs"):
        return _error("bad_request", f"unknown command {cmd!r}")
    name = request.get("name")
    program = supervisor.programs.get(name) if isinstance(name, str) else None
    if program is None:
        return _error("not_found", f"no program named {name!r}")
    if supervisor.shutting_down and cmd in ("start", "restart"):
        return _error("conflict", "hive-init is shutting down")
    if cmd == "start":
        program.start()
        return {"ok": True, "state": program.state.value}
    if cmd == "stop":
        await program.stop()
        return {"ok": True, "state": program.state.value}
    if cmd == "restart":
        from hive_init.runtime.rolling import roll, rolls

        if rolls(program) and not request.get("stop_first"):
            failure = await roll(supervisor, program)
            if failure is not None:
                return _error("restart_failed", f"the new process {failure}; the old one keeps serving")
            return {"ok": True, "state": supervisor.programs[name].state.value}
        await program.restart()
        return {"ok": True, "state": program.state.value}
    if cmd == "signal":
        try:
            from hive_init.config.fields import parse_signal

            signum = parse_signal(request.get("signal"))
        except ValueError as e:
            return _error("bad_request", str(e))
        if not program.signal(signum):
            return _error("conflict", f"{name} is not running")
        return {"ok": True, "signal": signal_name(signum)}
    lines = request.get("lines", 100)
    if not isinstance(lines, int) or isinstance(lines, bool) or lines < 0:
        return _error("bad_request", "lines must be a non-negative integer")
    recent = list(program.output.recent)[-lines:] if lines else []
    return {"ok": True, "lines": [_line(entry) for entry in recent]}


def _line(entry: tuple[float, str, str]) -> dict:
    return {"ts": entry[0], "stream": entry[1], "text": redact.redact(entry[2])}


async def _follow(supervisor: "Supervisor", stream: SocketStream, request: dict) -> None:
    """Recent lines, then every new one as it comes, until the client goes away."""
    response = await handle(supervisor, {**request, "follow": False})
    await _send(stream, response)
    if not response.get("ok"):
        return
    program = supervisor.programs[request["name"]]
    send, receive = anyio.create_memory_object_stream[tuple[float, str, str]](1000)

    def follower(entry: tuple[float, str, str]) -> None:
        try:
            send.send_nowait(entry)
        except anyio.WouldBlock:
            pass  # a slow reader misses lines rather than slowing the init

    program.output.followers.add(follower)
    try:
        async with receive:
            async for entry in receive:
                await _send(stream, {"ok": True, "lines": [_line(entry)]})
    finally:
        program.output.followers.discard(follower)


async def reload_config(supervisor: "Supervisor") -> dict:
    """Apply the config file again: added programs start, removed ones stop, changed ones
    restart. An invalid file is rejected whole and nothing running is touched."""
    logger = log.get_logger()
    if supervisor.shutting_down:
        logger.info("reload ignored: shutting down")
        return _error("conflict", "hive-init is shutting down")
    try:
        config = load(supervisor.config.path)
    except ConfigError as e:
        logger.error(f"reload rejected: {e}")
        return _error("invalid_config", str(e))
    try:
        changes = await supervisor.apply(config)
    except ConfigError as e:  # an address of `listen` that cannot be bound: nothing was touched
        logger.error(f"reload rejected: {e}")
        return _error("invalid_config", str(e))
    logger.info("reloaded", **{k: ",".join(v) for k, v in changes.items() if v})
    return {"ok": True, **changes}

