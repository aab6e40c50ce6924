"""A fleet's fair use and conversation memory on Redis (REDIS_URL): how the app builds them.

- Budgets, overrides, channel settings and the audit go to `RedisFairUseStore`; without Redis,
  to the SQLite-backed `KeyValueFairUseStore` as before.
- Each process keeps the overrides and channel settings in memory (the gateway asks about
  auto-reply for every message without awaiting). A change on one process is published on
  `fairuse` and every other process reloads at once (`FairUseFollower.deliver`); pub/sub is
  at-most-once, so each process also reloads every `RELOAD_INTERVAL_S` (a message lost while
  a listener reconnected is made good within that bound).
- With PERSIST_CONVERSATIONS, conversations live in Redis (`SharedMemory`) instead of SQLite.
- At start, a fleet adopts a former single process's overrides and channel settings from its
  SQLite store, once for the fleet (`adopt_local`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Final

from bot.chat.budget import BudgetGate
from bot.chat.channels import ChannelSettings
from bot.chat.memory import ConversationMemory
from bot.chat.memory_shared import SharedMemory
from bot.store import Namespace
from bot.store.fairuse import FairUseStore, KeyValueFairUseStore
from bot.store.redis_fairuse import CHANNEL, RedisFairUseStore, parse_change
from bot.store.redis_link import RedisLink
from bot.store.redis_memory import RedisConversations
from bot.store.redis_pubsub import RedisChannels

__all__ = [
    "RELOAD_INTERVAL_S",
    "FairUseFollower",
    "adopt_local",
    "fair_use_store",
    "follow_fleet",
    "shared_memory",
]

log = logging.getLogger(__name__)

RELOAD_INTERVAL_S: Final = 30.0


def fair_use_store(
    redis: RedisLink | None, budgets: Namespace, channels: Namespace, audit: Namespace
) -> FairUseStore:
    """The fleet's store on Redis, else the process's on its key-value store."""
    local = KeyValueFairUseStore(budgets, channels, audit)
    if redis is not None:
        store = RedisFairUseStore(redis, instance=uuid.uuid4().hex[:12])
        store.adopt_from = local  # a single process's settings, copied once (`adopt_local`)
        return store
    return local


async def adopt_local(store: FairUseStore) -> None:
    """At start, before loading: a fleet adopts a former single process's overrides and channel
    settings (`RedisFairUseStore.adopt`); a failure leaves them where they are (logged)."""
    if isinstance(store, RedisFairUseStore) and store.adopt_from is not None:
        try:
            await store.adopt(store.adopt_from)
        except Exception as exc:
            log.warning("could not copy this process's fair-use settings into Redis: %s", exc)


def shared_memory(
    redis: RedisLink | None,
    memory: ConversationMemory,
    ttl_s: float,
    on_store_error: Callable[[], None],
) -> SharedMemory | None:
    """Conversations kept in Redis (PERSIST_CONVERSATIONS with REDIS_URL), else None."""
    if redis is None:
        return None
    return SharedMemory(memory, RedisConversations(redis), ttl_s, on_store_error=on_store_error)


def follow_fleet(
    store: FairUseStore,
    budgets: BudgetGate,
    channels: ChannelSettings,
    pubsub: RedisChannels | None,
    memory: SharedMemory | None,
) -> list[asyncio.Task[None]]:
    """At start: the background tasks that keep this process in step with the fleet."""
    tasks = []
    if pubsub is not None and isinstance(store, RedisFairUseStore):
        follower = FairUseFollower(store, budgets, channels)
        tasks.append(asyncio.create_task(follower.run(), name="fair-use reloads"))
        listener = pubsub.listen(follower.CHANNELS, follower.deliver)
        tasks.append(asyncio.create_task(listener, name="fair-use listener"))
    if memory is not None:
        tasks.append(asyncio.create_task(memory.run(), name="memory writer"))
    return tasks


class FairUseFollower:
    """Reloads this process's overrides and channel settings when the fleet changes them."""

    CHANNELS: Final = (CHANNEL,)

    def __init__(self, store: RedisFairUseStore, budgets: BudgetGate, channels: ChannelSettings):
        self._store = store
        self._budgets = budgets
        self._channels = channels
        self.reloads = 0

    async def deliver(self, channel: str, message: bytes) -> None:
        change = parse_change(message)
        if change is None:
            log.warning("ignored a malformed message on %s", channel)
            return
        sender, what = change
        if sender != self._store.instance:
            await self.reload(what)

    async def reload(self, what: str = "all") -> None:
        try:
            if what in ("overrides", "all"):
                await self._budgets.load()
            if what in ("channels", "all"):
                await self._channels.load()
        except Exception as exc:  # keep what was loaded; the next reload tries again
            log.warning("could not reload the fleet's fair-use settings: %s", exc)
            return
        self.reloads += 1

    async def run(self) -> None:
        """The safety net under pub/sub: reload every RELOAD_INTERVAL_S."""
        while True:
            await asyncio.sleep(RELOAD_INTERVAL_S)
            await self.reload()
