"""Fault -> heal and fault end -> revert, measured on the real bot under a real Prometheus and
Alertmanager running the committed configs with their shipped timings: 15 s scrapes and
evaluations, the committed `for:` durations and the heal route's 5 s / 15 s (no `--fast`, no
`--alert-for`).

Two scenarios, each as short as the shipped timings allow (every second is real time). A slow
model: Gemini answers in 2.5 s while the bot's
response-time threshold is 1 s and questions keep coming; the heal trigger
LLMBotHealResponseTime (p95 of the last minute, read through a recording rule of its own group:
an expression no other part of issue 12 changes) fires, Alertmanager posts it to /alerts and the
bot enters reduced mode. Gemini is fast again; the slow replies leave the 1-minute window, the
trigger resolves, Alertmanager sends the resolve and the bot leaves reduced mode.

The limits are those of the issue: fault -> heal action within 120 s, fault end -> revert within
180 s. tests/deploy/test_heal_timing.py computes the worst cases from the same files (110 s and
95 s for this trigger). Measured on a 2-core machine shared with other test runs: 36 to 49 s
from fault to heal and 60 s from the fault's end to the revert (four runs); the test prints
(`pytest -s`) and records (`record_property`) its figures. It takes about 2 minutes.

A failing model (the `error_rate` heal): every Gemini call fails while questions keep coming;
LLMBotHealErrorRate (worst case 110 s by test_heal_timing) fires, the bot degrades to medium and
renews its Gemini client; Gemini recovers and the override is cleared. Measured: 42 to 46 s
from the fault to the heal, 60 s from Gemini's recovery to the revert (three runs); about
2 minutes. The module takes about 4 minutes (one Prometheus + Alertmanager pair for both).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import BotApp
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator
from bot.healing.receiver import HealEvent
from bot.resilience.degradation import DegradationLevel
from tests.deploy.live import LiveStack, Prometheus, Sink, ask, eventually, live_stack
from tests.deploy.test_live_bot import (
    discord,
    gemini,
    http,
    launch,
    make_settings,
    sink,
    start_bot,
    watch,
)

# Real time at the shipped timings: about 2 minutes, up to 6 when the limits are nearly hit.
pytestmark = [pytest.mark.ops, pytest.mark.timeout(480)]

# Fixtures of test_live_bot (and through it of the e2e suite), used here by name.
__all__ = ["discord", "gemini", "http", "launch", "make_settings", "sink", "start_bot"]

FAULT_TO_HEAL_LIMIT_S = 120.0
FAULT_END_TO_REVERT_LIMIT_S = 180.0
SLOW_S = 2.5  # Gemini's answer time during the fault; the threshold below is 1 s
QUESTIONS_PER_ROUND = 2  # asked together, about one round a second: 5 replies a minute suffice


@pytest.fixture(scope="module")
def shipped(
    tmp_path_factory: pytest.TempPathFactory, stack: Any, token_file: Path
) -> Iterator[LiveStack]:
    """Prometheus + Alertmanager with the committed configs, timings included."""
    workdir = tmp_path_factory.mktemp("shipped")
    with live_stack(stack, workdir, token_file, "http://127.0.0.1:9/", intervals={}) as pair:
        yield pair


def _first(app: BotApp, action: str, outcome: str) -> HealEvent | None:
    return next((e for e in app.healer.events if e.action == action and e.outcome == outcome), None)


async def _diagnose(
    prom: Prometheus, http: aiohttp.ClientSession, pair: LiveStack, instance: str, app: BotApp
) -> str:
    """What each hop saw, for a failure message."""
    lines = [f"heal events: {[(e.action, e.outcome, e.detail) for e in app.healer.events]}"]
    for expr in (
        f'llmbot:response_duration_seconds:p95_1m{{instance="{instance}"}}',
        f'llmbot:llm_call_error_ratio:rate1m{{instance="{instance}"}}',
        f'increase(llmbot_response_duration_seconds_count{{instance="{instance}"}}[1m])',
        f'ALERTS{{instance="{instance}"}}',
    ):
        lines.append(f"{expr}: {await prom.query(expr)}")
    async with http.get(f"{pair.alertmanager.url}/api/v2/alerts") as response:
        lines.append(f"alertmanager: {await response.text()}")
    return "\n".join(lines)


async def _steady_traffic(discord: DiscordEmulator, stop: asyncio.Event) -> None:
    """Questions from new users until `stop`: a round of two, then up to a second's pause.
    Every question is new, so none is answered from the response cache."""
    for round_ in itertools.count():
        if stop.is_set():
            return
        await ask(discord, QUESTIONS_PER_ROUND, f"steady-{round_}", concurrency=QUESTIONS_PER_ROUND)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)


async def test_a_slow_model_is_healed_and_reverted_with_the_shipped_timings(
    shipped: LiveStack,
    http: aiohttp.ClientSession,
    launch: Callable[..., Any],
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
    sink: Sink,
    record_property: Callable[[str, object], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    prom = Prometheus(shipped.prometheus.url, http)
    app: BotApp = await launch(health_response_time_threshold_ms=1000)
    stop = asyncio.Event()
    traffic = asyncio.create_task(_steady_traffic(discord, stop))
    try:
        instance = await watch(shipped, prom, app, sink)

        # The fault: every answer takes 2.5 s from now on.
        gemini.latency = SLOW_S
        fault_at = time.time()

        async def applied() -> HealEvent | None:
            return _first(app, "response_time", "ok")

        try:
            heal = await eventually(applied, "the response_time heal runs", 150, 0.25)
        except AssertionError:
            raise AssertionError(await _diagnose(prom, http, shipped, instance, app)) from None
        fault_to_heal_s = heal.time - fault_at
        assert app.pipeline.tuning.max_output_tokens == 512
        assert await prom.firing("LLMBotHealResponseTime", instance)
        # Nobody was paged by the trigger: it is severity info, routed to `null` for people.
        assert not [c for c in sink.calls if "LLMBotHealResponseTime" in str(c["body"])]

        # The fault ends: Gemini answers at once again.
        gemini.latency = 0.0
        fault_end_at = time.time()

        async def reverted() -> HealEvent | None:
            return _first(app, "response_time", "reverted")

        revert = await eventually(reverted, "reduced mode ends", 210, 0.25)
        fault_end_to_revert_s = revert.time - fault_end_at
        assert app.pipeline.tuning.max_output_tokens is None
    finally:
        stop.set()
        await traffic

    with capsys.disabled():
        print(
            f"\nshipped timings, live: fault -> heal {fault_to_heal_s:.0f} s, "
            f"fault end -> revert {fault_end_to_revert_s:.0f} s"
        )
    record_property("fault_to_heal_s", round(fault_to_heal_s, 1))
    record_property("fault_end_to_revert_s", round(fault_end_to_revert_s, 1))
    assert fault_to_heal_s <= FAULT_TO_HEAL_LIMIT_S
    assert fault_end_to_revert_s <= FAULT_END_TO_REVERT_LIMIT_S
    # One application, one revert: the trigger did not flap while the fault lasted.
    assert [e.outcome for e in app.healer.events if e.action == "response_time"].count("ok") == 1


async def test_a_failing_model_is_healed_and_reverted_with_the_shipped_timings(
    shipped: LiveStack,
    http: aiohttp.ClientSession,
    launch: Callable[..., Any],
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
    sink: Sink,
    record_property: Callable[[str, object], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The `error_rate` heal (issue 12's "done when"): every Gemini call fails while questions
    keep coming; LLMBotHealErrorRate (the model-call error ratio of the last minute above
    HEALTH_ERROR_RATE_THRESHOLD, 5 %, with at least 5 calls) fires, the bot degrades to medium
    and renews its Gemini client; Gemini recovers, the failures leave the window, the trigger
    resolves and the override is cleared."""
    prom = Prometheus(shipped.prometheus.url, http)
    app: BotApp = await launch(
        # One call per question and no breaker or own degradation in the way: every question
        # is a model call the ratio counts, and the degradation level is the heal's alone.
        retry_max_attempts=1,
        breaker_failure_threshold=10_000,
        degradation_error_rate_threshold=100,
        degradation_memory_threshold_mb=1_000_000,
        # A failed question is queued, tried once more a second later, then dropped with a
        # notice: the queue never fills whatever the machine's speed.
        queue_max_attempts=1,
        queue_retry_interval_seconds=1,
    )
    stop = asyncio.Event()
    traffic = asyncio.create_task(_steady_traffic(discord, stop))
    try:
        instance = await watch(shipped, prom, app, sink)

        # The fault: every call to Gemini fails from now on.
        gemini.fail_all(503)
        fault_at = time.time()

        async def applied() -> HealEvent | None:
            return _first(app, "error_rate", "ok")

        try:
            heal = await eventually(applied, "the error_rate heal runs", 150, 0.25)
        except AssertionError:
            raise AssertionError(await _diagnose(prom, http, shipped, instance, app)) from None
        fault_to_heal_s = heal.time - fault_at
        assert "Gemini client recreated" in heal.detail
        assert app.degradation.level == DegradationLevel.MEDIUM
        assert await prom.firing("LLMBotHealErrorRate", instance)
        async with http.get(f"{app.ops.url}/status") as response:
            status = await response.json()
        assert status["error_rate"] > 0.05  # /status judges the same calls
        assert not [c for c in sink.calls if "LLMBotHealErrorRate" in str(c["body"])]

        # The fault ends: Gemini answers again.
        gemini.heal()
        fault_end_at = time.time()

        async def reverted() -> HealEvent | None:
            return _first(app, "error_rate", "reverted")

        revert = await eventually(reverted, "the degradation override is cleared", 210, 0.25)
        fault_end_to_revert_s = revert.time - fault_end_at
        assert app.degradation.level == DegradationLevel.NONE
    finally:
        stop.set()
        await traffic

    with capsys.disabled():
        print(
            f"\nshipped timings, live: Gemini failing -> error_rate heal {fault_to_heal_s:.0f} s, "
            f"Gemini back -> revert {fault_end_to_revert_s:.0f} s"
        )
    record_property("error_rate_fault_to_heal_s", round(fault_to_heal_s, 1))
    record_property("error_rate_fault_end_to_revert_s", round(fault_end_to_revert_s, 1))
    assert fault_to_heal_s <= FAULT_TO_HEAL_LIMIT_S
    assert fault_end_to_revert_s <= FAULT_END_TO_REVERT_LIMIT_S
    assert [e.outcome for e in app.healer.events if e.action == "error_rate"].count("ok") == 1
