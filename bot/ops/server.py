"""The ops HTTP server: `/metrics`, `/healthz`, `/readyz`, `/status`, `/status/history`,
`/openapi.json` (the API described: bot.ops.openapi), plus the routes others add (the
Alertmanager webhook `POST /alerts`, `/heal/audit`, `/debug/*`).

It runs on the bot's event loop and needs nothing but the objects it is given, so it can start
before the gateway connects: `/healthz` answers from the first second and `/readyz` says what
is still missing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from bot.healing.audit import safe_text
from bot.ops.connections import ConnectionGuard, RefusalLog, refusal_reason
from bot.ops.health import HealthSnapshot
from bot.ops.history import HealthHistory, parse_time
from bot.ops.metrics import Telemetry
from bot.ops.openapi import document
from bot.ops.view import BotView

__all__ = [
    "Handler",
    "OpsServer",
    "Readiness",
    "Route",
    "readiness",
    "wants_openmetrics",
]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = tuple[str, str, Handler]  # (method, path, handler)
Readiness = Callable[[], tuple[bool, Mapping[str, Any]]]

DEFAULT_MAX_CONNECTIONS: Final = 256
DEFAULT_IDLE_TIMEOUT_S: Final = 30.0
REFUSAL_LOG_INTERVAL_S: Final = 60.0
_BACKLOG: Final = 128
_LINGERING_S: Final = 2.0
_HISTORY_PARAMS: Final = frozenset({"from", "to", "format"})

_OPENMETRICS: Final = "application/openmetrics-text"
_CSV: Final = "text/csv; charset=utf-8"


def wants_openmetrics(accept: str) -> bool:
    """True when an Accept header lists OpenMetrics (as Prometheus does), with q above 0."""
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        if media.lower() != _OPENMETRICS:
            continue
        quality = next((p[2:] for p in params if p.lower().startswith("q=")), "1")
        try:
            if float(quality) > 0:
                return True
        except ValueError:
            return True  # a malformed q is the client's problem; it did name OpenMetrics
    return False


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, allow_nan=False, default=str),
        status=status,
        content_type="application/json",
    )


def _timestamp(value: str | None, name: str, *, end_of_day: bool = False) -> float | None:
    """A query bound (see `parse_time`); None when absent."""
    if value is None or not value.strip():
        return None
    try:
        return parse_time(value, end_of_day=end_of_day)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


class OpsServer:
    """One aiohttp server for everything operators and Prometheus ask the bot."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        telemetry: Telemetry,
        snapshot: Callable[[], HealthSnapshot],
        readiness: Readiness,
        history: HealthHistory | None = None,
        extra_routes: Sequence[Route] = (),
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        refusal_log_interval_s: float = REFUSAL_LOG_INTERVAL_S,
    ) -> None:
        if idle_timeout_s <= 0:
            raise ValueError("idle_timeout_s must be positive")
        self.host = host
        self._port = port
        self._telemetry = telemetry
        self._snapshot = snapshot
        self._readiness = readiness
        self._history = history
        self._idle_timeout_s = idle_timeout_s
        self.refusals = RefusalLog(telemetry.ops_refused, interval_s=refusal_log_interval_s)
        self.connections = ConnectionGuard(
            max_connections, self.refusals, on_change=telemetry.ops_connections
        )
        self._app = web.Application(middlewares=[self.connections.middleware, self._count_refusals])
        self._app.router.add_get("/metrics", self._metrics)
        self._app.router.add_get("/healthz", self._healthz)
        self._app.router.add_get("/readyz", self._readyz)
        self._app.router.add_get("/status", self._status)
        self._app.router.add_get("/status/history", self._status_history)
        self._app.router.add_get("/openapi.json", self._openapi)
        for method, path, handler in extra_routes:
            self._app.router.add_route(method, path, handler)
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._openapi_body: str | None = None

    @property
    def routes(self) -> list[tuple[str, str]]:
        """(method, path) of every route registered, HEAD of GET routes left out."""
        found = []
        for route in self._app.router.routes():
            info = route.resource.get_info() if route.resource is not None else {}
            path = info.get("path") or info.get("formatter") or ""
            if route.method != "HEAD":
                found.append((route.method, str(path)))
        return found

    @property
    def port(self) -> int:
        """The listening port (the real one once started, also when 0 was asked for)."""
        return self._port

    @property
    def host_port(self) -> str:
        """`host:port`, as Prometheus names the target (its `instance` label)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self._port}"

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. http://127.0.0.1:9464."""
        return f"http://{self.host_port}"

    async def start(self) -> None:
        """Listen; returns once the socket is bound."""
        if self._runner is not None:
            return
        # No access log: Prometheus scrapes every few seconds and would drown real messages.
        # keepalive_timeout is also the header timeout (see bot.ops.connections).
        runner = web.AppRunner(
            self._app,
            access_log=None,
            shutdown_timeout=5.0,
            keepalive_timeout=self._idle_timeout_s,
            # After an error answer (413, 408) aiohttp reads what is left of the body for up
            # to this long so the client sees the answer; its default, 10 s, holds a slot.
            lingering_time=_LINGERING_S,
        )
        await runner.setup()
        assert runner.server is not None
        self.connections.serve(runner.server)
        try:
            # Our own listener (not web.TCPSite) so that the connection guard is the protocol
            # factory; runner.cleanup() still closes the connections it holds.
            self._listener = await asyncio.get_running_loop().create_server(
                self.connections, self.host, self._port, backlog=_BACKLOG, reuse_address=True
            )
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(self._listener.sockets[0].getsockname()[1])
        logger.info("ops server listening on %s", self.url)

    async def stop(self) -> None:
        """Stop listening and finish the requests in progress (bounded)."""
        runner, self._runner = self._runner, None
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if runner is not None:
            await runner.cleanup()
        self.refusals.flush()

    @web.middleware
    async def _count_refusals(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """401, 403 and 413 answers: counted and logged rate-limited (RefusalLog)."""
        response = await handler(request)
        reason = refusal_reason(response.status)
        if reason is not None:
            self.refusals.note(
                reason,
                f"{response.status} for {request.method} {request.path} from {request.remote}",
            )
        return response

    # -- handlers ------------------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.Response:
        openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
        body, content_type = self._telemetry.render(openmetrics)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _healthz(self, request: web.Request) -> web.Response:
        # Liveness: answering at all shows the event loop is running; nothing else is checked,
        # so a slow dependency never gets the process restarted.
        return _json({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, checks = self._readiness()
        body = {"status": "ready" if ready else "not ready", "checks": dict(checks)}
        return _json(body, 200 if ready else 503)

    async def _status(self, request: web.Request) -> web.Response:
        return _json(self._snapshot().as_dict())

    async def _openapi(self, request: web.Request) -> web.Response:
        if self._openapi_body is None:
            self._openapi_body = json.dumps(document(), indent=2)
        return web.Response(text=self._openapi_body, content_type="application/json")

    async def _status_history(self, request: web.Request) -> web.Response:
        if self._history is None:
            return _json({"error": "the health history is not enabled"}, 404)
        query = request.query
        unknown = sorted(set(query) - _HISTORY_PARAMS)
        if unknown:
            shown = safe_text(unknown[0], 40)
            return _json({"error": f"unknown parameter {shown!r}: use from, to and format"}, 400)
        fmt = query.get("format", "json").lower()
        try:
            from_ts = _timestamp(query.get("from"), "from")
            to_ts = _timestamp(query.get("to"), "to", end_of_day=True)
            text = self._history.export(from_ts, to_ts, fmt)
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        if fmt == "csv":
            return web.Response(
                text=text,
                headers={
                    "Content-Type": _CSV,
                    "Content-Disposition": 'attachment; filename="health-history.csv"',
                },
            )
        return web.Response(text=text, content_type="application/json")


def readiness(view: BotView) -> Readiness:
    """Ready when the gateway is connected, the store is healthy and not in maintenance.

    Parts the view does not have (no store, no maintenance state) are not checked.
    """

    def check() -> tuple[bool, dict[str, Any]]:
        checks: dict[str, dict[str, Any]] = {}
        connected = view.gateway_connected()
        checks["gateway"] = {
            "ok": connected,
            "detail": "connected" if connected else "not connected",
        }
        store = view.store()
        if store is not None:
            healthy = store.healthy
            checks["store"] = {"ok": healthy, "detail": "healthy" if healthy else "unhealthy"}
        if view.maintenance is not None:
            reason = view.maintenance()
            detail = f"maintenance: {reason}" if reason is not None else "serving"
            checks["maintenance"] = {"ok": reason is None, "detail": detail}
        return all(c["ok"] for c in checks.values()), checks

    return check
