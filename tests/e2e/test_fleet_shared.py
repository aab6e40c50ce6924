"""What a fleet shares besides the quota, with two real bot processes (`python -m bot fleet`,
shards 0 and 1 of 2) and a real redis-server: the response cache, per-user cooldowns, /clear and
fleet-wide degradation overrides.

About 30 s: the two processes start 5 s apart (Discord's identify rule), and the test waits
twice for a 5 s cooldown to end (it watches the cooldown's key in Redis, not the clock).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from bot.emulator.discord import DiscordEmulator
from bot.emulator.discord.ids import shard_for_guild
from bot.emulator.gemini import GeminiEmulator
from bot.healing.testing import sample_alert, sample_body
from tests.e2e import test_fleet
from tests.e2e.test_fleet import SHARDS, Fleet, _until
from tests.redis_server import RedisServer

# The fleet fixtures of test_fleet.py: a two-shard Discord emulator, `python -m bot fleet`.
discord = test_fleet.discord
start_fleet = test_fleet.start_fleet

MANAGE_MESSAGES = 1 << 13
QUESTION = "What does a fleet share?"


def _guild_on(emulator: DiscordEmulator, shard: int) -> int:
    while True:
        guild = emulator.create_guild("Guild")
        if shard_for_guild(guild, SHARDS) == shard:
            return guild
        time.sleep(0.002)  # snowflakes carry milliseconds: the next may land elsewhere


async def test_cache_cooldowns_and_clear_act_across_processes(
    start_fleet: Callable[..., Any],
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
    redis_server: RedisServer,
) -> None:
    on_a, on_b, on_b_later = _guild_on(discord, 0), _guild_on(discord, 1), _guild_on(discord, 1)
    alice = discord.create_user("alice")
    for guild in (on_a, on_b, on_b_later):
        discord.add_member(guild, alice)
    fleet: Fleet = await start_fleet(USER_COOLDOWN_SECONDS="5")
    redis = aioredis.from_url(redis_server.url)

    async def send(guild: int) -> int:
        message = await discord.send_message(
            discord.guild_text_channel(guild), author=alice, content=QUESTION, mention_bot=True
        )
        return int(message["id"])

    async def ask(guild: int) -> str:
        return (await discord.wait_for_reply(await send(guild), timeout=15)).content

    async def cooling_down() -> bool:
        return bool(await redis.exists(f"llmbot:cooldown:{alice['id']}"))

    async def cooled_down() -> bool:
        return not await cooling_down()

    try:
        first = await send(on_a)  # process 0 (shard 0) takes it and asks Gemini
        await _until(cooling_down, 10, "process 0 to start alice's cooldown")
        # Alice is cooling down on process 0: process 1 refuses her too.
        refused = await discord.wait_for_reply(await send(on_b), timeout=15)
        assert "going a bit fast" in refused.content
        answer = (await discord.wait_for_reply(first, timeout=15)).content
        assert len(gemini.requests) == 1
        await _until(cooled_down, 10, "alice's cooldown to end")
        # The same question in a fresh conversation on process 1: the fleet's cache answers.
        assert await ask(on_b) == answer
        assert len(gemini.requests) == 1
        assert await fleet.value(1, "llmbot_cache_requests_total", result="hit") == 1
        assert await fleet.value(0, "llmbot_cache_entries") == 1

        # /clear on process 0 (the channel's shard) forgets the answers cached there, for the
        # whole fleet: the same question on process 1 is a miss now.
        cleared = await discord.send_interaction(
            "clear",
            user=alice,
            channel_id=discord.guild_text_channel(on_a),
            options={"scope": "channel"},
            permissions=MANAGE_MESSAGES,
        )
        await cleared.wait_for_response()
        assert "whole conversation" in (cleared.final_content or "")
        assert await fleet.value(0, "llmbot_cache_entries") == 0
        await _until(cooled_down, 10, "alice's cooldown to end")
        await ask(on_b_later)
        assert len(gemini.requests) == 2
        assert await fleet.value(1, "llmbot_cache_evictions_total", reason="cleared") == 0
        assert await fleet.value(0, "llmbot_cache_evictions_total", reason="cleared") == 1

        # A heal for a fleet-wide alert (no `instance` label), posted to one process, degrades
        # every process; its resolution, posted to the other, clears it on every process.
        firing = sample_alert(
            heal="error_rate", instance=None, fingerprint="f1ee7", alertname="LLMBotHealErrorRate"
        )
        assert await fleet.post_alert(1, sample_body(firing)) == 202

        async def levels(level: float) -> bool:
            return [await fleet.value(i, "llmbot_degradation_level") for i in (0, 1)] == [
                level,
                level,
            ]

        await _until(lambda: levels(2), 10, "both processes at degradation level medium")
        resolved = {**firing, "status": "resolved", "endsAt": "2024-05-01T10:07:30.456Z"}
        assert await fleet.post_alert(0, sample_body(resolved)) == 202
        await _until(lambda: levels(0), 10, "both processes back to degradation level none")
    finally:
        await redis.aclose()
