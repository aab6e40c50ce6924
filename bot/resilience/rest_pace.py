"""The pace of Discord REST calls: one process's own, or the fleet's shared through Redis.

Discord allows 50 requests/s per bot token, across routes and processes, and hikari only reacts
to the 429s; the bot spends DISCORD_REST_MAX_RPS of them. `LocalPace` is one process's limiter
(aiolimiter): a bucket of a tenth of a second's calls refilled at the rate, so answers that all
start at once (a stream's first words) queue behind each other less, yet few enough that one of
Discord's 1-second windows sees at most burst + rate calls, below its 50 (at 45/s: 4; 1, evenly
spaced, below 10/s or from 49/s). The fleet's schedule in Redis is evenly spaced.
`SharedPace` (REDIS_URL set, DISCORD_REST_SHARED_LIMIT=true) takes every call's slot from the
fleet's schedule in Redis (`bot.store.redis_rest`), so the processes together stay under it.

When Redis fails, `SharedPace` falls back to a conservative local share: DISCORD_REST_MAX_RPS
divided by the live instances last seen (the quota heartbeat's count), and pings Redis every
`probe_s` until it answers, then shares the schedule again. Residual risk (docs/runbooks.md):
a process cut off from Redis while the others still reach it paces its share on top of the
fleet's schedule, so the fleet may briefly go over DISCORD_REST_MAX_RPS by that share (still
under Discord's 50/s at the default 45 with two or more instances).

Priority: replies wait for their turn; cosmetic calls (typing) take one only when it is free
now (`try_acquire`), which in the shared schedule is checked atomically in Redis, so a typing
trigger in one process never takes a slot a reply of another is waiting for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from aiolimiter import AsyncLimiter

from bot.store.redis_link import RedisUnavailable
from bot.store.redis_rest import SlotResult
from bot.store.stats import LatencyHistogram

__all__ = [
    "DISCORD_GLOBAL_RPS",
    "LocalPace",
    "RestPace",
    "RestSlots",
    "SharedPace",
    "SharedPaceStats",
]

log = logging.getLogger(__name__)

# Discord's global limit: requests per second per bot, counted in fixed one-second windows.
DISCORD_GLOBAL_RPS: Final = 50
DEFAULT_PROBE_S: Final = 1.0
WAIT_BUCKETS_S: Final = (0.001, 0.005, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RestPace(Protocol):
    """When a REST call may go."""

    async def acquire(self) -> None:
        """Wait for this call's turn."""
        ...

    async def try_acquire(self) -> bool:
        """A turn now, or False (cosmetic calls: never one a waiting call needs)."""
        ...

    def has_capacity(self) -> bool:
        """Is a turn free now, as far as this process knows (no I/O)?"""
        ...

    async def aclose(self) -> None: ...


class RestSlots(Protocol):
    """The fleet's schedule (`bot.store.redis_rest.RedisRestSlots`)."""

    async def reserve(self) -> SlotResult: ...

    async def take_if_free(self) -> SlotResult: ...

    async def probe(self) -> None: ...


class LocalPace:
    """One process's pace: `max_rps` calls a second, `burst` of them at once."""

    def __init__(self, max_rps: float) -> None:
        self.burst = max(
            1, min(math.floor(max_rps / 10), math.floor(DISCORD_GLOBAL_RPS - 1 - max_rps))
        )
        self._limiter = AsyncLimiter(self.burst, self.burst / max_rps)

    async def acquire(self) -> None:
        await self._limiter.acquire()

    async def try_acquire(self) -> bool:
        if not self._limiter.has_capacity():
            return False
        await self._limiter.acquire()  # room now: returns without waiting
        return True

    def has_capacity(self) -> bool:
        return self._limiter.has_capacity()

    async def aclose(self) -> None:
        return None


@dataclass(slots=True)
class SharedPaceStats:
    """The shared pace's figures, read at scrape time."""

    rps: float
    fallback: bool = False  # pacing a local share while Redis is unreachable
    fallback_rps: float = 0.0  # that share (0 when not in the fallback)
    fallbacks_total: int = 0
    recoveries_total: int = 0
    # Calls that did not get a slot: "busy" (a cosmetic call found no free slot now) and
    # "backlog" (the fleet's schedule was more than max_wait_s ahead: waited, asked again).
    refusals: dict[str, int] = field(default_factory=lambda: {"busy": 0, "backlog": 0})
    # From asking to the slot (a burst of replies waits seconds for its turns).
    wait: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(WAIT_BUCKETS_S))


class SharedPace:
    """The fleet's REST pace in Redis; a local share of it while Redis is down."""

    def __init__(
        self,
        slots: RestSlots,
        max_rps: float,
        *,
        live_instances: Callable[[], int] = lambda: 1,
        probe_s: float = DEFAULT_PROBE_S,
    ) -> None:
        self._slots = slots
        self._max_rps = max_rps
        self._live_instances = live_instances
        self._probe_s = probe_s
        self.stats = SharedPaceStats(rps=max_rps)
        self._fallback: AsyncLimiter | None = None
        self._probe: asyncio.Task[None] | None = None
        self._busy_until = 0.0  # monotonic: the fleet's schedule as last seen is taken till then

    async def acquire(self) -> None:
        started = time.monotonic()
        while self._fallback is None:
            try:
                slot = await self._slots.reserve()
            except RedisUnavailable as exc:
                self._enter_fallback(str(exc))
                break
            if not slot.taken:  # the fleet is far behind: wait most of it, then ask again
                self.stats.refusals["backlog"] += 1
                await asyncio.sleep(slot.wait_s / 2)
                continue
            self._busy_until = time.monotonic() + slot.wait_s + 1.0 / self._max_rps
            if slot.wait_s > 0:
                await asyncio.sleep(slot.wait_s)
            self.stats.wait.observe(time.monotonic() - started)
            return
        assert self._fallback is not None
        await self._fallback.acquire()
        self.stats.wait.observe(time.monotonic() - started)

    async def try_acquire(self) -> bool:
        if self._fallback is None:
            try:
                slot = await self._slots.take_if_free()
            except RedisUnavailable as exc:
                self._enter_fallback(str(exc))
            else:
                if not slot.taken:
                    self._busy_until = time.monotonic() + slot.wait_s
                    self.stats.refusals["busy"] += 1
                return slot.taken
        assert self._fallback is not None
        if not self._fallback.has_capacity():
            self.stats.refusals["busy"] += 1
            return False
        await self._fallback.acquire()
        return True

    def has_capacity(self) -> bool:
        if self._fallback is not None:
            return self._fallback.has_capacity()
        return time.monotonic() >= self._busy_until

    async def aclose(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe

    def _enter_fallback(self, reason: str) -> None:
        if self._fallback is not None:
            return
        instances = max(1, self._live_instances())
        share = self._max_rps / instances
        self._fallback = AsyncLimiter(1, 1.0 / share)
        self.stats.fallback = True
        self.stats.fallback_rps = share
        self.stats.fallbacks_total += 1
        log.warning(
            "%s; pacing Discord REST calls at a local share (%.1f/s, 1/%d of %.1f/s) until "
            "Redis answers again",
            reason,
            share,
            instances,
            self._max_rps,
        )
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(
                self._probe_until_back(), name="discord rest pace probe"
            )

    async def _probe_until_back(self) -> None:
        while True:
            await asyncio.sleep(self._probe_s)
            try:
                await self._slots.probe()
            except RedisUnavailable:
                continue
            self._fallback = None
            self.stats.fallback = False
            self.stats.fallback_rps = 0.0
            self.stats.recoveries_total += 1
            log.warning("Redis is back: Discord REST calls share the fleet's pace again")
            return
