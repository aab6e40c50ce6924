"""CACHE_MAX_ENTRIES=0 turns the response cache off (it used to end start-up in a traceback)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bot.app import BotApp
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator


@pytest.mark.parametrize("setting", ["cache_max_entries", "cache_max_bytes"])
async def test_a_zero_cache_bound_turns_the_cache_off(
    start_bot: Callable[..., Any],
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
    setting: str,
) -> None:
    bot: BotApp = await start_bot(**{setting: 0})
    for name in ("ann", "ben"):  # the same question in the same (empty) context, twice
        user = discord.create_user(name)
        msg = await discord.send_message(discord.create_dm(user), author=user, content="hi")
        await discord.wait_for_reply(int(msg["id"]))
    assert len(gemini.requests) == 2  # no cache: both asked the model
    stats = bot.llm.cache.stats
    assert (stats.hits, stats.misses, stats.entries, len(bot.llm.cache)) == (0, 0, 0, 0)
