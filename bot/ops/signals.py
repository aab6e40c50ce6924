"""The health signals that decide the degradation level, sampled from the live components.

The error ratio is the model-call one (`bot.llm.call_stats`): failed Gemini calls over calls
made in the window. A Gemini outage shows in it although its questions end up queued, not
failed (the message failure ratio stayed 0 through one). Calls the open breaker refused are left
out here: the open breaker is a signal of its own (HIGH), and counting its refusals would keep
the level up after the breaker has closed, until they leave the window.

The window is short (`bot.app.DEGRADATION_WINDOW_S`, 30 s, assessed every 5 s): the breaker
counts only consecutive failures, so calls failing now and then (a flaky model) show only here,
and a short window lets the level come down within 35 s of the model answering again (the issue
asks for 60 s). Measured with a 5-minute window, a 150 s Gemini outage kept the level at HIGH
for 2.5 minutes after the breaker had closed (new questions queued with "reduced mode" notices
meanwhile).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import psutil

from bot.chat.pipeline import ChatStats
from bot.llm.call_stats import LLMCallStats
from bot.ops.percentile import percentile
from bot.resilience.degradation import HealthSignals

__all__ = ["SignalProbe"]

_PROCESS = psutil.Process()


class SignalProbe:
    """Model-call error ratio over a sliding window (from the cumulative counters), p95 of
    recent replies, RSS, breaker and queue pressure: what `DegradationState.assess` needs."""

    def __init__(
        self,
        stats: ChatStats,
        *,
        calls: Callable[[], LLMCallStats],
        breaker_open: Callable[[], bool],
        queue_pressure: Callable[[], float],
        window_s: float = 60.0,
        min_calls: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stats = stats
        self._calls = calls
        self._breaker_open = breaker_open
        self._queue_pressure = queue_pressure
        self._window_s = window_s
        # Fewer calls than this in the window: the ratio says more about chance than health
        # (a message that is mostly cache hits may make one call, and it failing is not "100 %").
        self._min_calls = min_calls
        self._clock = clock
        # (time, messages judged, calls, failed calls) samples; a few hundred at most at one
        # per second.
        self._samples: deque[tuple[float, int, int, int]] = deque(maxlen=1024)

    def sample(self) -> HealthSignals:
        now = self._clock()
        outcomes = self._stats.outcomes
        judged = sum(outcomes.values()) - outcomes["rejected"]
        calls = self._calls()
        self._samples.append((now, judged, calls.calls, calls.failed_calls))
        while self._samples and now - self._samples[0][0] > self._window_s:
            self._samples.popleft()
        if len(self._samples) == 1:
            # The first sample of a window has nothing before it: judge the totals instead.
            judged0 = calls0 = failed0 = 0
        else:
            _, judged0, calls0, failed0 = self._samples[0]
        calls_in_window = calls.calls - calls0
        enough = calls_in_window >= max(1, self._min_calls)
        ratio = (calls.failed_calls - failed0) / calls_in_window if enough else 0.0
        return HealthSignals(
            rss_bytes=_PROCESS.memory_info().rss,
            error_ratio=ratio,
            p95_s=self._recent_p95(now),
            breaker_open=self._breaker_open(),
            queue_pressure=self._queue_pressure(),
            messages_in_window=judged - judged0,
        )

    def _recent_p95(self, now: float) -> float:
        """p95 of the replies sent within the window, so slow replies stop counting once they
        leave it (the 1,000 recent replies /status keeps may be hours old on a quiet bot)."""
        recent = self._stats.recent_replies
        return percentile(
            (seconds for at, seconds in recent if now - at <= self._window_s), 95, empty=0.0
        )
