"""What the LLM layer makes of its errors: retryable or not, the provider's delay, the outcome."""

from __future__ import annotations

from typing import get_args

import pytest

from bot.llm.errors import (
    CallOutcome,
    CircuitOpen,
    Degraded,
    LLMBadRequest,
    LLMConfigurationError,
    LLMError,
    LLMRateLimited,
    LLMTimeout,
    LLMUnavailable,
    QuotaExhausted,
    call_outcome,
    is_retryable,
    retry_after_hint,
)
from bot.ops.metrics import LLM_OUTCOMES


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (LLMUnavailable("503"), True),
        (LLMTimeout("slow"), True),
        (LLMRateLimited("429"), True),
        (LLMBadRequest("400"), False),
        (LLMError("generic"), False),
        (QuotaExhausted("used up", window="minute", retry_after_s=5.0), False),
        (CircuitOpen("open"), False),
        (Degraded("degraded"), False),
        (KeyError("bug"), False),
        (TimeoutError(), False),
    ],
)
def test_only_llm_errors_that_say_so_are_retryable(error: BaseException, retryable: bool) -> None:
    assert is_retryable(error) is retryable


def test_the_retry_delay_hint_is_the_providers() -> None:
    assert retry_after_hint(LLMRateLimited("429", retry_after_s=7.5)) == 7.5
    assert retry_after_hint(LLMUnavailable("503")) is None
    assert retry_after_hint(ValueError("not ours")) is None


def test_call_outcome_labels() -> None:
    assert call_outcome(None) == "ok"
    assert call_outcome(LLMTimeout("slow")) == "timeout"
    assert call_outcome(TimeoutError()) == "timeout"
    assert call_outcome(LLMRateLimited("429")) == "rate_limited"
    assert call_outcome(LLMBadRequest("400")) == "bad_request"
    assert call_outcome(LLMConfigurationError("403")) == "configuration"
    assert call_outcome(LLMUnavailable("503")) == "error"
    # Every outcome the LLM layer can report has a series in the catalogue.
    assert set(get_args(CallOutcome)) == set(LLM_OUTCOMES)


def test_a_requests_own_4xx_is_a_call_but_a_refused_key_is_a_failure() -> None:
    from bot.llm.call_stats import LLMCallStats

    stats = LLMCallStats()
    for error in (None, LLMBadRequest("400"), LLMConfigurationError("403"), LLMRateLimited("x")):
        stats.record(call_outcome(error))
    assert (stats.calls, stats.failed) == (4, 1)
