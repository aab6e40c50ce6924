"""The adaptive request timeout: 3x the recent p95 within bounds; the ceiling after a timeout."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.resilience.timeout import P95_FACTOR, AdaptiveTimeout


def test_the_ceiling_holds_until_enough_calls_have_succeeded() -> None:
    timeout = AdaptiveTimeout(30.0, floor_s=2.0, min_samples=5)
    for _ in range(4):
        timeout.observe(1.0)
    assert timeout.current() == 30.0
    timeout.observe(1.0)
    assert timeout.current() == 3.0  # 3 x p95 of 1 s answers


def test_it_follows_the_model_down_and_back_up_within_the_bounds() -> None:
    timeout = AdaptiveTimeout(30.0, floor_s=2.0, window=20, min_samples=5)
    for _ in range(20):
        timeout.observe(0.1)
    assert timeout.current() == 2.0  # 0.3 s would be below the floor
    for _ in range(20):
        timeout.observe(6.0)  # the window forgets the fast calls
    assert timeout.current() == 18.0
    for _ in range(20):
        timeout.observe(50.0)
    assert timeout.current() == 30.0  # never above the ceiling


def test_the_slowest_five_percent_set_the_pace() -> None:
    timeout = AdaptiveTimeout(100.0, floor_s=0.1, window=100, min_samples=100)
    for i in range(100):
        timeout.observe(1.0 if i < 95 else 20.0)
    assert timeout.current() == pytest.approx(P95_FACTOR * 1.0)
    timeout.observe(20.0)  # now 6 of the last 100 are slow: p95 is a slow one
    assert timeout.current() == pytest.approx(P95_FACTOR * 20.0)


def test_the_retry_after_a_timeout_gets_the_ceiling() -> None:
    timeout = AdaptiveTimeout(30.0, floor_s=1.0, min_samples=1)
    timeout.observe(1.0)
    assert timeout.current() == 3.0
    assert timeout.current(after_timeout=True) == 30.0


def test_switched_off_it_is_always_the_ceiling() -> None:
    timeout = AdaptiveTimeout(30.0, floor_s=1.0, enabled=False, min_samples=1)
    for _ in range(50):
        timeout.observe(0.5)
    assert timeout.current() == 30.0


def test_nonsense_durations_are_ignored() -> None:
    timeout = AdaptiveTimeout(30.0, floor_s=1.0, min_samples=1)
    for bad in (float("nan"), float("inf"), -1.0):
        timeout.observe(bad)
    assert timeout.samples == 0
    assert timeout.current() == 30.0


@pytest.mark.parametrize(
    ("ceiling", "floor", "window", "min_samples"),
    [(10.0, 0.0, 10, 5), (10.0, 11.0, 10, 5), (10.0, 1.0, 4, 5), (10.0, 1.0, 10, 0)],
)
def test_impossible_bounds_are_refused(
    ceiling: float, floor: float, window: int, min_samples: int
) -> None:
    with pytest.raises(ValueError, match="need"):
        AdaptiveTimeout(ceiling, floor_s=floor, window=window, min_samples=min_samples)


@given(st.lists(st.floats(min_value=0, max_value=1e4), min_size=1, max_size=300))
def test_always_within_the_bounds(durations: list[float]) -> None:
    timeout = AdaptiveTimeout(30.0, floor_s=2.0, window=50, min_samples=1)
    for seconds in durations:
        timeout.observe(seconds)
        assert 2.0 <= timeout.current() <= 30.0
    assert timeout.samples == min(len(durations), 50)
