"""/clear across a fleet on a real redis-server: a /clear made on one process is applied by the
others (their conversation memory and their cache), never twice by the sender.

The pipelines here are stand-ins that record what they were told to forget (building the whole
chat pipeline adds nothing to what is tested: the message on the wire and who applies it); the
whole bot is in tests/e2e/test_fleet_shared.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast

from bot.chat.fleet_clear import CHANNEL, FleetClear
from bot.chat.memory import ConversationMemory, Turn
from bot.chat.pipeline import ChatPipeline
from bot.store.redis_link import RedisLink
from bot.store.redis_pubsub import RedisChannels
from tests.redis_server import RedisServer


class Pipeline:
    """What FleetClear uses of ChatPipeline: `forget` and the `on_forget` hook."""

    def __init__(self) -> None:
        self.memory = ConversationMemory(max_messages=10, max_chars=1000, session_timeout_s=600)
        self.on_forget: Any = None
        self.forgotten: list[tuple[int, int | None, bool]] = []

    async def forget(
        self, channel_id: int, user_id: int | None = None, *, tell_fleet: bool = True
    ) -> None:
        if user_id is None:
            self.memory.clear(channel_id)
        else:
            self.memory.clear_user(channel_id, user_id)
        self.forgotten.append((channel_id, user_id, tell_fleet))
        if tell_fleet and self.on_forget is not None:
            await self.on_forget(channel_id, user_id)


@asynccontextmanager
async def process(name: str, url: str) -> AsyncIterator[tuple[Pipeline, FleetClear]]:
    link = RedisLink(url, timeout_s=0.5)
    channels = RedisChannels(link)
    pipeline = Pipeline()
    fleet = FleetClear(cast(ChatPipeline, pipeline), channels, name)
    listener = asyncio.create_task(channels.listen([CHANNEL], fleet.deliver))
    try:
        async with asyncio.timeout(5):
            await channels.listening.wait()
        yield pipeline, fleet
    finally:
        await fleet.join()
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await link.aclose()


def _turn(author: int, text: str) -> Turn:
    return Turn("user", text, author, None, 0.0)


async def _until(check: Any, within_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_clear_on_one_process_is_applied_by_the_others(redis_server: RedisServer) -> None:
    async with AsyncExitStack() as stack:
        a, fleet_a = await stack.enter_async_context(process("a", redis_server.url))
        b, fleet_b = await stack.enter_async_context(process("b", redis_server.url))
        c, fleet_c = await stack.enter_async_context(process("c", redis_server.url))
        for pipeline in (a, b, c):  # e.g. a shard that moved: old turns still in memory
            pipeline.memory.append(7, _turn(1, "my secret"), _turn(2, "hello"))
        await a.forget(7, 1)  # alice's /clear, on process a
        await fleet_a.join()
        await _until(lambda: fleet_b.applied == 1 and fleet_c.applied == 1)
        for pipeline in (b, c):
            assert pipeline.forgotten == [(7, 1, False)]  # not told on again
            assert [m.text for m in pipeline.memory.history(7)] == ["hello"]
        assert a.forgotten == [(7, 1, True)] and fleet_a.told == 1 and fleet_a.applied == 0
        await b.forget(7)  # everyone's, on process b
        await _until(lambda: fleet_a.applied == 1 and fleet_c.applied == 2)
        assert a.memory.history(7) == [] and c.memory.history(7) == []


async def test_without_redis_a_clear_stays_on_its_process(redis_server: RedisServer) -> None:
    async with process("a", redis_server.url) as (a, fleet_a):
        redis_server.stop()
        a.memory.append(7, _turn(1, "my secret"))
        await a.forget(7, 1)
        await fleet_a.join()  # the announcement failed, logged, nothing raised
        assert a.memory.history(7) == [] and fleet_a.told == 0
