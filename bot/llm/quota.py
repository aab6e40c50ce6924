"""Client-side request quota for the LLM, counted in the same fixed windows as the provider.

Why fixed calendar windows and not a sliding window: Gemini counts requests per wall-clock
minute and per Pacific-time day, so counting the same windows means a safety margin of 1.0
can use (almost) 100% of the quota without a 429. A sliding window is stricter than the
provider at every boundary and would leave paid-for capacity unused.

The minute window is aligned to the wall-clock minute (UTC epoch // 60); the day window resets
at midnight America/Los_Angeles, Gemini's daily reset, DST included. Each window computes its
next boundary once and only looks again when the clock passes it, so a request costs a few
comparisons. The clock is wall time (`time.time`) because the windows are calendar windows.

Persistence: `to_state()`/`from_state()` carry window ids and counts as a plain dict, and
`QuotaPersister` writes it through any `QuotaStateStore` in batches (one dirty flag, a flush
every `interval_s` and on shutdown). A corrupt or unreadable state is logged and the limiter
starts conservatively: the current minute is treated as full (refusals until the next minute
boundary, at most 60 s), because we may already have spent it before the restart. The day
counter restarts at 0: treating it as full would silence the bot until Pacific midnight, and
an overrun of the daily quota surfaces as a provider 429 whose retry delay is honoured anyway.

A fleet (several processes sharing one quota through Redis, `REDIS_URL`) uses
`bot.llm.quota_shared.SharedQuota` behind the same `Quota` port: the same window arithmetic
(`minute_window()`/`provider_day_window()` give the key suffixes and their ends), counted by a
Lua script in Redis instead of `_FixedWindow.used`; `QuotaPersister` is then not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from datetime import time as wall_time
from typing import Any, Final, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "PROVIDER_TIMEZONE",
    "STATE_VERSION",
    "PersisterStats",
    "Quota",
    "QuotaDecision",
    "QuotaLimiter",
    "QuotaPersister",
    "QuotaSnapshot",
    "QuotaStateStore",
    "QuotaStats",
    "Window",
    "WindowSnapshot",
    "effective_limit",
    "minute_window",
    "provider_day_window",
]

logger = logging.getLogger(__name__)

Window = Literal["minute", "day"]

PROVIDER_TIMEZONE: Final = "America/Los_Angeles"
STATE_VERSION: Final = 1
# GEMINI_PROVIDER_HOLD_MAX_SECONDS: the longest provider retry delay held as a per-minute limit.
DEFAULT_MAX_PROVIDER_HOLD_S: Final = 300.0

# Midnight PST is 01:00 PDT: if the tz database is missing, this fixed offset resets our day an
# hour late in summer, i.e. it errs towards refusing rather than towards a 429.
_PST_FALLBACK: Final = timezone(timedelta(hours=-8), "PST")


@functools.cache
def _provider_tz() -> tzinfo:
    try:
        return ZoneInfo(PROVIDER_TIMEZONE)
    except ZoneInfoNotFoundError:
        logger.error(
            "time zone %s not found (install the tzdata package); using a fixed UTC-8",
            PROVIDER_TIMEZONE,
        )
        return _PST_FALLBACK


def minute_window(now: float) -> tuple[str, float]:
    """The wall-clock minute containing `now`: (id like "2024-03-10T08:15Z", end epoch)."""
    start = math.floor(now / 60.0) * 60
    return datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%MZ"), start + 60.0


def provider_day_window(now: float) -> tuple[str, float]:
    """The Pacific-time day containing `now`: (id like "2024-03-10", next midnight epoch)."""
    tz = _provider_tz()
    today = datetime.fromtimestamp(now, tz).date()
    # Midnight is never skipped or repeated in Los Angeles (DST switches at 02:00).
    midnight = datetime.combine(today + timedelta(days=1), wall_time(0), tzinfo=tz)
    return today.isoformat(), midnight.timestamp()


def effective_limit(limit: int, safety_margin: float) -> int:
    """floor(limit * margin), at least 1; the epsilon keeps 10 * 0.9 from flooring to 8."""
    return max(1, math.floor(limit * safety_margin + 1e-9))


class _FixedWindow:
    """A counter for one fixed window that finds its next boundary only when the clock passes it."""

    __slots__ = ("_bounds", "end", "id", "used")

    def __init__(self, bounds: Callable[[float], tuple[str, float]], now: float) -> None:
        self._bounds = bounds
        self.id, self.end = bounds(now)
        self.used = 0

    def roll(self, now: float) -> bool:
        """Move to the window containing `now` if the current one has ended; True if it did."""
        # Only forward: a clock stepping back keeps the current (fuller) window, the safe side.
        if now < self.end:
            return False
        self.id, self.end = self._bounds(now)
        self.used = 0
        return True


@dataclass(frozen=True, slots=True)
class QuotaDecision:
    """The answer to one `try_acquire()`: which window refused and when capacity returns."""

    allowed: bool
    window: Window | None = None
    retry_after_s: float = 0.0


@dataclass(frozen=True, slots=True)
class WindowSnapshot:
    """One window at one instant; `limit` is the effective limit (after margin and 429 shrink)."""

    used: int
    limit: int
    remaining: int
    rejections_total: int
    resets_at: float  # epoch seconds of the window's end


@dataclass(frozen=True, slots=True)
class QuotaSnapshot:
    """Everything the metrics layer and /healthz report about the quota."""

    minute: WindowSnapshot
    day: WindowSnapshot
    tokens_minute: WindowSnapshot | None  # only with a tokens-per-minute limit
    blocked_until: float | None  # epoch seconds, after a provider 429 or a conservative start

    def window(self, name: Window) -> WindowSnapshot:
        """The snapshot of the named window, for code that loops over the metric labels."""
        return self.minute if name == "minute" else self.day


def _zero_per_window() -> dict[Window, int]:
    return {"minute": 0, "day": 0}


@dataclass(slots=True)
class QuotaStats:
    """Counters read at scrape time; every window label starts at 0."""

    rejections_total: dict[Window, int] = field(default_factory=_zero_per_window)
    token_rejections_total: int = 0  # the part of the minute rejections caused by the TPM limit
    acquired_total: int = 0
    provider_rate_limited_total: int = 0
    unusable_state_total: int = 0


class QuotaLimiter:
    """Requests-per-minute, requests-per-day and optional tokens-per-minute limits."""

    def __init__(
        self,
        rpm: int,
        daily: int,
        safety_margin: float = 0.9,
        tpm: int | None = None,
        clock: Callable[[], float] = time.time,
        max_provider_hold_s: float = DEFAULT_MAX_PROVIDER_HOLD_S,
    ) -> None:
        if not max_provider_hold_s > 0:
            raise ValueError(f"max_provider_hold_s must be positive, got {max_provider_hold_s}")
        if rpm < 1 or daily < 1 or (tpm is not None and tpm < 1):
            raise ValueError("quota limits must be positive (rpm, daily and tpm if set)")
        if not 0.0 < safety_margin <= 1.0:
            raise ValueError(f"safety_margin must be in (0, 1], got {safety_margin}")
        self.rpm = rpm
        self.daily = daily
        self.tpm = tpm
        self.safety_margin = safety_margin
        self.minute_limit = effective_limit(rpm, safety_margin)
        self.day_limit = effective_limit(daily, safety_margin)
        self.token_limit = None if tpm is None else effective_limit(tpm, safety_margin)
        self._clock = clock
        now = clock()
        self._minute = _FixedWindow(minute_window, now)
        self._day = _FixedWindow(provider_day_window, now)
        self._tokens_used = 0  # counted in the minute window
        self._minute_cap: int | None = None  # shrunk limit after a 429, this minute only
        self._blocked_until = 0.0
        # Which window a provider hold stands for: "day" when its delay was too long for a
        # per-minute limit (see on_provider_rate_limited).
        self._blocked_window: Window = "minute"
        self.max_provider_hold_s = max_provider_hold_s
        self.stats = QuotaStats()
        # The one dirty flag: set by every change worth persisting, cleared by QuotaPersister.
        self.dirty = False

    def _roll(self, now: float) -> None:
        if self._minute.roll(now):
            self._tokens_used = 0
            self._minute_cap = None
        self._day.roll(now)

    def _current_minute_limit(self) -> int:
        if self._minute_cap is None:
            return self.minute_limit
        return min(self._minute_cap, self.minute_limit)

    def try_acquire(self) -> QuotaDecision:
        """Take one request slot if every window has room; never blocks."""
        now = self._clock()
        self._roll(now)
        blocked_for = self._blocked_until - now
        if self._day.used >= self.day_limit:
            return self._refuse("day", max(self._day.end - now, blocked_for))
        if blocked_for > 0:
            return self._refuse(self._blocked_window, blocked_for)
        if self._minute.used >= self._current_minute_limit():
            return self._refuse("minute", self._minute.end - now)
        if self.token_limit is not None and self._tokens_used >= self.token_limit:
            self.stats.token_rejections_total += 1
            return self._refuse("minute", self._minute.end - now)
        self._minute.used += 1
        self._day.used += 1
        self.stats.acquired_total += 1
        self.dirty = True
        return QuotaDecision(allowed=True)

    async def acquire(self) -> QuotaDecision:
        """The `Quota` port: `try_acquire()` (in-process, so it never waits)."""
        return self.try_acquire()

    async def provider_rate_limited(self, retry_delay_s: float | None) -> QuotaDecision:
        """The `Quota` port: `on_provider_rate_limited()`."""
        return self.on_provider_rate_limited(retry_delay_s)

    def seed(self, minute_used: int, day_used: int) -> None:
        """Count requests made elsewhere in the current windows (never lowers a count): the
        fleet quota's local fallback starts from what the fleet had already used."""
        self._roll(self._clock())
        self._minute.used = max(self._minute.used, minute_used)
        self._day.used = max(self._day.used, day_used)

    def hold_until(self, until: float, window: Window) -> None:
        """Hold calls until `until` (a provider 429 another process saw), never shortening."""
        if until > self._blocked_until:
            self._blocked_until = until
            self._blocked_window = window

    def _refuse(self, window: Window, retry_after_s: float) -> QuotaDecision:
        self.stats.rejections_total[window] += 1
        return QuotaDecision(allowed=False, window=window, retry_after_s=max(0.0, retry_after_s))

    def record_tokens(self, input_tokens: int, output_tokens: int) -> None:
        """Count a finished call's tokens; the TPM check refuses once the minute is at the limit."""
        self._roll(self._clock())
        self._tokens_used += max(0, input_tokens) + max(0, output_tokens)
        self.dirty = True

    def on_provider_rate_limited(self, retry_delay_s: float | None) -> QuotaDecision:
        """The provider said 429: stop at what this minute used and wait out delay and window.

        A delay longer than `max_provider_hold_s` is no per-minute limit: it is held as the
        day's quota being used up (the refusal names the "day" window), until the provider's
        delay or the provider's day ends, whichever is first. Returns the refusal, with the
        seconds until calls are allowed again.
        """
        now = self._clock()
        self._roll(now)
        self.stats.provider_rate_limited_total += 1
        # The provider is the authority: whatever we counted so far is all this minute allows.
        self._minute_cap = self._minute.used
        delay = max(0.0, retry_delay_s or 0.0)
        if self._blocked_until <= now:
            self._blocked_window = "minute"  # an earlier hold is over
        if delay > self.max_provider_hold_s:
            self._blocked_window = "day"
            self._blocked_until = max(self._blocked_until, min(now + delay, self._day.end))
        else:
            self._blocked_until = max(self._blocked_until, now + delay, self._minute.end)
        self.dirty = True
        return QuotaDecision(
            allowed=False, window=self._blocked_window, retry_after_s=self._blocked_until - now
        )

    def start_conservatively(self, reason: str) -> None:
        """After losing the saved state: treat the current minute as full (see module doc)."""
        now = self._clock()
        self._roll(now)
        self.stats.unusable_state_total += 1
        self._blocked_until = max(self._blocked_until, self._minute.end)
        self.dirty = True  # so the next flush replaces the bad state
        logger.warning(
            "quota state unusable (%s): refusing LLM calls until the next minute boundary", reason
        )

    def snapshot(self) -> QuotaSnapshot:
        """Used/remaining/limit per window at this instant (rolls windows that have ended)."""
        now = self._clock()
        self._roll(now)
        blocked = self._blocked_until > now
        minute_limit = self._current_minute_limit()
        minute_remaining = 0 if blocked else max(0, minute_limit - self._minute.used)
        tokens: WindowSnapshot | None = None
        if self.token_limit is not None:
            tokens = WindowSnapshot(
                used=self._tokens_used,
                limit=self.token_limit,
                remaining=max(0, self.token_limit - self._tokens_used),
                rejections_total=self.stats.token_rejections_total,
                resets_at=self._minute.end,
            )
        return QuotaSnapshot(
            minute=WindowSnapshot(
                used=self._minute.used,
                limit=minute_limit,
                remaining=minute_remaining,
                rejections_total=self.stats.rejections_total["minute"],
                resets_at=self._minute.end,
            ),
            day=WindowSnapshot(
                used=self._day.used,
                limit=self.day_limit,
                remaining=max(0, self.day_limit - self._day.used),
                rejections_total=self.stats.rejections_total["day"],
                resets_at=self._day.end,
            ),
            tokens_minute=tokens,
            blocked_until=self._blocked_until if blocked else None,
        )

    def to_state(self) -> dict[str, Any]:
        """The persisted form: window ids and counts, JSON-friendly."""
        return {
            "version": STATE_VERSION,
            "minute": {
                "id": self._minute.id,
                "used": self._minute.used,
                "tokens": self._tokens_used,
                "cap": self._minute_cap,
            },
            "day": {"id": self._day.id, "used": self._day.used},
            "blocked_until": self._blocked_until,
            "blocked_window": self._blocked_window,
        }

    def from_state(self, state: object) -> bool:
        """Restore counts of windows that are still current; a bad state starts conservatively."""
        try:
            parsed = _parse_state(state)
        except ValueError as exc:
            self.start_conservatively(str(exc))
            return False
        now = self._clock()
        self._roll(now)
        # max(): restoring is idempotent and never makes the limiter less careful.
        if parsed.minute_id == self._minute.id:
            self._minute.used = max(self._minute.used, parsed.minute_used)
            self._tokens_used = max(self._tokens_used, parsed.minute_tokens)
            if parsed.minute_cap is not None:
                current = self._minute_cap
                cap = parsed.minute_cap
                self._minute_cap = cap if current is None else min(current, cap)
        if parsed.day_id == self._day.id:
            self._day.used = max(self._day.used, parsed.day_used)
        if parsed.blocked_until > now:
            self._blocked_until = max(self._blocked_until, parsed.blocked_until)
            if parsed.blocked_window == "day":
                self._blocked_window = "day"
        return True


@dataclass(frozen=True, slots=True)
class _ParsedState:
    minute_id: str
    minute_used: int
    minute_tokens: int
    minute_cap: int | None
    day_id: str
    day_used: int
    blocked_until: float
    blocked_window: Window = "minute"


def _count(section: Mapping[str, object], key: str) -> int:
    value = section.get(key)
    # bool is an int subclass; a True count is a sign of corruption, not the number 1.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
    return value


def _section(state: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = state.get(key)
    if not isinstance(value, Mapping) or not isinstance(value.get("id"), str):
        raise ValueError(f"{key} must be an object with a string id")
    return value


def _parse_state(state: object) -> _ParsedState:
    if not isinstance(state, Mapping):
        raise ValueError(f"state must be an object, got {type(state).__name__}")
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"unknown state version {state.get('version')!r}")
    minute, day = _section(state, "minute"), _section(state, "day")
    cap = minute.get("cap")
    blocked = state.get("blocked_until", 0.0)
    if (
        not isinstance(blocked, int | float)
        or isinstance(blocked, bool)
        or not math.isfinite(blocked)
    ):
        raise ValueError(f"blocked_until must be a finite number, got {blocked!r}")
    return _ParsedState(
        minute_id=str(minute["id"]),
        minute_used=_count(minute, "used"),
        minute_tokens=_count(minute, "tokens"),
        minute_cap=None if cap is None else _count(minute, "cap"),
        day_id=str(day["id"]),
        day_used=_count(day, "used"),
        blocked_until=float(blocked),
        # Absent in states written before provider holds were capped: a minute hold.
        blocked_window="day" if state.get("blocked_window") == "day" else "minute",
    )


class Quota(Protocol):
    """What the LLM service needs of a quota: `QuotaLimiter` (one process, the default) or
    `bot.llm.quota_shared.SharedQuota` (a fleet sharing its windows through Redis)."""

    stats: QuotaStats

    async def acquire(self) -> QuotaDecision:
        """Take one request slot if every window has room."""
        ...

    async def provider_rate_limited(self, retry_delay_s: float | None) -> QuotaDecision:
        """The provider said 429: hold calls (see `QuotaLimiter.on_provider_rate_limited`)."""
        ...

    def record_tokens(self, input_tokens: int, output_tokens: int) -> None:
        """Count a finished call's tokens."""
        ...

    def snapshot(self) -> QuotaSnapshot:
        """The windows at this instant, for the metrics and /status."""
        ...


class QuotaStateStore(Protocol):
    """Where the quota state lives between runs (the key-value store, or a dict in tests)."""

    async def load(self) -> dict[str, Any] | None:
        """The last saved state, or None if nothing was ever saved."""
        ...

    async def save(self, state: dict[str, Any]) -> None:
        """Replace the saved state."""
        ...


@dataclass(slots=True)
class PersisterStats:
    """Counters of the persister, read at scrape time."""

    flushes_total: int = 0
    save_errors_total: int = 0
    load_errors_total: int = 0


class QuotaPersister:
    """Batched writes of the limiter's state: a flush every `interval_s` if dirty, and on stop."""

    def __init__(
        self,
        limiter: QuotaLimiter,
        state_store: QuotaStateStore,
        interval_s: float = 10.0,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_store_error: Callable[[], None] | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        # Told of every failed load or save (the app counts them as store errors).
        self._on_store_error = on_store_error
        self._limiter = limiter
        self._store = state_store
        self._interval_s = interval_s
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self.stats = PersisterStats()

    async def load(self) -> bool:
        """Restore the saved state; True if one was restored. Never raises for a bad store."""
        try:
            state = await self._store.load()
        except Exception as exc:
            self.stats.load_errors_total += 1
            self._store_failed()
            self._limiter.start_conservatively(f"load failed: {exc!r}")
            return False
        if state is None:
            return False  # first run: nothing to restore, nothing wrong
        return self._limiter.from_state(state)

    def start(self) -> None:
        """Start the periodic flush task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="quota-persister")

    async def stop(self) -> None:
        """Stop the periodic task and write what is still dirty."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush_if_dirty()

    async def flush_if_dirty(self) -> bool:
        """Save the state if it changed since the last save; True if it wrote."""
        if not self._limiter.dirty:
            return False
        state = self._limiter.to_state()
        # Cleared before the await so a change made while saving is caught by the next flush.
        self._limiter.dirty = False
        try:
            await self._store.save(state)
        except Exception as exc:
            self._limiter.dirty = True
            self.stats.save_errors_total += 1
            self._store_failed()
            logger.warning("saving the quota state failed, will retry: %r", exc)
            return False
        except BaseException:
            self._limiter.dirty = True  # cancelled mid-save: stop() flushes again
            raise
        self.stats.flushes_total += 1
        return True

    def _store_failed(self) -> None:
        if self._on_store_error is not None:
            self._on_store_error()

    async def _run(self) -> None:
        while True:
            await self._sleep(self._interval_s)
            await self.flush_if_dirty()
