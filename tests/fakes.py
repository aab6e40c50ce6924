"""Fakes shared by tests of several packages (import them: `from tests.fakes import FakeClock`)."""

from __future__ import annotations

import math
import time

# A plausible wall-clock time (2023-11-14 22:13:20 UTC); tests needing another start pass it.
START = 1_700_000_000.0


class FakeClock:
    """A clock in seconds that moves only when the test says, so nothing ever sleeps.

    Call it for the time, set `now` or `advance(seconds)` to move it.
    """

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    @classmethod
    def in_a_fresh_minute(cls) -> FakeClock:
        """Real wall-clock time, one second into the current minute, so a per-minute window
        (the quota's) is never crossed by accident: for code that also reads the real clock."""
        return cls(math.floor(time.time() / 60) * 60 + 1.0)
