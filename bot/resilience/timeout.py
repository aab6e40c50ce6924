"""A request timeout that follows the model's recent speed, within fixed bounds.

A fixed timeout must be long enough for the slowest answer the model ever gives, so a call that
hangs keeps the user waiting that long before the retry layer can try again. Here the timeout is
`P95_FACTOR` times the 95th percentile of the last `window` successful calls, kept between
`floor_s` and `ceiling_s` (GEMINI_TIMEOUT_MIN_SECONDS, GEMINI_TIMEOUT_SECONDS). Until
`min_samples` calls have succeeded it is the ceiling, and the retry after a timeout always gets
the ceiling, so an answer that is merely long is never cut short twice.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

__all__ = ["P95_FACTOR", "AdaptiveTimeout"]

P95_FACTOR: Final = 3.0


class AdaptiveTimeout:
    """`current()` seconds for the next call; `observe()` each successful call's duration."""

    def __init__(
        self,
        ceiling_s: float,
        *,
        floor_s: float,
        enabled: bool = True,
        window: int = 200,
        min_samples: int = 20,
    ) -> None:
        if not 0 < floor_s <= ceiling_s:
            raise ValueError(f"need 0 < floor ({floor_s}) <= ceiling ({ceiling_s})")
        if min_samples < 1 or window < min_samples:
            raise ValueError("need 1 <= min_samples <= window")
        self.ceiling_s = ceiling_s
        self.floor_s = floor_s
        self.enabled = enabled
        self._min_samples = min_samples
        self._recent: deque[float] = deque(maxlen=window)  # bounded: the last `window` calls
        self._current = ceiling_s

    def observe(self, seconds: float) -> None:
        """A call that succeeded after `seconds` (failed calls say nothing about speed)."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        self._recent.append(seconds)
        if self.enabled and len(self._recent) >= self._min_samples:
            ordered = sorted(self._recent)
            p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
            self._current = min(self.ceiling_s, max(self.floor_s, P95_FACTOR * p95))

    def current(self, *, after_timeout: bool = False) -> float:
        """The timeout for the next attempt; the ceiling for a retry after a timeout."""
        return self.ceiling_s if after_timeout else self._current

    @property
    def samples(self) -> int:
        return len(self._recent)
