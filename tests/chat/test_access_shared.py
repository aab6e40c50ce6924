"""Per-user cooldowns and video budgets of a fleet on a real redis-server: two `SharedCooldown` /
`SharedVideoLimiter` objects on their own connections stand for two processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from bot.chat.access import UserCooldown, VideoLimiter
from bot.chat.access_shared import SharedCooldown, SharedVideoLimiter
from bot.resilience.fleet_fallback import FleetFallback
from bot.store.redis_limits import RedisCooldowns, RedisVideoBudget
from bot.store.redis_link import RedisLink
from tests.fakes import FakeClock
from tests.redis_server import RedisServer


@pytest.fixture
async def links(redis_server: RedisServer) -> AsyncIterator[Callable[[], RedisLink]]:
    made: list[RedisLink] = []

    def link() -> RedisLink:
        made.append(RedisLink(redis_server.url, timeout_s=0.5))
        return made[-1]

    yield link
    for each in made:
        await each.aclose()


def _cooldown(link: RedisLink, seconds: float, clock: FakeClock) -> SharedCooldown:
    return SharedCooldown(
        RedisCooldowns(link),
        UserCooldown(seconds, clock=clock),
        FleetFallback("cooldowns", retry_s=1.0, clock=clock),
    )


async def test_two_processes_checking_one_user_at_once_let_one_through(
    links: Callable[[], RedisLink],
) -> None:
    clock = FakeClock()
    a, b = _cooldown(links(), 30.0, clock), _cooldown(links(), 30.0, clock)
    for user in range(20):  # twenty races, each decided by SET NX
        waits = await asyncio.gather(a.acquire(user), b.acquire(user))
        assert sorted(w == 0.0 for w in waits) == [False, True]
        assert 29.0 < max(waits) <= 30.0
    # A user cooling down on one process is cooling down on the other.
    assert await a.acquire(100) == 0.0
    assert 29.0 < await b.acquire(100) <= 30.0
    assert not a.fallback.stats.fallback and not b.fallback.stats.fallback


async def test_the_cooldown_ends_for_the_whole_fleet(links: Callable[[], RedisLink]) -> None:
    clock = FakeClock()
    # 1 s: the checks right after each pass must come within the cooldown on a loaded machine.
    a, b = _cooldown(links(), 1.0, clock), _cooldown(links(), 1.0, clock)
    assert await a.acquire(7) == 0.0
    assert await b.acquire(7) > 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while (wait := await b.acquire(7)) > 0:  # Redis expires the key on its own clock
        assert loop.time() < deadline
        await asyncio.sleep(wait)
    assert await a.acquire(7) > 0  # b's pass started a new cooldown, seen by a


async def test_cooldowns_fall_back_to_the_process_and_come_back(
    redis_server: RedisServer, links: Callable[[], RedisLink]
) -> None:
    clock = FakeClock()
    a = _cooldown(links(), 30.0, clock)
    assert await a.acquire(1) == 0.0
    redis_server.stop()
    assert await a.acquire(2) == 0.0  # not an error: this process's own cooldown
    assert a.fallback.stats.fallback and a.fallback.stats.fallbacks_total == 1
    assert await a.acquire(2) > 0  # kept locally
    redis_server.start()  # an empty Redis (persistence off)
    assert await a.acquire(3) == 0.0  # still local until the retry time
    assert a.fallback.stats.fallback
    clock.advance(1.0)
    assert await a.acquire(3) == 0.0  # shared again: Redis did not know user 3
    assert not a.fallback.stats.fallback and a.fallback.stats.recoveries_total == 1
    assert await a.acquire(3) > 0


def _video(link: RedisLink, clock: FakeClock, **limits: float) -> SharedVideoLimiter:
    settings: dict[str, float] = {
        "tokens_per_hour": 1000,
        "tokens_per_day": 5000,
        "requests_per_hour": 3,
        "requests_per_day": 10,
        "cooldown_s": 0.0,
    }
    settings.update(limits)
    local = VideoLimiter(clock=clock, **settings)  # type: ignore[arg-type]
    return SharedVideoLimiter(
        RedisVideoBudget(link),
        local,
        cooldown_s=settings["cooldown_s"],
        fallback=FleetFallback("video budgets", retry_s=1.0, clock=clock),
        clock=clock,
    )


async def test_video_windows_count_every_process(links: Callable[[], RedisLink]) -> None:
    clock = FakeClock.in_a_fresh_minute()
    a, b = _video(links(), clock), _video(links(), clock)
    assert await a.acquire(1, 100) is None
    assert await b.acquire(2, 100) is None
    assert await a.acquire(3, 100) is None
    refused = await b.acquire(4, 100)  # the fleet's third request this hour was the last
    assert refused is not None and refused.reason == "video_hourly_requests"
    assert refused.message.endswith("try again in 60 minutes.")  # the oldest leaves first
    clock.advance(3600.0)  # the window slides (on the callers' clock)
    assert await b.acquire(4, 100) is None


async def test_video_tokens_and_cooldowns_are_fleet_wide(links: Callable[[], RedisLink]) -> None:
    clock = FakeClock.in_a_fresh_minute()
    a = _video(links(), clock, cooldown_s=60.0, requests_per_hour=10)
    b = _video(links(), clock, cooldown_s=60.0, requests_per_hour=10)
    assert await a.acquire(1, 600) is None
    cooling = await b.acquire(1, 10)
    assert cooling is not None and cooling.reason == "video_cooldown"
    tokens = await b.acquire(2, 500)  # 600 + 500 > 1000 tokens an hour
    assert tokens is not None and tokens.reason == "video_hourly_tokens"
    too_long = await b.acquire(2, 1001)
    assert too_long is not None and too_long.reason == "video_too_long"
    # Two processes racing for the last room: exactly one gets it.
    results = await asyncio.gather(a.acquire(3, 400), b.acquire(4, 400))
    assert sorted(r is None for r in results) == [False, True]


async def test_video_budgets_fall_back_while_redis_is_away(
    redis_server: RedisServer, links: Callable[[], RedisLink]
) -> None:
    clock = FakeClock.in_a_fresh_minute()
    a = _video(links(), clock, requests_per_hour=1)
    redis_server.stop()
    assert await a.acquire(1, 100) is None  # this process's own windows
    refused = await a.acquire(2, 100)
    assert refused is not None and refused.reason == "video_hourly_requests"
    assert a.fallback.stats.fallback
    redis_server.start()
    clock.advance(1.0)
    assert await a.acquire(2, 100) is None  # the fleet's windows again (an empty Redis)
    assert not a.fallback.stats.fallback
