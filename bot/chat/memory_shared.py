"""Conversation memory shared by a fleet (PERSIST_CONVERSATIONS with REDIS_URL).

Redis holds each conversation (bot/store/redis_memory.py, TTL = the session timeout); the
process's `ConversationMemory` is its working copy. Before a message's history is read, the
conversation is read back from Redis (`refresh`), so a shard that moved to this process brings
its conversations along; every change (an answer, `/clear`) marks the conversation and a
background writer puts it to Redis (`run`), at once in the normal case.

A conversation Redis does not have (never written, or Redis lost its data) keeps this
process's copy; `/clear` deletes Redis's copy even where this process holds none.

Redis lost: the working copy goes on alone (refreshes are skipped for `retry_after_s` after a
failure, so a message waits on a dead Redis at most once in that time), the changed
conversations stay marked (at most as many as the memory holds) and the writer puts them to
Redis when it answers again (retrying every `retry_after_s`). Failures count as store errors
and under `llmbot_redis_errors_total{op="memory"}`. Nothing here logs message text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from bot.chat.memory import ConversationMemory
from bot.chat.memory_store import turns_from_json, turns_to_json

__all__ = ["ConversationRecords", "SharedMemory", "SharedMemoryStats"]

log = logging.getLogger(__name__)

RETRY_AFTER_S: Final = 2.0


class ConversationRecords(Protocol):
    """`bot.store.redis_memory.RedisConversations`: raises on failure."""

    async def get(self, key: int) -> bytes | None: ...

    async def put(self, key: int, value: bytes, ttl_s: float) -> None: ...

    async def delete(self, key: int) -> None: ...


@dataclass
class SharedMemoryStats:
    refreshed: int = 0  # conversations read back from Redis
    written: int = 0
    errors: int = 0
    unsaved: int = 0  # conversations changed here and not yet in Redis


class SharedMemory:
    """Keeps the process's conversation memory and the fleet's copy in Redis in step."""

    def __init__(
        self,
        memory: ConversationMemory,
        records: ConversationRecords,
        ttl_s: float,
        *,
        retry_after_s: float = RETRY_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
        on_store_error: Callable[[], None] | None = None,
    ) -> None:
        self._memory = memory
        self._records = records
        self._ttl_s = ttl_s
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._on_store_error = on_store_error
        # Changed conversations -> a change number (bounded by the memory's cap).
        self._dirty: OrderedDict[int, int] = OrderedDict()
        self._changes = 0
        self._wake = asyncio.Event()
        self._down_until = 0.0
        self.stats = SharedMemoryStats()
        memory.on_change = self._changed

    def _changed(self, key: int) -> None:
        self._changes += 1
        self._dirty[key] = self._changes
        self._dirty.move_to_end(key)
        while len(self._dirty) > self._memory.max_conversations:
            self._dirty.popitem(last=False)  # evicted from the memory too: Redis keeps its copy
        self.stats.unsaved = len(self._dirty)
        self._wake.set()

    async def refresh(self, key: int) -> None:
        """Read conversation `key` back from Redis into the memory (Redis's copy wins unless
        this process has changes not yet written)."""
        if key in self._dirty or self._clock() < self._down_until:
            return
        try:
            raw = await self._records.get(key)
        except Exception as exc:
            self._failed(exc)
            return
        if key in self._dirty:  # changed here while Redis answered
            return
        if raw is None:
            # Not in Redis (never written, or Redis lost its data): keep what this process has.
            # A conversation cleared by /clear is cleared on every process that holds it.
            return
        try:
            turns = turns_from_json(raw)
        except ValueError:
            log.warning("ignoring an unreadable conversation in Redis")
            return
        self._memory.restore(key, turns)
        self.stats.refreshed += 1

    async def flush(self) -> bool:
        """Write every changed conversation; False if Redis failed (they stay marked)."""
        while self._dirty:
            key, change = next(iter(self._dirty.items()))
            turns = self._memory.history(key)
            try:
                if turns:
                    await self._records.put(key, turns_to_json(turns), self._ttl_s)
                else:
                    await self._records.delete(key)
            except Exception as exc:
                self._failed(exc)
                return False
            if self._dirty.get(key) == change:  # unless it changed again while being written
                del self._dirty[key]
            self.stats.written += 1
            self.stats.unsaved = len(self._dirty)
        self._down_until = 0.0
        return True

    async def run(self) -> None:
        """Write changes as they come; after a failure, retry every `retry_after_s`."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not await self.flush():
                await asyncio.sleep(self._retry_after_s)
                self._wake.set()

    def _failed(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self._down_until = self._clock() + self._retry_after_s
        if self._on_store_error is not None:
            self._on_store_error()
        log.warning("conversation memory kept locally, Redis failed: %s", exc)
