"""Fixtures for driving the real hikari client against the Discord emulator."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import hikari
import pytest

from bot.emulator.discord import DiscordEmulator

BotFactory = Callable[..., Awaitable[hikari.GatewayBot]]
DEFAULT_INTENTS = hikari.Intents.ALL_UNPRIVILEGED | hikari.Intents.MESSAGE_CONTENT


@pytest.fixture
def no_logged_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a test when hikari, lightbulb or asyncio logged an exception (a payload it refused)."""
    caplog.set_level(logging.WARNING)
    yield
    bad = [
        record
        for phase in ("setup", "call", "teardown")
        for record in caplog.get_records(phase)
        if record.levelno >= logging.ERROR and record.exc_info
    ]
    assert not bad, "\n".join(f"{r.name}: {r.getMessage()}" for r in bad)


@pytest.fixture
async def emu() -> AsyncIterator[DiscordEmulator]:
    """A running emulator with default settings."""
    async with DiscordEmulator() as emulator:
        yield emulator


@pytest.fixture
async def start_bot(emu: DiscordEmulator) -> AsyncIterator[BotFactory]:
    """Start real hikari GatewayBots against an emulator; all are closed before ``emu`` stops."""
    bots: list[hikari.GatewayBot] = []

    async def factory(
        emulator: DiscordEmulator,
        *,
        intents: hikari.Intents = DEFAULT_INTENTS,
        before_start: Callable[[hikari.GatewayBot], Any] | None = None,
        wait_ready: bool = True,
        start_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> hikari.GatewayBot:
        bot = hikari.GatewayBot(
            emulator.token,
            rest_url=emulator.rest_url,
            banner=None,
            logs=None,
            intents=intents,
            suppress_optimization_warning=True,
            **kwargs,
        )
        if before_start is not None:
            before_start(bot)
        bots.append(bot)
        # start_options: hikari's start() arguments (shard_ids and shard_count, say).
        await bot.start(check_for_updates=False, **(start_options or {}))
        if wait_ready:
            await emulator.wait_until_ready()
        return bot

    yield factory
    for bot in bots:
        if bot.is_alive:
            await bot.close()
