"""Connection limits for the ops server, and one log line per interval for what it refuses.

What aiohttp (3.14) gives, and how the ops server uses it:

- `keepalive_timeout` (OPS_IDLE_TIMEOUT_SECONDS): aiohttp arms it when a connection opens and
  again after each response, and when it fires it closes the connection only if the handler is
  still waiting for a request head. So it is both the idle (keep-alive) timeout and the header
  timeout: a client that connects and sends nothing, or half a request head, is closed after
  that many seconds. aiohttp has no separate header timeout, and none is needed on top.
- `max_line_size`, `max_field_size`, `max_headers`: a request head is bounded (8 KiB lines, 8 KiB
  fields, 128 headers; aiohttp answers 400 past them), kept at aiohttp's defaults.
- `backlog` of the listening socket: the kernel's queue of connections not yet accepted.

What aiohttp lacks is a cap on open connections: every accepted socket is served until it
closes or times out, so 1,100 idle sockets reached the process's file limit and broke the bot's
own Gemini calls. `ConnectionGuard` is that cap, as the listening socket's protocol factory (the
one public hook between asyncio's accept and aiohttp's handler). At OPS_MAX_CONNECTIONS open
connections a new one closes the least recently used *idle* connection (waiting for a request
head or between keep-alive requests; a request in progress is never cut), so a pile of idle or
half-header sockets cannot lock out `/healthz` or Prometheus; when every connection is busy the
new one gets a 503 and is closed. A request body has its own bound in the handler that reads
it (the `/alerts` webhook, whose token is checked before the body is read).

`RefusalLog` counts each refusal (`llmbot_ops_requests_refused_total{reason}`) and logs the
first of an interval in full and the rest as one summary line with counts, so a flood of 401s
or connections writes two lines a minute, not one per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from bot.healing.audit import safe_text

__all__ = [
    "ConnectionGuard",
    "RefusalLog",
    "refusal_reason",
]

logger = logging.getLogger(__name__)

# `llmbot_ops_requests_refused_total{reason}` (OPS_REFUSAL_REASONS): unauthorized / forbidden =
# a 401 / 403 of any guarded route; too_large = 413; connection_limit = a connection refused with
# every slot busy; idle_evicted = an idle connection closed to make room for a new one.
_STATUS_REASONS: Final = {401: "unauthorized", 403: "forbidden", 413: "too_large"}
_DETAIL_CHARS: Final = 200

_BUSY_BODY: Final = b'{"error": "ops server is at its connection limit; retry shortly"}'
_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n\r\n" + _BUSY_BODY
)


def refusal_reason(status: int) -> str | None:
    """The refusal reason counted for an HTTP status, or None when it is not a refusal."""
    return _STATUS_REASONS.get(status)


class RefusalLog:
    """Counts refusals and logs them rate-limited: the first of each `interval_s` in full,
    the others of that interval as one WARNING with counts when it ends."""

    def __init__(
        self,
        count: Callable[[str], None],
        *,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._count = count
        self._interval_s = interval_s
        self._clock = clock
        self._window_end = float("-inf")
        self._suppressed: Counter[str] = Counter()
        self._flush_handle: asyncio.TimerHandle | None = None

    def note(self, reason: str, detail: str) -> None:
        """One refusal: counted always, logged unless one was logged this interval."""
        self._count(reason)
        now = self._clock()
        if now >= self._window_end:
            self.flush()
            self._window_end = now + self._interval_s
            logger.warning(
                "ops server refused (%s): %s; further refusals in the next %.0fs are summed "
                "in one line",
                reason,
                safe_text(detail, _DETAIL_CHARS),
                self._interval_s,
            )
            return
        self._suppressed[reason] += 1
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop (a unit test): the next note after the interval flushes
            delay = max(0.0, self._window_end - now)
            self._flush_handle = loop.call_later(delay, self.flush)

    def flush(self) -> None:
        """Log the summary of the refusals not logged yet (nothing when there are none)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._suppressed:
            return
        total = sum(self._suppressed.values())
        counts = ", ".join(f"{reason}={n}" for reason, n in sorted(self._suppressed.items()))
        self._suppressed.clear()
        logger.warning(
            "ops server refused %d more request(s)/connection(s) in the last %.0fs (%s)",
            total,
            self._interval_s,
            counts,
        )


class _Busy(asyncio.Protocol):
    """Answers 503 and closes: the connection cap is reached and every connection is busy."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_BUSY)
        transport.close()


class _Tracked(asyncio.Protocol):
    """aiohttp's handler for one connection, with the guard told when the connection ends."""

    def __init__(self, guard: ConnectionGuard, inner: RequestHandler) -> None:
        self._guard = guard
        self._inner = inner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        self._inner.eof_received()
        return None  # close the transport on EOF, as aiohttp's handler does

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.closed(self._inner)
        self._inner.connection_lost(exc)


class ConnectionGuard:
    """The protocol factory of the ops server's socket: at most `limit` open connections."""

    def __init__(
        self,
        limit: int,
        refusals: RefusalLog,
        *,
        on_change: Callable[[int], None] = lambda open_: None,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._refusals = refusals
        self._on_change = on_change
        self._server: Callable[[], RequestHandler] | None = None
        # Open connections, least recently used first, each with its requests in progress.
        self._open: OrderedDict[RequestHandler, int] = OrderedDict()

    @property
    def open(self) -> int:
        """Connections open now."""
        return len(self._open)

    def serve(self, server: Callable[[], RequestHandler]) -> None:
        """Hand new connections to `server` (aiohttp's `web.Server`, `runner.server`)."""
        self._server = server

    def __call__(self) -> asyncio.Protocol:
        if self._server is None:
            raise RuntimeError("ConnectionGuard.serve() was not called")
        if len(self._open) >= self.limit and not self._evict_idle():
            self._refusals.note(
                "connection_limit", f"{self.limit} connections open and busy (OPS_MAX_CONNECTIONS)"
            )
            return _Busy()
        handler = self._server()
        self._open[handler] = 0
        self._on_change(len(self._open))
        return _Tracked(self, handler)

    def closed(self, handler: RequestHandler) -> None:
        """A connection ended (called by its protocol)."""
        if self._open.pop(handler, None) is not None:
            self._on_change(len(self._open))

    def _evict_idle(self) -> bool:
        for handler, busy in self._open.items():
            if busy == 0:
                del self._open[handler]
                handler.force_close()
                self._refusals.note(
                    "idle_evicted",
                    f"closed the least recently used idle connection ({self.limit} open, "
                    "OPS_MAX_CONNECTIONS)",
                )
                self._on_change(len(self._open))
                return True
        return False

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Marks the request's connection busy while it is handled (never evicted then)."""
        connection = request.protocol
        tracked = isinstance(connection, RequestHandler) and connection in self._open
        if tracked:
            self._open[connection] += 1
            self._open.move_to_end(connection)
        try:
            return await handler(request)
        finally:
            if tracked and connection in self._open:
                self._open[connection] -= 1
