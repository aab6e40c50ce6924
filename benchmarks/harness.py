"""Shared machinery: the emulators run here, the bot (or a bare baseline) in a child process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp

from bot.emulator.discord import DiscordEmulator, SentMessage
from bot.emulator.gemini import GeminiEmulator, Latency, Responder
from bot.emulator.local_server import free_port
from bot.loadtest import (
    BotProcess,
    ProcessUsage,
    ReplyWatcher,
    bot_command,
    bot_env,
)
from bot.ops.percentile import percentile

__all__ = [
    "RELAXED",
    "Lab",
    "Mode",
    "Result",
    "Row",
    "User",
    "bare_bot_command",
    "lab",
    "per_answer_us",
    "scrape_metrics",
]

JSON = dict[str, Any]
User = JSON
Mode = Literal["full", "quick", "smoke"]
Verdict = Literal["met", "missed", "TODO", "pending", "info"]

# Limits that would otherwise measure Discord's or the quota's pacing instead of the bot.
RELAXED: dict[str, object] = {
    "discord_rest_max_rps": 100_000.0,
    "user_cooldown_seconds": 0,
    "gemini_rate_limit_rpm": 10_000_000,
    "gemini_rate_limit_daily": 1_000_000_000,
    "queue_max_size": 10_000,
    "max_conversations": 100_000,
    "log_level": "WARNING",
    # Answers posted whole, as the figures before streaming were measured; the streaming
    # scenario sets STREAM_REPLIES itself.
    "stream_replies": False,
}


@dataclass(frozen=True, slots=True)
class Row:
    """One figure of RESULTS.md: what, how much, the target, and whether it was met."""

    figure: str
    value: str
    target: str = ""
    verdict: Verdict = "info"


@dataclass
class Result:
    """What a scenario found: rows for the report, notes, and the raw numbers (results.json)."""

    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def per_answer_us(before: ProcessUsage, after: ProcessUsage, count: int) -> float:
    """CPU microseconds per item between two readings."""
    return (after.cpu_s - before.cpu_s) * 1e6 / max(count, 1)


def bare_bot_command(mode: Literal["noop", "reply"]) -> list[str]:
    """The baseline: a bare hikari GatewayBot (`benchmarks/bare_bot.py`)."""
    return [sys.executable, "-m", "benchmarks.bare_bot", mode]


class Lab:
    """One scenario's world: the two emulators, a scratch directory and the children started."""

    def __init__(self, scratch: Path, discord: DiscordEmulator, gemini: GeminiEmulator) -> None:
        self.scratch = scratch
        self.discord = discord
        self.gemini = gemini
        self.watcher = ReplyWatcher(discord)
        self._children = 0

    def settings(self, **overrides: object) -> dict[str, object]:
        """Bot settings pointing at this lab's emulators, relaxed limits, then `overrides`."""
        self._children += 1
        return {
            **RELAXED,
            "discord_token": self.discord.token,
            "gemini_api_key": self.gemini.api_key,
            "discord_rest_url": self.discord.rest_url,
            "gemini_base_url": self.gemini.base_url,
            "data_dir": self.scratch / f"data-{self._children}",
            "ops_port": free_port(),
            **overrides,
        }

    @contextlib.asynccontextmanager
    async def child(
        self, settings: Mapping[str, object], argv: list[str] | None = None, name: str = "bot"
    ) -> AsyncIterator[BotProcess]:
        """Start the bot (or `argv`) with `settings`, wait for READY, stop it on exit."""
        before = self.discord.identify_count
        proc = BotProcess(
            argv or bot_command(),
            bot_env(settings),
            cwd=self.scratch,
            log_path=self.scratch / f"{name}-{self._children}.log",
            name=name,
        )
        async with proc:
            await self.discord.wait_for(
                lambda: self.discord.identify_count > before or not proc.running,
                timeout=60,
                what=f"{name} to identify",
            )
            await proc.wait_ready(self.discord)
            self.watcher.start()
            try:
                yield proc
            finally:
                await self.watcher.stop()

    async def ask(
        self,
        channel: int,
        author: User,
        text: str,
        *,
        mention: bool = True,
        timeout_s: float = 60.0,
    ) -> tuple[JSON, SentMessage]:
        """Post a message and wait for the bot's first reply to it."""
        sent = await self.discord.send_message(
            channel, author=author, content=text, mention_bot=mention
        )
        message_id = int(sent["id"])
        try:
            reply = await self.watcher.reply(message_id, timeout_s)
        finally:
            self.watcher.forget(message_id)
        return sent, reply

    async def closed_loop(
        self,
        jobs: Iterable[tuple[int, User, str]],
        concurrency: int,
        on_reply: Callable[[JSON, SentMessage], None] | None = None,
    ) -> int:
        """Ask every (channel, author, text) with at most `concurrency` in flight; count replies.

        Jobs of the same channel keep their order, so a conversation grows turn by turn.
        """
        by_channel: dict[int, list[tuple[int, User, str]]] = {}
        for job in jobs:
            by_channel.setdefault(job[0], []).append(job)
        lanes = list(by_channel.values())
        gate = asyncio.Semaphore(concurrency)
        answered = 0

        async def lane(items: list[tuple[int, User, str]]) -> None:
            nonlocal answered
            for channel, author, text in items:
                async with gate:
                    sent, reply = await self.ask(channel, author, text)
                answered += 1
                if on_reply is not None:
                    on_reply(sent, reply)

        await asyncio.gather(*(lane(items) for items in lanes))
        return answered


@contextlib.asynccontextmanager
async def lab(
    scratch: Path,
    *,
    latency: Latency = 0.0,
    responder: Responder | None = None,
    rpm_limit: int | None = None,
    discord_limits: bool = False,
    discord_validation: bool | None = None,
) -> AsyncIterator[Lab]:
    """Both emulators (Discord limits and validation off unless asked; validation follows
    `discord_limits` unless given) and a scratch dir."""
    validate = discord_limits if discord_validation is None else discord_validation
    await asyncio.to_thread(scratch.mkdir, parents=True, exist_ok=True)
    async with (
        DiscordEmulator(
            enforce_limits=discord_limits, validate=validate, history_limit=1_000_000
        ) as discord,
        GeminiEmulator(
            latency=latency, responder=responder, rpm_limit=rpm_limit, max_recorded=1_000_000
        ) as gemini,
    ):
        yield Lab(scratch, discord, gemini)


_SAMPLE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})?\s")


@dataclass(frozen=True, slots=True)
class Scrape:
    """One `/metrics` answer: how long it took, its size and how many series it carried."""

    seconds: float
    body_bytes: int
    series: int


async def scrape_metrics(url: str, count: int) -> list[Scrape] | str:
    """Scrape `url` `count` times in a row; or a sentence saying why it could not."""
    scrapes: list[Scrape] = []
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(count):
            started = time.perf_counter()
            try:
                async with session.get(url) as response:
                    body = await response.read()
                    status = response.status
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                return f"{url} is not served ({type(exc).__name__})"
            elapsed = time.perf_counter() - started
            if status != 200:
                return f"{url} answered {status}"
            text = body.decode("utf-8", "replace")
            series = sum(1 for line in text.splitlines() if _SAMPLE.match(line))
            scrapes.append(Scrape(elapsed, len(body), series))
    return scrapes


@contextlib.contextmanager
def harness_gc_paused() -> Iterator[None]:
    """No garbage collection in the harness (emulators, users, clocks) while it times the bot.

    The harness stamps the times the bot is measured by; a 60-150 ms full collection of its own
    (measured) would otherwise show up as latency the bot added.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def quantiles_ms(values: list[float]) -> dict[str, float]:
    """p50/p95/p99 in milliseconds."""
    return {f"p{q}": round(percentile(values, q) * 1000, 3) for q in (50, 95, 99)}
