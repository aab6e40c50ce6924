"""The one retry layer: tenacity, retryable `LLMError`s only, honouring the provider's delay.

The SDK's own retry is off (it ignores the server's retry delay), so this is the only place
where an LLM call is repeated. A retry is skipped rather than slept when the wait would push
the whole chain past its time budget: the caller gets the last error at once.
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

from bot.llm.errors import LLMError

__all__ = ["RetryPolicy", "backoff_s", "call_with_retry", "is_retryable"]

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


def is_retryable(exc: BaseException) -> bool:
    """Only our own LLM errors that say so: anything else is a bug or a final answer."""
    return isinstance(exc, LLMError) and exc.retryable


def backoff_s(attempt: int, policy: RetryPolicy) -> float:
    """Exponential backoff after the given failed attempt (1-based), capped, plus jitter."""
    # The exponent cap only guards against float overflow for absurd attempt counts.
    exponential = policy.initial_backoff_s * 2.0 ** min(attempt - 1, 64)
    return min(policy.max_backoff_s, exponential) + random.uniform(0.0, policy.jitter_s)


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[int, LLMError, float], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Await `fn()`, retrying retryable `LLMError`s; the last error is re-raised unchanged."""

    def wait(state: RetryCallState) -> float:
        error = _llm_error(state)
        hint = error.retry_after_s or 0.0
        return max(backoff_s(state.attempt_number, policy), hint)

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None:
            on_retry(state.attempt_number, _llm_error(state), state.upcoming_sleep)

    retrying = AsyncRetrying(
        sleep=sleep,
        stop=stop_after_attempt(policy.max_attempts) | _OverBudget(policy, clock),
        wait=wait,
        retry=retry_if_exception(is_retryable),
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


def _llm_error(state: RetryCallState) -> LLMError:
    # Only called after retry_if_exception(is_retryable) accepted the outcome.
    assert state.outcome is not None
    error = state.outcome.exception()
    assert isinstance(error, LLMError)
    return error
