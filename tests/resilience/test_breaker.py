"""CircuitBreaker transitions on a fake monotonic clock."""

from __future__ import annotations

import pytest

from bot.resilience.breaker import BreakerState, CircuitBreaker
from tests.fakes import FakeClock


def state(breaker: CircuitBreaker) -> BreakerState:
    # A call, not an attribute: mypy would otherwise narrow the Literal across transitions.
    return breaker.state


def make(**kwargs: object) -> tuple[CircuitBreaker, FakeClock, list[tuple[str, str, str]]]:
    clock = FakeClock(1000.0)
    seen: list[tuple[str, str, str]] = []
    breaker = CircuitBreaker(
        "gemini",
        clock=clock,
        on_transition=lambda name, old, new: seen.append((name, old, new)),
        **kwargs,  # type: ignore[arg-type]
    )
    return breaker, clock, seen


def open_breaker(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        assert breaker.allow()
        breaker.record_failure()
    assert state(breaker) == "open"


def test_five_consecutive_failures_open() -> None:
    breaker, _clock, seen = make()
    for _ in range(4):
        breaker.record_failure()
    assert state(breaker) == "closed"
    breaker.record_failure()
    assert state(breaker) == "open"
    assert seen == [("gemini", "closed", "open")]
    assert not breaker.allow()
    assert breaker.stats.short_circuited_total == 1
    assert breaker.retry_after_s() == pytest.approx(60.0)


def test_a_success_resets_the_failure_count() -> None:
    breaker, _clock, _seen = make()
    for _ in range(3):
        breaker.record_failure()
    breaker.record_success()
    for _ in range(4):
        breaker.record_failure()
    assert state(breaker) == "closed"
    breaker.record_failure()
    assert state(breaker) == "open"


def test_half_open_after_timeout_admits_limited_probes() -> None:
    breaker, clock, seen = make(half_open_max_calls=2, success_threshold=3)
    open_breaker(breaker)
    clock.now += 59.9
    assert not breaker.allow()
    assert breaker.retry_after_s() == pytest.approx(0.1)
    clock.now += 0.1
    assert breaker.allow()
    assert state(breaker) == "half_open"
    assert breaker.retry_after_s() == 0.0
    assert breaker.allow()
    assert not breaker.allow()  # both probe slots taken
    assert breaker.stats.short_circuited_total == 2
    assert seen[-1] == ("gemini", "open", "half_open")


def test_success_threshold_closes() -> None:
    breaker, clock, seen = make(success_threshold=3)
    open_breaker(breaker)
    clock.now += 60
    for _ in range(2):
        assert breaker.allow()
        breaker.record_success()
        assert state(breaker) == "half_open"
    assert breaker.allow()
    breaker.record_success()
    assert state(breaker) == "closed"
    assert [new for _n, _old, new in seen] == ["open", "half_open", "closed"]
    assert breaker.stats.transitions_total == {"closed": 1, "open": 1, "half_open": 1}


def test_failure_in_half_open_reopens_with_a_new_timeout() -> None:
    breaker, clock, seen = make()
    open_breaker(breaker)
    clock.now += 60
    assert breaker.allow()
    breaker.record_success()
    assert breaker.allow()
    breaker.record_failure()
    assert state(breaker) == "open"
    assert breaker.retry_after_s() == pytest.approx(60.0)
    assert seen[-1] == ("gemini", "half_open", "open")
    assert breaker.stats.transitions_total["open"] == 2


def test_late_outcomes_while_open_change_nothing() -> None:
    breaker, clock, _seen = make()
    open_breaker(breaker)
    clock.now += 30
    breaker.record_failure()  # a call admitted before opening, failing late
    breaker.record_success()
    assert state(breaker) == "open"
    assert breaker.retry_after_s() == pytest.approx(30.0)


def test_lost_probe_slot_is_recovered_after_a_timeout() -> None:
    breaker, clock, _seen = make()
    open_breaker(breaker)
    clock.now += 60
    assert breaker.allow()  # this probe's caller vanishes without recording
    assert not breaker.allow()
    clock.now += 60
    assert breaker.allow()


def test_release_gives_the_probe_slot_back() -> None:
    breaker, clock, _seen = make()
    open_breaker(breaker)
    clock.now += 60
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()


def test_force_half_open_and_reset() -> None:
    breaker, _clock, seen = make()
    assert breaker.force_half_open() is False  # closed: nothing to force
    open_breaker(breaker)
    assert breaker.force_half_open() is True
    assert state(breaker) == "half_open"
    assert breaker.allow()
    breaker.reset()
    assert state(breaker) == "closed"
    assert [new for _n, _old, new in seen] == ["open", "half_open", "closed"]
    breaker.reset()  # already closed: no transition reported
    assert len(seen) == 3


def test_a_broken_transition_hook_does_not_break_the_breaker() -> None:
    def explode(_name: str, _old: str, _new: str) -> None:
        raise RuntimeError("metrics down")

    breaker = CircuitBreaker("gemini", failure_threshold=1, on_transition=explode)
    breaker.record_failure()
    assert state(breaker) == "open"


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CircuitBreaker("x", failure_threshold=0)
    with pytest.raises(ValueError, match="negative"):
        CircuitBreaker("x", reset_timeout_s=-1)


def test_one_outcome_per_call_recorded_by_the_caller() -> None:
    # As LLMService does: allow() before the call, then one record_*() for its outcome.
    breaker, _clock, _seen = make(failure_threshold=2)
    assert breaker.allow()
    breaker.record_success()
    assert state(breaker) == "closed"
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert state(breaker) == "open"
    assert not breaker.allow()  # the caller raises its own "circuit open" error here
    assert breaker.retry_after_s() == pytest.approx(60.0)


def test_a_probe_whose_call_never_happened_gives_its_slot_back() -> None:
    # As LLMService does when its quota refuses the call: release(), not an outcome.
    breaker, clock, seen = make(failure_threshold=1)
    open_breaker(breaker)
    clock.now += 60
    assert breaker.allow()
    assert not breaker.allow()  # the one probe slot is taken
    breaker.release()
    assert state(breaker) == "half_open"
    assert breaker.allow()  # the released probe's slot came back
    assert [new for _n, _old, new in seen] == ["open", "half_open"]
    assert (breaker.stats.successes_total, breaker.stats.failures_total) == (0, 1)
