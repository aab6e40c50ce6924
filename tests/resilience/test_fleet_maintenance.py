"""Maintenance mode across a fleet on a real redis-server: switched on one process, every
process follows, a process starting later too; without Redis the switch stays local."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from bot.resilience.degradation import DegradationState
from bot.resilience.fleet_maintenance import CHANNEL, FleetMaintenance
from bot.store.redis_link import RedisLink
from bot.store.redis_pubsub import RedisChannels
from tests.redis_server import RedisServer


@dataclass
class Process:
    degradation: DegradationState
    maintenance: FleetMaintenance
    channels: RedisChannels


@asynccontextmanager
async def process(name: str, url: str) -> AsyncIterator[Process]:
    link = RedisLink(url, timeout_s=0.5)
    channels = RedisChannels(link)
    degradation = DegradationState()
    maintenance = FleetMaintenance(degradation, channels, name)
    await maintenance.restore()
    listener = asyncio.create_task(channels.listen([CHANNEL], maintenance.deliver))
    try:
        async with asyncio.timeout(5):
            await channels.listening.wait()
        yield Process(degradation, maintenance, channels)
    finally:
        await maintenance.join()
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


async def test_maintenance_on_one_process_is_on_every_process(redis_server: RedisServer) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(process("a", redis_server.url))
        b = await stack.enter_async_context(process("b", redis_server.url))
        a.maintenance.enter("maintenance set by alice")
        assert a.degradation.maintenance  # at once where it was switched
        await _until(lambda: b.degradation.maintenance)
        assert b.degradation.reason == "maintenance set by alice"
        # A process starting now learns it from Redis.
        c = await stack.enter_async_context(process("c", redis_server.url))
        assert c.degradation.maintenance
        assert b.maintenance.exit()  # off from another process
        await _until(lambda: not a.degradation.maintenance and not c.degradation.maintenance)
        d = await stack.enter_async_context(process("d", redis_server.url))
        assert not d.degradation.maintenance


async def test_without_redis_the_switch_is_local(redis_server: RedisServer) -> None:
    async with process("a", redis_server.url) as a:
        redis_server.stop()
        a.maintenance.enter("by hand")
        await a.maintenance.join()  # the announcement failed, logged, nothing raised
        assert a.degradation.maintenance
        assert a.maintenance.exit()
