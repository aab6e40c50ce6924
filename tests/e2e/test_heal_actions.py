"""Each heal action on a running bot: what it changes, what it reports, and its undo."""

from __future__ import annotations

import json
from typing import Any

from bot.app import BotApp
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator
from bot.healing.payload import Alert
from bot.healing.remedies import build_remedies
from bot.healing.testing import sample_alert
from bot.resilience.degradation import DegradationLevel


def _alert(heal: str, *, fingerprint: str = "f1", **labels: str) -> Alert:
    raw: dict[str, Any] = sample_alert(heal=heal, fingerprint=fingerprint)
    raw["labels"].update(labels)
    return Alert.model_validate_json(json.dumps(raw))


def _action(app: BotApp, name: str) -> Any:
    return next(a for a in build_remedies(app.controls) if a.name == name)


async def _chat(discord: DiscordEmulator, user: dict[str, Any], text: str) -> str:
    dm = discord.create_dm(user)
    msg = await discord.send_message(dm, author=user, content=text)
    return (await discord.wait_for_reply(int(msg["id"]))).content


async def test_memory_action_frees_the_cache_and_reports_rss(
    bot: BotApp, discord: DiscordEmulator
) -> None:
    await _chat(discord, discord.create_user("a"), "fill the cache")
    assert bot.llm.cache.stats.entries == 1
    held = bot.llm.cache.stats.bytes
    assert held > 0

    result = await _action(bot, "memory").apply(_alert("memory"))

    assert result.ok
    assert bot.llm.cache.stats.entries == 0
    assert result.figures["rss_before_bytes"] > 0
    assert result.figures["rss_after_bytes"] > 0
    # What the cache held, by its own accounting (the conversation is not idle yet): honest
    # and never negative, whatever RSS did meanwhile.
    assert result.figures["cache_bytes_freed"] == held
    assert result.figures["conversation_bytes_freed"] == 0
    assert result.figures["bytes_freed"] == held


async def test_response_time_reduced_mode_until_the_last_alert_resolves(
    bot: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    user = discord.create_user("b")
    for i in range(8):
        await _chat(discord, user, f"turn {i}")
    action = _action(bot, "response_time")
    first, second = _alert("response_time", fingerprint="x"), _alert("response_time")

    await action.apply(first)
    await action.apply(second)
    await _chat(discord, user, "reduced?")
    reduced = gemini.requests[-1]
    assert len(reduced.contents) <= 11
    assert reduced.generation_config.get("maxOutputTokens") == 512

    await action.revert(first)  # the other alert still fires
    await _chat(discord, user, "still reduced?")
    assert gemini.requests[-1].generation_config.get("maxOutputTokens") == 512

    await action.revert(second)
    await _chat(discord, user, "back to normal?")
    restored = gemini.requests[-1]
    assert "maxOutputTokens" not in restored.generation_config
    assert len(restored.contents) > 11


async def test_error_rate_action_degrades_to_medium_and_back(bot: BotApp) -> None:
    action = _action(bot, "error_rate")

    result = await action.apply(_alert("error_rate"))
    assert result.ok
    assert bot.degradation.level == DegradationLevel.MEDIUM

    await action.revert(_alert("error_rate"))
    assert bot.degradation.level == DegradationLevel.NONE


async def test_api_health_action_lets_the_open_breaker_probe(bot: BotApp) -> None:
    for _ in range(bot.settings.breaker_failure_threshold):
        bot.llm.breaker.record_failure()
    assert bot.llm.breaker.state == "open"

    result = await _action(bot, "api_health").apply(_alert("api_health", dependency="gemini"))

    assert result.ok
    assert bot.llm.breaker.state == "half_open"


async def test_api_health_action_reconnects_the_discord_shard(
    bot: BotApp, discord: DiscordEmulator
) -> None:
    connects = discord.identifies.get(0, 0) + discord.resumes.get(0, 0)

    result = await _action(bot, "api_health").apply(
        _alert("api_health", dependency="discord", shard="0")
    )

    assert result.ok
    await discord.wait_for(
        lambda: discord.identifies.get(0, 0) + discord.resumes.get(0, 0) == connects + 1,
        timeout=15,
    )
    assert (await _chat(discord, discord.create_user("c"), "still there?")).startswith("You said")


async def test_queue_action_speeds_the_queue_up_and_restores_it(bot: BotApp) -> None:
    normal = bot.queue.retry_interval_s
    action = _action(bot, "queue")

    await action.apply(_alert("queue"))
    assert bot.queue.retry_interval_s < normal

    await action.revert(_alert("queue"))
    assert bot.queue.retry_interval_s == normal


async def test_disk_action_cleans_and_compacts_the_store(bot: BotApp) -> None:
    result = await _action(bot, "disk").apply(_alert("disk"))

    assert result.ok
    assert bot.store.stats.compactions >= 1
