"""When to try the fleet's Redis again after it failed: a small gate shared by the fleet-wide
cache, cooldowns and video budgets (each keeps a local stand-in for the time Redis is away).

After a failure the caller uses its local state and skips Redis for `retry_s` (a blackholed
Redis would otherwise cost each message a full command timeout); the first success after that
is a recovery, which the caller may use to drop what its stand-in kept meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["DEFAULT_RETRY_S", "FLEET_PARTS", "FleetFallback", "FleetFallbackStats", "FleetPart"]

log = logging.getLogger(__name__)

DEFAULT_RETRY_S: Final = 2.0

# The `part` label of `llmbot_fleet_fallback`: the fleet-wide parts with a local stand-in.
FleetPart = Literal["cache", "cooldowns", "video"]
FLEET_PARTS: Final[tuple[FleetPart, ...]] = ("cache", "cooldowns", "video")


@dataclass(slots=True)
class FleetFallbackStats:
    fallback: bool = False  # using the local stand-in now
    fallbacks_total: int = 0
    recoveries_total: int = 0


class FleetFallback:
    """Tracks one fleet-wide part (`name`) falling back to local state and coming back."""

    def __init__(
        self,
        name: str,
        *,
        retry_s: float = DEFAULT_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.retry_s = retry_s
        self.stats = FleetFallbackStats()
        self._clock = clock
        self._retry_at = 0.0

    def try_redis(self) -> bool:
        """Whether to ask Redis now (always, unless it failed less than `retry_s` ago)."""
        return not self.stats.fallback or self._clock() >= self._retry_at

    def failed(self, error: Exception) -> None:
        """Redis failed: use the local stand-in until `retry_s` from now."""
        self._retry_at = self._clock() + self.retry_s
        if not self.stats.fallback:
            self.stats.fallback = True
            self.stats.fallbacks_total += 1
            log.warning("fleet %s: Redis failed, using this process's own (%s)", self.name, error)

    def succeeded(self) -> bool:
        """Redis answered; True if that ends a fallback (a recovery)."""
        if not self.stats.fallback:
            return False
        self.stats.fallback = False
        self.stats.recoveries_total += 1
        log.warning("fleet %s: Redis answers again, shared across the fleet again", self.name)
        return True
