"""The whole bot (BotApp) against the Discord and Gemini emulators, through the real clients."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app import BotApp
from bot.config import Settings, load_settings
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator

SettingsFactory = Callable[..., Settings]
AppFactory = Callable[..., Any]


@pytest.fixture
async def discord() -> AsyncIterator[DiscordEmulator]:
    async with DiscordEmulator() as emu:
        yield emu


@pytest.fixture
async def gemini() -> AsyncIterator[GeminiEmulator]:
    async with GeminiEmulator() as emu:
        yield emu


@pytest.fixture
def make_settings(
    tmp_path: Path, discord: DiscordEmulator, gemini: GeminiEmulator
) -> SettingsFactory:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "_env_file": None,
            "discord_rest_url": discord.rest_url,
            "gemini_base_url": gemini.base_url,
            "data_dir": tmp_path / "data",
            "ops_port": 0,
            "user_cooldown_seconds": 0,
            "gemini_rate_limit_rpm": 1000,
            "gemini_rate_limit_daily": 100_000,
            "gemini_timeout_seconds": 5,
            "retry_initial_backoff_seconds": 0.01,
            "retry_max_backoff_seconds": 0.05,
            "shutdown_grace_seconds": 5,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
async def start_bot(
    discord: DiscordEmulator, gemini: GeminiEmulator, make_settings: SettingsFactory
) -> AsyncIterator[Callable[..., Any]]:
    """`await start_bot(**setting_overrides)` starts a BotApp wired to the emulators."""
    started: list[BotApp] = []

    async def start(clock: Callable[[], float] = time.time, **overrides: Any) -> BotApp:
        app = BotApp(
            make_settings(**overrides),
            discord_token=discord.token,
            gemini_api_key=gemini.api_key,
            clock=clock,
        )
        await app.start()
        started.append(app)
        await discord.wait_until_ready()
        return app

    yield start
    for app in reversed(started):
        await app.stop()


@pytest.fixture
async def bot(start_bot: Callable[..., Any]) -> BotApp:
    app: BotApp = await start_bot()
    return app


def new_guild_with(discord: DiscordEmulator, name: str) -> tuple[int, int, dict[str, Any]]:
    """A fresh guild with its text channel and one member: (guild id, channel id, user)."""
    guild = discord.create_guild("Guild")
    channel = discord.guild_text_channel(guild)
    user = discord.create_user(name)
    discord.add_member(guild, user)
    return guild, channel, user
