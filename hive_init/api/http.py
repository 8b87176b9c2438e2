"""The read-only HTTP endpoint for Docker and Kubernetes: /livez, /readyz, /health, /metrics.

A bare ASGI app (no framework: the init stays lean) served by uvicorn on the init's own event
loop. uvicorn's `serve()` is not used: it installs signal handlers that would fight the init's,
and its main loop wakes every 100 ms. `startup()` alone opens the listening socket; the
connections are then driven by the loop like any other I/O.
"""

import json
from typing import TYPE_CHECKING, Any

import anyio

from hive_init import log

if TYPE_CHECKING:
    from hive_init.runtime.supervisor import SupervisorView

MAX_CONNECTIONS = 1000  # a bound on descriptors; idle ones are closed long before it matters
KEEPALIVE_SECONDS = 5
FIRST_REQUEST_SECONDS = 5  # a connection that has not sent a whole request by then is closed


class HealthApp:
    def __init__(self, supervisor: "SupervisorView"):
        self.supervisor = supervisor

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed: this endpoint only reads\n", extra=[(b"allow", b"GET, HEAD")])
            return
        body_wanted = method == "GET"
        if path == "/livez":
            await _respond(send, 200, b"ok\n", body_wanted)
        elif path == "/readyz":
            ready, failing = self.supervisor.ready()
            if ready:
                await _respond(send, 200, b"ready\n", body_wanted)
            else:
                text = "not ready: " + ("; ".join(failing) if failing else "shutting down")
                await _respond(send, 503, text.encode() + b"\n", body_wanted)
        elif path == "/health":
            snapshot = self.supervisor.snapshot()
            body = json.dumps(snapshot, separators=(",", ":")).encode()
            await _respond(send, 200 if snapshot["ready"] else 503, body, body_wanted, b"application/json")
        elif path == "/metrics":
            from hive_init.api.metrics import render

            body, content_type = render(self.supervisor)
            await _respond(send, 200, body, body_wanted, content_type.encode())
        else:
            await _respond(send, 404, b"not found: try /livez, /readyz, /health or /metrics\n", body_wanted)


async def _respond(send: Any, status: int, body: bytes, body_wanted: bool = True,
                   content_type: bytes = b"text/plain; charset=utf-8", extra: list | None = None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body if body_wanted else b""})


def _protocol() -> type:
    """uvicorn's h11 protocol, with a deadline for the first request: uvicorn arms its idle timer
    only after a response, so connections that never send a request would pile up until the
    connection cap answers everyone 503, /livez included (and Kubernetes kills the pod)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.loop.call_later(FIRST_REQUEST_SECONDS, self._close_if_idle)

        def _close_if_idle(self) -> None:
            if self.cycle is None and not self.transport.is_closing():
                self.transport.close()

    return Protocol


async def serve_http(supervisor: "SupervisorView", *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    import uvicorn

    host, port = supervisor.config.init.http  # type: ignore[misc]
    config = uvicorn.Config(
        HealthApp(supervisor), host=host, port=port, lifespan="off", log_config=None, access_log=False,
        server_header=False, date_header=False, http=_protocol(), ws="none", loop="none",
        limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=KEEPALIVE_SECONDS,
        h11_max_incomplete_event_size=16 * 1024,
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    if not server.started:
        log.get_logger().error(f"health endpoint: cannot listen on {host}:{port}")
        task_status.started()
        return
    log.get_logger().info("health endpoint listening", address=f"http://{host}:{port}")
    task_status.started()
    try:
        await anyio.sleep_forever()
    finally:
        for listener in server.servers:
            listener.close()
        for connection in list(server.server_state.connections):
            connection.shutdown()
