"""Durable state of fair use: daily token usage, budget overrides, channel settings, the audit.

`FairUseStore` is the port the chat layer's `BudgetGate` and `ChannelSettings` use. The one
implementation here, `KeyValueFairUseStore`, keeps it in three namespaces of the bot's
key-value store (SQLite in production, memory in tests). It counts usage with a read-add-write
under a lock, which is atomic within one process; a Redis implementation (the fleet's
`REDIS_URL`) is meant to do `add_usage` with one INCRBY per key, so that several processes
count together.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from bot.store.base import Namespace

__all__ = ["USAGE_TTL_S", "FairUseStore", "KeyValueFairUseStore"]

# A day's counters outlive the day (a time zone change, a clock step), then expire by themselves.
USAGE_TTL_S: Final = 2 * 86_400.0


class FairUseStore(Protocol):
    """What fair use keeps across restarts (and, with Redis, across processes)."""

    async def add_usage(self, day: str, keys: Sequence[str], tokens: int) -> None:
        """Add `tokens` to each key's counter of `day` (keys like "user:1", "guild:2")."""
        ...

    async def usage(self, day: str, keys: Sequence[str]) -> dict[str, int]:
        """Each key's tokens counted on `day` (0 when none)."""
        ...

    async def overrides(self) -> dict[str, int]:
        """Every budget override: "user:1" / "role:2" / "guild:3" -> daily tokens (0: none)."""
        ...

    async def set_override(self, key: str, tokens: int | None) -> None:
        """Set a budget override, or remove it (None)."""
        ...

    async def channels(self) -> dict[int, dict[str, Any]]:
        """Every channel's settings (JSON objects), by channel id."""
        ...

    async def set_channel(self, channel_id: int, settings: Mapping[str, Any] | None) -> None:
        """Save a channel's settings, or forget them (None)."""
        ...

    async def add_audit(self, entry: Mapping[str, Any]) -> None:
        """Keep one audit entry (who changed what, when); the oldest go past a bound."""
        ...

    async def audit(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` audit entries, oldest first."""
        ...


class KeyValueFairUseStore:
    """`FairUseStore` over namespaces of the key-value store."""

    def __init__(
        self,
        budgets: Namespace,
        channels: Namespace,
        audit: Namespace,
        *,
        audit_ttl_s: float = 365 * 86_400.0,
        max_audit_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._budgets = budgets
        self._channels = channels
        self._audit = audit
        self._audit_ttl_s = audit_ttl_s
        self._max_audit_entries = max_audit_entries
        self._clock = clock
        self._lock = asyncio.Lock()
        self._audit_seq = 0

    async def add_usage(self, day: str, keys: Sequence[str], tokens: int) -> None:
        if tokens <= 0 or not keys:
            return
        async with self._lock:  # no other add between the read and the write
            current = await self.usage(day, keys)
            await self._budgets.set_many(
                {_usage_key(day, key): str(current[key] + tokens).encode("ascii") for key in keys},
                ttl_s=USAGE_TTL_S,
            )

    async def usage(self, day: str, keys: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for key in keys:
            raw = await self._budgets.get(_usage_key(day, key))
            try:
                found[key] = int(raw) if raw is not None else 0
            except ValueError:
                found[key] = 0  # an unreadable counter restarts at zero
        return found

    async def overrides(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for key, raw in await self._budgets.items("override:"):
            try:
                result[key.removeprefix("override:")] = int(raw)
            except ValueError:
                continue
        return result

    async def set_override(self, key: str, tokens: int | None) -> None:
        if tokens is None:
            await self._budgets.delete(f"override:{key}")
        else:
            await self._budgets.set(f"override:{key}", str(tokens).encode("ascii"))

    async def channels(self) -> dict[int, dict[str, Any]]:
        result: dict[int, dict[str, Any]] = {}
        for key in await self._channels.keys():
            value = await self._channels.get_json(key)
            if isinstance(value, dict) and key.isdigit():
                result[int(key)] = value
        return result

    async def set_channel(self, channel_id: int, settings: Mapping[str, Any] | None) -> None:
        if settings is None:
            await self._channels.delete(str(channel_id))
        else:
            await self._channels.set_json(str(channel_id), dict(settings))

    async def add_audit(self, entry: Mapping[str, Any]) -> None:
        self._audit_seq = (self._audit_seq + 1) % 1000
        # Keys sort by time: the newest entries are the last keys.
        key = f"{int(self._clock() * 1000):015d}-{self._audit_seq:03d}"
        await self._audit.set_json(key, dict(entry), ttl_s=self._audit_ttl_s)
        keys = await self._audit.keys()
        for old in keys[: max(0, len(keys) - self._max_audit_entries)]:  # the oldest go first
            await self._audit.delete(old)

    async def audit(self, limit: int) -> list[dict[str, Any]]:
        keys = (await self._audit.keys())[-limit:] if limit > 0 else []
        entries = []
        for key in keys:
            value = await self._audit.get_json(key)
            if isinstance(value, dict):
                entries.append(value)
        return entries


def _usage_key(day: str, key: str) -> str:
    return f"usage:{day}:{key}"
