"""In-process counts of model calls, kept by `LLMService`; read by `/status`, `/health`, the
health history and the degradation signals (through `BotView`), and by `/metrics`.

The model-call error ratio (the bot's `error_rate`, and `llmbot:llm_call_error_ratio:*` in
Prometheus) is `failed / wanted`:

- a *call* is one attempt at the model, retries included (`outcomes`, the same events as
  `llmbot_llm_request_duration_seconds{outcome}`); `error` and `timeout` are failed calls;
- `rate_limited` (the provider's 429) is a call but not a failure: the quota limiter's business
  (it holds calls until the provider's window ends), and not a breaker failure either;
- `bad_request` (a 4xx the request caused: an oversized image, say) is a call but not a failure
  of Gemini; `configuration` (401/403/404: the key, project or model refused) is a failure: no
  question can be answered until an operator fixes it, though the breaker ignores both;
- a *circuit rejection* is a call the open breaker did not let through, because earlier calls
  failed (`llmbot_llm_circuit_rejections_total`). It counts as wanted and failed: while the
  breaker is open, users asking questions get no model answer, and without it the ratio would
  fall silent exactly during an outage (the open breaker stops the calls).

Our own quota refusals are neither: no call was wanted by Gemini's health, only by the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from bot.llm.errors import CallOutcome

__all__ = ["CALL_OUTCOMES", "FAILED_OUTCOMES", "LLMCallStats"]

CALL_OUTCOMES: Final[tuple[CallOutcome, ...]] = (
    "ok",
    "error",
    "timeout",
    "rate_limited",
    "bad_request",
    "configuration",
)
FAILED_OUTCOMES: Final[tuple[CallOutcome, ...]] = ("error", "timeout", "configuration")


@dataclass(slots=True)
class LLMCallStats:
    """Cumulative counts since start; every outcome present from the start, at zero."""

    outcomes: dict[CallOutcome, int] = field(
        default_factory=lambda: dict.fromkeys(CALL_OUTCOMES, 0)
    )
    circuit_rejections: int = 0

    def record(self, outcome: CallOutcome) -> None:
        """One call (attempt) ended with `outcome`."""
        self.outcomes[outcome] += 1

    def reject(self) -> None:
        """One call was not made because the breaker is open."""
        self.circuit_rejections += 1

    @property
    def calls(self) -> int:
        """Calls made, every outcome."""
        return sum(self.outcomes.values())

    @property
    def failed_calls(self) -> int:
        """Calls made that failed (error, timeout or configuration; a 429 or a request's own
        4xx is not a failure)."""
        return sum(self.outcomes[outcome] for outcome in FAILED_OUTCOMES)

    @property
    def wanted(self) -> int:
        """The SLI's denominator: calls made plus calls the open breaker refused."""
        return self.calls + self.circuit_rejections

    @property
    def failed(self) -> int:
        """The SLI's numerator: failed calls plus calls the open breaker refused."""
        return self.failed_calls + self.circuit_rejections

    @property
    def error_ratio(self) -> float:
        """`failed / wanted` since start, 0 before the first call."""
        wanted = self.wanted
        return self.failed / wanted if wanted else 0.0
