"""The one retry layer, with a recording sleep instead of real waiting.

It knows no error types: these tests use their own exception class and predicates.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.resilience.retry import RetryPolicy, backoff_s, call_with_retry

NO_JITTER = RetryPolicy(jitter_s=0.0)


class Failure(Exception):
    """A failure of the wrapped call; says itself whether a retry may help, and after how long."""

    def __init__(
        self, message: str, *, retryable: bool = True, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


def retryable(exc: BaseException) -> bool:
    return isinstance(exc, Failure) and exc.retryable


def retry_after(exc: BaseException) -> float | None:
    return exc.retry_after_s if isinstance(exc, Failure) else None


class Recorder:
    """A sleep that only records, plus a script of outcomes for the wrapped call."""

    def __init__(self, *outcomes: Failure | str) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.sleeps: list[float] = []
        self.retries: list[tuple[int, BaseException, float]] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def on_retry(self, attempt: int, error: BaseException, wait_s: float) -> None:
        self.retries.append((attempt, error, wait_s))

    async def fn(self) -> str:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Failure):
            raise outcome
        return outcome

    async def run(self, policy: RetryPolicy) -> str:
        return await call_with_retry(
            self.fn,
            policy,
            retryable=retryable,
            retry_after=retry_after,
            on_retry=self.on_retry,
            sleep=self.sleep,
        )


async def test_retryable_errors_are_retried_until_success() -> None:
    rec = Recorder(Failure("503"), Failure("slow"), "answer")
    assert await rec.run(NO_JITTER) == "answer"
    assert rec.calls == 3
    assert rec.sleeps == [1.0, 2.0]
    assert [attempt for attempt, _e, _w in rec.retries] == [1, 2]
    assert [wait for _a, _e, wait in rec.retries] == rec.sleeps


@pytest.mark.parametrize(
    "error", [Failure("400", retryable=False), Failure("final", retryable=False, retry_after_s=1)]
)
async def test_non_retryable_errors_are_raised_at_once(error: Failure) -> None:
    rec = Recorder(error, "never")
    with pytest.raises(Failure) as info:
        await rec.run(NO_JITTER)
    assert info.value is error
    assert (rec.calls, rec.sleeps) == (1, [])


async def test_other_exceptions_are_not_retried() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await call_with_retry(broken, NO_JITTER, retryable=retryable, sleep=Recorder().sleep)
    assert calls == 1


async def test_without_a_retry_after_the_backoff_alone_sets_the_wait() -> None:
    rec = Recorder(Failure("429", retry_after_s=7.5), "answer")
    result = await call_with_retry(rec.fn, NO_JITTER, retryable=retryable, sleep=rec.sleep)
    assert result == "answer"
    assert rec.sleeps == [1.0]


async def test_provider_retry_delay_is_honoured() -> None:
    rec = Recorder(Failure("429", retry_after_s=7.5), "answer")
    assert await rec.run(RetryPolicy()) == "answer"
    assert rec.sleeps[0] >= 7.5
    # A hint shorter than the backoff does not shorten it.
    rec = Recorder(Failure("429", retry_after_s=0.1), "answer")
    assert await rec.run(NO_JITTER) == "answer"
    assert rec.sleeps == [1.0]


async def test_exhausted_attempts_reraise_the_original_error() -> None:
    errors = [Failure(f"503 #{i}") for i in range(4)]
    rec = Recorder(*errors)
    with pytest.raises(Failure) as info:
        await rec.run(NO_JITTER)
    assert info.value is errors[-1]
    assert rec.calls == 4
    assert rec.sleeps == [1.0, 2.0, 4.0]
    assert [(a, e) for a, e, _w in rec.retries] == list(zip([1, 2, 3], errors[:3], strict=True))


async def test_budget_stops_without_a_useless_sleep() -> None:
    error = Failure("429", retry_after_s=30.0)
    rec = Recorder(error, "never")
    with pytest.raises(Failure) as info:
        await rec.run(RetryPolicy(total_budget_s=10.0))
    assert info.value is error
    assert (rec.calls, rec.sleeps, rec.retries) == (1, [], [])


async def test_budget_counts_the_time_attempts_take() -> None:
    now = 0.0

    async def slow_failure() -> None:
        nonlocal now
        now += 5.0
        raise Failure("timeout")

    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        nonlocal now
        sleeps.append(seconds)
        now += seconds

    policy = RetryPolicy(jitter_s=0.0, total_budget_s=12.0)
    with pytest.raises(Failure):
        await call_with_retry(
            slow_failure, policy, retryable=retryable, sleep=sleep, clock=lambda: now
        )
    # 5 s attempt + 1 s wait + 5 s attempt = 11 s; waiting 2 s more would pass 12 s.
    assert sleeps == [1.0]


async def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(initial_backoff_s=1.0, max_backoff_s=20.0, jitter_s=1.0)
    assert 1.0 <= backoff_s(1, policy) <= 2.0
    assert 20.0 <= backoff_s(10, policy) <= 21.0


async def test_a_lambda_returning_a_coroutine_is_awaited() -> None:
    async def answer(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    assert await call_with_retry(lambda: answer(21), NO_JITTER, retryable=retryable) == 42


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(total_budget_s=-1.0)


@settings(max_examples=150, deadline=None)
@given(
    max_attempts=st.integers(1, 8),
    initial=st.floats(0.0, 10.0),
    cap=st.floats(0.0, 30.0),
    jitter=st.floats(0.0, 5.0),
    budget=st.floats(0.0, 90.0),
    hints=st.lists(st.one_of(st.none(), st.floats(0.0, 120.0)), min_size=8, max_size=8),
)
def test_total_sleep_never_exceeds_the_budget(
    max_attempts: int,
    initial: float,
    cap: float,
    jitter: float,
    budget: float,
    hints: list[float | None],
) -> None:
    policy = RetryPolicy(max_attempts, initial, cap, jitter, budget)
    rec = Recorder(*(Failure("429", retry_after_s=hint) for hint in hints))
    with pytest.raises(Failure):
        asyncio.run(rec.run(policy))
    assert sum(rec.sleeps) <= budget + 1e-9
    assert rec.calls <= max_attempts
    assert len(rec.sleeps) == rec.calls - 1
    for (_attempt, error, wait), hint in zip(rec.retries, hints, strict=False):
        assert isinstance(error, Failure)
        assert error.retry_after_s == hint
        assert wait >= (hint or 0.0)
