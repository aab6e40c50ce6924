"""FleetAnswerLedger on a real redis-server: claims and final replies are won by one process of
the fleet; TTLs; a reclaimed question's record taken over; Redis away and back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from bot.store import MemoryStore
from bot.store.redis_answered import FleetAnswerLedger
from bot.store.redis_link import RedisLink
from tests.redis_server import RedisServer

TTL_S = 600.0
Make = Callable[..., Awaitable[FleetAnswerLedger]]
PAYLOAD: dict[str, Any] = {"message_id": 42, "text": "hi"}


async def _once_redis_answers(call: Callable[[], Awaitable[None]]) -> None:
    """`call` after a Redis restart: a pool's first command after it may fail."""
    for _ in range(3):
        try:
            await call()
            return
        except Exception:
            continue


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[RedisLink]:
    link = RedisLink(redis_server.url)
    yield link
    await link.aclose()


@pytest.fixture
async def make(redis_server: RedisServer) -> AsyncIterator[Make]:
    links: list[RedisLink] = []
    stores: list[MemoryStore] = []

    async def build(instance: str, *, store: MemoryStore | None = None) -> FleetAnswerLedger:
        link = RedisLink(redis_server.url, timeout_s=0.5)
        links.append(link)
        if store is None:
            store = MemoryStore(cleanup_interval_s=3600)
            await store.open()
            stores.append(store)
        ledger = FleetAnswerLedger(
            store.namespace("answered"), link, instance, ttl_s=TTL_S, alive_ttl_s=30
        )
        await ledger.load()
        return ledger

    yield build
    for link in links:
        await link.aclose()
    for store in stores:
        await store.close()


async def test_two_claims_of_one_id_one_wins(make: Make, redis: RedisLink) -> None:
    a, b = await make("a"), await make("b")
    results = await asyncio.gather(a.claim(42, PAYLOAD, "gateway"), b.claim(42, PAYLOAD, "queue"))
    assert sorted(results) == [False, True]
    assert a.stats.duplicates_total["gateway"] + b.stats.duplicates_total["queue"] == 1
    # Open: kept for twice the TTL (longer than any question stays journalled).
    ttl_ms = await redis.client.pttl("llmbot:answer:42")
    assert TTL_S * 1000 < ttl_ms <= 2 * TTL_S * 1000


async def test_one_final_reply_in_the_fleet_then_remembered_for_the_ttl(
    make: Make, redis: RedisLink
) -> None:
    a, b = await make("a"), await make("b")
    assert await a.claim(42, PAYLOAD, "gateway")
    # A dies while its question waits in the queue; B and a restarted C race to answer it.
    c = await make("c")
    await b.heartbeat()
    await c.heartbeat()  # both alive: the one delivering keeps it
    won = await asyncio.gather(
        b.begin_final(42, ("answer",), "answer", PAYLOAD),
        c.begin_final(42, ("answer",), "answer", PAYLOAD),
    )
    assert sorted(won) == [False, True]
    winner = b if won[0] else c
    await winner.finish(42, "answered")
    assert await redis.client.get("llmbot:answer:42") == f"answered|{winner.instance}".encode()
    assert 0 < await redis.client.pttl("llmbot:answer:42") <= TTL_S * 1000
    assert not await a.begin_final(42, ("again",), "answer")
    assert not await (await make("d")).claim(42, PAYLOAD, "gateway")


async def test_a_live_owner_delivering_keeps_it_a_dead_one_does_not(make: Make) -> None:
    a, b = await make("a"), await make("b")
    await a.heartbeat()  # alive
    assert await a.begin_final(42, ("x",), "answer", PAYLOAD)
    assert not await b.begin_final(42, ("x",), "answer", PAYLOAD)
    await a._link.client.delete("llmbot:alive:a")  # a's heartbeat expired: dead
    assert await b.begin_final(42, ("x",), "answer", PAYLOAD)


async def test_a_taken_over_record_is_left_alone_by_its_restarted_owner(
    make: Make, redis: RedisLink
) -> None:
    store = MemoryStore(cleanup_interval_s=3600)
    await store.open()
    try:
        a = await make("a", store=store)
        assert await a.claim(42, PAYLOAD, "gateway")
        await a.queued(42)
        b = await make("b")
        assert not await b.take_over(42)  # open: B owns it now
        assert await redis.client.get("llmbot:answer:42") == b"queued|b"
        restarted = await make("a", store=store)
        assert restarted.unfinished() == [] and restarted.taken_over_total == 1
        await b.finish(42, "answered")
        assert await (await make("c")).take_over(42)  # final: nothing to answer
    finally:
        await store.close()


async def test_redis_away_the_local_journal_decides_and_redis_learns_later(
    make: Make, redis_server: RedisServer
) -> None:
    a = await make("a")
    redis_server.stop()
    assert await a.claim(42, PAYLOAD, "gateway")  # kept: this process answers it
    assert not await a.claim(42, PAYLOAD, "gateway")  # still one answer here
    assert await a.begin_final(42, ("x",), "answer")
    await a.finish(42, "answered")
    assert a.stats.redis_backlog == 1  # the latest state of id 42, to write when Redis is back
    redis_server.start()
    await _once_redis_answers(a.heartbeat)
    assert a.stats.redis_backlog == 0
    link = RedisLink(redis_server.url)
    try:
        assert await link.client.get("llmbot:answer:42") == b"answered|a"
    finally:
        await link.aclose()
    assert not await (await make("b")).begin_final(42, ("x",), "answer", PAYLOAD)


async def test_an_accepted_question_of_a_dead_process_is_adopted_once(
    make: Make, redis: RedisLink
) -> None:
    a, b, c = await make("a"), await make("b"), await make("c")
    await a.heartbeat()
    assert await a.claim(42, PAYLOAD, "gateway")  # in flight at A
    assert await a.claim(43, {"message_id": 43}, "gateway")
    await a.queued(43)  # in the queue's stream: reclaimed there, not here
    await b.heartbeat()
    assert await b.orphans(older_than_s=0, limit=10) == []  # A is alive
    await redis.client.delete("llmbot:alive:a")  # A's heartbeat expired: dead
    found = await asyncio.gather(
        b.orphans(older_than_s=0, limit=10), c.orphans(older_than_s=0, limit=10)
    )
    assert sorted(map(len, found)) == [0, 1] and [PAYLOAD] in found  # one process adopts it
    owner = b if found[0] else c
    assert await redis.client.get("llmbot:answer:42") == f"queued|{owner.instance}".encode()
    assert await redis.client.zcard("llmbot:journal") == 0
    assert await owner.begin_final(42, ("x",), "answer", PAYLOAD)


async def test_a_question_kept_for_the_restart_is_claimed_for_the_fleet(
    make: Make, redis: RedisLink
) -> None:
    """A question that arrived while A stopped (`claim_for_later`): no other process answers it
    while A may come back; if A does not, another adopts it, once."""
    a, b = await make("a"), await make("b")
    await a.heartbeat()
    assert await a.claim_for_later(42, PAYLOAD, "gateway") == "journalled"
    assert await a.claim_for_later(42, PAYLOAD, "gateway") == "duplicate"
    assert not await b.claim(42, PAYLOAD, "catchup")  # a catch-up elsewhere: not a second answer
    assert await b.orphans(older_than_s=0, limit=10) == []  # A is alive: it answers after restart
    await redis.client.delete("llmbot:alive:a")  # A did not come back in time
    assert await b.orphans(older_than_s=0, limit=10) == [PAYLOAD]
    assert await b.begin_final(42, ("x",), "answer", PAYLOAD)
    assert await b.orphans(older_than_s=0, limit=10) == []


async def test_a_question_the_journal_could_not_keep_is_let_go_in_redis(
    redis_server: RedisServer, redis: RedisLink
) -> None:
    """Nothing promised (the user was asked to ask again): not adopted and answered later."""
    link = RedisLink(redis_server.url, timeout_s=0.5)
    async with MemoryStore(max_keys=1, cleanup_interval_s=3600) as small:
        ledger = FleetAnswerLedger(small.namespace("answered"), link, "a", ttl_s=TTL_S)
        try:
            assert await ledger.claim_for_later(7, {"message_id": 7}, "gateway") == "journalled"
            assert await ledger.claim_for_later(42, PAYLOAD, "gateway") == "unstored"  # full
        finally:
            await link.aclose()
    assert await redis.client.get("llmbot:answer:42") == b"notified|a"
    assert await redis.client.zrange("llmbot:journal", 0, -1) == [b"7"]


async def test_a_stop_writes_what_redis_missed(make: Make, redis_server: RedisServer) -> None:
    a = await make("a")
    redis_server.stop()
    assert await a.claim(42, PAYLOAD, "gateway")
    assert await a.begin_final(42, ("x",), "answer")
    await a.finish(42, "answered")
    redis_server.start()
    await _once_redis_answers(a.flush)
    assert a.stats.redis_backlog == 0
    link = RedisLink(redis_server.url)
    try:
        assert await link.client.get("llmbot:answer:42") == b"answered|a"
        assert await link.client.get("llmbot:alive:a") is None  # a flush is not a heartbeat
    finally:
        await link.aclose()
