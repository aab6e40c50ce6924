"""Fleet-wide degradation overrides on a real redis-server: set on one process, held on every
process (one starting later too), cleared on every process; without Redis they stay local."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from bot.resilience.degradation import DegradationLevel, DegradationState
from bot.resilience.fleet_overrides import CHANNEL, FleetOverrides, fleet_source
from bot.store.redis_link import RedisLink
from bot.store.redis_pubsub import RedisChannels
from tests.redis_server import RedisServer

SOURCE = "heal:error_rate"


@dataclass
class Process:
    degradation: DegradationState
    overrides: FleetOverrides
    channels: RedisChannels


@asynccontextmanager
async def process(name: str, url: str) -> AsyncIterator[Process]:
    link = RedisLink(url, timeout_s=0.5)
    channels = RedisChannels(link)
    degradation = DegradationState()
    overrides = FleetOverrides(degradation, channels, name)
    await overrides.restore()
    listener = asyncio.create_task(channels.listen([CHANNEL], overrides.deliver))
    try:
        async with asyncio.timeout(5):
            await channels.listening.wait()
        yield Process(degradation, overrides, channels)
    finally:
        await overrides.join()
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await link.aclose()


async def _until(check: object, within_s: float = 5.0) -> None:
    """Poll `check` (a message arriving over Redis from another task)."""
    assert callable(check)
    deadline = asyncio.get_running_loop().time() + within_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_an_override_set_on_one_process_holds_on_every_process(
    redis_server: RedisServer,
) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(process("a", redis_server.url))
        b = await stack.enter_async_context(process("b", redis_server.url))
        a.overrides.set(SOURCE, DegradationLevel.MEDIUM, "error-rate alert firing")
        assert a.degradation.level == DegradationLevel.MEDIUM  # at once where it was set
        await _until(lambda: b.degradation.level == DegradationLevel.MEDIUM)
        assert b.degradation.reason == "error-rate alert firing"
        assert set(b.degradation.overrides) == {fleet_source(SOURCE)}
        # A process starting now finds it in Redis.
        c = await stack.enter_async_context(process("c", redis_server.url))
        assert c.degradation.level == DegradationLevel.MEDIUM
        # A per-instance override of the same remedy is another source: untouched.
        c.degradation.set_override(SOURCE, DegradationLevel.LOW, "c's own")
        b.overrides.clear(SOURCE)  # cleared from another process (the alert resolved)
        assert b.degradation.level == DegradationLevel.NONE
        await _until(lambda: a.degradation.level == DegradationLevel.NONE)
        await _until(lambda: fleet_source(SOURCE) not in c.degradation.overrides)
        assert c.degradation.level == DegradationLevel.LOW
        d = await stack.enter_async_context(process("d", redis_server.url))
        assert d.degradation.overrides == {}


async def test_without_redis_the_override_is_local(redis_server: RedisServer) -> None:
    async with process("a", redis_server.url) as a:
        redis_server.stop()
        a.overrides.set(SOURCE, DegradationLevel.HIGH, "by an alert")
        await a.overrides.join()  # the announcement failed, logged, nothing raised
        assert a.degradation.level == DegradationLevel.HIGH
        a.overrides.clear(SOURCE)
        assert a.degradation.level == DegradationLevel.NONE


async def test_a_malformed_message_changes_nothing(redis_server: RedisServer) -> None:
    async with process("a", redis_server.url) as a:
        for message in (b"not json", b'{"from": "b"}', b'{"from":"b","source":"s","override":3}'):
            await a.overrides.deliver(CHANNEL, message)
        await a.overrides.deliver(
            CHANNEL, b'{"from":"b","source":"s","override":{"level":9,"reason":"x"}}'
        )
        assert a.degradation.overrides == {}
