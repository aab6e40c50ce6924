"""The fleet's response cache on a real redis-server: two `SharedResponseCache` objects on their
own connections stand for two processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from bot.llm.cache import ResponseCache, entry_size
from bot.llm.cache_shared import SharedResponseCache, decode_reply, encode_reply
from bot.llm.types import LLMReply, TokenUsage
from bot.resilience.fleet_fallback import FleetFallback
from bot.store.redis_cache import RedisCacheEntries
from bot.store.redis_link import RedisLink
from tests.fakes import FakeClock
from tests.redis_server import RedisServer

Make = Callable[..., SharedResponseCache]


@pytest.fixture
async def make(redis_server: RedisServer) -> AsyncIterator[Make]:
    links: list[RedisLink] = []

    def build(
        clock: FakeClock, max_entries: int = 3, max_bytes: int = 1 << 20, ttl_s: float = 60.0
    ) -> SharedResponseCache:
        link = RedisLink(redis_server.url, timeout_s=0.5)
        links.append(link)
        return SharedResponseCache(
            RedisCacheEntries(link),
            ResponseCache(max_entries, max_bytes, ttl_s, clock=clock),
            fallback=FleetFallback("response cache", retry_s=1.0, clock=clock),
            clock=clock,
        )

    yield build
    for link in links:
        await link.aclose()


def _reply(text: str) -> LLMReply:
    return LLMReply(text, "gemini-test", "STOP", usage=TokenUsage(12, 34, 5, 6))


def test_an_answer_survives_the_round_trip() -> None:
    reply = LLMReply("héllo 👋", "m", "STOP", None, TokenUsage(1, 2, 3, 4), 0.5)
    decoded = decode_reply(encode_reply(reply))
    assert decoded == LLMReply("héllo 👋", "m", "STOP", None, TokenUsage(1, 2, 3, 4))


async def test_an_answer_stored_by_one_process_is_a_hit_on_another(make: Make) -> None:
    clock = FakeClock()
    a, b = make(clock), make(clock)
    assert await b.lookup("k1") is None
    assert await a.store("k1", _reply("one"), tag=42)
    assert await b.lookup("k1") == _reply("one")
    assert (b.stats.hits, b.stats.misses) == (1, 1)
    assert (a.stats.hits, a.stats.misses) == (0, 0)
    assert len(b) == b.stats.entries == 1
    assert b.stats.bytes == entry_size("k1", _reply("one"))


async def test_the_fleet_cache_is_bounded_least_recently_used_first(make: Make) -> None:
    clock = FakeClock()
    a, b = make(clock, max_entries=3), make(clock, max_entries=3)
    for n in range(3):
        await (a if n % 2 else b).store(f"k{n}", _reply(str(n)))
        clock.advance(1.0)
    assert await b.lookup("k0") is not None  # k0 is used again: k1 is now the oldest use
    clock.advance(1.0)
    await a.store("k3", _reply("3"))
    assert a.stats.entries == 3 and a.stats.evictions["lru"] == 1
    assert await b.lookup("k1") is None
    assert all([await b.lookup(k) is not None for k in ("k0", "k2", "k3")])
    # Many writers at once: never more than the bound.
    await asyncio.gather(*((a, b)[n % 2].store(f"x{n}", _reply("x")) for n in range(40)))
    assert (await b.expire()) == 0 and b.stats.entries == 3


async def test_the_byte_bound_is_fleet_wide(make: Make) -> None:
    clock = FakeClock()
    size = entry_size("k0", _reply("0"))
    a, b = make(clock, max_entries=100, max_bytes=2 * size), make(clock, max_bytes=2 * size)
    await a.store("k0", _reply("0"))
    await b.store("k1", _reply("1"))
    clock.advance(1.0)
    await a.store("k2", _reply("2"))
    assert a.stats.bytes == 2 * size and a.stats.entries == 2
    assert await b.lookup("k0") is None


async def test_entries_expire_after_the_ttl(make: Make) -> None:
    clock = FakeClock()
    a, b = make(clock, ttl_s=10.0), make(clock, ttl_s=10.0)
    await a.store("k", _reply("r"))
    await a.store("k2", _reply("r2"))
    clock.advance(10.0)
    assert await b.lookup("k") is None
    assert b.stats.evictions["ttl"] == 1
    assert await a.expire() == 1  # the sweep drops the other one
    assert a.stats.entries == 0 and a.stats.bytes == 0


async def test_clear_tag_forgets_a_conversation_for_the_fleet(make: Make) -> None:
    clock = FakeClock()
    a, b = make(clock, max_entries=10), make(clock, max_entries=10)
    await a.store("in-42", _reply("a"), tag=42)
    await b.store("in-42-too", _reply("b"), tag=42)
    await b.store("in-7", _reply("c"), tag=7)
    assert await b.forget_tag(42) == 2
    assert b.stats.evictions["cleared"] == 2
    assert await a.lookup("in-42") is None and await a.lookup("in-42-too") is None
    assert await a.lookup("in-7") is not None
    assert a.stats.entries == 1


async def test_redis_lost_falls_back_to_the_local_cache_and_recovers(
    redis_server: RedisServer, make: Make
) -> None:
    clock = FakeClock()
    a = make(clock)
    await a.store("shared", _reply("s"))
    redis_server.stop()
    assert await a.lookup("shared") is None  # a miss, not an error
    assert a.fallback.stats.fallback
    assert await a.store("local", _reply("l"))
    assert await a.lookup("local") == _reply("l")
    assert a.stats.entries == 1 and len(a.local) == 1
    redis_server.start()  # an empty Redis (persistence off)
    clock.advance(1.0)
    assert await a.lookup("local") is None  # shared again; the local stand-in is dropped
    assert not a.fallback.stats.fallback and len(a.local) == 0
    await a.store("again", _reply("a"))
    assert await a.lookup("again") == _reply("a") and a.stats.entries == 1
