"""The real bot under a real Prometheus and Alertmanager: dashboards and rules against live data,
an alert reaching people, and the heal loop Prometheus -> Alertmanager -> /alerts -> action ->
recovery -> revert.

One Prometheus + Alertmanager pair serves the module (committed rules and routes, 1 s timings,
every `for:` at 0 s); each test starts its own bot in-process with the settings it needs, on its
own port, and re-points the pair at it (config reload). Each bot is a new `instance`, so the
5-minute windows of the rules start empty for every test. Assertions are on metrics, alerts,
notifications and what users received; waits poll with generous timeouts, never sleep.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import BotApp
from bot.chat.pipeline import DROPPED_TEXT
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator
from bot.emulator.gemini.faults import Fault
from bot.emulator.traffic import Traffic
from bot.resilience.degradation import DegradationLevel
from tests.deploy.live import (
    JSON,
    LiveStack,
    Prometheus,
    Sink,
    ask,
    eventually,
    finite,
    live_stack,
    scrape,
    start_sink,
)
from tests.deploy.support import (
    BUILTIN_SERIES,
    dashboard_exprs,
    metric_names,
    recordings,
    rules,
)
from tests.e2e.conftest import discord, gemini, make_settings, start_bot
from tests.redis_server import RedisServer

pytestmark = pytest.mark.ops

# Re-exported fixtures of the e2e suite (the bot against the Discord and Gemini emulators).
__all__ = ["discord", "gemini", "make_settings", "start_bot"]

JOB = "discord-llm-bot"


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, stack: Any, token_file: Path
) -> Iterator[LiveStack]:
    with live_stack(stack, tmp_path_factory.mktemp("live"), token_file, "http://127.0.0.1:9/") as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


@pytest.fixture
def prom(live: LiveStack, http: aiohttp.ClientSession) -> Prometheus:
    return Prometheus(live.prometheus.url, http)


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    recorded, runner = await start_sink()
    yield recorded
    await runner.cleanup()


@pytest.fixture
def launch(start_bot: Callable[..., Any], stack: Any, token_file: Path) -> Callable[..., Any]:
    """`await launch(**settings)`: a bot on a fresh loopback port that accepts the stack's
    webhook token and heals alerts labelled with its own instance."""

    token = token_file.read_text(encoding="utf-8").strip()

    async def start(**settings: Any) -> BotApp:
        port = stack.free_port()
        app: BotApp = await start_bot(
            ops_port=port,
            heal_instance=f"127.0.0.1:{port}",
            alert_webhook_token=token,
            **settings,
        )
        assert app.ops.port == port
        return app

    return start


async def watch(live: LiveStack, prom: Prometheus, app: BotApp, sink: Sink) -> str:
    """Point the stack at `app` and wait for the first successful scrape; its instance label."""
    instance = app.healer.instance
    await live.point_at(instance, sink.url)

    async def scraped() -> float | None:
        up = await prom.value(f'up{{job="{JOB}", instance="{instance}"}}')
        return up if up == 1 else None

    await eventually(scraped, f"Prometheus scrapes {instance}", within_s=30)
    return instance


async def heal_count(http: aiohttp.ClientSession, app: BotApp, action: str, outcome: str) -> float:
    metrics = await scrape(http, app.ops.url)
    return metrics.get("llmbot_heal_actions_total", action=action, outcome=outcome)


async def until_heal(
    http: aiohttp.ClientSession,
    app: BotApp,
    action: str,
    outcome: str,
    *,
    at_least: float = 1,
    within_s: float = 45,
) -> float:
    """Wait until the bot's /metrics counts the heal outcome (the action ran)."""

    async def counted() -> float | None:
        value = await heal_count(http, app, action, outcome)
        return value if value >= at_least else None

    return await eventually(
        counted, f'llmbot_heal_actions_total{{action="{action}", outcome="{outcome}"}}', within_s
    )


async def until_firing(prom: Prometheus, alertname: str, instance: str) -> None:
    """Wait until Prometheus fires `alertname` for `instance`: an alert for people is in
    another rule group than the heal trigger that made the bot act, so it may come a few
    evaluations later."""

    async def firing() -> bool | None:
        return True if await prom.firing(alertname, instance) else None

    await eventually(firing, f"{alertname} fires for {instance}")


# --- (a) dashboards and rules against a scraped, busy bot ---------------------------------------

# Rule groups evaluated every 5 minutes (the 30-day SLO windows): Prometheus starts them at a
# hash-chosen offset within the interval, so within a test their series may not exist yet. Their
# panels are checked through the recording rule's own expression instead.
SLOW_GROUP_RECORDS = frozenset(
    rule.name for rule in recordings() if rule.group == "llmbot-slo-period.rules"
)
# Panels whose value is NaN rather than a number when nothing happened in the window, and
# nothing in this test makes happen: the recovery rate is 0/0 until a heal streak ends (the
# memory alert here keeps firing); the failing-model test below sees a streak recover.
# The budget refusals' usage quantiles are NaN until someone is refused for a token budget
# (none is set here; tests/e2e/test_fair_use.py refuses and reads the histogram).
MAY_BE_NAN: frozenset[str] = frozenset({"Heal recovery rate", "Refused users' usage today"})


def _expanded(expr: str) -> str:
    """The expression with slow-group recording rules replaced by their own expressions.

    Only the all-matching selectors the variables expand to (`job=~".*"`) may follow the name:
    they select every series of the rule's result as well.
    """
    for rule in recordings():
        if rule.name not in SLOW_GROUP_RECORDS:
            continue
        pattern = re.compile(re.escape(rule.name) + r"(\{[^{}]*\})?")
        for match in pattern.finditer(expr):
            matchers = match.group(1) or "{}"
            assert set(re.findall(r'=~"([^"]*)"', matchers)) <= {".*"}, matchers
            assert "=" not in re.sub(r'=~"\.\*"', "", matchers), matchers
        replacement = f"({rule.expr.strip()})"
        expr = pattern.sub(lambda _match, text=replacement: text, expr)
    return expr


async def test_dashboards_and_rules_against_a_busy_bot(
    live: LiveStack,
    prom: Prometheus,
    http: aiohttp.ClientSession,
    launch: Callable[..., Any],
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
    sink: Sink,
    redis_server: RedisServer,
) -> None:
    # A memory threshold below any real RSS makes LLMBotHighMemory fire and the memory heal run:
    # the "Firing alerts" and "Last successful healing" panels need both.
    # Streamed answers (GEMINI_STREAM): the time-to-first-chunk panel has data only for them.
    app = await launch(
        health_memory_threshold_mb=1,
        queue_retry_interval_seconds=1,
        retry_max_attempts=1,
        gemini_stream=True,
        # A one-process fleet: the Fleet row's Redis panels need a bot that talks to Redis.
        redis_url=redis_server.url,
    )
    instance = await watch(live, prom, app, sink)

    # Demo-like traffic: mentions, DMs, replies, images, /chat and threads in two guilds.
    traffic = Traffic(discord, users=6, guilds=2, rate=10, think_time_s=0.2, seed=7)
    await traffic.run(turns=30)
    assert sum(turn.answer is not None for turn in traffic.turns) >= 20
    # A Gemini 500: the question is queued and answered by the queue worker a second later
    # (queue wait, LLM outcome panels). A Gemini 429 would also do, but the bot then holds
    # every call until the minute window ends (QuotaLimiter.on_provider_rate_limited).
    gemini.queue_fault(Fault.http(500))
    ((channel, notice),) = await ask(discord, 1, "retried")
    assert "queued" in notice
    await eventually(
        lambda: _answered_later(discord, channel), "the queued question is answered", 30
    )
    # ... and a Discord 429 on a reply, which hikari waits out and retries (REST 429 panel).
    discord.inject_rest_fault(429, count=1, route_contains="/messages", retry_after=0.2)
    await ask(discord, 3, "discord429")
    await until_heal(http, app, "memory", "ok")

    # Every metric a dashboard or rule selects exists in the bot's own /metrics.
    exposed = (await scrape(http, app.ops.url)).names
    recorded = {rule.name for rule in recordings()}
    selected = {name for _, _, expr in dashboard_exprs() for name in metric_names(expr)}
    selected |= {name for rule in rules() for name in metric_names(rule.expr)}
    missing = sorted(selected - recorded - BUILTIN_SERIES - exposed)
    assert not missing, f"selected by dashboards/rules but not in /metrics: {missing}"

    # Every dashboard query returns data (a number, not only NaN) from the live Prometheus.
    async def empty_panels() -> list[str]:
        problems = []
        for board, title, expr in dashboard_exprs():
            result = await prom.query(_expanded(expr))
            if not result:
                problems.append(f"{board} / {title}: no series\n    {expr}")
            elif title not in MAY_BE_NAN and not finite(result):
                problems.append(f"{board} / {title}: only NaN\n    {expr}")
        return problems

    async def all_have_data() -> bool | None:
        return True if not await empty_panels() else None

    try:
        await eventually(all_have_data, "every dashboard query returns data", within_s=30)
    except AssertionError:
        raise AssertionError("\n".join(await empty_panels())) from None

    # The 5-minute groups' panels, as Grafana sends them, and every rule's expression are
    # accepted while the bot's series exist (prom.query fails the test on an error).
    for _, _, expr in dashboard_exprs():
        await prom.query(expr)
    for rule in rules():
        await prom.query(rule.expr)

    # Every rule has been evaluated against these series without a runtime error (matching
    # errors only show with real label sets), and the rules of the 1 s groups all ran.
    evaluated = await prom.rules()
    errors = [f"{r['name']}: {r.get('lastError')}" for r in evaluated if r["health"] == "err"]
    assert not errors, "\n".join(errors)
    assert {rule.name for rule in rules()} <= {rule["name"] for rule in evaluated}
    await until_firing(prom, "LLMBotHighMemory", instance)


async def _answered_later(discord: DiscordEmulator, channel: int) -> bool | None:
    return True if len(discord.messages_in(channel)) >= 2 else None


# --- (c) heal loops, and (b) an alert reaching people -------------------------------------------


async def test_memory_alert_runs_the_memory_heal_once(
    live: LiveStack,
    prom: Prometheus,
    http: aiohttp.ClientSession,
    launch: Callable[..., Any],
    discord: DiscordEmulator,
    sink: Sink,
) -> None:
    app = await launch(health_memory_threshold_mb=1)
    (reply,) = await ask(discord, 1, "cache-me")
    assert reply[1].startswith("You said")
    assert app.llm.cache.stats.entries == 1

    instance = await watch(live, prom, app, sink)

    await until_heal(http, app, "memory", "ok")
    await until_firing(prom, "LLMBotHighMemory", instance)
    (event,) = [e for e in app.healer.events if e.action == "memory" and e.outcome == "ok"]
    figures = dict(
        part.split("=") for part in event.detail.split("; ")[-1].split(", ") if "=" in part
    )
    assert set(figures) >= {"bytes_freed", "rss_before_bytes", "rss_after_bytes"}
    assert float(figures["rss_before_bytes"]) > 0
    assert float(figures["cache_entries_cleared"]) == 1
    assert app.llm.cache.stats.entries == 0

    # Alertmanager repeats the still-firing alert (5 s here): the bot knows it and does not
    # run the action again.
    await until_heal(http, app, "memory", "duplicate", within_s=30)
    assert await heal_count(http, app, "memory", "ok") == 1

    async def last_success() -> float | None:
        value = await prom.value(
            f'llmbot_heal_last_success_timestamp_seconds{{instance="{instance}", action="memory"}}'
        )
        return value if value else None

    assert await eventually(last_success, "Prometheus sees the memory heal's timestamp") > 0


async def test_slow_replies_enter_reduced_mode_until_latency_recovers(
    live: LiveStack,
    prom: Prometheus,
    http: aiohttp.ClientSession,
    launch: Callable[..., Any],
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
    sink: Sink,
) -> None:
    # 1 s is a bucket bound of llmbot_response_duration_seconds: fast replies (< 0.5 s here)
    # and slow ones (2.5 s) fall in buckets on either side, so p95 crosses it unambiguously.
    app = await launch(health_response_time_threshold_ms=1000)
    instance = await watch(live, prom, app, sink)

    gemini.latency = 2.5
    slow = await ask(discord, 6, "slow", concurrency=6)
    assert all(reply.startswith("You said") for _, reply in slow)

    await until_heal(http, app, "response_time", "ok")
    assert await prom.firing("LLMBotHealResponseTime", instance)

    # The alert for people (its own rule group, a recording rule of another) follows.
    await until_firing(prom, "LLMBotSlowResponses", instance)
    assert app.pipeline.tuning.max_output_tokens == 512
    assert app.pipeline.tuning.history_messages == 10

    # Gemini is fast again; the questions asked in reduced mode ask for shorter answers.
    gemini.latency = 0.0
    before = len(gemini.requests)
    fast = await ask(discord, 20, "fast")
    assert all(reply.startswith("You said") for _, reply in fast)
    reduced = gemini.requests[before:]
    assert len(reduced) == 20
    assert {r.generation_config.get("maxOutputTokens") for r in reduced} == {512}

    # More fast replies push p95 of the 1-minute window under 1 s: the heal trigger resolves,
    # Alertmanager sends the resolve, the bot leaves reduced mode; the alert for people,
    # over 5 minutes, resolves when the 5-minute p95 is under 1 s too.
    async def recovered() -> bool | None:
        reverted = await heal_count(http, app, "response_time", "reverted") >= 1
        if reverted and not await prom.firing("LLMBotSlowResponses", instance):
            return True
        await ask(discord, 20, "more")
        return None

    await eventually(recovered, "the slow-reply alerts resolve and reduced mode ends", 90, 0.1)
    assert not await prom.firing("LLMBotSlowResponses", instance)
    p95 = await prom.value(f'llmbot:response_duration_seconds:p95_5m{{instance="{instance}"}}')
    assert p95 is not None and p95 < 1.0
    assert app.pipeline.tuning.max_output_tokens is None
    assert app.pipeline.tuning.history_messages is None
    assert await heal_count(http, app, "response_time", "ok") == 1
    assert await heal_count(http, app, "response_time", "failed") == 0

    before = len(gemini.requests)
    await ask(discord, 1, "normal")
    assert "maxOutputTokens" not in gemini.requests[before].generation_config


def _is_error_ratio(body: JSON, instance: str, status: str) -> bool:
    return (
        body.get("receiver") == "chat"
        and body.get("status") == status
        and body.get("groupLabels") == {"alertname": "LLMBotHighErrorRatio", "instance": instance}
    )


async def test_failing_model_alerts_people_and_degrades_until_it_recovers(
    live: LiveStack,
    prom: Prometheus,
    http: aiohttp.ClientSession,
    launch: Callable[..., Any],
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
    sink: Sink,
) -> None:
    app = await launch(
        # The alert fires above 25 % failed Gemini calls (exported as
        # llmbot_alert_threshold_error_ratio, which the rule compares with).
        health_error_rate_threshold=25,
        # Failed questions are queued once and dropped with a notice after one more try.
        queue_max_attempts=1,
        queue_retry_interval_seconds=1,
        retry_max_attempts=1,
        # Keep the bot's own degradation and the breaker out of the way: the level below is
        # the heal's override alone (the breaker's refusals are tested in tests/e2e).
        breaker_failure_threshold=10_000,
        degradation_error_rate_threshold=100,
        degradation_memory_threshold_mb=1_000_000,
    )
    instance = await watch(live, prom, app, sink)

    # Every Gemini call fails while questions keep coming.
    gemini.error_rate = 1.0
    failing = await ask(discord, 12, "failing")
    assert all("queued" in reply for _, reply in failing)

    async def all_told() -> bool | None:
        told = [
            m.content
            for channel, _ in failing
            for m in discord.messages_in(channel)
            if m.content == DROPPED_TEXT["failed"]
        ]
        return True if len(told) == len(failing) else None

    await eventually(all_told, "every user is told their question failed", 30)

    # The model-call error ratio sees the outage (every call failed: 12 questions, 12 retries
    # from the queue), in Prometheus and in /status, the same definition.
    async def call_ratio(expected: Callable[[float], bool]) -> float | None:
        value = await prom.value(f'llmbot:llm_call_error_ratio:rate2m{{instance="{instance}"}}')
        return value if value is not None and expected(value) else None

    assert await eventually(lambda: call_ratio(lambda v: v > 0.99), "the call ratio is 100 %") == 1
    async with http.get(f"{app.ops.url}/status") as response:
        status = await response.json()
    assert status["model_calls"] == status["model_calls_failed"] == 24
    assert status["error_rate"] == 1.0
    # The same traffic as replies: the queued notices are not failures, only the drop notices
    # are (one more try each, queue_max_attempts=1); with questions waiting longer none would
    # be, which is why the message failure ratio cannot be the error_rate heal's signal.
    assert status["messages_failed"] == 12 and status["messages_total"] == 24

    # (b) The humans' route: the chat receiver gets the warning, grouped by alert and instance.
    call = await sink.wait_for(
        lambda body: _is_error_ratio(body, instance, "firing"), "the chat notification"
    )
    body = call["body"]
    assert call["path"] == "/humans"
    assert "Authorization" not in call["headers"]  # the bearer token is the bot's alone
    assert body["version"] == "4"
    assert body["groupKey"] == (
        f'{{}}/{{severity="warning"}}:{{alertname="LLMBotHighErrorRatio", instance="{instance}"}}'
    )
    # No heal label (LLMBotHealErrorRate is the bot's trigger), and the link bases
    # (prometheus.yml's external labels) are not among the alert's labels.
    assert body["commonLabels"] == {
        "alertname": "LLMBotHighErrorRatio",
        "instance": instance,
        "job": JOB,
        "severity": "warning",
    }
    (alert,) = body["alerts"]
    assert alert["status"] == "firing"
    assert alert["annotations"]["summary"] == "Too many Gemini calls fail."
    assert alert["annotations"]["runbook_url"] == (
        f"{live.stack.DEFAULT_RUNBOOK_BASE_URL}#llmbothigherrorratio"
    )
    assert alert["annotations"]["dashboard_url"].startswith(
        f"{live.stack.DEFAULT_DASHBOARD_BASE_URL}/d/llmbot-overview?"
    )
    assert instance in alert["annotations"]["description"]

    # (c) The bot's route: the error-rate heal degrades to medium and renews the Gemini client.
    await until_heal(http, app, "error_rate", "ok")
    (event,) = [e for e in app.healer.events if e.action == "error_rate" and e.outcome == "ok"]
    assert "Gemini client recreated" in event.detail
    assert "heal:error_rate" in app.degradation.overrides

    async def level(expected: Callable[[float], bool]) -> float | None:
        value = await prom.value(f'llmbot_degradation_level{{instance="{instance}"}}')
        return value if value is not None and expected(value) else None

    degraded = await eventually(lambda: level(lambda v: v >= 2), "Prometheus sees level >= 2")
    assert degraded == DegradationLevel.MEDIUM

    # The model recovers; answered questions bring the 1-minute call ratio (the heal trigger)
    # and the 2-minute one (the alert for people) under 25 %. Each round asks new questions:
    # a cached answer is no model call.
    gemini.heal()
    rounds = itertools.count()

    async def recovered() -> bool | None:
        reverted = await heal_count(http, app, "error_rate", "reverted") >= 1
        if reverted and not await prom.firing("LLMBotHighErrorRatio", instance):
            return True
        answered = await ask(discord, 10, f"recovered{next(rounds)}")
        assert all(reply.startswith("You said") for _, reply in answered)
        return None

    await eventually(recovered, "the error-ratio alert resolves and the override ends", 90, 0.1)
    assert "heal:error_rate" not in app.degradation.overrides
    assert app.degradation.level == DegradationLevel.NONE
    assert await eventually(lambda: level(lambda v: v == 0), "Prometheus sees level 0") == 0
    assert not await prom.firing("LLMBotHighErrorRatio", instance)
    resolved = await sink.wait_for(
        lambda body: _is_error_ratio(body, instance, "resolved"), "the resolved notification"
    )
    assert resolved["body"]["alerts"][0]["status"] == "resolved"
    assert await call_ratio(lambda v: v < 0.25) is not None
    # The heal streak ended with its alert resolved: the recovery rate's numerator.
    metrics = await scrape(http, app.ops.url)
    assert metrics.get("llmbot_heal_streaks_total", action="error_rate", result="recovered") == 1
