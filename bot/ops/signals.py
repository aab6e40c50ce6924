"""The health signals that decide the degradation level, sampled from the live components."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import psutil

from bot.chat.pipeline import ChatStats
from bot.ops.percentile import percentile
from bot.resilience.degradation import HealthSignals

__all__ = ["SignalProbe"]

_PROCESS = psutil.Process()


class SignalProbe:
    """Error ratio over a sliding window (from the cumulative counters), p95 of recent replies,
    RSS, breaker and queue pressure: what `DegradationState.assess` needs."""

    def __init__(
        self,
        stats: ChatStats,
        *,
        breaker_open: Callable[[], bool],
        queue_pressure: Callable[[], float],
        window_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stats = stats
        self._breaker_open = breaker_open
        self._queue_pressure = queue_pressure
        self._window_s = window_s
        self._clock = clock
        # (time, messages judged, failed) samples; a few hundred at most at one per second.
        self._samples: deque[tuple[float, int, int]] = deque(maxlen=1024)

    def sample(self) -> HealthSignals:
        now = self._clock()
        outcomes = self._stats.outcomes
        judged = sum(outcomes.values()) - outcomes["rejected"]
        failed = outcomes["failed"]
        self._samples.append((now, judged, failed))
        while self._samples and now - self._samples[0][0] > self._window_s:
            self._samples.popleft()
        _, judged0, failed0 = self._samples[0]
        in_window = judged - judged0
        # The first sample of a window has nothing before it: judge the totals instead.
        if len(self._samples) == 1:
            in_window, failed0 = judged, 0
        ratio = (failed - failed0) / in_window if in_window > 0 else 0.0
        return HealthSignals(
            rss_bytes=_PROCESS.memory_info().rss,
            error_ratio=ratio,
            p95_s=self._recent_p95(now),
            breaker_open=self._breaker_open(),
            queue_pressure=self._queue_pressure(),
            messages_in_window=in_window,
        )

    def _recent_p95(self, now: float) -> float:
        """p95 of the replies sent within the window, so slow replies stop counting once they
        leave it (the 1,000 recent replies /status keeps may be hours old on a quiet bot)."""
        recent = self._stats.recent_replies
        return percentile(
            (seconds for at, seconds in recent if now - at <= self._window_s), 95, empty=0.0
        )
