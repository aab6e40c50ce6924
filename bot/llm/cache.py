"""Response cache: LRU with a TTL and a byte budget, keyed by everything that shapes the answer.

An entry's size is an estimate of what it keeps alive: the UTF-8 bytes of the reply text, the
key and the short reply strings (model, finish/blocked reason), plus `ENTRY_OVERHEAD_BYTES`
for the Python objects around them. It tracks content rather than measuring the heap, which
is what a byte budget needs to be cheap and predictable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from bot.llm.types import LLMReply, LLMRequest

__all__ = [
    "ENTRY_OVERHEAD_BYTES",
    "EVICTION_REASONS",
    "AnswerCache",
    "CacheStats",
    "EvictionReason",
    "ResponseCache",
    "entry_size",
    "make_cache_key",
]

EvictionReason = Literal["lru", "ttl", "cleared"]
EVICTION_REASONS: Final[tuple[EvictionReason, ...]] = ("lru", "ttl", "cleared")

# Entry record, reply and usage objects, OrderedDict slot: a few hundred bytes on CPython.
ENTRY_OVERHEAD_BYTES: Final = 256

# Bumped whenever the encoding below changes, so old and new keys never collide.
_KEY_VERSION: Final = 1


def make_cache_key(request: LLMRequest) -> str:
    """sha256 hex over a canonical encoding of the model, every setting and every turn in order."""
    # Every field of GenerationSettings, by introspection: a setting added later is part of the
    # key without anyone remembering to add it here.
    settings = {
        f.name: getattr(request.settings, f.name) for f in dataclasses.fields(request.settings)
    }
    messages = [
        [
            message.role,
            message.text,
            [
                [file.mime_type, file.digest or hashlib.sha256(file.data).hexdigest()]
                for file in message.files
            ],
        ]
        for message in request.messages
    ]
    canonical = json.dumps(
        {"v": _KEY_VERSION, "settings": settings, "messages": messages},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=True,
        default=repr,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def entry_size(key: str, reply: LLMReply) -> int:
    """The bytes an entry counts against the budget (see the module docstring)."""
    strings = (reply.text, key, reply.model, reply.finish_reason or "", reply.blocked_reason or "")
    return sum(len(s.encode("utf-8")) for s in strings) + ENTRY_OVERHEAD_BYTES


def _zero_per_reason() -> dict[EvictionReason, int]:
    return dict.fromkeys(EVICTION_REASONS, 0)


@dataclass(slots=True)
class CacheStats:
    """Counters and gauges read at scrape time; every reason label starts at 0."""

    hits: int = 0
    misses: int = 0
    evictions: dict[EvictionReason, int] = field(default_factory=_zero_per_reason)
    entries: int = 0
    bytes: int = 0
    rejected_too_large: int = 0


@dataclass(slots=True)
class _Entry:
    reply: LLMReply
    expires_at: float
    size: int
    tag: Hashable | None


class AnswerCache(Protocol):
    """What the model service and the pipeline need of a response cache: `ResponseCache` in one
    process, `SharedResponseCache` (bot/llm/cache_shared.py) in a fleet."""

    stats: CacheStats

    def __len__(self) -> int: ...

    @property
    def enabled(self) -> bool: ...

    def clear(self) -> int: ...

    async def lookup(self, key: str) -> LLMReply | None: ...

    async def store(self, key: str, reply: LLMReply, tag: Hashable | None = None) -> bool: ...

    async def forget_tag(self, tag: Hashable) -> int: ...

    async def expire(self) -> int: ...


class ResponseCache:
    """Bounded by entries and bytes; entries expire `ttl_s` after they were stored.

    `max_entries=0` or `max_bytes=0` turns the cache off: nothing is stored, every lookup misses
    without being counted (CACHE_MAX_ENTRIES=0).
    """

    def __init__(
        self,
        max_entries: int = 1000,
        max_bytes: int = 16 * 1024 * 1024,
        ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 0 or max_bytes < 0 or ttl_s <= 0:
            raise ValueError(
                "max_entries and max_bytes must not be negative (0 turns the cache off), "
                "and ttl_s must be positive"
            )
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.stats = CacheStats()
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # oldest use first
        self._by_tag: dict[Hashable, set[str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def enabled(self) -> bool:
        """False when CACHE_MAX_ENTRIES or CACHE_MAX_BYTES is 0: the cache is off."""
        return self.max_entries > 0 and self.max_bytes > 0

    def get(self, key: str) -> LLMReply | None:
        """The cached reply, or None; an expired entry is evicted (reason ttl) on the way."""
        if not self.enabled:
            return None
        entry = self._entries.get(key)
        if entry is None:
            self.stats.misses += 1
            return None
        if entry.expires_at <= self._clock():
            self._evict(key, "ttl")
            self.stats.misses += 1
            return None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        return entry.reply

    def put(self, key: str, reply: LLMReply, tag: Hashable | None = None) -> bool:
        """Store a reply, optionally tagged with its conversation; False if it alone is too big
        (or the cache is off)."""
        if not self.enabled:
            return False
        size = entry_size(key, reply)
        if size > self.max_bytes:
            self.stats.rejected_too_large += 1
            return False
        if key in self._entries:
            self._remove(key)  # a replacement, not an eviction
        self._entries[key] = _Entry(reply, self._clock() + self.ttl_s, size, tag)
        if tag is not None:
            self._by_tag.setdefault(tag, set()).add(key)
        self.stats.bytes += size
        self.stats.entries = len(self._entries)
        while len(self._entries) > self.max_entries or self.stats.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            expired = self._entries[oldest].expires_at <= self._clock()
            self._evict(oldest, "ttl" if expired else "lru")
        return True

    def sweep(self) -> int:
        """Evict every expired entry (reason ttl); returns how many."""
        now = self._clock()
        expired = [key for key, entry in self._entries.items() if entry.expires_at <= now]
        for key in expired:
            self._evict(key, "ttl")
        return len(expired)

    def clear(self) -> int:
        """Drop everything (reason cleared); returns how many."""
        return self.invalidate(lambda _key, _tag: True)

    def clear_tag(self, tag: Hashable) -> int:
        """Drop the entries of one conversation, e.g. on /clear (reason cleared)."""
        keys = list(self._by_tag.get(tag, ()))
        for key in keys:
            self._evict(key, "cleared")
        return len(keys)

    def invalidate(self, predicate: Callable[[str, Hashable | None], bool]) -> int:
        """Drop entries for which predicate(key, tag) is true (reason cleared)."""
        doomed = [key for key, entry in self._entries.items() if predicate(key, entry.tag)]
        for key in doomed:
            self._evict(key, "cleared")
        return len(doomed)

    # The `AnswerCache` interface (what `LLMService` and the pipeline use): the same operations,
    # awaitable so that the fleet's cache on Redis (bot/llm/cache_shared.py) can stand in.

    async def lookup(self, key: str) -> LLMReply | None:
        return self.get(key)

    async def store(self, key: str, reply: LLMReply, tag: Hashable | None = None) -> bool:
        return self.put(key, reply, tag)

    async def forget_tag(self, tag: Hashable) -> int:
        return self.clear_tag(tag)

    async def expire(self) -> int:
        return self.sweep()

    def _evict(self, key: str, reason: EvictionReason) -> None:
        self._remove(key)
        self.stats.evictions[reason] += 1

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key)
        if entry.tag is not None:
            keys = self._by_tag.get(entry.tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_tag[entry.tag]
        self.stats.bytes -= entry.size
        self.stats.entries = len(self._entries)
