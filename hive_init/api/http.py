"""The read-only HTTP endpoint for Docker and Kubernetes: /livez, /readyz, /health, /metrics.

One small adapter: h11 (the HTTP/1.1 state machine, no I/O of its own) driven by the init's loop
through the accept loop of api/listen.py. No server framework: uvicorn's `serve()` installs signal
handlers that would fight the init's and wakes every 100 ms; driving it without `serve()` needed
its private API, and it could not close idle connections to make room for a probe.

Every connection is bounded in time and the endpoint in connections: a request must arrive whole
within FIRST_REQUEST_SECONDS (KEEPALIVE_SECONDS for the next one on a kept-alive connection), a
response be taken within SEND_SECONDS. At the connection cap, the oldest connection that is waiting
for a request is closed to make room, so a flood of idle connections cannot keep a probe out:
/livez answers while the loop is alive.
"""

import socket
from typing import TYPE_CHECKING, Any

import anyio

from hive_init import log
from hive_init.api.listen import CannotListen, Shedder, accept_loop, budget

if TYPE_CHECKING:
    from hive_init.runtime.supervisor import SupervisorView

MAX_CONNECTIONS = 1000  # the cap when descriptors allow; listen.budget() lowers it under a small RLIMIT_NOFILE
KEEPALIVE_SECONDS = 5
FIRST_REQUEST_SECONDS = 5  # a connection that has not sent a whole request by then is closed
SEND_SECONDS = 5  # a client that does not take its response by then is closed
MAX_REQUEST_HEAD = 16 * 1024  # request line + headers
MAX_REQUEST_BODY = 16 * 1024  # nothing here reads a body; a small one is read and ignored


def bind_http(host: str, port: int) -> socket.socket:
    """Bound before the first spawn: a port in use is one line and exit 73, nothing left running."""
    try:
        # an ASCII name as bytes: a str is encoded by the idna codec, whose import (stringprep,
        # unicodedata: 0.1 MiB) would stay for the init's whole life for an address like 127.0.0.1
        name: str | bytes = host.encode() if host.isascii() else host
        family, kind, proto, _, address = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as e:
        raise CannotListen(f"health endpoint {host}:{port}: {getattr(e, 'strerror', None) or e}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restarted init rebinds at once
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise CannotListen(f"health endpoint {host}:{port}: cannot listen: {e.strerror}") from None
    sock.setblocking(False)
    return sock


async def serve_http(supervisor: "SupervisorView", sock: socket.socket, *,
                     task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    import h11  # here, not at the top: the first spawn does not wait for it

    cap = budget(2 / 3, 8, MAX_CONNECTIONS)
    shedder = Shedder("health endpoint")
    waiting: dict[object, anyio.CancelScope] = {}  # connections waiting for a request, oldest first
    open_connections = 0

    def evict_oldest_waiting() -> bool:
        """Its task closes its socket at its next step, within this loop turn: the newcomer takes
        the slot meanwhile (the count is over the cap by the evictions in flight, no more)."""
        if not waiting:
            return False
        waiting.pop(next(iter(waiting))).cancel()
        return True

    async def connection(conn: socket.socket) -> None:
        nonlocal open_connections
        try:
            if open_connections >= cap and not evict_oldest_waiting():
                shedder.note(f"{cap} connections, all busy")
                return
            open_connections += 1
            try:
                await _serve_connection(h11, supervisor, conn, waiting)
            except Exception as e:  # a bug in one connection ends that connection, not the init
                from hive_init.exits import describe_internal_error

                log.get_logger().error(describe_internal_error(e))
            finally:
                open_connections -= 1
        finally:
            conn.close()

    host, port = sock.getsockname()[:2]
    log.get_logger().info("health endpoint listening", address=f"http://{host}:{port}", max_connections=cap)
    task_status.started()
    try:
        async with anyio.create_task_group() as tg:
            await accept_loop(sock, shedder, connection, tg, make_room=evict_oldest_waiting)
    finally:
        sock.close()
        shedder.close()


async def _serve_connection(h11: Any, supervisor: "SupervisorView", conn: socket.socket,
                            waiting: dict[object, anyio.CancelScope]) -> None:
    http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
    key = object()
    timeout = FIRST_REQUEST_SECONDS
    while True:
        scope = anyio.CancelScope(deadline=anyio.current_time() + timeout)
        waiting[key] = scope  # evictable until its request is whole
        request = None  # stays None if evicted or out of time
        try:
            with scope:
                request = await _read_request(h11, http, conn)
        finally:
            if waiting.get(key) is scope:
                del waiting[key]
        if request is None:
            return
        with anyio.move_on_after(SEND_SECONDS):
            if isinstance(request, int):  # a malformed request: answered, then closed
                await _send_response(h11, http, conn, "GET", request, b"bad request\n", b"text/plain; charset=utf-8", [])
                return
            method, path = request
            if path.split("?", 1)[0] == "/metrics":
                from hive_init.runtime.resources import refresh

                await refresh(supervisor.programs.values())  # /proc read off the loop, at scrape time
            status, body, content_type, extra = route(supervisor, method, path)
            await _send_response(h11, http, conn, method, status, body, content_type, extra)
        if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
            return  # not sent in time, or `Connection: close`, HTTP/1.0
        http.start_next_cycle()
        timeout = KEEPALIVE_SECONDS


async def _read_request(h11: Any, http: Any, conn: socket.socket) -> tuple[str, str] | int | None:
    """(method, path) once the whole request is in; 400 or 413 for a bad one; None if it closed."""
    request = None
    body = 0
    while True:
        try:
            event = http.next_event()
        except h11.RemoteProtocolError as e:
            # h11 still lets a server answer after its peer's protocol error
            return e.error_status_hint if http.our_state in (h11.IDLE, h11.SEND_RESPONSE) else None
        if event is h11.NEED_DATA:
            http.receive_data(await _receive(conn))
        elif isinstance(event, h11.Request):
            request = (event.method.decode("ascii", "replace"), event.target.decode("ascii", "replace"))
        elif isinstance(event, h11.Data):
            body += len(event.data)
            if body > MAX_REQUEST_BODY:
                return 413
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def _receive(conn: socket.socket) -> bytes:
    while True:
        try:
            return conn.recv(65536)
        except BlockingIOError:
            await anyio.wait_readable(conn)
        except OSError:
            return b""  # reset by the peer: as good as closed


async def _send_all(conn: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[conn.send(view):]
        except BlockingIOError:
            await anyio.wait_writable(conn)


async def _send_response(h11: Any, http: Any, conn: socket.socket, method: str, status: int, body: bytes,
                         content_type: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), *extra]
    if status >= 400 and status not in (404, 405, 503):
        headers.append((b"connection", b"close"))  # after a protocol error the stream is not trusted
    try:
        data = http.send(h11.Response(status_code=status, headers=headers))
        if method != "HEAD":
            data += http.send(h11.Data(data=body))
        data += http.send(h11.EndOfMessage())
        await _send_all(conn, data)
    except (h11.LocalProtocolError, OSError):
        return


def route(supervisor: "SupervisorView", method: str, path: str) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    """(status, body, content type, extra headers) for one request; nothing here can block."""
    text = b"text/plain; charset=utf-8"
    if method not in ("GET", "HEAD"):
        return 405, b"method not allowed: this endpoint only reads\n", text, [(b"allow", b"GET, HEAD")]
    path = path.split("?", 1)[0]
    try:
        if path == "/livez":
            return 200, b"ok\n", text, []
        if path == "/readyz":
            ready, failing = supervisor.ready()
            if ready:
                return 200, b"ready\n", text, []
            message = "not ready: " + ("; ".join(failing) if failing else "shutting down")
            return 503, message.encode() + b"\n", text, []
        if path == "/health":
            import json

            snapshot = supervisor.snapshot()
            body = json.dumps(snapshot, separators=(",", ":")).encode()
            return 200 if snapshot["ready"] else 503, body, b"application/json", []
        if path == "/metrics":
            from hive_init.api.metrics import render

            body, content_type = render(supervisor)
            return 200, body, content_type.encode(), []
    except Exception as e:  # a bug answers 500 and is said as one; the endpoint goes on
        from hive_init.exits import describe_internal_error

        log.get_logger().error(describe_internal_error(e), path=path)
        return 500, b"internal error\n", text, []
    return 404, b"not found: try /livez, /readyz, /health or /metrics\n", text, []
