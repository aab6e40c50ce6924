"""The LLM failures the rest of the bot understands; `llm/gemini.py` maps SDK errors onto them.

Also what the LLM layer makes of them: which ones the retry layer may try again (and after how
long), and the outcome of one model call as the metrics label it.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "CallOutcome",
    "CircuitOpen",
    "Degraded",
    "LLMBadRequest",
    "LLMConfigurationError",
    "LLMError",
    "LLMRateLimited",
    "LLMTimeout",
    "LLMUnavailable",
    "QuotaExhausted",
    "call_outcome",
    "is_retryable",
    "retry_after_hint",
]

CallOutcome = Literal["ok", "error", "timeout", "rate_limited", "bad_request", "configuration"]


class LLMError(Exception):
    """Base class. `retryable` says whether the one retry layer may try again."""

    retryable: bool = False
    kind: str = "error"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        # The provider's own hint (RetryInfo.retryDelay / Retry-After), honoured by the retry layer.
        self.retry_after_s = retry_after_s


class LLMRateLimited(LLMError):
    """The provider said 429 / RESOURCE_EXHAUSTED."""

    retryable = True
    kind = "rate_limited"


class LLMUnavailable(LLMError):
    """5xx, 408, connection failure or a stream that broke mid-answer."""

    retryable = True
    kind = "unavailable"


class LLMTimeout(LLMError):
    """The request took longer than the timeout."""

    retryable = True
    kind = "timeout"


class LLMBadRequest(LLMError):
    """4xx other than 408/429: the request's fault, not the provider's. Retrying it (now or from
    the queue) would give the same answer, and it is no sign that the provider is failing, so it
    never counts against the circuit breaker."""

    kind = "bad_request"

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class LLMConfigurationError(LLMBadRequest):
    """401/403/404: the provider refuses the bot itself (key, project or model), whatever the
    question; an operator has to change a setting."""

    kind = "configuration"


class QuotaExhausted(LLMError):
    """Our own quota limiter refused to send: the request was not made."""

    kind = "quota"

    def __init__(self, message: str, *, window: str, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.window = window


class CircuitOpen(LLMError):
    """The breaker is open: the dependency is failing, so the call was not attempted."""

    kind = "circuit_open"


class Degraded(LLMError):
    """The bot is degraded enough that new questions wait in the queue instead of calling."""

    kind = "degraded"


def is_retryable(exc: BaseException) -> bool:
    """Only our own LLM errors that say so: anything else is a bug or a final answer."""
    return isinstance(exc, LLMError) and exc.retryable


def retry_after_hint(exc: BaseException) -> float | None:
    """The provider's own retry delay carried by an LLM error, if any."""
    return exc.retry_after_s if isinstance(exc, LLMError) else None


def call_outcome(error: BaseException | None) -> CallOutcome:
    """The outcome of one model call that raised `error` (None: it answered)."""
    if error is None:
        return "ok"
    if isinstance(error, LLMTimeout | TimeoutError):
        return "timeout"
    if isinstance(error, LLMRateLimited):
        return "rate_limited"
    if isinstance(error, LLMConfigurationError):
        return "configuration"
    if isinstance(error, LLMBadRequest):
        return "bad_request"
    return "error"
