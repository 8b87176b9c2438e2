"""uvicorn's graceful stop, made lossless for a listening socket that outlives the process
(held by hive-init and shared with the next process during a rolling restart).

Stock uvicorn (0.30 to 0.54 at least) closes, when it shuts down, every connection with no
request in progress: idle keep-alive connections, and also the ones it accepted a moment ago
whose request it has not read yet. Those clients get their connection closed (a reset, since
their request is unread) without an answer, although the next process would have served them.

Here the stop is: stop accepting (the socket stays open in hive-init: new connections wait in
its backlog for the next process), then let every open connection deliver one more request,
which is answered with `Connection: close`, and close a connection only once it has stayed idle
for DRAIN_IDLE seconds (as the keep-alive timeout would close it anyway). A connection accepted
after the stop began (accept and connection_made are apart in asyncio) is treated the same.
"""

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import Server

# how long a connection with no request in progress may still send one during the drain
DRAIN_IDLE = 0.5


class DrainingH11Protocol(H11Protocol):
    _draining = False
    _idle_close: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if getattr(self.server_state, "draining", False):
            self.shutdown()

    def shutdown(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            _last_answer(self.cycle)
            return
        self._draining = True
        if self._idle_close is None:
            self._idle_close = self.loop.call_later(DRAIN_IDLE, self._close_if_idle)

    def handle_events(self) -> None:
        super().handle_events()
        if self._draining and self.cycle is not None and not self.cycle.response_complete:
            _last_answer(self.cycle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_close is not None:
            self._idle_close.cancel()
        super().connection_lost(exc)

    def _close_if_idle(self) -> None:
        self._idle_close = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.conn.send(h11.ConnectionClosed())
            self.transport.close()


def _last_answer(cycle) -> None:  # type: ignore[no-untyped-def]  # h11_impl.RequestResponseCycle
    """The answer in progress is the connection's last: closed after it, and said so
    (`Connection: close`, which stock uvicorn leaves out), so the client opens a new one."""
    cycle.keep_alive = False
    if not cycle.response_started and (b"connection", b"close") not in cycle.default_headers:
        cycle.default_headers = [*cycle.default_headers, (b"connection", b"close")]


class DrainingServer(Server):
    """Tells connections made from now on that the drain has begun (see DrainingH11Protocol)."""

    async def shutdown(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        self.server_state.draining = True  # type: ignore[attr-defined]
        await super().shutdown(sockets)


# how long a process with a passed socket waits for its database before it accepts anyway
# (then answering 503 with Retry-After, as the app does whenever the database is away)
SERVE_WAIT = 10.0


def accept_once_connected(app, wait: float = SERVE_WAIT):  # ASGI app -> ASGI app
    """The other half of a lossless handover: with a socket that outlives the process, a new
    process should accept only once it can answer, since until then connections wait in the
    backlog (delayed, not failed) and the old process, in a rolling restart, still serves. uvicorn
    accepts right after the lifespan's startup completes: the completion is held back until the
    app's database pool exists (at most `wait` seconds). hive-init sees the process start
    accepting on the held socket and only then stops the old one."""

    async def gated(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)

        async def send_when_connected(message):  # type: ignore[no-untyped-def]
            if message["type"] == "lifespan.startup.complete":
                db = getattr(app.state, "db", None)
                if db is not None:
                    await db.wait_connected(wait)
            await send(message)

        return await app(scope, receive, send_when_connected)

    return gated
