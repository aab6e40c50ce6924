"""The ops API as described (issue #17 part 3): docs/ops-openapi.json, the document the bot
serves at /openapi.json and the routes a real bot registers agree; schemathesis fuzzes the
running bot (with the emulators) against the document; every bearer-token route answers 401
without its token."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bot.app import BotApp
from bot.ops.openapi import document, operations

DOC = Path(__file__).resolve().parents[2] / "docs" / "ops-openapi.json"
REGENERATE = "python -m bot.ops.openapi > docs/ops-openapi.json"
ALERTS_TOKEN = "fuzz-alerts-token"
ADMIN_TOKEN = "fuzz-admin-token"
# Examples per operation and generation mode: 11 operations x 2 modes x 25 = ~550 cases plus
# schemathesis' auth probes, ~30-45 s on the shared 2-core machine.
EXAMPLES = 25
# Switching tracemalloc on (up to 100 frames) slows the whole process for a while: 18 s for 25.
FEWER = {"POST /debug/memory": 4}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


def test_the_file_in_the_repository_is_the_document() -> None:
    kept = json.loads(DOC.read_text(encoding="utf-8"))
    assert kept == json.loads(json.dumps(document())), (
        f"docs/ops-openapi.json is out of date with bot/ops/openapi.py: run `{REGENERATE}`"
    )


@pytest.fixture
async def bot(start_bot: Callable[..., Any]) -> BotApp:
    app: BotApp = await start_bot(
        alert_webhook_token=ALERTS_TOKEN,
        ops_admin_token=ADMIN_TOKEN,
        heal_dry_run=True,  # the fuzzer's alerts must not change the bot under test
    )
    return app


async def test_every_served_route_is_described_and_the_document_is_served(bot: BotApp) -> None:
    served = set(bot.ops.routes)
    described = operations()
    missing = sorted(served - described)
    assert not missing, (
        f"served but not described: {missing}. Add each under PATHS in bot/ops/openapi.py "
        f"(its parameters, answers and security), then run `{REGENERATE}`"
    )
    stale = sorted(described - served)
    assert not stale, f"described but not served: {stale}. Remove them from bot/ops/openapi.py"
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{bot.ops.url}/openapi.json") as response,
    ):
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == json.loads(json.dumps(document()))


async def test_every_guarded_route_answers_401_without_its_token(bot: BotApp) -> None:
    guarded = [
        (method.upper(), path)
        for path, item in document()["paths"].items()
        for method, operation in item.items()
        if operation.get("security")
    ]
    assert guarded
    async with aiohttp.ClientSession() as http:
        for method, path in guarded:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                async with http.request(method, f"{bot.ops.url}{path}", headers=headers) as answer:
                    assert answer.status == 401, (method, path, headers)
                    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
                    assert "error" in await answer.json()


@dataclass
class Figures:
    cases: int = 0
    by_operation: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    without_negative: list[str] = field(default_factory=list)


def fuzz_operation(
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    mode: schemathesis.GenerationMode,
    call: Callable[[Any], Any],
) -> bool:
    """Run the cases of one operation and mode; False when there is nothing to generate."""

    @settings(
        max_examples=FEWER.get(operation.label, EXAMPLES),
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        call(case)

    try:
        run()
    except Unsatisfiable:
        # No parameters and no body (GET /metrics, /healthz...): nothing to make invalid.
        assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
        return False
    return True


def fuzz(base_url: str) -> Figures:
    """Every operation, positive and negative cases, each response checked (runs in a thread:
    schemathesis calls with requests, the bot answers on the test's event loop)."""
    schema = schemathesis.openapi.from_dict(document())
    figures = Figures()
    session = requests.Session()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        security = operation.definition.raw.get("security", [])
        token = None
        if security:
            token = ALERTS_TOKEN if "alertsToken" in security[0] else ADMIN_TOKEN
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        label = operation.label

        def call(case: Any, headers: dict[str, str] = headers, label: str = label) -> None:
            response = case.call(base_url=base_url, session=session, headers=headers)
            figures.cases += 1
            figures.by_operation[label] = figures.by_operation.get(label, 0) + 1
            status = response.status_code
            figures.statuses[status] = figures.statuses.get(status, 0) + 1
            case.validate_response(response, checks=CHECKS, headers=headers)

        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            if not fuzz_operation(operation, mode, call):
                figures.without_negative.append(label)
    return figures


async def test_schemathesis_finds_nothing_on_the_running_bot(bot: BotApp) -> None:
    started = time.perf_counter()
    figures = await asyncio.to_thread(fuzz, bot.ops.url)
    elapsed = time.perf_counter() - started
    print(
        f"\nschemathesis: {figures.cases} cases over {len(figures.by_operation)} operations in "
        f"{elapsed:.1f}s; statuses {dict(sorted(figures.statuses.items()))}"
    )
    assert len(figures.by_operation) == len(operations())
    async with aiohttp.ClientSession() as http:  # the fuzzer may have left tracemalloc on
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        url = f"{bot.ops.url}/debug/memory?trace=off"
        async with http.post(url, headers=auth) as answer:
            assert answer.status == 200
    assert 500 not in figures.statuses
    assert bot.healer.stats.webhook_requests_total[500] == 0


async def test_connection_settings_bound_a_real_bot(start_bot: Callable[..., Any]) -> None:
    """OPS_MAX_CONNECTIONS and OPS_IDLE_TIMEOUT_SECONDS on a running bot: 30 idle sockets
    leave at most 10 open, /healthz answers, the rest close after a second, /metrics counts it."""
    bot: BotApp = await start_bot(ops_max_connections=10, ops_idle_timeout_seconds=1)
    sockets = [await asyncio.open_connection("127.0.0.1", bot.ops.port) for _ in range(30)]
    deadline = time.monotonic() + 10
    while bot.ops.connections.open > 10:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{bot.ops.url}/healthz") as answer:
            assert answer.status == 200
        for reader, _ in sockets:  # each is closed by the server: evicted or timed out
            assert await asyncio.wait_for(reader.read(), 10) == b""
        async with http.get(f"{bot.ops.url}/metrics") as answer:
            text = await answer.text()
    evicted = next(
        line for line in text.splitlines()
        if line.startswith('llmbot_ops_requests_refused_total{reason="idle_evicted"}')
    )  # fmt: skip
    assert float(evicted.split()[-1]) >= 20
    assert "llmbot_ops_connections " in text
    for _, writer in sockets:
        writer.close()
