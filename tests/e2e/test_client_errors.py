"""A request the model refuses (4xx) is that request's fault: the user is told why, the breaker
does not count it, and it is never retried, live or from the queue (issue #16, item 2)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from bot.app import BotApp
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import Fault, GeminiEmulator
from bot.llm.quota import provider_day_window


def _replies_to(discord: DiscordEmulator, message_id: int) -> list[str]:
    return [m.content for m in discord.sent_messages if m.reply_to == message_id]


async def _ask(discord: DiscordEmulator, name: str, text: str) -> int:
    user = discord.create_user(name)
    msg = await discord.send_message(discord.create_dm(user), author=user, content=text)
    return int(msg["id"])


async def test_one_users_bad_requests_do_not_open_the_breaker_for_everyone(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    app: BotApp = await start_bot(breaker_failure_threshold=2, retry_max_attempts=3)
    gemini.queue_fault(Fault.http(400, count=5))

    for i in range(5):
        message_id = await _ask(discord, f"heavy{i}", f"bad request {i}")
        await discord.wait_for(lambda m=message_id: bool(_replies_to(discord, m)))
        (reply,) = _replies_to(discord, message_id)
        assert "refused this request (400)" in reply
        assert "same way won't help" in reply

    assert app.llm.breaker.state == "closed"
    assert len(gemini.requests) == 5  # one call each: a 400 is never retried
    assert app.queue.size == 0

    innocent = await _ask(discord, "innocent", "hello there")
    await discord.wait_for(lambda: bool(_replies_to(discord, innocent)))
    (answer,) = _replies_to(discord, innocent)
    assert answer.startswith("You said: hello there")


@pytest.mark.parametrize("status", [403, 404])
async def test_a_refused_key_or_model_is_reported_as_configuration(
    start_bot: Callable[..., Any],
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    app: BotApp = await start_bot(breaker_failure_threshold=1)
    gemini.queue_fault(Fault.http(status))

    with caplog.at_level(logging.ERROR, logger="bot.chat.pipeline"):
        message_id = await _ask(discord, "someone", "anything")
        await discord.wait_for(lambda: bool(_replies_to(discord, message_id)))

    (reply,) = _replies_to(discord, message_id)
    assert "configuration problem on my side" in reply
    assert "rephras" not in reply
    assert any("GEMINI_API_KEY" in r.getMessage() for r in caplog.records)
    assert app.llm.breaker.state == "closed"


async def test_a_queued_question_the_model_refuses_is_answered_once_and_not_retried(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    app: BotApp = await start_bot(retry_max_attempts=1, queue_retry_interval_seconds=0.2)
    gemini.fail_all(503)
    message_id = await _ask(discord, "patient", "queued then refused")
    await discord.wait_for(lambda: bool(_replies_to(discord, message_id)))
    assert "queued" in _replies_to(discord, message_id)[0]
    calls_before = len(gemini.requests)

    gemini.heal()
    gemini.queue_fault(Fault.http(400))
    app.queue.wake()
    await discord.wait_for(lambda: len(_replies_to(discord, message_id)) == 2, timeout=20)
    await discord.wait_for(lambda: app.queue.size == 0)

    assert "refused this request (400)" in _replies_to(discord, message_id)[1]
    assert len(gemini.requests) == calls_before + 1
    app.queue.wake()  # nothing left to retry: no new call, no second notice
    await app.queue_worker.run_once()
    assert len(gemini.requests) == calls_before + 1
    assert len(_replies_to(discord, message_id)) == 2


async def test_an_hour_long_provider_hold_is_not_promised_as_a_queued_minute(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    """A 429 with retryDelay 3600 s (issue #16 item 4): honest "daily" wording, no queueing a
    question the queue would expire long before, and the hold survives a restart."""
    first: BotApp = await start_bot(queue_max_age_seconds=300)
    gemini.queue_fault(Fault.rate_limited(retry_delay_s=3600))

    message_id = await _ask(discord, "late", "hour-long hold")
    await discord.wait_for(lambda: bool(_replies_to(discord, message_id)))

    # An hour, or less when the provider's day ends sooner (the bot reads the real clock).
    now = time.time()
    hold_s = min(3600.0, provider_day_window(now)[1] - now)
    (reply,) = _replies_to(discord, message_id)
    assert "daily request limit" in reply
    promised = re.search(r"about (\d+) (second|minute)s?", reply)
    assert promised is not None
    unit_s = 60 if promised.group(2) == "minute" else 1
    assert abs(int(promised.group(1)) * unit_s - hold_s) <= 60  # "about 60 minutes" at most
    assert "queued" not in reply
    assert first.queue.size == 0
    await first.stop()

    second: BotApp = await start_bot(queue_max_age_seconds=300)
    refused = second.llm.quota.try_acquire()
    assert (refused.allowed, refused.window) == (False, "day")
    assert refused.retry_after_s > hold_s - 600  # the restart took far less than ten minutes


async def test_a_provider_failure_before_the_refusal_still_counts_once(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    app: BotApp = await start_bot(breaker_failure_threshold=1, retry_max_attempts=2)
    gemini.queue_fault(Fault.http(503))
    gemini.queue_fault(Fault.http(400))

    message_id = await _ask(discord, "unlucky", "503 then 400")
    await discord.wait_for(lambda: bool(_replies_to(discord, message_id)))

    assert "refused this request (400)" in _replies_to(discord, message_id)[0]
    assert app.llm.breaker.state == "open"  # the 503 was the provider's
