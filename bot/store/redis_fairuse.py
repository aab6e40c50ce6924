"""Fair use on the fleet's Redis (REDIS_URL): one `FairUseStore` for every process.

Keys, under the prefix (`llmbot`):

- `fairuse:usage:<day>`: a hash, field "user:1" / "guild:2" -> tokens counted that day. An
  answer's tokens go to every key with one HINCRBY each inside MULTI/EXEC, with the hash's
  expiry renewed in the same transaction (`USAGE_TTL_S`: the day's counters outlive its reset by
  at least a day, then go by themselves). Two processes adding at once both count: nothing is
  read before the write.
- `fairuse:overrides`: a hash, "user:1" / "role:2" / "guild:3" -> daily tokens.
- `fairuse:channels`: a hash, channel id -> the channel's settings as JSON.
- `fairuse:audit`: a list of JSON entries, trimmed to the newest `max_audit_entries`.

A change of overrides or channel settings is published on `fairuse` (`{"from": instance,
"what": "overrides" | "channels"}`) so every other process reloads what it caches.

Redis lost: usage is counted locally (`pending`, added to Redis when it answers again, so no
answer goes uncounted) and read as the last figure Redis gave plus what this process counted
since. Budgets therefore keep refusing a user who was over them, and keep counting what this
process answers; only what the other processes answer during the outage is missed until Redis
is back (a deliberate middle: refusing everyone would stop the bot for a store outage, and
forgetting the day's usage would hand out a fresh budget). Overrides and channel settings are
read from what each process last loaded; changing them needs Redis (the admin is told).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from bot.store.base import StoreError
from bot.store.fairuse import USAGE_TTL_S, FairUseStore
from bot.store.redis_link import RedisLink, RedisUnavailable

__all__ = [
    "CHANNEL",
    "MAX_LOCAL_KEYS",
    "FairUseFallbackStats",
    "FairUseUnavailable",
    "RedisFairUseStore",
    "parse_change",
]

log = logging.getLogger(__name__)

CHANNEL: Final = "fairuse"
# After a failed usage command, usage is counted and read locally this long before Redis is
# tried again: a question never waits on a dead Redis more than once in that time.
RETRY_AFTER_S: Final = 2.0
# Usage figures kept locally for a Redis outage (last known, and counted but not yet added).
MAX_LOCAL_KEYS: Final = 50_000


class FairUseUnavailable(StoreError):
    """An override or a channel setting could not be saved: Redis is unavailable."""

    def __init__(self) -> None:
        super().__init__("the fleet's store (Redis) is unavailable; try again in a moment")


class _RecentlyDown(Exception):
    """Redis failed less than `retry_after_s` ago: not asked this time."""


@dataclass
class FairUseFallbackStats:
    """The local fallback's maps, for the metrics."""

    known: int = 0
    pending: int = 0
    capacity: int = MAX_LOCAL_KEYS
    pending_dropped: int = 0  # tokens not counted because the pending map was full


class RedisFairUseStore:
    """`FairUseStore` on Redis, with a local fallback for usage while Redis is away."""

    def __init__(
        self,
        link: RedisLink,
        *,
        instance: str = "",
        prefix: str = "llmbot",
        max_audit_entries: int = 10_000,
        max_local_keys: int = MAX_LOCAL_KEYS,
        retry_after_s: float = RETRY_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._link = link
        self.instance = instance
        self._prefix = f"{prefix}:fairuse"
        self._channel = f"{prefix}:{CHANNEL}"
        self._max_audit_entries = max_audit_entries
        self._max_local_keys = max_local_keys
        self._retry_after_s = retry_after_s
        self._down_until = 0.0  # after a failure, usage stays local this long (no waiting)
        self._flush_lock = asyncio.Lock()
        # The process's own (SQLite) store, whose settings the fleet adopts once (`adopt`).
        self.adopt_from: FairUseStore | None = None
        self._clock = clock
        # (day, key) -> tokens: the last figure Redis gave, and what was counted during an outage.
        self._known: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._pending: dict[tuple[str, str], int] = {}
        self.fallback = FairUseFallbackStats(capacity=max_local_keys)

    def _key(self, name: str) -> str:
        return f"{self._prefix}:{name}"

    # -- usage ---------------------------------------------------------------------------------

    async def add_usage(self, day: str, keys: Sequence[str], tokens: int) -> None:
        if tokens <= 0 or not keys:
            return
        try:
            if self._down():
                raise _RecentlyDown
            await self._flush_pending()
            await self._incr(day, {key: tokens for key in keys})
        except (RedisUnavailable, _RecentlyDown) as exc:
            self._failed(exc)
            for key in keys:
                self._add_pending((day, key), tokens)
            return
        for key in keys:  # what we know grows by what we added (the next read corrects it)
            if (day, key) in self._known:
                self._known[(day, key)] += tokens

    async def usage(self, day: str, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        name = self._key(f"usage:{day}")
        try:
            if self._down():
                raise _RecentlyDown
            await self._flush_pending()
            raw = await self._link.run("fairuse", lambda: self._link.client.hmget(name, list(keys)))
        except (RedisUnavailable, _RecentlyDown) as exc:
            self._failed(exc)
            return {
                key: self._known.get((day, key), 0) + self._pending.get((day, key), 0)
                for key in keys
            }
        found = {key: _int(value) for key, value in zip(keys, raw, strict=True)}
        for key, value in found.items():
            self._remember((day, key), value)
        return found

    async def _incr(self, day: str, amounts: Mapping[str, int]) -> None:
        name = self._key(f"usage:{day}")

        async def transaction() -> None:
            pipe = self._link.client.pipeline(transaction=True)
            for key, tokens in amounts.items():
                pipe.hincrby(name, key, tokens)
            pipe.expire(name, int(USAGE_TTL_S))
            await pipe.execute()

        await self._link.run("fairuse", transaction)

    def _down(self) -> bool:
        return self._clock() < self._down_until

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, _RecentlyDown):
            return  # the window of the last failure: Redis was not asked
        log.warning("token usage counted locally until Redis answers: %s", exc)
        self._down_until = self._clock() + self._retry_after_s

    async def _flush_pending(self) -> None:
        """Add what was counted during an outage (raises RedisUnavailable if still away)."""
        if not self._pending:
            return
        async with self._flush_lock:  # two questions at once must not add the same tokens twice
            added = 0
            while self._pending:
                day_key, tokens = self._pending.popitem()
                try:
                    await self._incr(day_key[0], {day_key[1]: tokens})
                except RedisUnavailable:
                    self._add_pending(day_key, tokens)  # back, with what came meanwhile
                    raise
                finally:
                    self.fallback.pending = len(self._pending)
                added += tokens
            if added:
                log.info("%d tokens counted during a Redis outage added to Redis", added)

    def _add_pending(self, day_key: tuple[str, str], tokens: int) -> None:
        if day_key not in self._pending and len(self._pending) >= self._max_local_keys:
            self.fallback.pending_dropped += tokens
            return
        self._pending[day_key] = self._pending.get(day_key, 0) + tokens
        self.fallback.pending = len(self._pending)

    def _remember(self, day_key: tuple[str, str], tokens: int) -> None:
        self._known[day_key] = tokens
        self._known.move_to_end(day_key)
        while len(self._known) > self._max_local_keys:
            self._known.popitem(last=False)
        self.fallback.known = len(self._known)

    # -- overrides and channels ----------------------------------------------------------------

    async def overrides(self) -> dict[str, int]:
        name = self._key("overrides")
        raw = await self._link.run("fairuse", lambda: self._link.client.hgetall(name))
        result: dict[str, int] = {}
        for field, value in raw.items():
            try:
                result[_text(field)] = int(value)
            except ValueError:
                continue
        return result

    async def set_override(self, key: str, tokens: int | None) -> None:
        name = self._key("overrides")
        client = self._link.client
        try:
            if tokens is None:
                await self._link.run("fairuse", lambda: client.hdel(name, key))
            else:
                await self._link.run("fairuse", lambda: client.hset(name, key, str(tokens)))
        except RedisUnavailable:
            raise FairUseUnavailable from None
        await self._announce("overrides")

    async def channels(self) -> dict[int, dict[str, Any]]:
        name = self._key("channels")
        raw = await self._link.run("fairuse", lambda: self._link.client.hgetall(name))
        result: dict[int, dict[str, Any]] = {}
        for field, value in raw.items():
            channel = _text(field)
            try:
                settings = json.loads(value)
            except ValueError:
                continue
            if isinstance(settings, dict) and channel.isdigit():
                result[int(channel)] = settings
        return result

    async def set_channel(self, channel_id: int, settings: Mapping[str, Any] | None) -> None:
        name = self._key("channels")
        client = self._link.client
        field = str(channel_id)
        value = json.dumps(dict(settings), separators=(",", ":")) if settings is not None else ""
        try:
            if settings is None:
                await self._link.run("fairuse", lambda: client.hdel(name, field))
            else:
                await self._link.run("fairuse", lambda: client.hset(name, field, value))
        except RedisUnavailable:
            raise FairUseUnavailable from None
        await self._announce("channels")

    async def _announce(self, what: str) -> None:
        """Tell the other processes to reload `what` (a lost message: they reload it later)."""
        message = json.dumps({"from": self.instance, "what": what}).encode()
        try:
            await self._link.run(
                "fairuse", lambda: self._link.client.publish(self._channel, message)
            )
        except RedisUnavailable as exc:
            log.warning("fair-use change saved but not announced to the fleet: %s", exc)

    async def adopt(self, local: FairUseStore) -> int:
        """Copy a single process's overrides and channel settings (its SQLite store) into Redis,
        once for the fleet: the first process that has some and finds no `fairuse:adopted`
        mark copies them (keeping what Redis already has); later ones copy nothing, so settings
        removed in the fleet do not come back. Returns how many were copied."""
        overrides, channels = await local.overrides(), await local.channels()
        if not overrides and not channels:
            return 0
        mark, client = self._key("adopted"), self._link.client
        if not await self._link.run("fairuse", lambda: client.set(mark, self.instance, nx=True)):
            return 0
        names = self._key("overrides"), self._key("channels")

        async def transaction() -> None:
            pipe = client.pipeline(transaction=True)
            for key, tokens in overrides.items():
                pipe.hsetnx(names[0], key, str(tokens))
            for channel, settings in channels.items():
                pipe.hsetnx(names[1], str(channel), json.dumps(settings, separators=(",", ":")))
            await pipe.execute()

        await self._link.run("fairuse", transaction)
        log.warning(
            "copied %d budget overrides and %d channel settings from this process's store into "
            "Redis (once for the fleet)",
            len(overrides),
            len(channels),
        )
        return len(overrides) + len(channels)

    # -- audit ---------------------------------------------------------------------------------

    async def add_audit(self, entry: Mapping[str, Any]) -> None:
        name = self._key("audit")
        value = json.dumps(dict(entry), separators=(",", ":"))

        async def transaction() -> None:
            pipe = self._link.client.pipeline(transaction=True)
            pipe.rpush(name, value)
            pipe.ltrim(name, -self._max_audit_entries, -1)
            await pipe.execute()

        try:
            await self._link.run("fairuse", transaction)
        except RedisUnavailable as exc:
            # The change itself is saved; its log line (BudgetGate) remains the audit of it.
            log.warning("an audit entry was not kept in Redis (see the log line): %s", exc)

    async def audit(self, limit: int) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        name = self._key("audit")
        raw = await self._link.run("fairuse", lambda: self._link.client.lrange(name, -limit, -1))
        entries = []
        for value in raw:
            try:
                entry = json.loads(value)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries


def parse_change(message: bytes) -> tuple[str, str] | None:
    """(sender, "overrides" | "channels") of a message on the `fairuse` channel, or None."""
    try:
        change = json.loads(message)
        sender, what = str(change["from"]), change["what"]
    except (ValueError, KeyError, TypeError):
        return None
    return (sender, what) if what in ("overrides", "channels") else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _int(value: bytes | str | None) -> int:
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        return 0  # an unreadable counter counts as zero
