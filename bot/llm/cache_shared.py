"""The response cache of a fleet (REDIS_URL): one cache in Redis for every process, so a question
answered by one process is a cache hit on the others.

Same keys (`make_cache_key`, a sha256 of everything that shapes the answer), same TTL, LRU and
bounds (CACHE_MAX_ENTRIES, CACHE_MAX_BYTES, fleet-wide: see bot/store/redis_cache.py for how),
same tags (the conversation, for /clear). The values are the answers, as the in-process cache
keeps them. `stats` are this process's hits, misses and evictions, and the fleet cache's size as
last seen (every process reports the same `llmbot_cache_entries`/`_bytes`: take the max, not
the sum, across instances).

While Redis is unreachable this process uses its own in-process `ResponseCache` (`local`), so
the user still gets an answer, never an error; Redis is tried again every couple of seconds, and
when it answers the local entries are dropped (a /clear made elsewhere meanwhile may not have
reached them). `clear()` (the memory-pressure heal remedy) empties only that local part: the
shared entries live in Redis, not in this process's memory.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

from bot.llm.cache import CacheStats, ResponseCache, entry_size
from bot.llm.types import LLMReply, TokenUsage
from bot.resilience.fleet_fallback import FleetFallback
from bot.store.redis_cache import CacheFigures, RedisCacheEntries
from bot.store.redis_link import RedisUnavailable

__all__ = ["SharedResponseCache", "decode_reply", "encode_reply"]

log = logging.getLogger(__name__)


def encode_reply(reply: LLMReply) -> bytes:
    usage = reply.usage
    return json.dumps(
        {
            "text": reply.text,
            "model": reply.model,
            "finish": reply.finish_reason,
            "blocked": reply.blocked_reason,
            "usage": [usage.input, usage.output, usage.thoughts, usage.cached],
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def decode_reply(raw: bytes) -> LLMReply:
    data: dict[str, Any] = json.loads(raw)
    return LLMReply(
        text=str(data["text"]),
        model=str(data["model"]),
        finish_reason=data.get("finish"),
        blocked_reason=data.get("blocked"),
        usage=TokenUsage(*(int(n) for n in data.get("usage", ()))),
    )


class SharedResponseCache:
    """An `AnswerCache` in Redis, with the in-process `local` cache standing in while it is down."""

    def __init__(
        self,
        entries: RedisCacheEntries,
        local: ResponseCache,
        *,
        fallback: FleetFallback | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = entries
        self.local = local
        self.fallback = fallback or FleetFallback("response cache")
        self.stats = CacheStats()
        self._clock = clock  # wall clock: expiry times are compared across machines

    @property
    def enabled(self) -> bool:
        return self.local.enabled

    def __len__(self) -> int:
        return self.stats.entries

    def _seen(self, figures: CacheFigures) -> None:
        stats = self.stats
        stats.entries, stats.bytes = figures.entries, figures.bytes
        stats.evictions["ttl"] += figures.expired
        stats.evictions["lru"] += figures.lru
        stats.evictions["cleared"] += figures.cleared

    def _up(self) -> None:
        if self.fallback.succeeded():
            dropped = self.local.clear()
            log.info("response cache shared again; %d local entries dropped", dropped)

    def _down(self, exc: RedisUnavailable) -> None:
        self.fallback.failed(exc)

    def _local_figures(self) -> None:
        self.stats.entries, self.stats.bytes = self.local.stats.entries, self.local.stats.bytes

    async def lookup(self, key: str) -> LLMReply | None:
        if not self.enabled:
            return None
        if self.fallback.try_redis():
            try:
                raw, _, figures = await self._redis.get(key, self._clock())
            except RedisUnavailable as exc:
                self._down(exc)
            else:
                self._up()
                self._seen(figures)
                reply = None
                if raw is not None:
                    try:
                        reply = decode_reply(raw)
                    except (ValueError, KeyError, TypeError) as exc:
                        log.warning("ignored an unreadable cache entry: %r", exc)
                if reply is None:
                    self.stats.misses += 1
                else:
                    self.stats.hits += 1
                return reply
        reply = self.local.get(key)
        if reply is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        self._local_figures()
        return reply

    async def store(self, key: str, reply: LLMReply, tag: Hashable | None = None) -> bool:
        if not self.enabled:
            return False
        size = entry_size(key, reply)
        if size > self.local.max_bytes:
            self.stats.rejected_too_large += 1
            return False
        if self.fallback.try_redis():
            try:
                figures = await self._redis.put(
                    key,
                    encode_reply(reply),
                    size=size,
                    tag="" if tag is None else str(tag),
                    now=self._clock(),
                    ttl_s=self.local.ttl_s,
                    max_entries=self.local.max_entries,
                    max_bytes=self.local.max_bytes,
                )
            except RedisUnavailable as exc:
                self._down(exc)
            else:
                self._up()
                self._seen(figures)
                return True
        stored = self.local.put(key, reply, tag)
        self._local_figures()
        return stored

    async def forget_tag(self, tag: Hashable) -> int:
        """Drop one conversation's answers, in Redis and here (/clear)."""
        removed = self.local.clear_tag(tag)
        if self.fallback.try_redis():
            try:
                figures = await self._redis.clear_tag(str(tag))
            except RedisUnavailable as exc:
                self._down(exc)
            else:
                self._up()
                self._seen(figures)
                return removed + figures.cleared
        self._local_figures()
        return removed

    async def expire(self) -> int:
        expired = self.local.sweep()
        if self.fallback.try_redis():
            try:
                figures = await self._redis.sweep(self._clock())
            except RedisUnavailable as exc:
                self._down(exc)
            else:
                self._up()
                self._seen(figures)
                return expired + figures.expired
        return expired

    def clear(self) -> int:
        """Empty this process's local part (see the module docstring)."""
        cleared = self.local.clear()
        if self.fallback.stats.fallback:
            self._local_figures()
        return cleared
