"""What each degradation level changes, seen in what reaches the Gemini emulator and the user.

The table is in bot/resilience/degradation.py and docs/runbooks.md ("Degradation levels"):
none changes nothing, low refuses videos, medium also sends shorter requests (10 history
messages, 512 output tokens), high also makes no call for a new question (queued).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from bot.app import BotApp
from bot.chat.files import VIDEO_DEGRADED_TEXT
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator
from bot.healing.testing import sample_alert, sample_body
from bot.resilience.degradation import DegradationLevel

TOKEN = "levels-token-0123456789"
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 256
HISTORY_TURNS = 8  # questions before the one judged: 16 history messages


async def _conversation(
    discord: DiscordEmulator, name: str, turns: int
) -> tuple[int, dict[str, Any]]:
    """A DM with `turns` questions answered: (channel, user)."""
    user = discord.create_user(name)
    dm = discord.create_dm(user)
    for i in range(turns):
        msg = await discord.send_message(dm, author=user, content=f"turn {i}")
        await discord.wait_for_reply(int(msg["id"]))
    return dm, user


async def _ask(
    discord: DiscordEmulator, dm: int, user: dict[str, Any], text: str, **kwargs: Any
) -> str:
    msg = await discord.send_message(dm, author=user, content=text, **kwargs)
    return (await discord.wait_for_reply(int(msg["id"]))).content


@pytest.mark.parametrize("level", list(DegradationLevel))
async def test_each_level_changes_what_is_asked_of_the_model(
    level: DegradationLevel,
    start_bot: Callable[..., Any],
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
) -> None:
    app: BotApp = await start_bot()
    dm, user = await _conversation(discord, f"user-{level.label}", HISTORY_TURNS)
    if level != DegradationLevel.NONE:
        app.degradation.set_override("test", level, f"test at {level.label}")
    assert app.degradation.level == level

    before = len(gemini.requests)
    reply = await _ask(discord, dm, user, "and now?")
    video = discord.add_attachment(MP4, "clip.mp4", "video/mp4")
    video_reply = await _ask(discord, dm, user, "what happens here?", attachments=[video])
    sent = gemini.requests[before:]

    if level == DegradationLevel.HIGH:
        # No call now: the question waits in the queue (the worker answers it later).
        assert "queued" in reply
        assert not [r for r in sent if r.last_user_text.endswith("and now?")]
    else:
        (request, *_) = sent
        assert reply.startswith("You said")
        history = len(request.contents) - 1
        if level == DegradationLevel.MEDIUM:
            assert history <= 10
            assert request.generation_config.get("maxOutputTokens") == 512
        else:
            assert history == 2 * HISTORY_TURNS
            assert "maxOutputTokens" not in request.generation_config

    if level == DegradationLevel.NONE:
        assert video_reply.startswith("You said")
        assert gemini.requests[-1].inline_data == [("video/mp4", MP4)]
    else:
        assert video_reply == VIDEO_DEGRADED_TEXT
        assert not any(r.inline_data for r in gemini.requests[before:])


async def test_the_error_rate_heal_puts_the_bot_at_medium_with_shorter_requests(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    # The real path to MEDIUM: Alertmanager's error_rate alert on the webhook.
    app: BotApp = await start_bot(alert_webhook_token=TOKEN)
    dm, user = await _conversation(discord, "healed", HISTORY_TURNS)

    alert = sample_alert(heal="error_rate", instance=app.healer.instance)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{app.ops.url}/alerts",
            data=sample_body(alert),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status == 202
    await app.healer.join()
    assert app.degradation.level == DegradationLevel.MEDIUM

    assert (await _ask(discord, dm, user, "shorter?")).startswith("You said")
    request = gemini.requests[-1]
    assert len(request.contents) - 1 <= 10
    assert request.generation_config.get("maxOutputTokens") == 512
    video = discord.add_attachment(MP4, "clip.mp4", "video/mp4")
    assert await _ask(discord, dm, user, "video?", attachments=[video]) == VIDEO_DEGRADED_TEXT


async def test_the_level_is_back_to_none_within_a_minute_of_the_model_recovering(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    # Every model call fails (no breaker here: its threshold is out of reach), so questions
    # are queued and then fail for good: the failed share of the window puts the bot at high.
    # Once Gemini answers again, the failures must leave the bot's 30-second window and the
    # level follow within 60 s (at most 30 s + one 5-second assessment).
    app: BotApp = await start_bot(
        retry_max_attempts=1,
        breaker_failure_threshold=10_000,
        queue_retry_interval_seconds=1,
        queue_max_attempts=1,
    )
    # The outage starts after the bot's first assessment, as in a bot that has run for a while.
    await discord.wait_for(
        lambda: app.degradation.stats.assessments_total >= 1, 15, "the first assessment"
    )
    gemini.error_rate = 1.0
    failing = await asyncio.gather(*(_conversation(discord, f"outage-{i}", 0) for i in range(12)))
    for dm, user in failing:
        assert "queued" in await _ask(discord, dm, user, "during the outage")
    await discord.wait_for(
        lambda: app.pipeline.stats.outcomes["failed"] >= 12, 30, "the queued questions fail"
    )
    await discord.wait_for(
        lambda: app.degradation.level == DegradationLevel.HIGH, 15, "the level is high"
    )
    assert "error ratio" in app.degradation.reason

    gemini.heal()
    healthy_at = time.monotonic()
    await discord.wait_for(
        lambda: app.degradation.level == DegradationLevel.NONE, 60, "the level is none again"
    )
    took = time.monotonic() - healthy_at

    assert took <= 60
    dm, user = failing[0]
    assert (await _ask(discord, dm, user, "all good?")).startswith("You said")
