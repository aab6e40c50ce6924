"""The ops server over real HTTP on a random port: metrics formats, probes, status, history."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Mapping
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from bot.ops.history import CSV_COLUMNS, HealthHistory
from bot.ops.metrics import MetricSources, Telemetry
from bot.ops.server import OpsServer, readiness, wants_openmetrics
from bot.ops.view import BotView
from bot.resilience.degradation import DegradationState
from bot.store.stats import StoreStats
from tests.ops.fakes import BUILD, START, make_snapshot

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


class Ready:
    def __init__(self) -> None:
        self.ready = False

    def __call__(self) -> tuple[bool, Mapping[str, Any]]:
        detail = "connected" if self.ready else "not connected"
        return self.ready, {"gateway": {"ok": self.ready, "detail": detail}}


@pytest.fixture
async def history() -> HealthHistory:
    clock = SimpleNamespace(now=START + 10 * 60)
    history = HealthHistory(clock=lambda: clock.now)
    for minute in range(10):
        await history.record(make_snapshot(START + minute * 60, active_conversations=minute))
    return history


@pytest.fixture
async def served(history: HealthHistory) -> AsyncIterator[tuple[OpsServer, Ready]]:
    async def alerts(request: web.Request) -> web.Response:
        return web.json_response({"queued": 0}, status=202)

    ready = Ready()
    server = OpsServer(
        "127.0.0.1",
        0,
        telemetry=Telemetry(models=["gemini-2.5-flash"], sources=MetricSources(build=BUILD)),
        snapshot=make_snapshot,
        readiness=ready,
        history=history,
        extra_routes=[("POST", "/alerts", alerts)],
    )
    await server.start()
    try:
        yield server, ready
    finally:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_listens_on_a_random_port_and_stops(
    served: tuple[OpsServer, Ready], http: aiohttp.ClientSession
) -> None:
    server, _ = served
    assert server.port != 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    async with http.get(server.url + "/healthz") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == {"status": "ok"}
    await server.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(server.url + "/healthz"):
            pass


async def test_metrics_in_text_and_openmetrics_formats(
    served: tuple[OpsServer, Ready], http: aiohttp.ClientSession
) -> None:
    server, _ = served
    async with http.get(server.url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await response.text()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "llmbot_messages",
        "llmbot_response_duration_seconds",
        "process_start_time_seconds",
    } <= (names)
    async with http.get(server.url + "/metrics", headers={"Accept": PROMETHEUS_ACCEPT}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text;")
        body = await response.text()
    assert body.endswith("# EOF\n")
    assert any(f.name == "llmbot_messages" for f in openmetrics_families(body))


async def test_readiness_answers_503_with_reasons_until_ready(
    served: tuple[OpsServer, Ready], http: aiohttp.ClientSession
) -> None:
    server, ready = served
    async with http.get(server.url + "/readyz") as response:
        assert response.status == 503
        assert await response.json() == {
            "status": "not ready",
            "checks": {"gateway": {"ok": False, "detail": "not connected"}},
        }
    ready.ready = True
    async with http.get(server.url + "/readyz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ready"


async def test_status_is_the_health_snapshot(
    served: tuple[OpsServer, Ready], http: aiohttp.ClientSession
) -> None:
    server, _ = served
    async with http.get(server.url + "/status") as response:
        assert response.status == 200
        assert await response.json() == make_snapshot().as_dict()


async def test_history_export_as_csv_and_json_with_bounds(
    served: tuple[OpsServer, Ready], http: aiohttp.ClientSession
) -> None:
    server, _ = served
    async with http.get(server.url + "/status/history?format=csv") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
        rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert len(rows) == 10
    assert list(rows[0]) == list(CSV_COLUMNS)
    stamps = [float(row["timestamp"]) for row in rows]
    assert stamps == sorted(stamps)
    assert rows[0]["time"] == "2023-11-14T22:13:20Z"

    query = f"format=json&from={START + 120}&to=2023-11-14T22:18:20Z"  # +2 min .. +5 min
    async with http.get(server.url + "/status/history?" + query) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        points = (await response.json())["points"]
    assert [p["active_conversations"] for p in points] == [2, 3, 4, 5]

    for bad in ("format=xml", "from=yesterday", f"from={START + 100}&to={START}"):
        async with http.get(server.url + "/status/history?" + bad) as response:
            assert response.status == 400
            assert "error" in await response.json()


async def test_extra_routes_are_served(
    served: tuple[OpsServer, Ready], http: aiohttp.ClientSession
) -> None:
    server, _ = served
    async with http.post(server.url + "/alerts", json={}) as response:
        assert response.status == 202
    async with http.get(server.url + "/nothing-here") as response:
        assert response.status == 404


async def test_history_route_without_a_history(http: aiohttp.ClientSession) -> None:
    server = OpsServer(
        "127.0.0.1",
        0,
        telemetry=Telemetry(sources=MetricSources(build=BUILD)),
        snapshot=make_snapshot,
        readiness=lambda: (True, {}),
    )
    await server.start()
    try:
        async with http.get(server.url + "/status/history") as response:
            assert response.status == 404
    finally:
        await server.stop()


def test_openmetrics_is_chosen_from_the_accept_header() -> None:
    assert wants_openmetrics(PROMETHEUS_ACCEPT)
    assert wants_openmetrics("application/openmetrics-text")
    assert not wants_openmetrics("")
    assert not wants_openmetrics("text/plain;version=0.0.4")
    assert not wants_openmetrics("*/*")
    assert not wants_openmetrics("application/openmetrics-text;q=0")


def test_readiness_from_a_view_checks_gateway_store_and_maintenance() -> None:
    degradation = DegradationState()
    store = StoreStats(backend="memory", healthy=True)
    view = BotView(
        gateway_connected=lambda: True,
        store=lambda: store,
        maintenance=lambda: degradation.reason if degradation.maintenance else None,
    )
    check = readiness(view)
    ready, checks = check()
    assert ready
    assert set(checks) == {"gateway", "store", "maintenance"}
    degradation.enter_maintenance("operator")
    store.healthy = False
    ready, checks = check()
    assert not ready
    assert checks["store"] == {"ok": False, "detail": "unhealthy"}
    assert checks["maintenance"]["ok"] is False
    assert "maintenance" in checks["maintenance"]["detail"]
    json.dumps(checks)  # the server sends it as JSON
    bare = BotView(gateway_connected=lambda: False)
    ready, checks = readiness(bare)()
    assert not ready
    assert set(checks) == {"gateway"}
