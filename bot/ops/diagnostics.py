"""Diagnostics on demand: `GET /debug/tasks`, `GET /debug/memory`, `POST /debug/memory`.

Behind a bearer token (`OPS_ADMIN_TOKEN`, or the alerts webhook's token when it is unset; with
neither the routes answer 404). A refused call (401 bad token, 400 bad parameter) changes
nothing. Every answer is JSON and bounded: at most `MAX_TASKS` tasks of at most `MAX_FRAMES`
frames, at most `MAX_TOP` allocation sites.

- `GET /debug/tasks?limit=100&frames=10`: the asyncio tasks of the loop, by name, each with its
  coroutine and its await chain (outermost first: the stack that `Task.get_stack` would show
  if Python 3.11 followed awaits), and what the innermost coroutine waits on.
- `GET /debug/memory?limit=20&group_by=lineno|filename|traceback`: tracemalloc's largest
  allocation sites while tracing is on (a clear message while it is off). The snapshot is
  taken in a worker thread, so the loop keeps serving (a big heap takes a while to walk).
- `POST /debug/memory?trace=on[&frames=N]` / `?trace=off`: start or stop tracing (on with
  another frame count restarts it). Tracing costs memory and CPU on every allocation: switch
  it off when done. `TRACEMALLOC_FRAMES` starts it with the bot.
"""

from __future__ import annotations

import asyncio
import hmac
import linecache
import logging
import os
import sysconfig
import tracemalloc
from collections.abc import Awaitable, Callable, Mapping
from types import FrameType
from typing import Any, Final

from aiohttp import hdrs, web

from bot.healing.audit import safe_text

__all__ = [
    "MAX_FRAMES",
    "MAX_TASKS",
    "MAX_TOP",
    "MemoryTracer",
    "debug_routes",
    "task_report",
]

logger = logging.getLogger(__name__)

MAX_TASKS: Final = 500
MAX_FRAMES: Final = 30
MAX_TOP: Final = 100
MAX_TRACE_FRAMES: Final = 100
_GROUPINGS: Final = ("lineno", "filename", "traceback")
_REALM: Final = 'Bearer realm="debug"'
_CODE_CHARS: Final = 160

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    found = {
        paths.get("purelib", ""),
        paths.get("platlib", ""),
        paths.get("stdlib", ""),
        os.getcwd(),
    }
    return tuple(sorted((p.rstrip(os.sep) + os.sep for p in found if p), key=len, reverse=True))


_PREFIXES: Final = _prefixes()


def _short(path: str) -> str:
    """A file name without the install prefix (site-packages, the stdlib, the working dir)."""
    for prefix in _PREFIXES:
        if path.startswith(prefix):
            return path[len(prefix) :]
    return path


def _frame(frame: FrameType) -> dict[str, Any]:
    code = frame.f_code
    line = frame.f_lineno or 0
    return {
        "file": _short(code.co_filename),
        "line": line,
        "function": code.co_qualname,
        "code": linecache.getline(code.co_filename, line).strip()[:_CODE_CHARS],
    }


def _await_chain(coro: object, limit: int) -> list[FrameType]:
    """The frames of a coroutine and of those it awaits, outermost first (at most `limit`)."""
    frames: list[FrameType] = []
    current: object | None = coro
    while current is not None and len(frames) < limit:
        frame = (
            getattr(current, "cr_frame", None)
            or getattr(current, "gi_frame", None)
            or getattr(current, "ag_frame", None)
        )
        if frame is None:
            break
        frames.append(frame)
        current = (
            getattr(current, "cr_await", None)
            or getattr(current, "gi_yieldfrom", None)
            or getattr(current, "ag_await", None)
        )
    return frames


def _awaiting(task: asyncio.Task[Any]) -> str | None:
    """What a suspended task waits on: CPython's tasks keep it in `_fut_waiter` (no public API
    before 3.14's call graphs)."""
    waiter = getattr(task, "_fut_waiter", None)
    if waiter is None:
        return None
    if isinstance(waiter, asyncio.Task):
        return f"Task {waiter.get_name()!r}"
    return type(waiter).__qualname__


def task_report(limit: int = 100, frames: int = 10) -> dict[str, Any]:
    """The running loop's tasks (at most `limit`, by name), each with at most `frames` frames."""
    current = asyncio.current_task()
    tasks = sorted(asyncio.all_tasks(), key=lambda t: (t.get_name(), id(t)))
    shown = []
    for task in tasks[:limit]:
        coro = task.get_coro()
        chain = _await_chain(coro, frames + 1)
        shown.append(
            {
                "name": task.get_name(),
                "coroutine": getattr(coro, "__qualname__", type(coro).__qualname__),
                "state": "cancelling" if task.cancelling() else "pending",
                "current": task is current,
                "stack": [_frame(f) for f in chain[:frames]],
                "stack_truncated": len(chain) > frames,
                "awaiting": _awaiting(task),
            }
        )
    return {
        "tasks_total": len(tasks),
        "shown": len(shown),
        "truncated": len(tasks) > len(shown),
        "frames_per_task": frames,
        "tasks": shown,
    }


class MemoryTracer:
    """Switches tracemalloc (process-wide) and reads its largest allocation sites."""

    _FILTERS: Final = (
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
        tracemalloc.Filter(False, "<unknown>"),
    )

    def __init__(self, frames_at_start: int = 0) -> None:
        if frames_at_start:
            self.start(frames_at_start)

    @property
    def tracing(self) -> bool:
        return tracemalloc.is_tracing()

    @property
    def frames(self) -> int:
        """Frames kept per allocation (0 while off)."""
        return tracemalloc.get_traceback_limit() if self.tracing else 0

    def start(self, frames: int) -> bool:
        """Trace allocations with `frames` frames each; True if this changed anything (tracing
        already with another frame count restarts, forgetting the traces so far)."""
        if not 1 <= frames <= MAX_TRACE_FRAMES:
            raise ValueError(f"frames must be 1..{MAX_TRACE_FRAMES}")
        if self.tracing:
            if self.frames == frames:
                return False
            tracemalloc.stop()
        tracemalloc.start(frames)
        return True

    def stop(self) -> bool:
        """Stop tracing and free the traces; True if it was on."""
        if not self.tracing:
            return False
        tracemalloc.stop()
        return True

    def status(self) -> dict[str, Any]:
        if not self.tracing:
            return {
                "tracing": False,
                "message": "tracemalloc is off: POST /debug/memory?trace=on (optionally "
                "&frames=N) to start it, or set TRACEMALLOC_FRAMES; it costs memory and CPU "
                "while on",
            }
        traced, peak = tracemalloc.get_traced_memory()
        return {
            "tracing": True,
            "frames": self.frames,
            "traced_bytes": traced,
            "peak_bytes": peak,
            "tracemalloc_overhead_bytes": tracemalloc.get_tracemalloc_memory(),
        }

    async def top(self, limit: int = 20, group_by: str = "lineno") -> dict[str, Any]:
        """`status()` plus the `limit` largest allocation sites (empty while off)."""
        status = self.status()
        if not status["tracing"]:
            return status
        sites, total = await asyncio.to_thread(self._statistics, limit, group_by)
        return {**status, "group_by": group_by, "sites_total": total, "top": sites}

    async def top_allocations(self, limit: int) -> list[tuple[str, int]]:
        """The largest allocation sites as ("file:line", bytes); empty while tracing is off."""
        if not self.tracing:
            return []
        sites, _ = await asyncio.to_thread(self._statistics, limit, "lineno")
        return [(f"{s['file']}:{s['line']}", int(s["size_bytes"])) for s in sites]

    def _statistics(self, limit: int, group_by: str) -> tuple[list[dict[str, Any]], int]:
        try:
            snapshot = tracemalloc.take_snapshot().filter_traces(self._FILTERS)
        except RuntimeError:  # switched off meanwhile
            return [], 0
        stats = snapshot.statistics(group_by)
        sites = []
        for stat in stats[:limit]:
            innermost = stat.traceback[0]
            site: dict[str, Any] = {
                "file": _short(innermost.filename),
                "line": innermost.lineno if group_by != "filename" else None,
                "size_bytes": stat.size,
                "count": stat.count,
            }
            if group_by == "traceback":
                site["traceback"] = [
                    f"{_short(frame.filename)}:{frame.lineno}" for frame in stat.traceback
                ]
            sites.append(site)
        return sites, len(stats)


# --- the routes ---------------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, status: int, reason: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = dict(headers or {})


def _known_params(request: web.Request, known: frozenset[str]) -> None:
    """A 400 for a parameter the route does not take (a typo must not be silently ignored)."""
    unknown = sorted(set(request.query) - known)
    if unknown:
        shown = safe_text(unknown[0], 40)
        raise _Refused(400, f"unknown parameter {shown!r}: use {', '.join(sorted(known))}")


def _int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _Refused(400, f"{name} must be an integer in {low}..{high}") from None
    if not low <= value <= high:
        raise _Refused(400, f"{name} must be an integer in {low}..{high}")
    return value


def debug_routes(
    tracer: MemoryTracer, *, token: str | None, default_frames: int = 10
) -> list[tuple[str, str, Handler]]:
    """The /debug routes for the ops server, guarded by `token` (None: they answer 404)."""
    expected = token.encode("utf-8") if token else None

    def authorize(request: web.Request) -> None:
        if expected is None:
            raise _Refused(
                404, "diagnostics are disabled: set OPS_ADMIN_TOKEN (or ALERT_WEBHOOK_TOKEN)"
            )
        header = request.headers.get(hdrs.AUTHORIZATION)
        if header is None:
            raise _Refused(401, "bearer token required", {hdrs.WWW_AUTHENTICATE: _REALM})
        scheme, _, credentials = header.strip().partition(" ")
        given = credentials.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
            challenge = f'{_REALM}, error="invalid_token"'
            raise _Refused(401, "invalid bearer token", {hdrs.WWW_AUTHENTICATE: challenge})

    def guarded(answer: Callable[[web.Request], Awaitable[Any]], *params: str) -> Handler:
        known = frozenset(params)

        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                authorize(request)
                _known_params(request, known)
                body = await answer(request)
            except _Refused as refused:
                # 401/403 are counted and logged rate-limited by the ops server (RefusalLog).
                logger.log(
                    logging.DEBUG if refused.status in (401, 403) else logging.WARNING,
                    "debug: %d for %s %s from %s: %s",
                    refused.status,
                    request.method,
                    request.path,
                    request.remote,
                    refused.reason,
                )
                return web.json_response(
                    {"error": refused.reason}, status=refused.status, headers=refused.headers
                )
            logger.info("debug: %s %s from %s", request.method, request.path_qs, request.remote)
            return web.json_response(body)

        return handle

    async def tasks(request: web.Request) -> dict[str, Any]:
        limit = _int(request.query, "limit", 100, 1, MAX_TASKS)
        frames = _int(request.query, "frames", 10, 1, MAX_FRAMES)
        return task_report(limit, frames)

    async def memory(request: web.Request) -> dict[str, Any]:
        limit = _int(request.query, "limit", 20, 1, MAX_TOP)
        group_by = request.query.get("group_by", "lineno")
        if group_by not in _GROUPINGS:
            raise _Refused(400, f"group_by must be one of {', '.join(_GROUPINGS)}")
        return await tracer.top(limit, group_by)

    async def switch(request: web.Request) -> dict[str, Any]:
        trace = request.query.get("trace", "").lower()
        if trace not in ("on", "off"):
            raise _Refused(400, "trace must be on or off")
        if trace == "off":
            if "frames" in request.query:
                raise _Refused(400, "frames goes with trace=on")
            changed = tracer.stop()
        else:
            frames = _int(
                request.query, "frames", tracer.frames or default_frames, 1, MAX_TRACE_FRAMES
            )
            changed = tracer.start(frames)
        return {**tracer.status(), "changed": changed}

    return [
        ("GET", "/debug/tasks", guarded(tasks, "limit", "frames")),
        ("GET", "/debug/memory", guarded(memory, "limit", "group_by")),
        ("POST", "/debug/memory", guarded(switch, "trace", "frames")),
    ]
