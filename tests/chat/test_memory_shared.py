"""SharedMemory on a real redis-server: a conversation answered on one process is remembered by
another (a shard that moved), `/clear` forgets it in Redis, the TTL is the session timeout, and
a lost Redis leaves the memory working locally and writes the changes when Redis returns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import cast

from bot.chat.context import ContextBuilder
from bot.chat.memory import ConversationMemory, Turn
from bot.chat.memory_shared import SharedMemory
from bot.chat.ports import DiscordPort
from bot.store.redis_link import RedisLink
from bot.store.redis_memory import RedisConversations
from tests.redis_server import RedisServer

CHANNEL = 42


def turns(n: int, author: int = 1) -> list[Turn]:
    return [
        Turn("user" if i % 2 == 0 else "model", f"turn {i}", author, 100 + i, time.time())
        for i in range(n)
    ]


@asynccontextmanager
async def process(url: str, **memory_caps: int) -> AsyncIterator[SharedMemory]:
    link = RedisLink(url, timeout_s=0.5)
    memory = ConversationMemory(**memory_caps)
    shared = SharedMemory(memory, RedisConversations(link), ttl_s=600, retry_after_s=0.2)
    writer = asyncio.create_task(shared.run())
    try:
        yield shared
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await link.aclose()


async def _until(check: Callable[[], bool], within_s: float = 10.0) -> None:
    """Poll a condition another task brings about (the background writer, Redis)."""
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def _written(shared: SharedMemory) -> None:
    """Wait for the background writer to have put every change to Redis."""
    await _until(lambda: not shared.stats.unsaved)


async def test_a_conversation_follows_its_shard_to_another_process(
    redis_server: RedisServer,
) -> None:
    async with process(redis_server.url) as a, process(redis_server.url) as b:
        a._memory.append(CHANNEL, *turns(4))
        await _written(a)
        assert b._memory.history(CHANNEL) == []
        await b.refresh(CHANNEL)
        assert [t.text for t in b._memory.history(CHANNEL)] == [f"turn {i}" for i in range(4)]
        ttl = await redis_server_ttl(a, CHANNEL)
        assert 590 < ttl <= 600  # an idle conversation goes with the session timeout
        # The conversation continues on b; a, which no longer has the shard, is not asked.
        b._memory.append(CHANNEL, *turns(2, author=2))
        await _written(b)
        await a.refresh(CHANNEL)
        assert len(a._memory.history(CHANNEL)) == 6
        # /clear forgets it in Redis too, even on a process without a copy of it.
        async with process(redis_server.url) as c:
            assert not c._memory.clear(CHANNEL)
            await _written(c)
        async with process(redis_server.url) as d:  # the next process to own the shard
            await d.refresh(CHANNEL)
            assert d._memory.history(CHANNEL) == []
            assert d.stats.refreshed == 0


async def test_the_memory_caps_apply_to_what_comes_back(redis_server: RedisServer) -> None:
    async with (
        process(redis_server.url) as a,
        process(redis_server.url, max_messages=2) as b,
    ):
        a._memory.append(CHANNEL, *turns(6))
        await _written(a)
        await b.refresh(CHANNEL)
        assert [t.text for t in b._memory.history(CHANNEL)] == ["turn 4", "turn 5"]


async def test_redis_lost_memory_works_locally_and_catches_up(redis_server: RedisServer) -> None:
    async with process(redis_server.url) as a, process(redis_server.url) as b:
        redis_server.stop()
        a._memory.append(CHANNEL, *turns(2))
        await a.refresh(CHANNEL)  # fails: the local copy stays
        assert len(a._memory.history(CHANNEL)) == 2
        await _until(lambda: a.stats.errors > 0)
        assert a.stats.unsaved == 1
        started = time.monotonic()
        await a.refresh(CHANNEL + 1)  # skipped for a while after a failure: no wait on Redis
        assert time.monotonic() - started < 0.1
        redis_server.start()
        await _written(a)  # the writer retries by itself
        await b.refresh(CHANNEL)
        assert len(b._memory.history(CHANNEL)) == 2


async def test_one_users_clear_on_a_process_without_a_copy_reaches_redis(
    redis_server: RedisServer,
) -> None:
    """`/clear` (mine) where the conversation is in Redis only (a restarted process, a moved
    shard): `ChatPipeline.forget` reads it back first (`ContextBuilder.refresh`), so removing
    the user's turns here removes them from Redis too."""
    async with process(redis_server.url) as a:
        a._memory.append(CHANNEL, *turns(2, author=1), *turns(2, author=2))
        await _written(a)
    async with process(redis_server.url) as b:
        assert b._memory.clear_user(CHANNEL, 1) == 0  # no copy here: nothing to remove
        context = ContextBuilder(b._memory, cast(DiscordPort, None), 5, refresh=b.refresh)
        await context.refresh(CHANNEL)  # what forget() does first
        assert b._memory.clear_user(CHANNEL, 1) == 2
        await _written(b)
    async with process(redis_server.url) as c:
        await c.refresh(CHANNEL)
        assert {t.author_id for t in c._memory.history(CHANNEL)} == {2}


async def redis_server_ttl(shared: SharedMemory, key: int) -> int:
    records = shared._records
    assert isinstance(records, RedisConversations)
    ttl: int = await records._link.client.ttl(records._name(key))
    return ttl
