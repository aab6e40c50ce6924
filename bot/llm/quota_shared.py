"""The Gemini quota of a fleet: the same windows as `QuotaLimiter`, counted in Redis.

Every process asks Redis for each request slot (one Lua script, atomic across processes), with
the same semantics as the in-process limiter: the provider's minute and Pacific-day windows,
the safety margin, and a provider 429 seen by any process holding every process.

When Redis fails, this process falls back to a conservative local share of the quota: the
effective limits divided by the number of live instances last seen (instances keep a heartbeat
in Redis, forgotten after `instance_ttl_s` of silence). In the minute Redis fails, the share is
also capped by what the fleet had left when last seen, `(limit - fleet used) / instances`, and
by what this process has used itself. The heartbeat keeps trying Redis; when it answers again
the requests made meanwhile are added to the fleet's counters and the shared quota resumes.
Residual risk, documented in docs/runbooks.md: a figure last seen up to one heartbeat ago may
let the fleet go over by a few requests in the minute Redis failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from bot.llm.quota import (
    DEFAULT_MAX_PROVIDER_HOLD_S,
    QuotaDecision,
    QuotaLimiter,
    QuotaSnapshot,
    QuotaStats,
    Window,
    WindowSnapshot,
    minute_window,
    provider_day_window,
)
from bot.store.redis_link import RedisUnavailable
from bot.store.redis_quota import AcquireResult, FleetFigures, RedisQuotaCounters

__all__ = ["FleetQuotaStats", "SharedQuota"]

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_S: Final = 2.0
DEFAULT_INSTANCE_TTL_S: Final = 10.0


@dataclass(slots=True)
class FleetQuotaStats:
    """The fleet side of the quota, read at scrape time."""

    live_instances: int = 1
    fallback: bool = False  # counting a local share while Redis is unreachable
    fallbacks_total: int = 0
    recoveries_total: int = 0


class SharedQuota:
    """A `Quota` whose windows live in Redis; a local share of them while Redis is down."""

    def __init__(
        self,
        counters: RedisQuotaCounters,
        *,
        instance: str,
        rpm: int,
        daily: int,
        safety_margin: float = 0.9,
        tpm: int | None = None,
        clock: Callable[[], float] = time.time,
        max_provider_hold_s: float = DEFAULT_MAX_PROVIDER_HOLD_S,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        instance_ttl_s: float = DEFAULT_INSTANCE_TTL_S,
    ) -> None:
        # The in-process limiter checks the arguments and keeps the limits' arithmetic.
        self._limits = QuotaLimiter(
            rpm, daily, safety_margin, tpm, clock=clock, max_provider_hold_s=max_provider_hold_s
        )
        self._counters = counters
        self.instance = instance
        self._rpm, self._daily, self._tpm = rpm, daily, tpm
        self._margin = safety_margin
        self._clock = clock
        self._heartbeat_s = heartbeat_s
        self._ttl_s = instance_ttl_s
        self.minute_limit = self._limits.minute_limit
        self.day_limit = self._limits.day_limit
        self.token_limit = self._limits.token_limit
        self.max_provider_hold_s = max_provider_hold_s
        self.stats = QuotaStats()
        self.fleet = FleetQuotaStats()
        # Last seen in Redis (by an acquire or a heartbeat), with the window ids they belong to.
        self._seen_minute: tuple[str, int] = ("", 0)
        self._seen_day: tuple[str, int] = ("", 0)
        self._seen_minute_limit = self.minute_limit
        self._seen_blocked: tuple[float, Window] = (0.0, "minute")
        self._own_minute: tuple[str, int] = ("", 0)  # this process's requests this minute
        self._fallback: QuotaLimiter | None = None
        # Requests granted by the fallback, by window id, added to Redis when it returns.
        self._unsynced_minute: dict[str, tuple[float, int]] = {}
        self._unsynced_day: dict[str, tuple[float, int]] = {}
        self._token_writes: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    # --- the Quota port -----------------------------------------------------------------------

    async def acquire(self) -> QuotaDecision:
        now = self._clock()
        minute, day = minute_window(now), provider_day_window(now)
        if self._fallback is None:
            try:
                result = await self._counters.acquire(
                    now=now,
                    minute=minute,
                    day=day,
                    minute_limit=self.minute_limit,
                    day_limit=self.day_limit,
                    token_limit=self.token_limit,
                )
            except RedisUnavailable as exc:
                self._enter_fallback(str(exc))
            else:
                return self._decide(result, minute, day, now)
        return self._fallback_acquire(now, minute, day)

    async def provider_rate_limited(self, retry_delay_s: float | None) -> QuotaDecision:
        now = self._clock()
        self.stats.provider_rate_limited_total += 1
        delay = max(0.0, retry_delay_s or 0.0)
        if self._fallback is None:
            try:
                hold = await self._counters.provider_rate_limited(
                    now=now,
                    minute=minute_window(now),
                    day=provider_day_window(now),
                    delay_s=delay,
                    max_hold_s=self.max_provider_hold_s,
                )
            except RedisUnavailable as exc:
                self._enter_fallback(str(exc))
            else:
                window: Window = "day" if hold.window == "day" else "minute"
                self._seen_blocked = (hold.blocked_until, window)
                return QuotaDecision(
                    allowed=False, window=window, retry_after_s=max(0.0, hold.blocked_until - now)
                )
        assert self._fallback is not None
        return self._fallback.on_provider_rate_limited(retry_delay_s)

    def record_tokens(self, input_tokens: int, output_tokens: int) -> None:
        tokens = max(0, input_tokens) + max(0, output_tokens)
        if self.token_limit is None or tokens == 0:
            return
        if self._fallback is not None:
            self._fallback.record_tokens(input_tokens, output_tokens)
            return
        minute = minute_window(self._clock())
        task = asyncio.get_running_loop().create_task(self._add_tokens(minute, tokens))
        self._token_writes.add(task)
        task.add_done_callback(self._token_writes.discard)

    def snapshot(self) -> QuotaSnapshot:
        if self._fallback is not None:
            return self._fallback.snapshot()
        now = self._clock()
        minute, day = minute_window(now), provider_day_window(now)
        minute_used = self._seen_minute[1] if self._seen_minute[0] == minute[0] else 0
        day_used = self._seen_day[1] if self._seen_day[0] == day[0] else 0
        limit = self._seen_minute_limit if self._seen_minute[0] == minute[0] else self.minute_limit
        blocked_until = self._seen_blocked[0] if self._seen_blocked[0] > now else None
        return QuotaSnapshot(
            minute=WindowSnapshot(
                used=minute_used,
                limit=limit,
                remaining=0 if blocked_until else max(0, limit - minute_used),
                rejections_total=self.stats.rejections_total["minute"],
                resets_at=minute[1],
            ),
            day=WindowSnapshot(
                used=day_used,
                limit=self.day_limit,
                remaining=max(0, self.day_limit - day_used),
                rejections_total=self.stats.rejections_total["day"],
                resets_at=day[1],
            ),
            tokens_minute=None,
            blocked_until=blocked_until,
        )

    # --- the heartbeat ------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._beat_forever(), name="fleet quota heartbeat")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for write in list(self._token_writes):
            with contextlib.suppress(Exception):
                await write
        if self._fallback is None:
            with contextlib.suppress(RedisUnavailable):
                await self._counters.leave(self.instance)

    async def heartbeat(self) -> bool:
        """One heartbeat: register, read the fleet's figures, leave the fallback if it can.
        True when Redis answered."""
        now = self._clock()
        minute, day = minute_window(now), provider_day_window(now)
        try:
            if self._fallback is not None:
                await self._sync_fallback_counts()
            figures = await self._counters.heartbeat(
                now=now,
                instance=self.instance,
                ttl_s=self._ttl_s,
                minute=minute,
                day=day,
                minute_limit=self.minute_limit,
            )
        except RedisUnavailable as exc:
            if self._fallback is None:
                self._enter_fallback(str(exc))
            return False
        self._see(figures, minute, day)
        if self._fallback is not None:
            self._fallback = None
            self.fleet.fallback = False
            self.fleet.recoveries_total += 1
            log.warning("Redis is back: the quota is shared by the fleet again")
        return True

    async def _beat_forever(self) -> None:
        while True:
            try:
                await self.heartbeat()
            except Exception:
                log.exception("fleet quota heartbeat failed")
            await asyncio.sleep(self._heartbeat_s)

    # --- internals ----------------------------------------------------------------------------

    def _decide(
        self, result: AcquireResult, minute: tuple[str, float], day: tuple[str, float], now: float
    ) -> QuotaDecision:
        self._seen_minute = (minute[0], result.minute_used)
        self._seen_day = (day[0], result.day_used)
        self._seen_minute_limit = result.minute_limit
        if result.blocked_until > now:
            self._seen_blocked = (result.blocked_until, self._seen_blocked[1])
        if result.allowed:
            self.stats.acquired_total += 1
            self._count_own(minute[0])
            return QuotaDecision(allowed=True)
        if result.window == "tokens":
            self.stats.token_rejections_total += 1
        window: Window = "day" if result.window == "day" else "minute"
        if result.blocked_until > now:
            self._seen_blocked = (result.blocked_until, window)
        self.stats.rejections_total[window] += 1
        return QuotaDecision(allowed=False, window=window, retry_after_s=result.retry_after_s)

    def _count_own(self, minute_id: str) -> None:
        seen_id, used = self._own_minute
        self._own_minute = (minute_id, used + 1 if seen_id == minute_id else 1)

    def _see(
        self, figures: FleetFigures, minute: tuple[str, float], day: tuple[str, float]
    ) -> None:
        self.fleet.live_instances = max(1, figures.live_instances)
        self._seen_minute = (minute[0], figures.minute_used)
        self._seen_day = (day[0], figures.day_used)
        self._seen_minute_limit = figures.minute_limit
        window: Window = "day" if figures.blocked_window == "day" else "minute"
        self._seen_blocked = (figures.blocked_until, window)

    def _enter_fallback(self, reason: str) -> None:
        now = self._clock()
        minute, day = minute_window(now), provider_day_window(now)
        n = max(1, self.fleet.live_instances)
        minute_share = max(1, self.minute_limit // n)
        day_share = max(1, self.day_limit // n)
        # margin 1.0: the shares are already effective limits.
        fallback = QuotaLimiter(
            minute_share,
            day_share,
            1.0,
            None if self.token_limit is None else max(1, self.token_limit // n),
            clock=self._clock,
            max_provider_hold_s=self.max_provider_hold_s,
        )
        fleet_minute = self._seen_minute[1] if self._seen_minute[0] == minute[0] else 0
        own_minute = self._own_minute[1] if self._own_minute[0] == minute[0] else 0
        fleet_day = self._seen_day[1] if self._seen_day[0] == day[0] else 0
        minute_left = min(
            minute_share - own_minute,
            math.floor(max(0, self._seen_minute_limit - fleet_minute) / n),
        )
        day_left = math.floor(max(0, self.day_limit - fleet_day) / n)
        fallback.seed(minute_share - max(0, minute_left), day_share - min(day_share, day_left))
        blocked_until, window = self._seen_blocked
        fallback.hold_until(blocked_until, window)
        self._fallback = fallback
        self.fleet.fallback = True
        self.fleet.fallbacks_total += 1
        log.warning(
            "%s; counting a local share of the quota (%d of %d a minute, 1/%d of the fleet) "
            "until Redis answers again",
            reason,
            minute_share,
            self.minute_limit,
            n,
        )

    def _fallback_acquire(
        self, now: float, minute: tuple[str, float], day: tuple[str, float]
    ) -> QuotaDecision:
        assert self._fallback is not None
        decision = self._fallback.try_acquire()
        if decision.allowed:
            self.stats.acquired_total += 1
            self._count_own(minute[0])
            for unsynced, window in ((self._unsynced_minute, minute), (self._unsynced_day, day)):
                end, count = unsynced.get(window[0], (window[1], 0))
                unsynced[window[0]] = (end, count + 1)
        else:
            self.stats.rejections_total[decision.window or "minute"] += 1
        return decision

    async def _sync_fallback_counts(self) -> None:
        """Add the requests the fallback granted in the current windows to the fleet's
        counters (those of windows that have ended no longer matter)."""
        now = self._clock()
        minute, day = minute_window(now), provider_day_window(now)
        await self._counters.add(
            minute=minute,
            day=day,
            minute_requests=self._unsynced_minute.get(minute[0], (minute[1], 0))[1],
            day_requests=self._unsynced_day.get(day[0], (day[1], 0))[1],
        )
        self._unsynced_minute.clear()
        self._unsynced_day.clear()

    async def _add_tokens(self, minute: tuple[str, float], tokens: int) -> None:
        try:
            await self._counters.add_tokens(minute=minute, tokens=tokens)
        except RedisUnavailable as exc:
            log.warning("counting tokens in Redis failed: %s", exc)
