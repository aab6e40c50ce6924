"""GET /debug/tasks, GET|POST /debug/memory over real HTTP: auth, bounds, content, and that a
refused call changes nothing."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from bot.ops.diagnostics import MemoryTracer, debug_routes
from bot.ops.metrics import Telemetry
from bot.ops.server import OpsServer
from tests.ops.fakes import make_snapshot

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def tracer() -> Iterator[MemoryTracer]:
    tracer = MemoryTracer()
    yield tracer
    tracemalloc.stop()  # process-wide: never leak tracing into other tests


async def _server(tracer: MemoryTracer, token: str | None) -> OpsServer:
    server = OpsServer(
        "127.0.0.1",
        0,
        telemetry=Telemetry(),
        snapshot=make_snapshot,
        readiness=lambda: (True, {}),
        extra_routes=debug_routes(tracer, token=token),
    )
    await server.start()
    return server


@pytest.fixture
async def base_url(tracer: MemoryTracer) -> AsyncIterator[str]:
    server = await _server(tracer, TOKEN)
    try:
        yield server.url
    finally:
        await server.stop()


async def _call(
    method: str, url: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers) as r:
        return r.status, await r.json(), r.headers.get("WWW-Authenticate", "")


ROUTES = [("GET", "/debug/tasks"), ("GET", "/debug/memory"), ("POST", "/debug/memory?trace=on")]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["none", "wrong", "not-bearer"],
)
async def test_without_the_token_every_route_answers_401_and_changes_nothing(
    base_url: str, tracer: MemoryTracer, method: str, path: str, headers: dict[str, str]
) -> None:
    status, body, challenge = await _call(method, base_url + path, headers)

    assert status == 401
    assert "token" in body["error"]
    assert challenge.startswith('Bearer realm="debug"')
    assert not tracer.tracing


async def test_with_no_token_configured_the_routes_are_off(tracer: MemoryTracer) -> None:
    server = await _server(tracer, None)
    try:
        for method, path in ROUTES:
            status, body, _ = await _call(method, server.url + path, AUTH)
            assert status == 404
            assert "OPS_ADMIN_TOKEN" in body["error"]
    finally:
        await server.stop()
    assert not tracer.tracing


async def _waits_on(event: asyncio.Event) -> None:
    await event.wait()


async def parked_worker(event: asyncio.Event) -> None:
    await _waits_on(event)


async def test_tasks_lists_each_task_with_its_await_chain(base_url: str) -> None:
    event = asyncio.Event()
    parked = asyncio.create_task(parked_worker(event), name="parked worker")
    await asyncio.sleep(0)  # let it start and park on the event
    try:
        status, body, _ = await _call("GET", base_url + "/debug/tasks", AUTH)
    finally:
        event.set()
        await parked

    assert status == 200
    assert body["tasks_total"] >= 2
    assert body["shown"] == len(body["tasks"]) == body["tasks_total"]
    assert body["truncated"] is False
    task = next(t for t in body["tasks"] if t["name"] == "parked worker")
    assert task["coroutine"] == "parked_worker"
    assert task["state"] == "pending" and task["current"] is False
    functions = [frame["function"] for frame in task["stack"]]
    assert functions[:3] == ["parked_worker", "_waits_on", "Event.wait"]
    assert task["stack"][0]["file"].endswith("test_diagnostics.py")
    assert task["stack"][1]["code"] == "await event.wait()"
    assert task["awaiting"] == "Future"
    assert sum(t["current"] for t in body["tasks"]) == 1  # the request's own handler


async def test_tasks_are_bounded_by_limit_and_frames(base_url: str) -> None:
    event = asyncio.Event()
    parked = [asyncio.create_task(parked_worker(event), name=f"p{i}") for i in range(3)]
    await asyncio.sleep(0)
    try:
        status, body, _ = await _call("GET", base_url + "/debug/tasks?limit=2&frames=1", AUTH)
    finally:
        event.set()
        await asyncio.gather(*parked)

    assert status == 200
    assert body["shown"] == 2 and body["truncated"] is True and body["tasks_total"] >= 4
    assert body["frames_per_task"] == 1
    assert all(len(t["stack"]) <= 1 for t in body["tasks"])
    assert any(t["stack_truncated"] for t in body["tasks"])


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=501", "limit=many", "frames=0", "frames=31", "frames=1.5"]
)
async def test_bad_task_parameters_are_400(base_url: str, query: str) -> None:
    status, body, _ = await _call("GET", f"{base_url}/debug/tasks?{query}", AUTH)

    assert status == 400
    assert query.split("=")[0] in body["error"]


def allocate_a_lot() -> list[bytes]:
    return [bytes(1024) for _ in range(2048)]  # ~2 MiB on one line


async def test_memory_is_off_until_switched_on_then_shows_the_top_sites(
    base_url: str, tracer: MemoryTracer
) -> None:
    status, body, _ = await _call("GET", base_url + "/debug/memory", AUTH)
    assert status == 200
    assert body["tracing"] is False
    assert "POST /debug/memory?trace=on" in body["message"]

    status, body, _ = await _call("POST", base_url + "/debug/memory?trace=on&frames=4", AUTH)
    assert status == 200
    assert (body["tracing"], body["frames"], body["changed"]) == (True, 4, True)
    kept = allocate_a_lot()

    status, body, _ = await _call("GET", base_url + "/debug/memory?limit=5", AUTH)
    assert status == 200
    assert body["tracing"] is True and body["group_by"] == "lineno"
    assert len(body["top"]) == 5 and body["sites_total"] >= 5
    assert body["traced_bytes"] >= 2 * 1024 * 1024
    top = body["top"][0]
    assert top["file"].endswith("test_diagnostics.py") and top["size_bytes"] >= 2 * 1024 * 1024
    assert top["count"] >= 2048

    status, body, _ = await _call("GET", base_url + "/debug/memory?group_by=traceback", AUTH)
    assert status == 200
    assert 1 <= len(body["top"][0]["traceback"]) <= 4
    del kept

    status, body, _ = await _call("POST", base_url + "/debug/memory?trace=off", AUTH)
    assert status == 200
    assert (body["tracing"], body["changed"]) == (False, True)
    assert not tracer.tracing


@pytest.mark.parametrize(
    ("method", "query"),
    [
        ("POST", "trace=maybe"),
        ("POST", ""),
        ("POST", "trace=on&frames=0"),
        ("POST", "trace=on&frames=101"),
        ("POST", "trace=off&frames=3"),
        ("GET", "group_by=module"),
        ("GET", "limit=101"),
    ],
)
async def test_bad_memory_parameters_are_400_and_change_nothing(
    base_url: str, tracer: MemoryTracer, method: str, query: str
) -> None:
    tracer.start(2)

    status, body, _ = await _call(method, f"{base_url}/debug/memory?{query}", AUTH)

    assert status == 400
    assert body["error"]
    assert tracer.tracing and tracer.frames == 2


async def test_switching_on_again_keeps_or_restarts_the_trace(
    base_url: str, tracer: MemoryTracer
) -> None:
    tracer.start(3)

    _, same, _ = await _call("POST", base_url + "/debug/memory?trace=on", AUTH)
    _, other, _ = await _call("POST", base_url + "/debug/memory?trace=on&frames=6", AUTH)

    assert (same["frames"], same["changed"]) == (3, False)
    assert (other["frames"], other["changed"]) == (6, True)


async def test_top_allocations_for_the_memory_heal(tracer: MemoryTracer) -> None:
    assert await tracer.top_allocations(3) == []
    tracer.start(1)
    kept = allocate_a_lot()

    sites = await tracer.top_allocations(3)

    assert len(sites) == 3
    where, size = sites[0]
    assert "test_diagnostics.py:" in where and size >= 2 * 1024 * 1024
    del kept
