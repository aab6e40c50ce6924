"""Chaos: kill -9 the real bot process (`python -m bot run`) at points of the answer path, start
it again, and every accepted question ends with exactly one answer or one notice, as seen in the
Discord emulator. Kills are timed on what the emulators observe ("Gemini received the request",
"Discord refused the reply", "the queued notice arrived"), never on a crash hook in the bot.

"Accepted" is what the emulators or the bot's journal (the `answered` records in DATA_DIR) show:
Gemini was asked the question, the bot replied to it, or it is journalled. A message killed
before the bot read it from the gateway was never accepted (restart catch-up, issue 17 part 1,
is about those). The figures of a run are printed (`-s`) and kept in
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bot.config import SETTING_PREFIXES
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator

QUESTIONS_PER_POINT: Final = 2
NOTICE_MARKERS: Final = ("queued (position", "I'm restarting")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BotProcess:
    """`python -m bot run` against the emulators, started again on the same DATA_DIR."""

    def __init__(self, tmp_path: Path, discord: DiscordEmulator, gemini: GeminiEmulator) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self.discord = discord
        self.port = _free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
        self.env.update(
            DISCORD_REST_URL=discord.rest_url,
            GEMINI_BASE_URL=gemini.base_url,
            DISCORD_TOKEN=discord.token,
            GEMINI_API_KEY=gemini.api_key,
            DATA_DIR=str(self.data_dir),
            OPS_HOST="127.0.0.1",
            OPS_PORT=str(self.port),
            LOG_LEVEL="INFO",
            USER_COOLDOWN_SECONDS="0",
            RETRY_MAX_ATTEMPTS="1",
            QUEUE_RETRY_INTERVAL_SECONDS="0.2",
            GEMINI_TIMEOUT_SECONDS="20",
            GEMINI_ADAPTIVE_TIMEOUT="false",
            DISCORD_TYPING_DELAY_SECONDS="60",
            DISCORD_REST_MAX_RETRIES="0",
            DISCORD_BREAKER_RESET_TIMEOUT_SECONDS="1",
        )
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        identified = self.discord.identify_count
        self.starts += 1
        stderr = (self.tmp_path / f"bot-{self.starts}.stderr").open("wb")
        with stderr:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "run",
                cwd=self.tmp_path,
                env=self.env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            await self.discord.wait_for(
                lambda: self.discord.identify_count > identified, timeout=30, what="IDENTIFY"
            )
        except TimeoutError:
            raise AssertionError(f"the bot did not connect:\n{self.log_tail()}") from None

    def log_tail(self) -> str:
        path = self.tmp_path / f"bot-{self.starts}.stderr"
        return "\n".join(path.read_text(errors="replace").splitlines()[-30:])

    async def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def terminate(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 30)

    def journalled(self) -> set[int]:
        """Message ids with a record in the store: the questions the bot accepted."""
        with sqlite3.connect(f"file:{self.data_dir / 'bot.db'}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT key FROM kv WHERE key LIKE 'answered:%'").fetchall()
        return {int(key.removeprefix("answered:")) for (key,) in rows}

    async def unfinished(self, http: aiohttp.ClientSession) -> float:
        """Journalled questions not yet answered or told, plus queued ones (from /metrics)."""
        async with http.get(f"http://127.0.0.1:{self.port}/metrics") as response:
            text = await response.text()
        total = 0.0
        for family in text_string_to_metric_families(text):
            if family.name in ("llmbot_inflight_questions", "llmbot_queue_messages"):
                total += sum(sample.value for sample in family.samples)
        return total


async def _until(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def _replies(discord: DiscordEmulator, message_id: int) -> list[str]:
    return [m.content for m in discord.sent_messages if m.reply_to == message_id]


def _finals(discord: DiscordEmulator, message_id: int) -> list[str]:
    return [r for r in _replies(discord, message_id) if not any(m in r for m in NOTICE_MARKERS)]


async def test_kill_9_anywhere_on_the_answer_path_gives_one_answer_or_notice_each(
    tmp_path: Path, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    started = time.monotonic()
    rng = random.Random(16)
    bot = BotProcess(tmp_path, discord, gemini)
    users = [discord.create_user(f"user{i}") for i in range(QUESTIONS_PER_POINT)]
    dms = [discord.create_dm(user) for user in users]
    asked: dict[str, list[int]] = {}

    async def ask(point: str) -> list[int]:
        ids = []
        for index, (user, dm) in enumerate(zip(users, dms, strict=True)):
            text = f"{point} question {index}"
            message = await discord.send_message(dm, author=user, content=text)
            ids.append(int(message["id"]))
        asked[point] = ids
        return ids

    def gemini_has(n: int) -> Callable[[], bool]:
        return lambda: len(gemini.requests) >= n

    async def jitter() -> None:  # a random point around the observed event
        await asyncio.sleep(rng.uniform(0, 0.03))

    # Each kill point: make the world so, ask, and wait for the event the kill is timed on.
    async def at_the_gateway() -> None:
        await ask("at_the_gateway")  # killed as soon as the gateway sent the events

    async def before_model() -> None:  # killed once journalled; the call may have begun
        gemini.latency = 30.0
        ids = await ask("before_model")
        await discord.wait_for(lambda: set(ids) <= bot.journalled(), what="the journal")

    async def during_model() -> None:
        gemini.latency = 30.0
        n = len(gemini.requests)
        await ask("during_model")
        await discord.wait_for(gemini_has(n + QUESTIONS_PER_POINT), what="the model calls")
        await jitter()

    async def during_delivery() -> None:  # answered by the model; Discord answers 503
        discord.inject_rest_fault(503, count=None, route_contains="/messages")
        injected = discord.rest_faults_injected
        await ask("during_delivery")
        await discord.wait_for(
            lambda: discord.rest_faults_injected >= injected + QUESTIONS_PER_POINT,
            what="the replies refused",
        )
        await jitter()

    async def lost_answer() -> None:  # Discord posted the reply, the bot never heard so
        discord.inject_rest_lost_answer(
            "drop", count=QUESTIONS_PER_POINT, route_contains="/messages"
        )
        discord.inject_rest_fault(503, count=None, route_contains="/messages")
        ids = await ask("lost_answer")
        await discord.wait_for(lambda: all(_replies(discord, i) for i in ids), what="the replies")
        await jitter()

    async def during_queue_push() -> None:  # the call failed; queueing and the notice next
        gemini.fail_all(503)
        n = len(gemini.requests)
        await ask("during_queue_push")
        await discord.wait_for(gemini_has(n + QUESTIONS_PER_POINT), what="the failing calls")
        await jitter()

    async def after_queued_answer() -> None:  # answered from the queue; its delete next
        gemini.fail_all(503)
        ids = await ask("after_queued_answer")
        await discord.wait_for(lambda: all(_replies(discord, i) for i in ids), what="notices")
        gemini.heal()
        await discord.wait_for(
            lambda: all(_finals(discord, i) for i in ids), timeout=20, what="queued answers"
        )

    points = [
        at_the_gateway,
        before_model,
        during_model,
        during_delivery,
        lost_answer,
        during_queue_push,
        after_queued_answer,
    ]
    figures: list[str] = []
    async with aiohttp.ClientSession() as http:
        await bot.start()
        for point in points:
            await point()
            await bot.kill9()
            gemini.heal()
            gemini.latency = 0.0
            discord.clear_rest_faults()
            ids = asked[point.__name__]
            taken = {i for i in ids if _accepted(i, bot, discord, gemini)}
            await bot.start()
            await _until(
                f"the questions of {point.__name__} to be finished",
                lambda taken=taken: _all_finished(http, bot, discord, taken),  # type: ignore[misc]
            )
            final_count = sum(len(_finals(discord, i)) for i in ids)
            figures.append(
                f"{time.monotonic() - started:5.1f} s "
                + f"{point.__name__}: {len(taken)}/{len(ids)} accepted, "
                f"{final_count} final replies, "
                f"{sum(len(_replies(discord, i)) for i in ids) - final_count} notices"
            )
        assert await bot.terminate() == 0  # a clean stop: anything pending would be sent now

    print("\n".join(["", *figures, f"total {time.monotonic() - started:.1f} s"]))
    for name, ids in asked.items():
        for message_id in ids:
            finals = _finals(discord, message_id)
            notices = [r for r in _replies(discord, message_id) if r not in finals]
            accepted = _accepted(message_id, bot, discord, gemini)
            assert len(finals) == (1 if accepted else 0), (name, finals)
            assert len(notices) <= 1, (name, notices)
    assert all(len(ids) == QUESTIONS_PER_POINT for ids in asked.values())


def _accepted(
    message_id: int, bot: BotProcess, discord: DiscordEmulator, gemini: GeminiEmulator
) -> bool:
    """The bot took the question: it is in its journal, or Gemini was asked it, or the bot
    replied to it (the last two hold whatever the bot's own bookkeeping says)."""
    if message_id in bot.journalled() or _replies(discord, message_id):
        return True
    message = discord.message(message_id)
    text = str(message["content"]) if message else ""
    return any(text in request.last_user_text for request in gemini.requests)


async def _all_finished(
    http: aiohttp.ClientSession, bot: BotProcess, discord: DiscordEmulator, accepted: set[int]
) -> bool:
    if not all(_finals(discord, i) for i in accepted):
        return False
    try:
        return await bot.unfinished(http) == 0
    except aiohttp.ClientError:
        return False
