"""Gemini misbehaves; the user always gets a reply (an answer or a clear notice), never silence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import Fault, GeminiEmulator


async def _ask(discord: DiscordEmulator, text: str = "question") -> str:
    user = discord.create_user("erin")
    dm = discord.create_dm(user)
    msg = await discord.send_message(dm, author=user, content=text)
    reply = await discord.wait_for_reply(int(msg["id"]), timeout=20)
    return reply.content


async def test_server_error_then_success_is_retried_and_answered(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    await start_bot()
    gemini.queue_fault(Fault.http(500))
    gemini.queue_fault(Fault.http(503))
    gemini.queue_answer("third time lucky")

    assert await _ask(discord) == "third time lucky"
    assert len(gemini.requests) == 3


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (lambda: Fault.http(500, count=10), "couldn't get an answer"),
        (Fault.hang, "couldn't get an answer"),
        (Fault.safety_block, "declined to respond"),
        (Fault.finish_safety, "declined to respond"),
        (Fault.empty, "declined to respond"),
        (lambda: Fault.broken_stream(), "couldn't get an answer"),
    ],
)
async def test_failures_end_in_a_clear_reply(
    start_bot: Callable[..., Any],
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
    fault: Callable[[], Fault],
    expected: str,
) -> None:
    await start_bot(retry_max_attempts=2, gemini_timeout_seconds=0.5)
    gemini.queue_fault(fault())
    gemini.queue_fault(fault())

    assert expected in await _ask(discord)


async def test_provider_rate_limit_stops_calls_and_tells_the_user(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    app = await start_bot()
    gemini.queue_fault(Fault.rate_limited(retry_delay_s=30))

    text = await _ask(discord)

    # A provider that said stop is not asked again this window: the user hears when to retry.
    assert "limit" in text and "again in about" in text
    assert len(gemini.requests) == 1
    assert app.llm.quota.snapshot().blocked_until is not None
