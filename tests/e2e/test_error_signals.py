"""The error signals against the emulators: a Gemini outage shows in the model-call error ratio
(/status and /metrics alike) although its questions are queued rather than failed, and a store
that refuses writes is counted as a store error."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import aiohttp

from bot.app import BotApp
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator
from bot.resilience.degradation import DegradationLevel
from tests.e2e.test_observability import parse_samples, scrape, value


async def _ask(discord: DiscordEmulator, text: str) -> str:
    """One question in a new DM, waiting for its first reply."""
    user = discord.create_user(text.replace(" ", "-"))
    dm = discord.create_dm(user)
    message = await discord.send_message(dm, author=user, content=text)
    reply = await discord.wait_for_reply(int(message["id"]), timeout=30)
    return reply.content


async def _status(app: BotApp) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{app.ops.url}/status") as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


async def test_a_gemini_outage_shows_in_the_model_call_ratio_though_no_message_fails(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    # The error ratio stays above 10 % for a while after the outage (the window still holds the
    # failed calls): a monitor tick in the middle of the answers below would queue them. This test
    # is about the ratio, not about degradation by it, which tests/resilience covers.
    app: BotApp = await start_bot(
        retry_max_attempts=2,
        breaker_failure_threshold=3,
        queue_retry_interval_seconds=2,
        degradation_error_rate_threshold=100.0,
    )
    assert (await _status(app))["error_rate"] == 0.0

    # Every Gemini call fails; questions keep coming, one after the other.
    gemini.error_rate = 1.0
    replies = [await _ask(discord, f"outage question {n}") for n in range(5)]
    assert all("queued" in reply for reply in replies)
    # Three questions made two failed calls each and opened the breaker.
    assert app.llm.breaker.state == "open"
    # The breaker refuses each question once: the last two at once, or (when the open breaker
    # has already raised the degradation level, which queues without asking) when the queue
    # worker retries them, as it retries the first three. Each refused question then waits
    # for the breaker's reset timeout (60 s).
    await discord.wait_for(lambda: app.llm.stats.circuit_rejections >= 5, timeout=15)

    status = await _status(app)
    made = len(gemini.requests)  # 6, unless the worker retried a question before the breaker
    assert made >= 6  # opened (a slow machine)
    assert (status["model_calls"], status["model_calls_failed"]) == (made + 5, made + 5)
    assert status["error_rate"] == 1.0
    # Judged by messages, nothing failed: every question was queued (the old blind spot).
    assert status["messages_failed"] == 0
    assert status["messages_total"] == 5

    # /metrics carries the same counts: the recording rule's formula gives the same ratio.
    samples = parse_samples(await scrape(app.ops.url))
    model = app.settings.gemini_model

    def calls(outcome: str) -> float:
        return value(
            samples, "llmbot_llm_request_duration_seconds_count", model=model, outcome=outcome
        )

    refused = value(samples, "llmbot_llm_circuit_rejections_total")
    assert refused == 5
    exported = sum(calls(outcome) for outcome in ("ok", "error", "timeout", "rate_limited"))
    assert exported == made
    failed = calls("error") + calls("timeout")
    assert (failed + refused) / (exported + refused) == status["error_rate"]
    assert value(samples, "llmbot_messages_total", outcome="queued") == 5
    assert value(samples, "llmbot_messages_total", outcome="failed") == 0

    # Gemini is back and the breaker closed: once the bot's own level is down again, answered
    # calls bring the ratio down.
    gemini.heal()
    app.llm.breaker.reset()
    await discord.wait_for(lambda: app.degradation.level == DegradationLevel.NONE, timeout=10)
    answered = [await _ask(discord, f"after question {n}") for n in range(made + 5)]
    assert all(reply.startswith("You said") for reply in answered)
    status = await _status(app)
    assert (status["model_calls"], status["model_calls_failed"]) == (2 * (made + 5), made + 5)
    assert status["error_rate"] == 0.5


async def test_a_store_that_refuses_writes_counts_store_errors(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    app: BotApp = await start_bot(retry_max_attempts=1)
    before = parse_samples(await scrape(app.ops.url))
    assert value(before, "llmbot_errors_total", component="store") == 0

    # The queue's writes fail in the real SQLite file (as a full or read-only disk would).
    with sqlite3.connect(app.settings.data_dir / "bot.db", isolation_level=None) as db:
        db.execute(
            "CREATE TRIGGER refuse_queue BEFORE INSERT ON kv WHEN NEW.key LIKE 'queue:%' "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
    gemini.error_rate = 1.0
    reply = await _ask(discord, "store question")
    # The question is not queued (issue 16 item 9: a promise only for what is stored), the user
    # is told at once; the failed write is counted twice over: by the store's own operation
    # counter and as an error of the message path.
    assert "queued" not in reply and "couldn't save your question" in reply
    after = parse_samples(await scrape(app.ops.url))
    assert value(after, "llmbot_errors_total", component="store") == 1
    operations = value(
        after, "llmbot_store_operations_total", store="queue", op="save", outcome="error"
    )
    assert operations == 1
    assert app.queue.size == 0
