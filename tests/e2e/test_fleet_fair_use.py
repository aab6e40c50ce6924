"""Fair use and conversation memory across a fleet: real bot processes (`python -m bot run`, one
per shard) against the Discord and Gemini emulators and a real redis-server.

A user's budget spent on shard 0's process (a DM) is refused on shard 1's (a guild message); an
admin's raise on shard 1's process is in force on shard 0's at once; then shard 1 moves to a new
process (with an empty DATA_DIR) that honours the channel's auto-reply and remembers the
conversation. About 25 s: three process starts, the second and third after Discord's 5 s
identify interval.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.emulator.discord import DiscordEmulator
from bot.emulator.discord.ids import shard_for_guild
from bot.emulator.gemini import GeminiEmulator
from tests.e2e.test_fleet import ROOT, SETTING_PREFIXES, _consecutive_free_ports, _ready, _until
from tests.e2e.test_observability import scrape
from tests.redis_server import RedisServer

SHARDS = 2
MANAGE_CHANNELS = 1 << 4
INVALIDATION_BOUND_S = 2.0  # a /quota-set on one process in force on another (measured: ms)

Start = Callable[[int, str], Any]


@pytest.fixture
async def discord() -> AsyncIterator[DiscordEmulator]:
    async with DiscordEmulator(shards=SHARDS, max_concurrency=1, identify_interval_s=5.0) as emu:
        yield emu


@pytest.fixture
async def start_process(
    tmp_path: Path, discord: DiscordEmulator, gemini: GeminiEmulator, redis_server: RedisServer
) -> AsyncIterator[Callable[..., Any]]:
    started: list[asyncio.subprocess.Process] = []
    admin = discord.create_user("admin")

    async def start(shard: int, name: str) -> tuple[asyncio.subprocess.Process, int]:
        port = _consecutive_free_ports(1)
        env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
        env.update(
            PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            DISCORD_TOKEN=discord.token,
            GEMINI_API_KEY=gemini.api_key,
            DISCORD_REST_URL=discord.rest_url,
            GEMINI_BASE_URL=gemini.base_url,
            REDIS_URL=redis_server.url,
            OPS_PORT=str(port),
            DATA_DIR=str(tmp_path / name),  # nothing shared on disk: what is shared is in Redis
            DISCORD_SHARD_IDS=str(shard),
            DISCORD_SHARD_COUNT=str(SHARDS),
            USER_COOLDOWN_SECONDS="0",
            SHUTDOWN_GRACE_SECONDS="2",
            DISCORD_TYPING_DELAY_SECONDS="5",
            USER_DAILY_TOKEN_BUDGET="50",
            ADMIN_USER_IDS=str(admin["id"]),
            PERSIST_CONVERSATIONS="true",
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env
        )
        started.append(process)

        async def ready() -> bool:
            if process.returncode is not None:
                raise AssertionError(f"process {name} exited with {process.returncode}")
            return await _ready(port)

        await _until(ready, 45, f"process {name} ready")
        return process, port

    start.admin = admin  # type: ignore[attr-defined]
    yield start
    for process in started:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


def _guild_on_shard(discord: DiscordEmulator, shard: int) -> int:
    guild = discord.create_guild("Guild")
    while shard_for_guild(guild, SHARDS) != shard:
        time.sleep(0.002)  # snowflakes carry milliseconds: the next may land elsewhere
        guild = discord.create_guild("Guild")
    return guild


async def _overrides(port: int) -> float:
    text = await scrape(f"http://127.0.0.1:{port}")
    for line in text.splitlines():
        if line.startswith('llmbot_fair_use_entries{map="overrides"}'):
            return float(line.split()[-1])
    raise AssertionError("llmbot_fair_use_entries is not on /metrics")


async def test_budgets_settings_and_memory_are_the_fleets(
    start_process: Any, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    gemini.fixed_usage = (10, 20)  # 30 tokens an answer: two answers use up a budget of 50
    admin = start_process.admin
    guild = _guild_on_shard(discord, 1)
    channel = discord.guild_text_channel(guild)
    alice = discord.create_user("alice")
    discord.add_member(guild, alice)
    discord.add_member(guild, admin, permissions=MANAGE_CHANNELS)
    dm = discord.create_dm(alice)

    _p0, port0 = await start_process(0, "p0")
    p1, _port1 = await start_process(1, "p1")
    await discord.wait_until_ready(timeout=30)

    async def ask(where: int, text: str, mention: bool = True) -> str:
        msg = await discord.send_message(where, author=alice, content=text, mention_bot=mention)
        return (await discord.wait_for_reply(int(msg["id"]), timeout=15)).content

    # Spent on shard 0's process (DMs), refused on shard 1's.
    assert "budget" not in await ask(dm, "one")
    assert "budget" not in await ask(dm, "two")
    refused = await ask(channel, "three")
    assert "your daily token budget is used up (60 of 50 tokens today)" in refused
    assert len(gemini.requests) == 2

    # An admin's raise through shard 1's process is in force on shard 0's at once.
    raised = await discord.send_interaction(
        "quota-set",
        user=admin,
        channel_id=channel,
        options={"scope": "user", "user": alice["id"], "tokens": 1000},
    )
    assert "is now 1,000 tokens a day" in await raised.wait_for_response()

    async def seen_on_p0() -> bool:
        return await _overrides(port0) == 1

    started = time.monotonic()
    await _until(seen_on_p0, INVALIDATION_BOUND_S, "the raise on shard 0's process")
    print(f"override seen by the other process after {time.monotonic() - started:.3f} s")
    assert "budget" not in await ask(dm, "four")

    # Auto-reply switched on through shard 1's process; a conversation there.
    switched = await discord.send_interaction(
        "channel",
        user=admin,
        channel_id=channel,
        options={"autoreply": {"mode": "on"}},
        permissions=MANAGE_CHANNELS,
    )
    assert "Auto-reply is on" in await switched.wait_for_response()
    await ask(channel, "the secret word is pineapple")
    calls = len(gemini.requests)

    # Shard 1 moves: its process stops, a new one (empty DATA_DIR) takes the shard.
    p1.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        assert await p1.wait() == 0
    await start_process(1, "p1-moved")
    await discord.wait_until_ready(timeout=30)

    answer = await ask(channel, "what was the secret word?", mention=False)  # auto-reply
    assert answer and "budget" not in answer
    assert len(gemini.requests) == calls + 1
    history = str(gemini.requests[-1].contents)
    assert "the secret word is pineapple" in history  # remembered across the move
