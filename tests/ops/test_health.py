"""The health snapshot's error rate is the model-call one; the degradation signal's too."""

from __future__ import annotations

from bot.chat.pipeline import ChatStats
from bot.llm.call_stats import LLMCallStats
from bot.ops.health import take_snapshot
from bot.ops.report import StatusReport
from bot.ops.signals import SignalProbe
from bot.ops.view import BotView
from tests.fakes import FakeClock


def _outage() -> tuple[ChatStats, LLMCallStats]:
    """Every question queued (no failed reply); 6 failed calls and 4 the breaker refused."""
    chat = ChatStats()
    chat.outcomes["queued"] = 10
    calls = LLMCallStats()
    for _ in range(6):
        calls.record("error")
    for _ in range(4):
        calls.reject()
    return chat, calls


def test_the_snapshot_error_rate_is_the_model_call_ratio() -> None:
    chat, calls = _outage()
    view = BotView(chat=lambda: chat, llm_calls=lambda: calls)
    snapshot = take_snapshot(view)
    assert (snapshot.model_calls, snapshot.model_calls_failed) == (10, 10)
    assert snapshot.error_rate == 1.0
    # The message counts stay what they were: nothing failed, as replies go.
    assert (snapshot.messages_total, snapshot.messages_failed) == (10, 0)
    text = StatusReport(view).status_text()
    assert "Messages: 10 handled, 0 failed, 0 in progress" in text
    assert "Gemini calls: 10, 10 failed or refused by the breaker (error rate 100.0%)" in text
    assert "Gemini errors 100.0%" in StatusReport(view).health_text()

    for _ in range(30):
        calls.record("ok")
    calls.record("rate_limited")  # a call, not a failure
    assert take_snapshot(view).error_rate == 10 / 41


def test_without_model_calls_the_error_rate_is_zero() -> None:
    snapshot = take_snapshot(BotView())
    assert (snapshot.error_rate, snapshot.model_calls, snapshot.model_calls_failed) == (0.0, 0, 0)


def test_the_degradation_signal_judges_model_calls_over_its_window() -> None:
    clock = FakeClock(100.0)
    chat, calls = ChatStats(), LLMCallStats()
    probe = SignalProbe(
        chat,
        calls=lambda: calls,
        breaker_open=lambda: False,
        queue_pressure=lambda: 0.0,
        window_s=60.0,
        min_calls=10,
        clock=clock,
    )
    assert probe.sample().error_ratio == 0.0

    # An outage: questions are queued, not failed, but the calls fail.
    clock.advance(5)
    chat.outcomes["queued"] += 12
    for _ in range(12):
        calls.record("error")
    signals = probe.sample()
    assert signals.error_ratio == 1.0
    assert signals.messages_in_window == 12

    # The breaker's refusals are not in this ratio (the open breaker is a signal of its own):
    # after recovery only the calls count.
    clock.advance(5)
    for _ in range(50):
        calls.reject()
    for _ in range(36):
        calls.record("ok")
    assert probe.sample().error_ratio == 12 / 48

    # A minute later the failures have left the window (sampled every few seconds in the
    # bot; every 30 here).
    clock.advance(30)
    probe.sample()
    clock.advance(31)
    for _ in range(10):
        calls.record("ok")
    assert probe.sample().error_ratio == 0.0

    # Too few calls in the window to judge: 1 failure of 2 calls is not "50 %".
    clock.advance(30)
    calls.record("ok")
    calls.record("error")
    assert probe.sample().error_ratio == 0.0
