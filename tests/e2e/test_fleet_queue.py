"""The fleet's answer-later queue with real bot processes: `kill -9` of the process holding
queued questions (and one in flight), and the other process answers every one of them exactly
once; its restart answers none again. Redis stopped and restarted with questions queued.

Two `python -m bot run` processes (shards 0 and 1 of 2, their own DATA_DIR) against one Discord
emulator, one Gemini emulator and a real redis-server. About 60 s for the three: most of it
the processes' starts (Discord's identify rule: 5 s between two) and the claim idle times.
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
import redis.asyncio as aioredis

from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator
from tests.e2e.test_fleet import (
    ROOT,
    SETTING_PREFIXES,
    SHARDS,
    Fleet,
    _consecutive_free_ports,
    _guilds_on_both_shards,
    _ready,
    _until,
)
from tests.redis_server import RedisServer

CLAIM_IDLE_S = 3
QUESTIONS = 5


@pytest.fixture
async def discord() -> AsyncIterator[DiscordEmulator]:
    async with DiscordEmulator(shards=SHARDS, max_concurrency=1, identify_interval_s=5.0) as emu:
        yield emu


Start = Callable[..., Any]


@pytest.fixture
async def start_process(
    tmp_path: Path, discord: DiscordEmulator, gemini: GeminiEmulator, redis_server: RedisServer
) -> AsyncIterator[tuple[Start, list[asyncio.subprocess.Process], list[int]]]:
    """`start(shard)`: one bot process running that shard, on its own port and DATA_DIR (the
    same again when restarted)."""
    base = _consecutive_free_ports(2)
    ports = [base, base + 1]
    processes: list[asyncio.subprocess.Process] = []

    async def start(shard: int, **settings: str) -> asyncio.subprocess.Process:
        env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
        env.update(
            PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            DISCORD_TOKEN=discord.token,
            GEMINI_API_KEY=gemini.api_key,
            DISCORD_REST_URL=discord.rest_url,
            GEMINI_BASE_URL=gemini.base_url,
            REDIS_URL=redis_server.url,
            OPS_PORT=str(ports[shard]),
            DATA_DIR=str(tmp_path / f"data-{shard}"),
            DISCORD_SHARD_IDS=str(shard),
            DISCORD_SHARD_COUNT=str(SHARDS),
            FLEET_QUEUE_CLAIM_IDLE_SECONDS=str(CLAIM_IDLE_S),
            GEMINI_RATE_LIMIT_RPM="60",  # the failed calls count too: room for every answer
            USER_COOLDOWN_SECONDS="0",
            SHUTDOWN_GRACE_SECONDS="2",
            RETRY_MAX_ATTEMPTS="1",
            QUEUE_RETRY_INTERVAL_SECONDS="0.5",
            QUEUE_MAX_ATTEMPTS="50",
            GEMINI_TIMEOUT_SECONDS="60",  # a slow call stays in flight until the kill
            GEMINI_ADAPTIVE_TIMEOUT="false",
            BREAKER_RESET_TIMEOUT_SECONDS="1",  # the failures while Gemini was down
            DISCORD_TYPING_DELAY_SECONDS="5",
        )
        env.update(settings)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env
        )
        processes.append(process)
        return process

    yield start, processes, ports
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


def _answers(discord: DiscordEmulator, message_id: int) -> int:
    return sum(
        1
        for m in discord.sent_messages
        if m.reply_to == message_id and m.content.startswith("You said:")
    )


async def test_kill_9_of_the_process_holding_queued_questions_the_other_answers_each_once(
    start_process: tuple[Start, list[asyncio.subprocess.Process], list[int]],
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
    redis_server: RedisServer,
) -> None:
    start, _, ports = start_process
    guilds = _guilds_on_both_shards(discord, 1)
    alice = discord.create_user("alice")
    for ids in guilds.values():
        discord.add_member(ids[0], alice)
    first, _second = await start(0), await start(1)

    async def ready(*indexes: int) -> bool:
        return all([await _ready(ports[i]) for i in indexes])

    await _until(lambda: ready(0, 1), 45, "both processes ready")
    await discord.wait_until_ready()
    fleet = Fleet(first, ports, Path())

    # One question in flight at the kill (a slow model call: accepted, neither answered nor
    # queued), then five queued (the model fails) by shard 0's process.
    gemini.latency = 20.0
    in_flight = await discord.send_message(
        discord.guild_text_channel(guilds[0][0]),
        author=alice,
        content="a slow question",
        mention_bot=True,
    )
    await gemini.wait_for_requests(1)
    gemini.latency = 0.0
    gemini.fail_all(503)
    asked = []
    for n in range(QUESTIONS):
        message = await discord.send_message(
            discord.guild_text_channel(guilds[0][0]),
            author=alice,
            content=f"question {n}",
            mention_bot=True,
        )
        asked.append(int(message["id"]))
    for message_id in asked:
        reply = await discord.wait_for_reply(message_id, timeout=15)
        assert "queued" in reply.content
    assert await fleet.value(0, "llmbot_queue_messages") == QUESTIONS

    async def seen_by_the_other() -> bool:  # the fleet's queue, as shard 1's process sees it
        return await fleet.value(1, "llmbot_queue_fleet_messages") == QUESTIONS

    await _until(seen_by_the_other, 10, "the other process to see the five in the stream")
    assert await fleet.value(1, "llmbot_queue_messages") == 0  # held by shard 0's process

    # (Not while it holds the fleet's identify lock, whose 120 s TTL would delay its restart.)
    redis = aioredis.from_url(redis_server.url)
    try:

        async def lock_free() -> bool:
            return not await redis.exists("llmbot:identify:lock")

        await _until(lock_free, 15, "the identify turn handed on")
    finally:
        await redis.aclose()
    first.kill()  # kill -9: no shutdown, the five entries stay in its pending list
    await first.wait()
    killed_at = time.monotonic()
    gemini.heal()

    async def queued_answered() -> bool:
        return all(_answers(discord, m) >= 1 for m in asked)

    await _until(queued_answered, 30, "the other process to answer every queued question")
    reclaim_s = time.monotonic() - killed_at
    asked.append(int(in_flight["id"]))
    await _until(queued_answered, 30, "the other process to answer the one in flight")
    orphan_s = time.monotonic() - killed_at
    print(
        f"\nkill -9 -> last reclaimed queued answer {reclaim_s:.1f} s, the question in flight "
        f"answered {orphan_s:.1f} s (claim idle {CLAIM_IDLE_S} s)"
    )
    # Not before its holder was silent for the idle time (its last touch: up to a pass, a third
    # of the idle time, before the kill).
    assert reclaim_s >= CLAIM_IDLE_S * 2 / 3

    async def drained() -> bool:
        return (
            await fleet.value(1, "llmbot_queue_messages") == 0
            and await fleet.value(1, "llmbot_queue_fleet_messages") == 0
        )

    await _until(drained, 10, "the fleet's queue to be empty")
    assert await fleet.value(1, "llmbot_queue_reclaimed_total") == QUESTIONS
    assert await fleet.value(1, "llmbot_resumed_questions_total", outcome="requeued") == 1
    assert [_answers(discord, m) for m in asked] == [1] * (QUESTIONS + 1)
    assert await fleet.value(1, "llmbot_late_replies_total", outcome="answered") == QUESTIONS + 1

    # The killed process comes back (same name, same DATA_DIR): its journal says "queued", Redis
    # says another process took them over. It answers none of them again.
    again = await start(0)
    fleet.process = again
    await _until(lambda: ready(0), 45, "the killed process back")
    replies_before = len(discord.sent_messages)
    passes = await fleet.value(0, "llmbot_redis_commands_total", op="queue")

    async def two_more_passes() -> bool:  # its resume ran right after its start, before these
        return await fleet.value(0, "llmbot_redis_commands_total", op="queue") >= passes + 8

    await _until(two_more_passes, 10, "two queue passes of the restarted process")
    await _until(drained, 10, "the fleet's queue still empty")
    assert await fleet.value(0, "llmbot_inflight_questions", state="queued") == 0
    assert await fleet.value(0, "llmbot_resumed_questions_total", outcome="requeued") == 0
    assert await fleet.value(0, "llmbot_queue_messages") == 0
    assert len(discord.sent_messages) == replies_before
    assert [_answers(discord, m) for m in asked] == [1] * (QUESTIONS + 1)


async def test_redis_stopped_and_restarted_while_questions_are_queued_all_answered_once(
    start_process: tuple[Start, list[asyncio.subprocess.Process], list[int]],
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
    redis_server: RedisServer,
) -> None:
    start, _, ports = start_process
    guilds = _guilds_on_both_shards(discord, 1)
    alice = discord.create_user("alice")
    discord.add_member(guilds[0][0], alice)
    process = await start(0)  # shard 0 alone: its guild's questions
    await _until(lambda: _ready(ports[0]), 45, "the process ready")
    fleet = Fleet(process, ports, Path())
    gemini.fail_all(503)

    async def ask(n: int) -> int:
        message = await discord.send_message(
            discord.guild_text_channel(guilds[0][0]),
            author=alice,
            content=f"question {n}",
            mention_bot=True,
        )
        reply = await discord.wait_for_reply(int(message["id"]), timeout=15)
        assert "queued" in reply.content
        return int(message["id"])

    asked = [await ask(n) for n in range(3)]  # queued in Redis
    redis_server.stop()
    asked += [await ask(n) for n in range(3, 5)]  # queued in the local store
    redis_server.start()  # empty: no persistence (the three in Redis are gone from it)
    gemini.heal()

    async def all_answered() -> bool:
        return all(_answers(discord, m) >= 1 for m in asked)

    await _until(all_answered, 30, "every queued question answered")

    async def drained() -> bool:
        return (
            await fleet.value(0, "llmbot_queue_messages") == 0
            and await fleet.value(0, "llmbot_queue_fleet_messages") == 0
        )

    await _until(drained, 10, "the fleet's queue to be empty")
    assert [_answers(discord, m) for m in asked] == [1] * len(asked)
    assert await fleet.value(0, "llmbot_queue_handed_over_total") == len(asked)
    assert await fleet.value(0, "llmbot_queue_dropped_total", reason="store_error") == 0


async def test_a_clean_stop_hands_its_queued_questions_to_the_other_process_at_once(
    start_process: tuple[Start, list[asyncio.subprocess.Process], list[int]],
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
    redis_server: RedisServer,
) -> None:
    start, _, ports = start_process
    idle = "15"  # longer than the test waits: only the stop's hand-over explains the answers
    guilds = _guilds_on_both_shards(discord, 1)
    alice = discord.create_user("alice")
    discord.add_member(guilds[0][0], alice)
    first = await start(0, FLEET_QUEUE_CLAIM_IDLE_SECONDS=idle)
    await start(1, FLEET_QUEUE_CLAIM_IDLE_SECONDS=idle)
    await _until(lambda: _ready(ports[0]), 45, "shard 0's process ready")
    await _until(lambda: _ready(ports[1]), 45, "shard 1's process ready")
    fleet = Fleet(first, ports, Path())
    gemini.fail_all(503)
    asked = []
    for n in range(3):
        message = await discord.send_message(
            discord.guild_text_channel(guilds[0][0]),
            author=alice,
            content=f"question {n}",
            mention_bot=True,
        )
        asked.append(int(message["id"]))
        assert "queued" in (await discord.wait_for_reply(asked[-1], timeout=15)).content
    first.send_signal(signal.SIGTERM)
    assert await first.wait() == 0
    stopped_at = time.monotonic()
    gemini.heal()

    async def all_answered() -> bool:
        return all(_answers(discord, m) >= 1 for m in asked)

    # The other process's next pass (every 5 s here) takes them, not the 15 s idle time.
    await _until(all_answered, 12, "the other process to answer the stopped one's questions")
    print(f"\nSIGTERM -> last answer by the other process: {time.monotonic() - stopped_at:.1f} s")
    assert time.monotonic() - stopped_at < float(idle)
    assert await fleet.value(1, "llmbot_queue_reclaimed_total") == len(asked)
    assert [_answers(discord, m) for m in asked] == [1] * len(asked)
