"""The health signals of the degradation level: short windows, so the level follows recovery."""

from __future__ import annotations

from bot.app import ASSESS_INTERVAL_S, DEGRADATION_WINDOW_S
from bot.chat.pipeline import ChatStats
from bot.llm.call_stats import LLMCallStats
from bot.ops.signals import SignalProbe
from bot.resilience.degradation import DegradationLevel, DegradationPolicy, DegradationState
from tests.fakes import FakeClock

WINDOW_S = DEGRADATION_WINDOW_S
ASSESS_EVERY_S = ASSESS_INTERVAL_S
# What the issue asks: back to none within 60 s of the dependency being healthy again.
RECOVERY_LIMIT_S = 60.0


class Bot:
    """The figures a SignalProbe reads, moved by the test: messages, the model calls behind
    them (an answered message made one good call, a failed one a failed call), replies, the
    breaker."""

    def __init__(self) -> None:
        self.clock = FakeClock(100.0)
        self.stats = ChatStats()
        self.calls = LLMCallStats()
        self.breaker_open = False
        self.probe = SignalProbe(
            self.stats,
            calls=lambda: self.calls,
            breaker_open=lambda: self.breaker_open,
            queue_pressure=lambda: 0.0,
            window_s=WINDOW_S,
            clock=self.clock,
        )
        # RSS is the real process's: a threshold no test process reaches keeps it out.
        self.state = DegradationState(DegradationPolicy(memory_bytes=1 << 50), clock=self.clock)

    def messages(self, answered: int = 0, failed: int = 0, reply_s: float = 0.5) -> None:
        self.stats.outcomes["answered"] += answered
        self.stats.outcomes["failed"] += failed
        for outcome, count in (("ok", answered), ("error", failed)):
            for _ in range(int(count)):
                self.calls.record(outcome)  # type: ignore[arg-type]
        for _ in range(answered + failed):
            self.stats.recent_seconds.append(reply_s)
            self.stats.recent_replies.append((self.clock.now, reply_s))

    def assess(self) -> DegradationLevel:
        return self.state.assess(self.probe.sample()).level

    def run(self, seconds: float, **traffic: float) -> DegradationLevel:
        """`seconds` of the app's assess loop with `traffic` per assessment; the last level."""
        level = self.state.level
        for _ in range(round(seconds / ASSESS_EVERY_S)):
            self.clock.advance(ASSESS_EVERY_S)
            self.messages(**traffic)  # type: ignore[arg-type]
            level = self.assess()
        return level

    def seconds_until_none(self, limit_s: float, **traffic: float) -> float:
        """Assess every 5 s with `traffic` until the level is none; the time that took."""
        waited = 0.0
        while self.state.level != DegradationLevel.NONE:
            assert waited <= limit_s, f"still {self.state.level.label} after {waited:.0f} s"
            self.clock.advance(ASSESS_EVERY_S)
            waited += ASSESS_EVERY_S
            self.messages(**traffic)  # type: ignore[arg-type]
            self.assess()
        return waited


def test_an_outage_keeps_the_level_high_while_it_lasts() -> None:
    bot = Bot()
    bot.assess()
    # Two minutes of a failing model: half the messages fail, then the breaker opens.
    assert bot.run(30, answered=2, failed=2) == DegradationLevel.HIGH  # 50 % >= 2 x 10 %
    bot.breaker_open = True
    assert bot.run(90, answered=1, failed=1) == DegradationLevel.HIGH
    assert "breaker open" in bot.state.reason


def test_the_level_is_none_within_a_window_of_the_dependency_recovering() -> None:
    bot = Bot()
    bot.assess()
    bot.run(60, answered=1, failed=3)
    bot.breaker_open = True
    bot.run(60, failed=2)
    assert bot.state.level == DegradationLevel.HIGH

    # The breaker closes (the probe succeeded); questions are answered again, quickly.
    bot.breaker_open = False
    took = bot.seconds_until_none(RECOVERY_LIMIT_S, answered=3)

    assert took <= WINDOW_S + ASSESS_EVERY_S <= RECOVERY_LIMIT_S
    # ... and not sooner than the failures leave the window: the level is judged, not reset.
    assert took >= WINDOW_S - ASSESS_EVERY_S


def test_slow_replies_stop_counting_once_they_leave_the_window() -> None:
    bot = Bot()
    bot.assess()
    # A slow model: every reply takes 25 s (p95 >= 2 x 10 s: medium).
    assert bot.run(120, answered=3, reply_s=25.0) == DegradationLevel.MEDIUM
    assert "p95 25.0s" in bot.state.reason

    # Fast again. The 1,000 replies /status keeps still hold the slow ones; the level does not.
    took = bot.seconds_until_none(RECOVERY_LIMIT_S, answered=3, reply_s=0.5)

    assert took <= WINDOW_S + ASSESS_EVERY_S
    assert max(bot.stats.recent_seconds) == 25.0


def test_a_quiet_window_judges_no_ratio() -> None:
    bot = Bot()
    bot.assess()
    bot.run(30, answered=3, failed=3)
    assert bot.state.level == DegradationLevel.HIGH
    # Nobody writes any more: with no messages in the window there is nothing to judge.
    assert bot.run(WINDOW_S + ASSESS_EVERY_S) == DegradationLevel.NONE
