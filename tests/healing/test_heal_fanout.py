"""Healing across a fleet on a real redis-server: an alert posted to one instance's /alerts runs
on the instance its `instance` label names, a fleet-wide alert (no label) on every instance, and
without Redis an alert for another instance is ignored as before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from bot.healing.actions import HEAL_ACTIONS, ActionRegistry
from bot.healing.fanout import HealFanOut
from bot.healing.http import alerts_handler
from bot.healing.receiver import HealReceiver
from bot.healing.testing import RecordingAction, sample_alert, sample_body
from bot.store.redis_link import RedisLink
from bot.store.redis_pubsub import RedisChannels
from tests.redis_server import RedisServer

TOKEN = "fleet-webhook-token"


@dataclass
class Instance:
    name: str
    url: str
    receiver: HealReceiver
    actions: dict[str, RecordingAction]
    fanout: HealFanOut
    channels: RedisChannels

    def calls(self, action: str = "memory") -> list[tuple[str, str]]:
        return self.actions[action].calls


@asynccontextmanager
async def instance(name: str, redis_url: str) -> AsyncIterator[Instance]:
    actions = {n: RecordingAction(n) for n in HEAL_ACTIONS}
    receiver = HealReceiver(ActionRegistry(list(actions.values())), instance=name)
    receiver.start()
    link = RedisLink(redis_url, timeout_s=0.5)
    channels = RedisChannels(link)
    fanout = HealFanOut(receiver, channels)
    listener = asyncio.create_task(channels.listen(fanout.channels, fanout.deliver))
    app = web.Application()
    app.router.add_post(
        "/alerts",
        alerts_handler(receiver, token=TOKEN, allow_insecure_loopback=False, route=fanout.route),
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with asyncio.timeout(5):
            await channels.listening.wait()
        yield Instance(name, f"http://{host}:{port}", receiver, actions, fanout, channels)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await receiver.stop(grace_s=1)
        await runner.cleanup()
        await link.aclose()


async def post(target: Instance, *alerts: dict[str, Any]) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{target.url}/alerts",
            data=sample_body(*alerts),
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response,
    ):
        return response.status


async def settled(*instances: Instance) -> None:
    for each in instances:
        await each.receiver.join()


async def _until(check: Any, within_s: float = 5.0) -> None:
    """Poll `check` (work arriving over Redis from another task: nothing to wait on)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_an_alert_runs_on_the_instance_it_names(redis_server: RedisServer) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(instance("bot-a:9464", redis_server.url))
        b = await stack.enter_async_context(instance("bot-b:9464", redis_server.url))
        # Posted to A, about B: B runs it, A does not.
        assert await post(a, sample_alert(instance="bot-b:9464", fingerprint="b1")) == 202
        await _until(lambda: b.calls() == [("apply", "b1")])
        await settled(a, b)
        assert a.calls() == []
        assert a.fanout.forwarded_total == 1 and b.fanout.received_total == 1
        assert a.receiver.stats.alerts_ignored_total.get("other_instance", 0) == 0
        # B's audit records that B acted.
        assert any(e.fingerprint == "b1" and e.outcome == "ok" for e in b.receiver.events)
        assert not any(e.fingerprint == "b1" for e in a.receiver.events)

        # A fleet-wide alert (no instance label) runs on every instance, once each.
        fleet_wide = sample_alert(instance=None, fingerprint="all1", heal="disk")
        assert await post(a, fleet_wide) == 202
        await _until(
            lambda: ("apply", "all1") in b.calls("disk") and ("apply", "all1") in a.calls("disk")
        )
        await settled(a, b)
        assert a.calls("disk").count(("apply", "all1")) == 1
        assert b.calls("disk").count(("apply", "all1")) == 1

        # A repeat of the same notification (Alertmanager's repeat) is deduplicated on B.
        assert await post(a, sample_alert(instance="bot-b:9464", fingerprint="b1")) == 202
        await _until(lambda: b.fanout.received_total == 3)
        await settled(a, b)
        assert b.calls().count(("apply", "b1")) == 1


async def test_without_redis_an_alert_for_another_instance_is_ignored(
    redis_server: RedisServer,
) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(instance("bot-a:9464", redis_server.url))
        b = await stack.enter_async_context(instance("bot-b:9464", redis_server.url))
        redis_server.stop()
        assert await post(a, sample_alert(instance="bot-b:9464", fingerprint="b2")) == 202
        await settled(a, b)
        assert a.calls() == [] and b.calls() == []
        assert a.receiver.stats.alerts_ignored_total.get("other_instance") == 1
        # An alert for an instance nobody listens for is not lost silently either.
        redis_server.start()
        await _until(lambda: a.channels.listening.is_set() and b.channels.listening.is_set())
        assert await post(a, sample_alert(instance="bot-z:9464", fingerprint="z1")) == 202
        await settled(a, b)
        assert a.receiver.stats.alerts_ignored_total.get("other_instance") == 2
        assert await post(a, sample_alert(instance="bot-b:9464", fingerprint="b3")) == 202
        await _until(lambda: b.calls() == [("apply", "b3")])
