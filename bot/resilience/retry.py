"""The one retry layer: tenacity, retrying what the caller calls retryable, honouring delays.

The SDK's own retry is off (it ignores the server's retry delay), so this is the only place
where an LLM call is repeated. It knows no error types: the caller says which exceptions may be
tried again (`retryable`) and how long the failing side asked to wait (`retry_after`). A retry
is skipped rather than slept when the wait would push the whole chain past its time budget: the
caller gets the last error at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)
from tenacity.stop import stop_base

__all__ = ["RetryPolicy", "backoff_s", "call_with_retry"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long one logical call may be retried."""

    max_attempts: int = 4
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 20.0
    jitter_s: float = 1.0
    total_budget_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.initial_backoff_s, self.max_backoff_s, self.jitter_s, self.total_budget_s) < 0:
            raise ValueError("backoff, jitter and budget must not be negative")


def _no_hint(_error: BaseException) -> float | None:
    return None


def backoff_s(attempt: int, policy: RetryPolicy) -> float:
    """Exponential backoff after the given failed attempt (1-based), capped, plus jitter."""
    # The exponent cap only guards against float overflow for absurd attempt counts.
    exponential = policy.initial_backoff_s * 2.0 ** min(attempt - 1, 64)
    return min(policy.max_backoff_s, exponential) + random.uniform(0.0, policy.jitter_s)


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    retryable: Callable[[BaseException], bool],
    retry_after: Callable[[BaseException], float | None] = _no_hint,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Await `fn()`, retrying exceptions `retryable` accepts; the last is re-raised unchanged.

    The wait before a retry is the policy's backoff, or longer when `retry_after(error)` asks
    for more; `on_retry(attempt, error, wait_s)` is told of each retry before its wait.
    """

    def wait(state: RetryCallState) -> float:
        hint = retry_after(_error(state)) or 0.0
        return max(backoff_s(state.attempt_number, policy), hint)

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None:
            on_retry(state.attempt_number, _error(state), state.upcoming_sleep)

    retrying = AsyncRetrying(
        sleep=sleep,
        stop=stop_after_attempt(policy.max_attempts) | _OverBudget(policy, clock),
        wait=wait,
        retry=retry_if_exception(retryable),
        before_sleep=before_sleep,
        reraise=True,
    )
    # The async-for form awaits fn() here, so a lambda or partial returning a coroutine works;
    # tenacity's __call__ would treat it as a plain function and never await the result.
    async for attempt in retrying:
        with attempt:
            return await fn()
    raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover


class _OverBudget(stop_base):
    """Stop when the coming wait would end after the chain's total time budget."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float]) -> None:
        self._budget_s = policy.total_budget_s
        self._clock = clock
        self._started = clock()

    def __call__(self, retry_state: RetryCallState) -> bool:
        # idle_for covers an injected sleep that does not move the clock (tests, simulations).
        elapsed = max(self._clock() - self._started, retry_state.idle_for)
        return elapsed + retry_state.upcoming_sleep > self._budget_s


def _error(state: RetryCallState) -> BaseException:
    # Only called after retry_if_exception(retryable) accepted the outcome: it is an exception.
    assert state.outcome is not None
    error = state.outcome.exception()
    assert error is not None
    return error
