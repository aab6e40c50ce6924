"""Two processes' fair use on one real redis-server: a budget override or a channel setting
changed through one process's BudgetGate / ChannelSettings is in force on the other within
INVALIDATION_BOUND_S (pub/sub; the periodic reload is only the safety net)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from bot.app.fleet_fairuse import FairUseFollower, follow_fleet
from bot.chat.budget import BudgetGate, BudgetPolicy
from bot.chat.channels import ChannelSettings
from bot.store.redis_fairuse import RedisFairUseStore
from bot.store.redis_link import RedisLink
from bot.store.redis_pubsub import RedisChannels
from tests.redis_server import RedisServer

INVALIDATION_BOUND_S = 1.0


@dataclass
class Process:
    budgets: BudgetGate
    channels: ChannelSettings


@asynccontextmanager
async def process(name: str, url: str) -> AsyncIterator[Process]:
    link = RedisLink(url, timeout_s=0.5)
    pubsub = RedisChannels(link)
    store = RedisFairUseStore(link, instance=name)
    budgets = BudgetGate(store, BudgetPolicy(user_daily=100))
    channels = ChannelSettings(store, allowed_models=("gemini-2.5-pro",))
    await budgets.load()
    await channels.load()
    tasks = follow_fleet(store, budgets, channels, pubsub, None)
    try:
        async with asyncio.timeout(5):
            await pubsub.listening.wait()
        yield Process(budgets, channels)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await link.aclose()


async def _within(check: Callable[[], bool], bound_s: float) -> float:
    """Seconds until `check()` holds (another process's message arriving), at most `bound_s`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < bound_s, f"not seen within {bound_s} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_a_change_on_one_process_is_in_force_on_the_other(redis_server: RedisServer) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(process("a", redis_server.url))
        b = await stack.enter_async_context(process("b", redis_server.url))
        assert b.budgets.user_limit(7, ()) == (100, "user")
        await a.budgets.set_override("user", 7, 5000, by_user_id=1, guild_id=None)
        took = await _within(
            lambda: b.budgets.user_limit(7, ()) == (5000, "user"), INVALIDATION_BOUND_S
        )
        print(f"override seen by the other process after {took * 1000:.1f} ms")
        await a.budgets.set_override("user", 7, None, by_user_id=1, guild_id=None)
        await _within(lambda: b.budgets.user_limit(7, ()) == (100, "user"), INVALIDATION_BOUND_S)
        assert [e["after"] for e in await b.budgets.audit()] == [5000, None]

        assert not b.channels.autoreplies(30, None, "hello")
        await a.channels.update(30, autoreply=True, model="gemini-2.5-pro")
        await _within(lambda: b.channels.autoreplies(31, 30, "hello"), INVALIDATION_BOUND_S)
        assert b.channels.resolve(31, 30).model == "gemini-2.5-pro"  # a thread inherits
        await a.channels.reset(30)
        await _within(lambda: not b.channels.autoreplies(30, None, "hi"), INVALIDATION_BOUND_S)


async def test_a_missed_message_is_made_good_by_the_reload(redis_server: RedisServer) -> None:
    link = RedisLink(redis_server.url, timeout_s=0.5)
    try:
        store = RedisFairUseStore(link, instance="b")
        budgets = BudgetGate(store, BudgetPolicy())
        channels = ChannelSettings(store)
        follower = FairUseFollower(store, budgets, channels)
        # Written by another process while this one was not listening.
        other = RedisFairUseStore(link, instance="a")
        await other.set_override("guild:4", 10)
        await other.set_channel(5, {"autoreply": True})
        assert budgets.guild_limit(4) == 0
        await follower.reload()
        assert budgets.guild_limit(4) == 10
        assert channels.autoreplies(5, None, "hi")
        # Its own messages are not reloaded; a lost Redis keeps what was loaded.
        await follower.deliver("fairuse", b'{"from": "b", "what": "channels"}')
        assert follower.reloads == 1
        redis_server.stop()
        await follower.reload()
        assert follower.reloads == 1 and budgets.guild_limit(4) == 10
    finally:
        await link.aclose()
