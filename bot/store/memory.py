"""An in-process store with the same contract as SqliteStore: for tests and no-persistence mode.

It is bounded, and when full it refuses writes (StoreFullError) rather than evicting: the
namespaces it serves include the message queue and quota counters, where silently dropping an
old entry would lose a user's message or overspend the quota. Only the response cache wants
LRU, and it keeps its own bound above the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from bot.store.base import KeyValueStore, StoreFullError

__all__ = ["MemoryStore"]


class _Entry(NamedTuple):
    value: bytes
    expires_at: float | None


class MemoryStore(KeyValueStore):
    """A bounded dict behind the store interface; its data lives as long as the object."""

    def __init__(
        self,
        *,
        max_keys: int = 100_000,
        max_bytes: int = 256 * 1024 * 1024,
        cleanup_interval_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(backend="memory", clock=clock, cleanup_interval_s=cleanup_interval_s)
        if max_keys < 1 or max_bytes < 0:
            raise ValueError("max_keys must be at least 1 and max_bytes at least 0")
        self._max_keys = max_keys
        self._max_bytes = max_bytes
        self._data: dict[str, _Entry] = {}
        self._bytes = 0

    @property
    def size(self) -> tuple[int, int]:
        """(entries, value bytes) held now, expired-but-not-cleaned entries included."""
        return len(self._data), self._bytes

    async def _open(self) -> None:
        pass

    async def _close(self) -> None:
        pass

    async def _get(self, key: str, now: float) -> bytes | None:
        entry = self._data.get(key)
        return entry.value if entry is not None and _live(entry, now) else None

    async def _set_many(self, pairs: list[tuple[str, bytes]], expires_at: float | None) -> None:
        # Check the whole batch before touching anything: set_many is all or nothing.
        if not self._fits(pairs):
            self._purge(self._clock())
            if not self._fits(pairs):
                raise StoreFullError(
                    f"memory store is full ({len(self._data)} keys of max_keys={self._max_keys}, "
                    f"{self._bytes} bytes of max_bytes={self._max_bytes}): raise the limits, "
                    "delete keys or use the sqlite store"
                )
        for key, value in pairs:
            old = self._data.get(key)
            if old is not None:
                self._bytes -= len(old.value)
            self._data[key] = _Entry(value, expires_at)
            self._bytes += len(value)

    async def _delete(self, key: str, now: float) -> bool:
        entry = self._data.pop(key, None)
        if entry is None:
            return False
        self._bytes -= len(entry.value)
        return _live(entry, now)

    async def _keys(self, prefix: str, now: float) -> list[str]:
        return sorted(k for k, e in self._data.items() if k.startswith(prefix) and _live(e, now))

    async def _items(self, prefix: str, now: float) -> list[tuple[str, bytes]]:
        return sorted(
            (k, e.value) for k, e in self._data.items() if k.startswith(prefix) and _live(e, now)
        )

    async def _cleanup_expired(self, now: float) -> int:
        return self._purge(now)

    async def _compact(self) -> None:
        pass

    async def _health_check(self) -> None:
        pass

    def _fits(self, pairs: list[tuple[str, bytes]]) -> bool:
        new_keys = 0
        new_bytes = self._bytes
        for key, value in dict(pairs).items():
            old = self._data.get(key)
            if old is None:
                new_keys += 1
            else:
                new_bytes -= len(old.value)
            new_bytes += len(value)
        return len(self._data) + new_keys <= self._max_keys and new_bytes <= self._max_bytes

    def _purge(self, now: float) -> int:
        expired = [key for key, entry in self._data.items() if not _live(entry, now)]
        for key in expired:
            self._bytes -= len(self._data.pop(key).value)
        return len(expired)


def _live(entry: _Entry, now: float) -> bool:
    return entry.expires_at is None or entry.expires_at > now
