"""`POST /alerts`: the Alertmanager webhook, answered within milliseconds; `GET /heal/audit`:
what it decided and did, behind the same bearer token.

Alertmanager retries 5xx and gives up on 4xx, so 4xx means "do not send this again" (bad token,
bad payload, too large) and 503 means "try again later" (shutting down, backlog full, too many
notifications waiting).

Bounded work per request, so a flood of large notifications cannot hold the event loop (500
parallel 300-alert payloads held it ~9 s and wrote 150k INFO lines before): the token is checked
before the body is read, the body is read within `body_timeout_s` and `max_body_bytes`, then one
notification at a time is parsed and decided (`_WORK_SLOTS`), its alerts in slices of
`_ALERTS_PER_SLICE` with the loop handed back between slices; at most `_MAX_WAITING` wait for
that turn, the next get a 503 (Alertmanager retries). Each notification writes one log line with
the decisions counted (each alert's decision is at DEBUG and in the audit), and everything taken
from a payload into a log line is escaped and cut (`safe_text`, `PayloadError` reasons).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from bot.healing.audit import safe_text
from bot.healing.payload import PayloadError, WebhookPayload, parse_payload
from bot.healing.receiver import AlertDecision, HealReceiver, ReceiverClosedError, SubmitSummary

__all__ = [
    "AUDIT_DEFAULT_LIMIT",
    "DEFAULT_MAX_BODY_BYTES",
    "AlertsHandler",
    "alerts_handler",
    "audit_handler",
    "load_token",
]

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

DEFAULT_MAX_BODY_BYTES: Final = 256 * 1024
DEFAULT_BODY_TIMEOUT_S: Final = 30.0
_WORK_SLOTS: Final = 1  # notifications parsed and decided at once
_MAX_WAITING: Final = 32  # notifications waiting for a slot; the next get a 503
_ALERTS_PER_SLICE: Final = 50  # alerts decided between two turns of the event loop

AUDIT_DEFAULT_LIMIT: Final = 100
_NOTE_CHARS: Final = 400

AlertsHandler = Callable[[web.Request], Awaitable[web.Response]]

_REALM: Final = 'Bearer realm="alerts"'
_AUDIT_PARAMS: Final = frozenset({"limit", "since"})


class _Answer(Exception):
    """Ends request handling early with an error status; caught inside the handler."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def load_token(
    token: str | None, token_file: Path | None, *, name: str = "ALERT_WEBHOOK_TOKEN"
) -> str | None:
    """A bearer token from `name` or `name`_FILE (ALERT_WEBHOOK_TOKEN[_FILE] by default), or None.

    Setting both is a configuration error, so nobody has to guess which one wins.
    """
    value = token.strip() if token is not None else ""
    if value and token_file is not None:
        raise ValueError(
            f"{name} and {name}_FILE are both set: keep one "
            "(the file keeps the token out of the environment)"
        )
    if token_file is not None:
        try:
            value = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{name}_FILE {token_file} is unreadable: {exc}") from None
        if not value:
            raise ValueError(
                f"{name}_FILE {token_file} is empty: put the token in it or unset the setting"
            )
    if any(char.isspace() or not char.isprintable() for char in value):
        source = f"{name}_FILE" if token_file is not None else name
        raise ValueError(f"{source}: a bearer token is one word without spaces or control chars")
    return value or None


def _is_loopback(remote: str | None) -> bool:
    if remote is None:
        return False
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def _authorize(
    request: web.Request, expected: bytes | None, allow_insecure_loopback: bool, verb: str
) -> None:
    """The webhook's bearer token check, shared by `/alerts` and `/heal/audit`."""
    if expected is None:
        if not allow_insecure_loopback:
            raise _Answer(404, "alerts webhook is disabled: no ALERT_WEBHOOK_TOKEN is set")
        if not _is_loopback(request.remote):
            raise _Answer(403, f"without a token only loopback clients may {verb}")
        return
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None:
        raise _Answer(401, "bearer token required", {hdrs.WWW_AUTHENTICATE: _REALM})
    scheme, _, credentials = header.strip().partition(" ")
    # Encoded back the way aiohttp decoded it, so any header bytes compare without errors.
    given = credentials.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
        challenge = f'{_REALM}, error="invalid_token"'
        raise _Answer(401, "invalid bearer token", {hdrs.WWW_AUTHENTICATE: challenge})


def alerts_handler(
    receiver: HealReceiver,
    *,
    token: str | None,
    allow_insecure_loopback: bool,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    is_shutting_down: Callable[[], bool] = lambda: False,
    route: Callable[[WebhookPayload], Awaitable[WebhookPayload]] | None = None,
) -> AlertsHandler:
    """An aiohttp handler for `POST /alerts`; every answer is counted in `receiver.stats`.

    With no token the endpoint answers 404, unless `allow_insecure_loopback` lets loopback
    clients in without one. A configured token is always required, loopback or not.
    """
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be at least 1")
    if body_timeout_s <= 0:
        raise ValueError("body_timeout_s must be positive")
    expected = token.encode("utf-8") if token else None
    slots = asyncio.Semaphore(_WORK_SLOTS)
    waiting = 0

    def authorize(request: web.Request) -> None:
        _authorize(request, expected, allow_insecure_loopback, "post alerts")

    async def read_body(request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > max_body_bytes:
            raise _Answer(413, f"body is larger than {max_body_bytes} bytes")
        # Content-Length may be absent (chunked) or wrong: stop reading one byte past the limit.
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(body_timeout_s):
                while chunk := await request.content.read(max_body_bytes + 1 - size):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > max_body_bytes:
                        raise _Answer(413, f"body is larger than {max_body_bytes} bytes")
        except HttpProcessingError as exc:
            raise _Answer(400, f"could not read the body: {exc.message}") from None
        except TimeoutError:
            raise _Answer(408, f"the body took longer than {body_timeout_s:g}s to arrive") from None
        return b"".join(chunks)

    async def decide(payload: WebhookPayload) -> SubmitSummary:
        """The receiver's decisions, a slice of alerts at a time with the loop handed back
        between slices (a 300-alert notification would otherwise hold it for its whole run)."""
        alerts = payload.alerts
        if len(alerts) <= _ALERTS_PER_SLICE:
            return receiver.submit(payload)
        decisions: list[AlertDecision] = []
        for start in range(0, len(alerts), _ALERTS_PER_SLICE):
            part = payload.model_copy(update={"alerts": alerts[start : start + _ALERTS_PER_SLICE]})
            decisions.extend(receiver.submit(part).decisions)
            await asyncio.sleep(0)
        return SubmitSummary(tuple(decisions))

    async def parse_and_decide(body: bytes, request: web.Request) -> tuple[int, SubmitSummary]:
        nonlocal waiting
        if slots.locked() and waiting >= _MAX_WAITING:
            raise _Answer(503, f"{_MAX_WAITING} notifications are waiting; retry later")
        waiting += 1
        try:
            await slots.acquire()
        finally:
            waiting -= 1
        try:
            await asyncio.sleep(0)  # whoever waited behind the previous notification runs now
            try:
                payload = parse_payload(body)
            except PayloadError as exc:
                # Lenient about the content type while the body parses; strict once it does not.
                if hdrs.CONTENT_TYPE in request.headers and not _is_json(request.content_type):
                    raise _Answer(
                        415, f"expected application/json, got {request.content_type}"
                    ) from None
                raise _Answer(400, exc.reason) from None
            trace.get_current_span().set_attribute("heal.alerts", len(payload.alerts))
            alerts = len(payload.alerts)
            if route is not None:  # a fleet: alerts for other instances go to them (fanout.py)
                payload = await route(payload)
            try:
                return alerts, await decide(payload)
            except ReceiverClosedError:
                raise _Answer(503, "shutting down") from None
        finally:
            slots.release()

    async def answer(request: web.Request) -> tuple[web.Response, str]:
        authorize(request)
        if is_shutting_down() or not receiver.accepting:
            raise _Answer(503, "shutting down")
        body = await read_body(request)
        alerts, summary = await parse_and_decide(body, request)
        data = summary.to_json()
        if summary.http_status == 503:
            data["error"] = "job backlog is full; retry later"
        note = f"{alerts} alert(s): {summary.counts()}"
        return web.json_response(data, status=summary.http_status), note

    async def handle(request: web.Request) -> web.Response:
        started = time.perf_counter()
        with _tracer.start_as_current_span("POST /alerts", kind=SpanKind.SERVER) as span:
            try:
                response, note = await answer(request)
            except _Answer as exc:
                response = web.json_response(
                    {"error": exc.reason}, status=exc.status, headers=exc.headers
                )
                note = safe_text(exc.reason, _NOTE_CHARS)
            except Exception:
                # Never let a surprise become aiohttp's HTML 500 without a count and a log.
                logger.exception("alerts webhook: unexpected error")
                response = web.json_response({"error": "internal error"}, status=500)
                note = "internal error"
            receiver.record_request(response.status)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(trace.StatusCode.ERROR, note)
            logger.log(
                _log_level(response.status),
                "alerts webhook: %d from %s in %.1fms: %s",
                response.status,
                request.remote,
                (time.perf_counter() - started) * 1000,
                note,
            )
            return response

    return handle


def _log_level(status: int) -> int:
    """INFO for an answer, WARNING for an error; 401/403/413 at DEBUG, since the ops server
    counts and logs those rate-limited (bot.ops.connections.RefusalLog)."""
    if status in (401, 403, 413):
        return logging.DEBUG
    return logging.INFO if status < 400 else logging.WARNING


def _since(text: str) -> float:
    """`since` as epoch seconds: a number, or an ISO 8601 time (naive means UTC)."""
    try:
        value = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise _Answer(
                400, "since must be epoch seconds or an ISO 8601 time such as 2025-01-31T12:00Z"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    if not math.isfinite(value):
        raise _Answer(400, "since must be a finite number of epoch seconds")
    return value


def audit_handler(
    receiver: HealReceiver, *, token: str | None, allow_insecure_loopback: bool
) -> AlertsHandler:
    """An aiohttp handler for `GET /heal/audit?limit=N&since=T`: the heal audit as JSON, newest
    entry first, behind the `/alerts` bearer token (401 without or with a wrong one, 404 when
    no token is set, 400 on a bad parameter)."""
    expected = token.encode("utf-8") if token else None
    audit = receiver.audit

    def answer(request: web.Request) -> web.Response:
        _authorize(request, expected, allow_insecure_loopback, "read the audit")
        unknown = sorted(set(request.query) - _AUDIT_PARAMS)
        if unknown:
            raise _Answer(400, f"unknown parameter {unknown[0][:40]!r}: use limit and since")
        if len(request.query.getall("limit", [])) > 1 or len(request.query.getall("since", [])) > 1:
            raise _Answer(400, "give limit and since at most once")
        limit = AUDIT_DEFAULT_LIMIT
        if "limit" in request.query:
            raw = request.query["limit"]
            if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= audit.capacity:
                raise _Answer(400, f"limit must be a whole number from 1 to {audit.capacity}")
            limit = int(raw)
        since = _since(request.query["since"]) if "since" in request.query else None
        entries = audit.query(limit=limit, since=since)
        return web.json_response(
            {
                "instance": receiver.instance,
                "enabled": receiver.enabled,
                "dry_run": receiver.dry_run,
                "capacity": audit.capacity,
                "size": len(audit),
                "count": len(entries),
                "entries": [entry.to_json() for entry in entries],
            }
        )

    async def handle(request: web.Request) -> web.Response:
        try:
            return answer(request)
        except _Answer as exc:
            return web.json_response({"error": exc.reason}, status=exc.status, headers=exc.headers)

    return handle
