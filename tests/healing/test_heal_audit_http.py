"""GET /heal/audit over real HTTP: the /alerts bearer token, the query parameters, the JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.healing.actions import HEAL_ACTIONS, ActionRegistry
from bot.healing.http import alerts_handler, audit_handler
from bot.healing.receiver import HealReceiver
from bot.healing.testing import RecordingAction, sample_alert, sample_body
from tests.fakes import FakeClock

TOKEN = "s3cret-webhook-token"
INSTANCE = "127.0.0.1:9464"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Ops:
    base: str
    session: aiohttp.ClientSession
    receiver: HealReceiver

    async def alert(self, *alerts: dict[str, Any]) -> int:
        async with self.session.post(
            f"{self.base}/alerts", data=sample_body(*alerts), headers=AUTH
        ) as response:
            return response.status

    async def audit(
        self, query: str = "", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        async with self.session.get(
            f"{self.base}/heal/audit{query}", headers=AUTH if headers is None else headers
        ) as response:
            return response.status, await response.json()


@asynccontextmanager
async def serve(*, token: str | None = TOKEN, **receiver_kwargs: Any) -> AsyncIterator[Ops]:
    actions = [RecordingAction(name) for name in HEAL_ACTIONS]
    receiver = HealReceiver(ActionRegistry(actions), instance=INSTANCE, **receiver_kwargs)
    receiver.start()
    app = web.Application()
    app.router.add_post(
        "/alerts", alerts_handler(receiver, token=token, allow_insecure_loopback=False)
    )
    app.router.add_get(
        "/heal/audit", audit_handler(receiver, token=token, allow_insecure_loopback=False)
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as session:
            yield Ops(f"http://{host}:{port}", session, receiver)
    finally:
        await receiver.stop(grace_s=1)
        await runner.cleanup()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_714_557_600.0)


@pytest.fixture
async def ops(clock: FakeClock) -> AsyncIterator[Ops]:
    async with serve(events_capacity=50, clock=clock) as running:
        yield running


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}],
)
async def test_without_the_token_it_is_401(ops: Ops, headers: dict[str, str]) -> None:
    assert await ops.alert(sample_alert()) == 202
    status, body = await ops.audit(headers=headers)
    assert status == 401
    assert body == {"error": body["error"]}  # nothing of the audit leaks
    assert "bearer" in body["error"]


async def test_no_token_configured_means_404() -> None:
    async with serve(token=None) as running:
        status, _ = await running.audit(headers={})
        assert status == 404


async def test_the_decisions_of_a_run_newest_first(ops: Ops, clock: FakeClock) -> None:
    assert await ops.alert(sample_alert(fingerprint="a")) == 202
    await ops.receiver.join()
    clock.now += 10
    assert await ops.alert(sample_alert(fingerprint="a")) == 202  # the repeat
    clock.now += 10
    assert await ops.alert(sample_alert(fingerprint="b", instance="10.0.0.7:9464")) == 202

    status, body = await ops.audit()
    assert status == 200
    assert {key: body[key] for key in ("instance", "enabled", "dry_run", "capacity", "size")} == {
        "instance": INSTANCE,
        "enabled": True,
        "dry_run": False,
        "capacity": 50,
        "size": 4,
    }
    outcomes = [(e["action"], e["outcome"]) for e in body["entries"]]
    assert outcomes == [
        (None, "ignored"),
        ("memory", "duplicate"),
        ("memory", "ok"),
        ("memory", "queued"),
    ]
    ok = body["entries"][2]
    assert ok["alertname"] == "LLMBotHighMemory"
    assert ok["fingerprint"] == "a"
    assert ok["status"] == "firing"
    assert ok["kind"] == "apply"
    assert ok["figures"] == {"bytes_freed": 1024.0}
    assert ok["at"].endswith("Z")
    assert set(ok) == {
        "seq", "time", "at", "alertname", "fingerprint", "status", "action", "kind",
        "outcome", "detail", "figures", "by", "trace_id",
    }  # fmt: skip

    status, body = await ops.audit("?limit=1")
    assert [e["outcome"] for e in body["entries"]] == ["ignored"]
    status, body = await ops.audit(f"?since={clock.now - 15}")
    assert (status, [e["outcome"] for e in body["entries"]]) == (200, ["ignored", "duplicate"])
    status, body = await ops.audit(f"?since={clock.now - 15}&limit=1")
    assert [e["outcome"] for e in body["entries"]] == ["ignored"]


async def test_disabled_and_dry_run_are_shown() -> None:
    async with serve(enabled=False) as running:
        assert await running.alert(sample_alert()) == 200
        _, body = await running.audit()
        assert body["enabled"] is False
        assert [e["outcome"] for e in body["entries"]] == ["disabled"]
    async with serve(dry_run=True) as running:
        assert await running.alert(sample_alert()) == 200
        _, body = await running.audit()
        assert body["dry_run"] is True
        (entry,) = body["entries"]
        assert (entry["outcome"], entry["kind"]) == ("dry_run", "apply")
        assert entry["detail"].startswith("would apply memory")


@pytest.mark.parametrize(
    "query",
    [
        "?limit=0",
        "?limit=51",  # over the capacity
        "?limit=-1",
        "?limit=ten",
        "?limit=%C2%B2",  # a superscript two: a digit to str.isdigit, not to int()
        "?limit=1&limit=2",
        "?since=yesterday",
        "?since=nan",
        "?sincе=1",  # a Cyrillic "е": an unknown parameter
        "?action=memory",
    ],
)
async def test_bad_parameters_are_400(ops: Ops, query: str) -> None:
    status, body = await ops.audit(query)
    assert status == 400
    assert body["error"]


async def test_since_takes_iso_times(ops: Ops) -> None:
    assert await ops.alert(sample_alert()) == 202  # at 2024-05-01T10:00:00Z by the clock
    await ops.receiver.join()
    status, body = await ops.audit("?since=2024-05-01T09:59:59Z")
    assert (status, body["count"]) == (200, 2)
    status, body = await ops.audit("?since=2024-05-01T10:00:00")  # naive: UTC
    assert (status, body["count"]) == (200, 0)
