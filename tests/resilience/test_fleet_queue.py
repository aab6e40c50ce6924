"""FleetQueue on a real redis-server: several queues (as several processes would) share one
stream; a held item is kept while its holder touches it and reclaimed once it stops; acks,
the fleet-wide bound, the hand-over after Redis was away, and Redis losing its data."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from bot.resilience.fleet_queue import FleetQueue
from bot.store import MemoryStore
from bot.store.redis_link import RedisLink
from bot.store.redis_stream import RedisQueueStream
from tests.redis_server import RedisServer

IDLE_S = 0.3

Make = Callable[..., Awaitable[FleetQueue]]


@pytest.fixture
async def make(redis_server: RedisServer) -> AsyncIterator[Make]:
    links: list[RedisLink] = []
    stores: list[MemoryStore] = []

    async def build(
        consumer: str, *, store: MemoryStore | None = None, **kwargs: Any
    ) -> FleetQueue:
        link = RedisLink(redis_server.url, timeout_s=0.5)
        links.append(link)
        if store is None:
            store = MemoryStore(cleanup_interval_s=3600)
            await store.open()
            stores.append(store)
        kwargs.setdefault("max_size", 10)
        queue = FleetQueue(
            store.namespace("queue"),
            RedisQueueStream(link, consumer),
            claim_idle_s=kwargs.pop("claim_idle_s", IDLE_S),
            **kwargs,
        )
        await queue.load()
        return queue

    yield build
    for link in links:
        await link.aclose()
    for store in stores:
        await store.close()


async def until(check: Callable[[], Awaitable[bool]], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def texts(queue: FleetQueue) -> list[str]:
    return [item.payload["text"] for item in queue.items]


async def test_a_pushed_item_is_held_by_its_process_and_kept_while_it_touches_it(
    make: Make,
) -> None:
    # A roomy idle time (6 touches per timeout): a loaded machine's late pass is no reclaim.
    a, b = await make("a", claim_idle_s=1.5), await make("b", claim_idle_s=1.5)
    pushed = await a.push({"text": "q1"}, delay_s=0)
    assert pushed.accepted and pushed.position == 1
    assert texts(a) == ["q1"] and a.held_in_redis() == 1
    # Two idle timeouts, A touching all along: B never gets it.
    for _ in range(12):
        await asyncio.sleep(0.25)
        assert await a.sync() and await b.sync()
    assert texts(b) == [] and b.stats.reclaimed_total == 0
    assert a.stats.fleet_size == 1


async def test_an_item_of_a_silent_process_is_reclaimed_once_and_let_go_by_it(
    make: Make,
) -> None:
    a, b, c = await make("a"), await make("b"), await make("c")
    for i in range(3):
        assert (await a.push({"text": f"q{i}"}, delay_s=0)).accepted
    # A stops touching (stalled, or dead): after the idle time B and C take it, each item once.

    async def all_reclaimed() -> bool:
        await b.sync()
        await c.sync()
        return b.size + c.size == 3

    await until(all_reclaimed)
    assert sorted(texts(b) + texts(c)) == ["q0", "q1", "q2"]
    assert b.stats.reclaimed_total + c.stats.reclaimed_total == 3
    # A comes back: its touch finds them in other pending lists and lets them go, silently.
    assert await a.sync()
    assert a.size == 0 and a.stats.taken_over_total == 3
    for queue in (b, c):
        for item in queue.due(limit=10):
            await queue.mark_answered(item)
    assert await b.sync()
    assert b.stats.fleet_size == 0
    for queue in (a, b, c):  # every item counted in once and out once
        stats = queue.stats
        assert stats.pushed_total + stats.restored_total + stats.reclaimed_total == (
            stats.size
            + stats.answered_total
            + sum(stats.dropped_total.values())
            + stats.taken_over_total
        )


async def test_answered_failed_and_expired_items_are_acked_and_deleted(
    make: Make, redis_server: RedisServer
) -> None:
    a = await make("a", max_attempts=1, max_age_s=0.2)
    for text in ("answered", "failed", "expired"):
        await a.push({"text": text}, delay_s=0 if text != "expired" else 60)
    items = {item.payload["text"]: item for item in a.due(limit=10)}
    await a.mark_answered(items["answered"])
    assert not await a.mark_failed(items["failed"])  # last attempt: dropped

    async def expired() -> bool:
        return bool(await a.expire())

    await until(expired)
    assert a.size == 0
    link = RedisLink(redis_server.url)
    try:
        assert await link.client.xlen("llmbot:queue") == 0
        assert await link.client.xpending("llmbot:queue", "workers") == {
            "pending": 0,
            "min": None,
            "max": None,
            "consumers": [],
        }
    finally:
        await link.aclose()


async def test_the_bound_is_fleet_wide(make: Make) -> None:
    a, b = await make("a", max_size=3), await make("b", max_size=3)
    assert (await a.push({"text": "a1"}, delay_s=0)).accepted
    assert (await a.push({"text": "a2"})).accepted
    assert (await b.push({"text": "b1"})).accepted
    refused = await b.push({"text": "b2"})
    assert not refused.accepted and refused.refused_reason == "overflow"
    assert b.stats.dropped_total["overflow"] == 1 and b.size == 1
    await a.mark_answered(a.due(limit=1)[0])
    assert (await b.push({"text": "b2"})).accepted


async def test_a_restarted_process_reads_its_own_entries_back(make: Make) -> None:
    a = await make("a", claim_idle_s=60)
    await a.push({"text": "kept"}, delay_s=0)
    # kill -9: nothing closed. The same consumer starts again and reads its entry back at once.
    again = await make("a", claim_idle_s=60)
    assert texts(again) == ["kept"] and again.stats.restored_total == 1
    await again.mark_answered(again.due()[0])
    assert await again.sync() and again.stats.fleet_size == 0


async def test_a_reclaimed_item_already_answered_is_acked_without_an_answer(make: Make) -> None:
    a = await make("a")
    await a.push({"text": "done", "message_id": 7}, delay_s=0)
    asked: list[Any] = []

    async def is_done(payload: dict[str, Any]) -> bool:
        asked.append(payload["message_id"])
        return True

    b = await make("b", is_done=is_done)

    async def acked() -> bool:
        await b.sync()
        return b.stats.fleet_size == 0

    await until(acked)
    assert asked == [7] and b.size == 0 and b.stats.reclaimed_total == 0


async def test_redis_away_keeps_items_locally_and_hands_them_over_when_back(
    make: Make, redis_server: RedisServer
) -> None:
    store = MemoryStore(cleanup_interval_s=3600)
    await store.open()
    try:
        a = await make("a", store=store)
        redis_server.stop()
        pushed = await a.push({"text": "while away"}, delay_s=0)
        assert pushed.accepted and not a.redis_ok
        assert len(await store.namespace("queue").items("item:")) == 1  # durable locally
        assert not await a.sync()
        redis_server.start()  # empty: the fixture runs it without persistence
        assert await a.sync()
        assert a.stats.handed_over_total == 1 and a.held_in_redis() == 1
        assert await store.namespace("queue").items("item:") == []
        assert a.stats.fleet_size == 1
        await a.mark_answered(a.due()[0])
        assert await a.sync() and a.stats.fleet_size == 0
    finally:
        await store.close()


async def test_redis_losing_its_data_gets_the_held_items_again(
    make: Make, redis_server: RedisServer
) -> None:
    a = await make("a", claim_idle_s=1.5)
    b = await make("b", claim_idle_s=1.5)
    await a.push({"text": "q1"}, delay_s=0)
    await a.push({"text": "q2"}, delay_s=0)
    redis_server.stop()
    redis_server.start()  # no persistence: the stream and its group are gone
    # B queues first after the restart (a new epoch), then A notices and hands its two over.
    # (A first command on a pool's old connection may fail: then it waits for a pass.)
    assert (await b.push({"text": "b1"}, delay_s=0)).accepted

    async def b_in_redis() -> bool:
        return await b.sync() and b.held_in_redis() == 1

    await until(b_in_redis)

    async def a_in_redis() -> bool:
        return await a.sync() and a.held_in_redis() == 2

    await until(a_in_redis)
    assert a.stats.fleet_size == 3 and a.stats.taken_over_total == 0
    # And they are A's again: B does not reclaim them while A touches them.
    for _ in range(8):
        await asyncio.sleep(0.25)
        assert await a.sync() and await b.sync()
    assert texts(b) == ["b1"]


async def test_a_queued_question_costs_two_queue_round_trips_and_a_pass_three(make: Make) -> None:
    a = await make("a")
    link = a._stream._link
    before = link.stats.commands["queue"]
    for i in range(10):
        await a.push({"text": f"q{i}"}, delay_s=0)
    for item in a.due(limit=10):
        await a.mark_answered(item)
    # One script to add (and hold) each, one to ack and delete each.
    assert link.stats.commands["queue"] - before == 20
    before = link.stats.commands["queue"]
    await a.push({"text": "held"}, delay_s=0)
    before += 1
    assert await a.sync()
    # A pass: touch what it holds, reclaim, read the fleet's length (whatever the queue holds).
    assert link.stats.commands["queue"] - before == 3


async def test_a_clean_stop_lets_the_others_take_its_items_at_once(make: Make) -> None:
    a = await make("a", claim_idle_s=60)
    b = await make("b", claim_idle_s=60)
    await a.push({"text": "q1"}, delay_s=0)
    assert await a.close() == []  # held in Redis: not lost
    assert await b.sync()  # its next pass, not a minute later
    assert texts(b) == ["q1"] and b.stats.reclaimed_total == 1


async def test_an_ack_redis_missed_waits_counted_and_is_made_when_it_is_back(
    make: Make, redis_server: RedisServer
) -> None:
    a = await make("a")
    b = await make("b")
    await a.push({"text": "q1"}, delay_s=0)
    item = a.due()[0]
    redis_server.stop()
    await a.mark_answered(item)  # answered: the ack cannot reach Redis now
    assert a.stats.unacked == 1 and not a.redis_ok
    redis_server.start()
    await until_synced(a)  # the pass after Redis came back
    assert a.stats.unacked == 0
    assert await b.sync() and b.size == 0


async def until_synced(queue: FleetQueue) -> None:
    async def synced() -> bool:
        return await queue.sync()

    await until(synced)
