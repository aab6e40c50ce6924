"""QuotaLimiter windows, margins, 429 handling, TPM and persistence, on a fake wall clock."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

import bot.llm.quota as quota_module
from bot.llm.quota import (
    QuotaLimiter,
    QuotaPersister,
    effective_limit,
    minute_window,
    provider_day_window,
)
from tests.fakes import FakeClock

MINUTE_START = 1_700_000_040.0  # a wall-clock minute boundary (divisible by 60)


class MemoryStateStore:
    """The in-memory QuotaStateStore: JSON round trip, like a real key-value store would do."""

    def __init__(self, initial: object = None, *, fail_load: bool = False) -> None:
        self.saved: str | None = None if initial is None else json.dumps(initial)
        self.saves = 0
        self.fail_load = fail_load
        self.fail_save = False

    async def load(self) -> dict[str, Any] | None:
        if self.fail_load:
            raise OSError("disk on fire")
        return None if self.saved is None else json.loads(self.saved)

    async def save(self, state: dict[str, Any]) -> None:
        if self.fail_save:
            raise OSError("disk full")
        self.saved = json.dumps(state)
        self.saves += 1


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_effective_limits_apply_the_margin() -> None:
    assert effective_limit(10, 0.9) == 9
    assert effective_limit(500, 0.9) == 450
    assert effective_limit(10, 1.0) == 10
    assert effective_limit(1, 0.5) == 1  # never 0
    limiter = QuotaLimiter(rpm=10, daily=500)
    assert (limiter.minute_limit, limiter.day_limit) == (9, 450)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rpm": 0, "daily": 1},
        {"rpm": 1, "daily": 0},
        {"rpm": 1, "daily": 1, "tpm": 0},
        {"rpm": 1, "daily": 1, "safety_margin": 0.0},
        {"rpm": 1, "daily": 1, "safety_margin": 1.5},
    ],
)
def test_invalid_limits_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        QuotaLimiter(**kwargs)


def test_burst_of_50_allows_exactly_9_then_points_at_the_minute_boundary() -> None:
    clock = FakeClock(MINUTE_START + 15)
    limiter = QuotaLimiter(rpm=10, daily=500, clock=clock)
    decisions = [limiter.try_acquire() for _ in range(50)]

    assert sum(d.allowed for d in decisions) == 9
    assert all(d.allowed for d in decisions[:9])
    refused = decisions[9:]
    assert all(d.window == "minute" for d in refused)
    assert all(d.retry_after_s == pytest.approx(45.0) for d in refused)
    assert limiter.stats.rejections_total == {"minute": 41, "day": 0}
    snap = limiter.snapshot()
    assert (snap.minute.used, snap.minute.limit, snap.minute.remaining) == (9, 9, 0)
    assert snap.minute.resets_at == MINUTE_START + 60
    assert (snap.day.used, snap.day.limit, snap.day.remaining) == (9, 450, 441)


def test_rollover_allows_again() -> None:
    clock = FakeClock(MINUTE_START + 59.5)
    limiter = QuotaLimiter(rpm=10, daily=500, clock=clock)
    for _ in range(9):
        assert limiter.try_acquire().allowed
    assert not limiter.try_acquire().allowed
    clock.advance(0.5)  # exactly on the boundary: a new minute
    assert limiter.try_acquire().allowed
    snap = limiter.snapshot()
    assert snap.minute.used == 1
    assert snap.day.used == 10


def test_margin_one_uses_the_whole_quota() -> None:
    limiter = QuotaLimiter(rpm=10, daily=500, safety_margin=1.0, clock=FakeClock(MINUTE_START))
    assert sum(limiter.try_acquire().allowed for _ in range(20)) == 10


def test_window_boundaries_are_computed_once_per_window(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    real = quota_module.minute_window

    def counting(now: float) -> tuple[str, float]:
        calls.append(now)
        return real(now)

    monkeypatch.setattr(quota_module, "minute_window", counting)
    clock = FakeClock(MINUTE_START)
    limiter = QuotaLimiter(rpm=1000, daily=100_000, clock=clock)
    for _ in range(200):
        limiter.try_acquire()
        clock.advance(0.1)  # 20 s in all: same minute
    assert len(calls) == 1
    clock.advance(45)
    limiter.try_acquire()
    limiter.try_acquire()
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("start", "day_id", "next_midnight", "new_day_id", "new_day_end"),
    [
        # Spring forward: 2024-03-10 in Los Angeles lasts 23 hours.
        (
            "2024-03-10T07:59:00",
            "2024-03-09",
            "2024-03-10T08:00:00",
            "2024-03-10",
            "2024-03-11T07:00:00",
        ),
        # Fall back: 2024-11-03 lasts 25 hours.
        (
            "2024-11-03T06:59:00",
            "2024-11-02",
            "2024-11-03T07:00:00",
            "2024-11-03",
            "2024-11-04T08:00:00",
        ),
        # Summer (PDT, UTC-7) and winter (PST, UTC-8) ordinary days.
        (
            "2024-07-01T06:59:00",
            "2024-06-30",
            "2024-07-01T07:00:00",
            "2024-07-01",
            "2024-07-02T07:00:00",
        ),
        (
            "2025-01-15T07:59:00",
            "2025-01-14",
            "2025-01-15T08:00:00",
            "2025-01-15",
            "2025-01-16T08:00:00",
        ),
    ],
)
def test_day_window_resets_at_pacific_midnight(
    start: str, day_id: str, next_midnight: str, new_day_id: str, new_day_end: str
) -> None:
    clock = FakeClock(epoch(start))
    assert provider_day_window(clock.now) == (day_id, epoch(next_midnight))
    limiter = QuotaLimiter(rpm=1000, daily=10, safety_margin=1.0, clock=clock)
    for _ in range(10):
        assert limiter.try_acquire().allowed
    refused = limiter.try_acquire()
    assert (refused.allowed, refused.window) == (False, "day")
    assert refused.retry_after_s == pytest.approx(60.0)
    assert limiter.stats.rejections_total["day"] == 1

    clock.now = epoch(next_midnight) - 0.001
    assert not limiter.try_acquire().allowed
    clock.now = epoch(next_midnight)
    assert limiter.try_acquire().allowed
    assert provider_day_window(clock.now) == (new_day_id, epoch(new_day_end))
    assert limiter.snapshot().day.resets_at == epoch(new_day_end)


def test_minute_window_ids_are_wall_clock_minutes() -> None:
    assert minute_window(epoch("2024-03-10T08:15:42")) == (
        "2024-03-10T08:15Z",
        epoch("2024-03-10T08:16:00"),
    )


def test_provider_429_shrinks_the_minute_and_waits_for_its_end() -> None:
    clock = FakeClock(MINUTE_START + 10)
    limiter = QuotaLimiter(rpm=10, daily=500, safety_margin=1.0, clock=clock)
    for _ in range(3):
        assert limiter.try_acquire().allowed
    limiter.on_provider_rate_limited(5.0)

    snap = limiter.snapshot()
    assert (snap.minute.limit, snap.minute.remaining) == (3, 0)
    assert snap.blocked_until == MINUTE_START + 60
    refused = limiter.try_acquire()
    assert (refused.allowed, refused.window) == (False, "minute")
    assert refused.retry_after_s == pytest.approx(50.0)  # window end beats the 5 s delay
    assert limiter.stats.provider_rate_limited_total == 1

    clock.now = MINUTE_START + 60
    assert limiter.try_acquire().allowed
    assert limiter.snapshot().minute.limit == 10  # the shrink lasts for its window only


def test_provider_retry_delay_longer_than_the_window_is_honoured() -> None:
    clock = FakeClock(MINUTE_START + 50)
    limiter = QuotaLimiter(rpm=10, daily=500, clock=clock)
    limiter.try_acquire()
    limiter.on_provider_rate_limited(30.0)
    clock.now = MINUTE_START + 70  # next minute, still inside the provider's delay
    refused = limiter.try_acquire()
    assert (refused.allowed, refused.window) == (False, "minute")
    assert refused.retry_after_s == pytest.approx(10.0)
    clock.now = MINUTE_START + 80
    assert limiter.try_acquire().allowed


def test_tokens_per_minute_limit() -> None:
    clock = FakeClock(MINUTE_START + 30)
    limiter = QuotaLimiter(rpm=100, daily=1000, safety_margin=1.0, tpm=1000, clock=clock)
    assert limiter.try_acquire().allowed
    limiter.record_tokens(600, 300)
    assert limiter.try_acquire().allowed  # 900 < 1000: still room
    limiter.record_tokens(80, 20)
    refused = limiter.try_acquire()
    assert (refused.allowed, refused.window) == (False, "minute")
    assert refused.retry_after_s == pytest.approx(30.0)
    assert limiter.stats.token_rejections_total == 1
    tokens = limiter.snapshot().tokens_minute
    assert tokens is not None
    assert (tokens.used, tokens.limit, tokens.remaining) == (1000, 1000, 0)

    clock.now = MINUTE_START + 60
    assert limiter.try_acquire().allowed
    assert QuotaLimiter(rpm=1, daily=1).snapshot().tokens_minute is None


async def test_persistence_round_trip() -> None:
    clock = FakeClock(MINUTE_START + 5)
    store = MemoryStateStore()
    first = QuotaLimiter(rpm=10, daily=500, clock=clock)
    for _ in range(5):
        first.try_acquire()
    first.record_tokens(10, 20)
    assert await QuotaPersister(first, store).flush_if_dirty()

    second = QuotaLimiter(rpm=10, daily=500, tpm=1000, clock=clock)
    assert await QuotaPersister(second, store).load()
    assert not second.dirty  # a restore is not a change worth writing back
    snap = second.snapshot()
    assert (snap.minute.used, snap.day.used) == (5, 5)
    assert snap.tokens_minute is not None
    assert snap.tokens_minute.used == 30
    assert sum(second.try_acquire().allowed for _ in range(10)) == 4
    assert second.stats.acquired_total == 4

    # A restart in a later minute keeps only the day's count.
    clock.now = MINUTE_START + 65
    third = QuotaLimiter(rpm=10, daily=500, clock=clock)
    assert await QuotaPersister(third, store).load()
    snap = third.snapshot()
    assert (snap.minute.used, snap.day.used) == (0, 5)


async def test_persisted_429_block_survives_a_restart() -> None:
    clock = FakeClock(MINUTE_START + 5)
    store = MemoryStateStore()
    first = QuotaLimiter(rpm=10, daily=500, clock=clock)
    first.try_acquire()
    first.on_provider_rate_limited(120.0)
    await QuotaPersister(first, store).flush_if_dirty()

    clock.now = MINUTE_START + 70
    second = QuotaLimiter(rpm=10, daily=500, clock=clock)
    await QuotaPersister(second, store).load()
    refused = second.try_acquire()
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(55.0)


def test_a_provider_delay_too_long_for_a_minute_limit_is_held_as_the_day() -> None:
    clock = FakeClock(MINUTE_START + 5)
    limiter = QuotaLimiter(rpm=10, daily=500, clock=clock, max_provider_hold_s=300)
    limiter.try_acquire()

    hold = limiter.on_provider_rate_limited(3600.0)

    assert (hold.window, hold.retry_after_s) == ("day", pytest.approx(3600.0))
    clock.now += 1800
    refused = limiter.try_acquire()
    assert (refused.allowed, refused.window) == (False, "day")
    assert refused.retry_after_s == pytest.approx(1800.0)
    clock.now += 1800
    assert limiter.try_acquire().allowed
    # A short 429 after the long hold is over is a minute limit again.
    assert limiter.on_provider_rate_limited(5.0).window == "minute"


def test_a_day_hold_never_outlasts_the_providers_day() -> None:
    clock = FakeClock(MINUTE_START)
    limiter = QuotaLimiter(rpm=10, daily=500, clock=clock, max_provider_hold_s=300)
    day_left = provider_day_window(clock.now)[1] - clock.now
    hold = limiter.on_provider_rate_limited(day_left + 86_400.0)
    assert hold.retry_after_s == pytest.approx(day_left)


def test_a_delay_up_to_the_cap_stays_a_minute_hold() -> None:
    clock = FakeClock(MINUTE_START + 5)
    limiter = QuotaLimiter(rpm=10, daily=500, clock=clock, max_provider_hold_s=300)
    hold = limiter.on_provider_rate_limited(300.0)
    assert (hold.window, hold.retry_after_s) == ("minute", pytest.approx(300.0))


async def test_a_day_hold_survives_a_restart_as_the_day() -> None:
    clock = FakeClock(MINUTE_START + 5)
    store = MemoryStateStore()
    first = QuotaLimiter(rpm=10, daily=500, clock=clock)
    first.on_provider_rate_limited(3600.0)
    await QuotaPersister(first, store).flush_if_dirty()

    clock.now += 600
    second = QuotaLimiter(rpm=10, daily=500, clock=clock)
    await QuotaPersister(second, store).load()
    refused = second.try_acquire()
    assert (refused.allowed, refused.window) == (False, "day")
    assert refused.retry_after_s == pytest.approx(3000.0)


async def test_missing_state_is_a_clean_first_start() -> None:
    limiter = QuotaLimiter(rpm=10, daily=500, clock=FakeClock(MINUTE_START))
    assert await QuotaPersister(limiter, MemoryStateStore()).load() is False
    assert limiter.try_acquire().allowed
    assert limiter.stats.unusable_state_total == 0


GOOD_STATE: dict[str, Any] = {
    "version": 1,
    "minute": {"id": "2023-11-14T22:14Z", "used": 1, "tokens": 0, "cap": None},
    "day": {"id": "2023-11-14", "used": 1},
    "blocked_until": 0.0,
}


def _with(path: tuple[str, ...], value: object) -> dict[str, Any]:
    state = json.loads(json.dumps(GOOD_STATE))
    target = state
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return state  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "state",
    [
        "garbage",
        ["a", "list"],
        {},
        {"version": 2, "minute": {}, "day": {}},
        _with(("minute",), None),
        _with(("minute", "id"), 5),
        _with(("minute", "used"), "3"),
        _with(("minute", "used"), -1),
        _with(("minute", "used"), True),
        _with(("minute", "used"), 2.5),
        _with(("minute", "tokens"), None),
        _with(("minute", "cap"), "x"),
        _with(("day", "used"), [1]),
        _with(("blocked_until",), "soon"),
        _with(("blocked_until",), float("nan")),
    ],
)
async def test_corrupt_state_is_logged_and_starts_conservatively(
    state: object, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(MINUTE_START + 20)
    limiter = QuotaLimiter(rpm=10, daily=500, clock=clock)
    persister = QuotaPersister(limiter, MemoryStateStore(state))
    with caplog.at_level(logging.WARNING, logger="bot.llm.quota"):
        assert await persister.load() is False
    assert "quota state unusable" in caplog.text
    assert limiter.stats.unusable_state_total == 1
    refused = limiter.try_acquire()
    assert (refused.allowed, refused.window) == (False, "minute")
    assert refused.retry_after_s == pytest.approx(40.0)
    assert limiter.dirty  # the next flush replaces the bad state

    clock.now = MINUTE_START + 60
    assert limiter.try_acquire().allowed
    assert limiter.snapshot().day.used == 1  # the day is not treated as spent


async def test_unreadable_store_starts_conservatively(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(MINUTE_START)
    limiter = QuotaLimiter(rpm=10, daily=500, clock=clock)
    persister = QuotaPersister(limiter, MemoryStateStore(fail_load=True))
    with caplog.at_level(logging.WARNING, logger="bot.llm.quota"):
        assert await persister.load() is False
    assert "disk on fire" in caplog.text
    assert persister.stats.load_errors_total == 1
    assert not limiter.try_acquire().allowed


async def test_flush_happens_only_after_changes() -> None:
    clock = FakeClock(MINUTE_START)
    limiter = QuotaLimiter(rpm=2, daily=500, safety_margin=1.0, clock=clock)
    store = MemoryStateStore()
    persister = QuotaPersister(limiter, store)

    assert await persister.flush_if_dirty() is False
    limiter.try_acquire()
    limiter.try_acquire()
    assert await persister.flush_if_dirty() is True
    assert await persister.flush_if_dirty() is False
    limiter.try_acquire()  # refused: nothing changed worth saving
    assert await persister.flush_if_dirty() is False
    assert store.saves == 1

    limiter.record_tokens(5, 5)
    store.fail_save = True
    assert await persister.flush_if_dirty() is False
    assert limiter.dirty
    assert persister.stats.save_errors_total == 1
    store.fail_save = False
    assert await persister.flush_if_dirty() is True
    assert store.saves == 2
    assert persister.stats.flushes_total == 2


async def test_periodic_flush_and_final_flush_on_stop() -> None:
    clock = FakeClock(MINUTE_START)
    limiter = QuotaLimiter(rpm=100, daily=500, clock=clock)
    store = MemoryStateStore()
    intervals: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        intervals.append(seconds)
        await asyncio.sleep(0)

    persister = QuotaPersister(limiter, store, interval_s=10.0, sleep=fake_sleep)
    persister.start()
    persister.start()  # idempotent
    limiter.try_acquire()
    for _ in range(10):
        await asyncio.sleep(0)
    assert store.saves == 1  # many ticks, one change, one write
    assert set(intervals) == {10.0}

    limiter.try_acquire()
    await persister.stop()
    assert not limiter.dirty
    saved = json.loads(store.saved or "null")
    assert saved["day"]["used"] == 2
    await persister.stop()  # stopping twice is harmless


async def test_store_failures_are_reported() -> None:
    # The app counts them as llmbot_errors_total{component="store"}.
    reported: list[None] = []
    store = MemoryStateStore(fail_load=True)
    limiter = QuotaLimiter(rpm=10, daily=500, clock=FakeClock(MINUTE_START))
    persister = QuotaPersister(limiter, store, on_store_error=lambda: reported.append(None))
    assert not await persister.load()
    assert len(reported) == 1
    limiter.try_acquire()
    store.fail_save = True
    assert not await persister.flush_if_dirty()
    assert len(reported) == 2
    assert persister.stats.save_errors_total == 1
    store.fail_save = False
    assert await persister.flush_if_dirty()
    assert len(reported) == 2
