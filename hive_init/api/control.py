"""The control socket: a unix socket (mode 0600) speaking the line protocol of api/protocol.py.
It is the only way to change anything in a running init: start, stop, restart, signal, reload.
Only root and the init's own user may use it (checked with SO_PEERCRED)."""

import json
import os
import socket
import stat
import struct
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import SocketAttribute, SocketStream

from hive_init import log, redact
from hive_init.api.listen import CannotListen, Shedder, accept_loop, budget
from hive_init.api.protocol import MAX_REQUEST, encode
from hive_init.config import ConfigError, load
from hive_init.paths import default_socket_path
from hive_init.runtime.pid1 import signal_name
from hive_init.securefs import UnsafePath, describe_mode, private_directory

if TYPE_CHECKING:
    from hive_init.runtime.supervisor import Supervisor

MAX_CLIENTS = 32
REQUEST_TIMEOUT = 5.0
FOLLOW_BATCH = 256  # lines per message to a follower
FOLLOW_STALL = 60.0  # seconds a follower may take nothing before it is dropped


def bind_control(path: str) -> socket.socket:
    """Claim the path and bind it; run before the first spawn, so that a second init on the same
    socket, or a path squatted by someone else, stops here with nothing left running."""
    _claim(path)
    try:
        return _bind(path)
    except OSError as e:
        raise CannotListen(f"control socket {path}: cannot bind: {e.strerror}") from None


def close_bound(sock: socket.socket, path: str) -> None:
    """Undo bind_control when the start is refused after it (the HTTP port in use)."""
    created = os.stat(path, follow_symlinks=False)
    sock.close()
    _unlink_if_ours(path, created)


async def serve_control(supervisor: "Supervisor", sock: socket.socket, *,
                        task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    path = supervisor.config.init.control_socket
    try:
        created: os.stat_result | None = os.stat(path, follow_symlinks=False)
    except OSError:
        created = None  # removed already by someone: the socket serves on, nothing to unlink at exit
    limiter = anyio.CapacityLimiter(budget(1 / 3, 4, MAX_CLIENTS))
    shedder = Shedder("control socket")

    async def client(conn: socket.socket) -> None:
        try:
            stream = await SocketStream.from_socket(conn)
        except OSError:  # gone already
            conn.close()
            return
        try:
            await _client(supervisor, stream, limiter)
        except Exception as e:  # a bug in one request ends that connection, not the init
            from hive_init.exits import describe_internal_error

            log.get_logger().error(describe_internal_error(e))

    task_status.started()
    try:
        async with anyio.create_task_group() as tg:
            await accept_loop(sock, shedder, client, tg)
    finally:
        sock.close()
        shedder.close()
        _unlink_if_ours(path, created)


def _unlink_if_ours(path: str, created: os.stat_result | None) -> None:
    """Remove the socket at exit only if it is still the one we bound (a newer init may own the path)."""
    if created is None:
        return
    try:
        now = os.stat(path, follow_symlinks=False)
        if (now.st_dev, now.st_ino) == (created.st_dev, created.st_ino):
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
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    sock.listen(MAX_CLIENTS)
    sock.setblocking(False)
    return sock


def _claim(path: str) -> None:
    """Make the path ours: its directory exists (the non-root default's is made 0700 and must be
    ours alone); a socket left by a killed init of ours is removed; anything else there (a live
    init, another user's socket or file) is refused, never removed or talked to."""
    directory = os.path.dirname(path) or "."
    if directory == os.path.dirname(default_socket_path()) and os.geteuid() != 0:
        _private_directory(directory)
    else:
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise CannotListen(f"control socket {path}: cannot create {directory}: {e.strerror}") from None
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return
    except OSError as e:
        raise CannotListen(f"control socket {path}: {e.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid not in (0, os.geteuid()):
        raise CannotListen(f"control socket {path} exists and is not ours (owner uid {st.st_uid}, "
                           f"{describe_mode(st.st_mode)}): remove it or set [init] control_socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # ours and nobody listens: a killed init's
    else:
        raise CannotListen(f"another hive-init is running (control socket {path} answers)")
    finally:
        probe.close()


def _private_directory(directory: str) -> None:
    """The non-root default's directory: created 0700, or, if it exists, a real directory that is
    ours and closed to others (a directory in /tmp can be made first by anyone)."""
    try:
        private_directory(directory)
    except UnsafePath as e:
        raise CannotListen(f"control socket directory {directory} is {e.strerror}: remove it or set "
                           "[init] control_socket") from None
    except OSError as e:
        raise CannotListen(f"control socket directory {directory}: cannot create: {e.strerror}") from None


def _peer_allowed(stream: SocketStream) -> bool:
    raw = stream.extra(SocketAttribute.raw_socket)
    _pid, uid, _gid = struct.unpack("3i", raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid in (0, os.geteuid())


# What a client can do to its own connection (stop reading, go away, reset it): it loses the
# connection, never the init. anyio reports EPIPE and ECONNRESET as BrokenResourceError;
# TimeoutError is _send's deadline for a client that does not read. An error of the request's
# own handling is none of these: it is answered (_answer).
_CLIENT_GONE = (TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream)


async def _client(supervisor: "Supervisor", stream: SocketStream, limiter: anyio.CapacityLimiter) -> None:
    async with stream:
        try:
            if limiter.available_tokens == 0:
                await _send(stream, _error("busy", "too many control connections"))
                return
            async with limiter:
                await _serve_client(supervisor, stream)
        except _CLIENT_GONE:
            return


async def _serve_client(supervisor: "Supervisor", stream: SocketStream) -> None:
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
        if request["cmd"] == "logs" and request.get("follow"):
            await _follow(supervisor, stream, request)
            return
        await _send(stream, await _answer(supervisor, request))


async def _send(stream: SocketStream, message: dict) -> None:
    """A reply the client does not take within REQUEST_TIMEOUT ends its connection (TimeoutError,
    caught by _client): a stuck `logs | less` must not hold the init's memory or a slot."""
    with anyio.fail_after(REQUEST_TIMEOUT):
        await stream.send(encode(message))


def _error(code: str, message: str) -> dict:
    return {"ok": False, "error": code, "message": message}


async def _answer(supervisor: "Supervisor", request: dict) -> dict:
    """handle()'s reply; where the handling itself fails, an error reply and a line at the init
    instead of a connection dropped without a word. An OSError is the system refusing what was
    asked (kill(2) without CAP_KILL): said as the kernel says it. Anything else is a bug."""
    try:
        return await handle(supervisor, request)
    except OSError as e:  # TimeoutError included: a deadline of the handling's own, not the client's
        what, reason = _described(supervisor, request), e.strerror or type(e).__name__
        log.get_logger().error("control request failed", request=what, error=reason)
        return _error("failed", f"{what}: {reason}")
    except Exception as e:
        from hive_init.exits import describe_internal_error

        what = _described(supervisor, request)
        log.get_logger().error("control request failed", request=what, error=describe_internal_error(e))
        return _error("internal", f"{what}: an internal error (see the init's log)")


def _described(supervisor: "Supervisor", request: dict) -> str:
    """`signal api`: the command, and the program it names if there is one by that name (the
    name is the client's text: nothing else of it is repeated)."""
    name = request.get("name")
    return f"{request['cmd']} {name}" if isinstance(name, str) and name in supervisor.programs else request["cmd"]


async def handle(supervisor: "Supervisor", request: dict) -> dict:
    cmd = request["cmd"]
    if cmd in ("status", "health"):
        if cmd == "status":  # what each program uses, read now (off the loop); health stays cheap
            from hive_init.runtime.resources import refresh

            await refresh(supervisor.programs.values())
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
            return {"ok": True, "state": supervisor.programs[program.name].state.value}
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
    """Recent lines, then every new one as it comes, until the client goes away. A reader that
    falls behind loses lines (counted, and said in the stream when it catches up); one that takes
    nothing for FOLLOW_STALL seconds is dropped."""
    response = await _answer(supervisor, {**request, "follow": False})
    # looked up before the await (a reload may remove it meanwhile); an answer "ok" names one
    program = supervisor.programs.get(request["name"]) if response.get("ok") else None
    await _send(stream, response)
    if program is None:
        return
    send, receive = anyio.create_memory_object_stream[tuple[float, str, str]](1000)
    dropped = 0

    def follower(entry: tuple[float, str, str]) -> None:
        nonlocal dropped
        try:
            send.send_nowait(entry)
        except anyio.WouldBlock:
            dropped += 1  # a slow reader misses lines rather than slowing the init

    program.output.followers.add(follower)
    try:
        async with receive:
            async for entry in receive:
                batch = [_line(entry)]
                while len(batch) < FOLLOW_BATCH:  # what came meanwhile goes in the same message
                    try:
                        batch.append(_line(receive.receive_nowait()))
                    except anyio.WouldBlock:
                        break
                if dropped:
                    batch.append({"ts": entry[0], "stream": "hive-init",
                                  "text": f"({dropped} lines dropped: this reader was too slow)"})
                    dropped = 0
                with anyio.fail_after(FOLLOW_STALL):
                    await stream.send(encode({"ok": True, "lines": batch}))
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
        # in a worker thread: parsing, `${VAR}` expansion, secret files and user lookups can all
        # take long (100,000 keys, a slow NSS) and the loop must keep reaping meanwhile
        config = await anyio.to_thread.run_sync(load, supervisor.config.path)
    except ConfigError as e:
        logger.error(f"reload rejected: {e}")
        return _error("invalid_config", str(e))
    except Exception as e:  # a bug in loading must not end an init whose running config is fine
        from hive_init.exits import describe_internal_error

        logger.error(f"reload rejected: {describe_internal_error(e)}")
        return _error("internal", "the config could not be loaded (an internal error: see the init's log)")
    try:
        changes = await supervisor.apply(config)
    except ConfigError as e:  # an address of `listen` that cannot be bound: nothing was touched
        logger.error(f"reload rejected: {e}")
        return _error("invalid_config", str(e))
    logger.info("reloaded", **{k: ",".join(v) for k, v in changes.items() if v})
    return {"ok": True, **changes}

