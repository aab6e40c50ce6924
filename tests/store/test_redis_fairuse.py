"""RedisFairUseStore on a real redis-server: usage counted atomically by two processes' clients,
overrides, channel settings and the bounded audit round trip, a lost Redis counted locally and
added back when Redis returns, and the change messages other processes reload on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bot.store import MemoryStore
from bot.store.fairuse import KeyValueFairUseStore
from bot.store.redis_fairuse import CHANNEL, FairUseUnavailable, RedisFairUseStore, parse_change
from bot.store.redis_link import RedisLink
from tests.fakes import FakeClock
from tests.redis_server import RedisServer

DAY = "2026-12-04"


@asynccontextmanager
async def store(url: str, name: str = "a", **kwargs: Any) -> AsyncIterator[RedisFairUseStore]:
    link = RedisLink(url, timeout_s=0.5)
    try:
        yield RedisFairUseStore(link, instance=name, **kwargs)
    finally:
        await link.aclose()


async def test_concurrent_adds_from_two_clients_sum_exactly(redis_server: RedisServer) -> None:
    async with store(redis_server.url, "a") as a, store(redis_server.url, "b") as b:
        keys = ["user:1", "guild:2"]
        await asyncio.gather(
            *(s.add_usage(DAY, keys, 7) for _ in range(50) for s in (a, b)),
        )
        assert await a.usage(DAY, keys) == {"user:1": 700, "guild:2": 700}
        assert await b.usage(DAY, [*keys, "user:3"]) == {"user:1": 700, "guild:2": 700, "user:3": 0}
        assert await a.usage("2026-12-05", keys) == {"user:1": 0, "guild:2": 0}
        # The day's counters expire by themselves (a day after the reset at the latest).
        ttl = await a._link.client.ttl(f"llmbot:fairuse:usage:{DAY}")
        assert 86_400 < ttl <= 2 * 86_400


async def test_overrides_channels_and_audit_round_trip(redis_server: RedisServer) -> None:
    async with (
        store(redis_server.url, "a", max_audit_entries=3) as a,
        store(redis_server.url, "b") as b,
    ):
        await a.set_override("user:1", 500)
        await a.set_override("role:9", 0)
        await a.set_override("guild:3", 1000)
        await a.set_override("guild:3", None)
        assert await b.overrides() == {"user:1": 500, "role:9": 0}
        await a.set_channel(11, {"autoreply": True, "persona": "a pirate", "model": None})
        await a.set_channel(12, {"autoreply": False})
        await a.set_channel(12, None)
        assert await b.channels() == {11: {"autoreply": True, "persona": "a pirate", "model": None}}
        for n in range(5):
            await a.add_audit({"by": 1, "after": n})
        assert [e["after"] for e in await b.audit(10)] == [2, 3, 4]  # bounded, oldest first
        assert [e["after"] for e in await b.audit(2)] == [3, 4]
        assert await b.audit(0) == []


async def test_changes_are_announced_with_their_sender(redis_server: RedisServer) -> None:
    async with store(redis_server.url, "a") as a:
        pubsub = a._link.client.pubsub()
        await pubsub.subscribe(f"llmbot:{CHANNEL}")
        await a.set_override("user:1", 5)
        await a.set_channel(4, {"autoreply": True})
        seen = []
        async with asyncio.timeout(5):
            while len(seen) < 2:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    seen.append(parse_change(message["data"]))
        await pubsub.aclose()
        assert seen == [("a", "overrides"), ("a", "channels")]
        assert parse_change(b"not json") is None
        assert parse_change(json.dumps({"from": "a", "what": "usage"}).encode()) is None


async def test_redis_lost_usage_counts_locally_and_is_added_back(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    async with (
        store(redis_server.url, "a", clock=clock, retry_after_s=2.0) as a,
        store(redis_server.url, "b") as b,
    ):
        await a.add_usage(DAY, ["user:1"], 40)
        assert await a.usage(DAY, ["user:1"]) == {"user:1": 40}  # now known locally
        redis_server.stop()
        # Redis away: the last figure plus what this process counted since.
        await a.add_usage(DAY, ["user:1", "guild:2"], 30)
        assert await a.usage(DAY, ["user:1", "guild:2"]) == {"user:1": 70, "guild:2": 30}
        assert a.fallback.pending == 2
        redis_server.start()  # empty again: persistence is off
        await b.add_usage(DAY, ["user:1"], 5)
        # Within 2 s of the failure `a` does not try Redis (no question waits on it again)...
        assert await a.usage(DAY, ["user:1"]) == {"user:1": 70}
        clock.advance(2.0)
        # ...then its next call adds what it counted during the outage.
        assert await a.usage(DAY, ["user:1", "guild:2"]) == {"user:1": 35, "guild:2": 30}
        assert a.fallback.pending == 0
        assert await b.usage(DAY, ["user:1"]) == {"user:1": 35}


async def test_pending_usage_is_bounded(redis_server: RedisServer) -> None:
    async with store(redis_server.url, "a", max_local_keys=2) as a:
        redis_server.stop()
        for user in range(4):
            await a.add_usage(DAY, [f"user:{user}"], 10)
        assert a.fallback.pending == 2
        assert a.fallback.pending_dropped == 20


async def test_changing_settings_without_redis_is_a_clear_error(redis_server: RedisServer) -> None:
    async with store(redis_server.url, "a") as a:
        redis_server.stop()
        for change in (a.set_override("user:1", 5), a.set_channel(3, {"autoreply": True})):
            with pytest.raises(
                FairUseUnavailable, match=r"store \(Redis\) is unavailable; try again"
            ):
                await change
        await a.add_audit({"by": 1})  # the change's log line stays its audit: no error here


async def test_a_former_single_process_settings_are_adopted_once(
    redis_server: RedisServer,
) -> None:
    async with MemoryStore() as kv, store(redis_server.url, "a") as a, store(redis_server.url) as b:
        local = KeyValueFairUseStore(
            kv.namespace("budgets"), kv.namespace("channels"), kv.namespace("budget_audit")
        )
        assert await a.adopt(local) == 0  # nothing to copy: the mark stays free
        await local.set_override("user:1", 500)
        await local.set_channel(7, {"autoreply": True})
        await b.set_override("user:1", 900)  # already set in the fleet: kept
        assert await a.adopt(local) == 2
        assert await b.overrides() == {"user:1": 900}
        assert await b.channels() == {7: {"autoreply": True}}
        # Once for the fleet: removed later, not brought back by the next start.
        await b.set_channel(7, None)
        assert await b.adopt(local) == 0
        assert await a.channels() == {}


async def test_outage_usage_is_added_once_by_concurrent_calls(redis_server: RedisServer) -> None:
    clock = FakeClock()
    async with store(redis_server.url, "a", clock=clock) as a:
        redis_server.stop()
        for user in range(20):
            await a.add_usage(DAY, [f"user:{user}", "guild:1"], 10)
        redis_server.start()
        clock.advance(60)
        results = await asyncio.gather(*(a.usage(DAY, ["guild:1"]) for _ in range(10)))
        assert a.fallback.pending == 0
        assert results[-1] == {"guild:1": 200}
        assert await a.usage(DAY, [f"user:{u}" for u in range(20)]) == {
            f"user:{u}": 10 for u in range(20)
        }
