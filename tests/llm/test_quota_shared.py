"""The fleet quota on a real redis-server: several SharedQuota instances (as several processes
would) share the windows, a provider 429 holds them all, and Redis going away falls back to a
local share and comes back on its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from bot.llm.quota import provider_day_window
from bot.llm.quota_shared import SharedQuota
from bot.store.redis_link import RedisLink, RedisUnavailable, redact_url
from bot.store.redis_quota import RedisQuotaCounters
from tests.fakes import FakeClock
from tests.redis_server import RedisServer

Make = Callable[..., SharedQuota]


@pytest.fixture
async def links(redis_server: RedisServer) -> AsyncIterator[list[RedisLink]]:
    made: list[RedisLink] = []
    yield made
    for link in made:
        await link.aclose()


@pytest.fixture
def clock() -> FakeClock:
    # Real wall time (Redis expires keys at the windows' real ends), one second into a minute.
    return FakeClock.in_a_fresh_minute()


@pytest.fixture
def make(redis_server: RedisServer, links: list[RedisLink], clock: FakeClock) -> Make:
    def build(instance: str, rpm: int = 10, daily: int = 500, **kwargs: object) -> SharedQuota:
        link = RedisLink(redis_server.url, timeout_s=0.5)
        links.append(link)
        return SharedQuota(
            RedisQuotaCounters(link),
            instance=instance,
            rpm=rpm,
            daily=daily,
            safety_margin=0.9,
            clock=clock,
            **kwargs,  # type: ignore[arg-type]
        )

    return build


async def test_two_processes_share_the_minute_window(make: Make, clock: FakeClock) -> None:
    a, b = make("a"), make("b")
    allowed = 0
    for i in range(20):  # alternate: each alone would allow 9
        quota = a if i % 2 else b
        allowed += (await quota.acquire()).allowed
    assert allowed == 9  # floor(10 * 0.9), for the fleet
    refused = await a.acquire()
    assert not refused.allowed and refused.window == "minute"
    assert refused.retry_after_s == pytest.approx(59.0)
    assert a.snapshot().minute.used == 9 and a.snapshot().minute.remaining == 0
    assert a.stats.rejections_total["minute"] + b.stats.rejections_total["minute"] == 12

    clock.advance(60)  # the next minute: the fleet has 9 again
    assert sum([(await a.acquire()).allowed for _ in range(12)]) == 9
    assert a.snapshot().day.used == 18


async def test_the_day_window_is_shared(make: Make, clock: FakeClock) -> None:
    a, b = make("a", rpm=100, daily=10), make("b", rpm=100, daily=10)
    assert sum([(await a.acquire()).allowed for _ in range(6)]) == 6
    assert sum([(await b.acquire()).allowed for _ in range(6)]) == 3
    refused = await b.acquire()
    assert refused.window == "day" and refused.retry_after_s > 60


async def test_a_provider_429_holds_every_process(make: Make, clock: FakeClock) -> None:
    a, b = make("a"), make("b")
    assert (await a.acquire()).allowed and (await b.acquire()).allowed
    hold = await a.provider_rate_limited(30.0)
    assert hold.window == "minute" and hold.retry_after_s == pytest.approx(59.0)
    refused = await b.acquire()
    assert not refused.allowed and refused.window == "minute"
    assert b.snapshot().blocked_until == pytest.approx(clock.now + 59)  # b learnt of it
    c = make("c")
    assert c.snapshot().blocked_until is None  # c has not heard of it yet...
    await c.heartbeat()
    assert c.snapshot().blocked_until == pytest.approx(clock.now + 59)  # ...now it has
    clock.advance(60)
    # The cap was that minute's only: the next minute has the full limit again.
    assert sum([(await b.acquire()).allowed for _ in range(10)]) == 9


async def test_a_long_provider_delay_is_held_as_the_day(make: Make, clock: FakeClock) -> None:
    a, b = make("a"), make("b")
    # An hour, or less when the provider's day ends sooner (the clock is the real one).
    expected = min(3600.0, provider_day_window(clock.now)[1] - clock.now)
    hold = await a.provider_rate_limited(3600.0)
    assert hold.window == "day" and hold.retry_after_s == pytest.approx(expected)
    refused = await b.acquire()
    assert refused.window == "day" and refused.retry_after_s == pytest.approx(expected)


async def test_the_heartbeat_counts_live_instances(make: Make, clock: FakeClock) -> None:
    a, b, c = make("a"), make("b"), make("c")
    for quota in (a, b, c):
        assert await quota.heartbeat()
    await a.heartbeat()
    assert a.fleet.live_instances == 3
    await c.stop()  # a graceful stop leaves at once
    await a.heartbeat()
    assert a.fleet.live_instances == 2
    clock.advance(11)  # b falls silent past the 10 s time to live
    await a.heartbeat()
    assert a.fleet.live_instances == 1


async def test_redis_lost_falls_back_to_a_local_share_and_recovers(
    make: Make, clock: FakeClock, redis_server: RedisServer
) -> None:
    a, b = make("a", rpm=20), make("b", rpm=20)  # effective 18 a minute for the fleet
    await a.heartbeat()
    await b.heartbeat()
    await a.heartbeat()
    assert a.fleet.live_instances == 2
    assert sum([(await a.acquire()).allowed for _ in range(4)]) == 4
    assert sum([(await b.acquire()).allowed for _ in range(2)]) == 2
    await a.heartbeat()
    await b.heartbeat()  # both saw the fleet at 6 of 18

    redis_server.stop()
    # This minute: each may take (18 - 6) / 2 = 6 more, less its own use beyond its share of 9.
    assert sum([(await a.acquire()).allowed for _ in range(10)]) == 5  # 9 - 4 of its own
    assert sum([(await b.acquire()).allowed for _ in range(10)]) == 6
    assert a.fleet.fallback and b.fleet.fallback and a.fleet.fallbacks_total == 1
    assert a.snapshot().minute.limit == 9  # the local share, as the metrics show
    assert not await a.heartbeat()  # still down: still the fallback
    clock.advance(60)  # a new minute: each gets its share, 18 / 2
    assert sum([(await a.acquire()).allowed for _ in range(12)]) == 9

    redis_server.start()
    assert await a.heartbeat()
    assert not a.fleet.fallback and a.fleet.recoveries_total == 1
    # What a took in the fallback this minute is now in the fleet's count.
    assert a.snapshot().minute.used == 9
    await b.heartbeat()
    assert sum([(await b.acquire()).allowed for _ in range(12)]) == 9  # 18 - 9


async def test_an_acquire_that_finds_redis_gone_is_answered_locally(
    make: Make, redis_server: RedisServer
) -> None:
    a = make("a")
    await a.heartbeat()
    redis_server.stop()
    decision = await a.acquire()  # no heartbeat noticed it: the acquire itself falls back
    assert decision.allowed and a.fleet.fallback


async def test_the_password_never_shows(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = RedisServer(tmp_path_factory.mktemp("redis"), password="s3cret-pw")
    server.start()
    try:
        good = RedisLink(server.url)
        await good.ping()  # the password from the URL works
        assert good.stats.up
        await good.aclose()
        wrong = RedisLink(server.url.replace("s3cret-pw", "wrong-pw"))
        with pytest.raises(RedisUnavailable) as caught:
            await wrong.ping()
        await wrong.aclose()
        assert "wrong-pw" not in str(caught.value) and "***" in str(caught.value)
        assert wrong.stats.errors["ping"] == 1 and not wrong.stats.up
        assert "s3cret" not in redact_url(server.url)
    finally:
        server.stop()


async def test_an_unreachable_redis_is_one_clear_error(redis_server: RedisServer) -> None:
    redis_server.stop()
    link = RedisLink(redis_server.url, timeout_s=0.5)
    with pytest.raises(RedisUnavailable, match=r"Redis at redis://127\.0\.0\.1:\d+/0"):
        await link.ping()
    await link.aclose()
