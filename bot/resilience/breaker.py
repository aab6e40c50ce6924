"""A circuit breaker per dependency: closed → open after consecutive failures → half-open probes.

Callers record one outcome per logical operation: a retry chain for one message is one
failure, not four, so the pipeline calls `allow()` before the chain and `record_*()` after it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = ["BREAKER_STATES", "BreakerState", "BreakerStats", "CircuitBreaker"]

logger = logging.getLogger(__name__)

BreakerState = Literal["closed", "open", "half_open"]
BREAKER_STATES: Final[tuple[BreakerState, ...]] = ("closed", "open", "half_open")


def _zero_per_state() -> dict[BreakerState, int]:
    return dict.fromkeys(BREAKER_STATES, 0)


@dataclass(slots=True)
class BreakerStats:
    """Counters read at scrape time; every state label starts at 0."""

    transitions_total: dict[BreakerState, int] = field(default_factory=_zero_per_state)
    short_circuited_total: int = 0
    successes_total: int = 0
    failures_total: int = 0


class CircuitBreaker:
    """Stops calling a failing dependency and lets a few probes through after a cool-down."""

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        reset_timeout_s: float = 60.0,
        half_open_max_calls: int = 1,
        success_threshold: int = 3,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[str, str, str], None] | None = None,
    ) -> None:
        if failure_threshold < 1 or half_open_max_calls < 1 or success_threshold < 1:
            raise ValueError("breaker thresholds and half_open_max_calls must be at least 1")
        if reset_timeout_s < 0:
            raise ValueError("reset_timeout_s must not be negative")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.half_open_max_calls = half_open_max_calls
        self.success_threshold = success_threshold
        self.on_transition = on_transition  # (name, old, new); may be set after construction
        self.stats = BreakerStats()
        self._clock = clock
        self._state: BreakerState = "closed"
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._probes_in_flight = 0
        self._last_probe_at = 0.0
        self._half_open_successes = 0

    @property
    def state(self) -> BreakerState:
        """The current state; an expired open state turns half-open on the next `allow()`."""
        return self._state

    def allow(self) -> bool:
        """May the caller try the dependency now? A True in half-open takes a probe slot."""
        if self._state == "closed":
            return True
        now = self._clock()
        if self._state == "open":
            if now - self._opened_at < self.reset_timeout_s:
                self.stats.short_circuited_total += 1
                return False
            self._transition("half_open")
        # A probe whose caller never recorded an outcome (cancelled task) must not wedge the
        # breaker in half-open forever: after a reset timeout its slot is given back.
        if (
            self._probes_in_flight >= self.half_open_max_calls
            and now - self._last_probe_at >= self.reset_timeout_s
        ):
            self._probes_in_flight = 0
        if self._probes_in_flight >= self.half_open_max_calls:
            self.stats.short_circuited_total += 1
            return False
        self._probes_in_flight += 1
        self._last_probe_at = now
        return True

    def record_success(self) -> None:
        """The dependency answered; in half-open, enough of these in a row close the breaker."""
        self.stats.successes_total += 1
        if self._state == "closed":
            self._consecutive_failures = 0
        elif self._state == "half_open":
            self._release_probe()
            self._half_open_successes += 1
            if self._half_open_successes >= self.success_threshold:
                self._transition("closed")
        # In "open" this is a late answer to a call admitted before opening: it proves little.

    def record_failure(self) -> None:
        """The dependency failed; opens after `failure_threshold` in a row, or any half-open one."""
        self.stats.failures_total += 1
        if self._state == "closed":
            self._consecutive_failures += 1
            if self._consecutive_failures >= self.failure_threshold:
                self._transition("open")
        elif self._state == "half_open":
            self._transition("open")
        # A late failure while open must not extend the timeout the probes are waiting for.

    def release(self) -> None:
        """Give back a half-open probe slot without an outcome (the call never happened)."""
        if self._state == "half_open":
            self._release_probe()

    def retry_after_s(self) -> float:
        """Seconds until an open breaker admits a probe; 0 when it is not open."""
        if self._state != "open":
            return 0.0
        return max(0.0, self._opened_at + self.reset_timeout_s - self._clock())

    def force_half_open(self) -> bool:
        """Let probes through now (self-healing); True if the breaker was open."""
        if self._state != "open":
            return False
        self._transition("half_open")
        return True

    def reset(self) -> None:
        """Back to closed with clean counters."""
        if self._state != "closed":
            self._transition("closed")
        self._consecutive_failures = 0

    def _release_probe(self) -> None:
        self._probes_in_flight = max(0, self._probes_in_flight - 1)

    def _transition(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        self._consecutive_failures = 0
        self._probes_in_flight = 0
        self._half_open_successes = 0
        if new == "open":
            self._opened_at = self._clock()
        self.stats.transitions_total[new] += 1
        logger.info("circuit %s: %s -> %s", self.name, old, new)
        if self.on_transition is not None:
            try:
                self.on_transition(self.name, old, new)
            except Exception:
                # A broken metrics/log hook must never change the breaker's behaviour.
                logger.exception("on_transition hook of circuit %s failed", self.name)
