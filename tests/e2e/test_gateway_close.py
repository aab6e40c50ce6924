"""A gateway closed for good (4004, 4010-4014) leaves no zombie: readiness and /status say the
gateway is down, one clear line says what to set, and the bot asks to exit non-zero (issue #16,
item 11). A resumable close still reconnects and reads as connected again."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from bot.app import EXIT_GATEWAY_CLOSED, BotApp
from bot.emulator.discord import DiscordEmulator


async def _ready(app: BotApp) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(app.ops.url + "/readyz") as response,
    ):
        return response.status, await response.json()


@pytest.mark.parametrize(("code", "hint"), [(4004, "DISCORD_TOKEN"), (4014, "Message Content")])
async def test_a_fatal_close_is_reported_and_asks_for_an_exit(
    start_bot: Callable[..., Any],
    discord: DiscordEmulator,
    caplog: pytest.LogCaptureFixture,
    code: int,
    hint: str,
) -> None:
    app: BotApp = await start_bot(ops_port=0)
    assert (await _ready(app))[0] == 200

    with caplog.at_level(logging.ERROR, logger="bot.app"):
        await discord.disconnect_gateway(0, code=code)
        await discord.wait_for(lambda: app.exit_requested, what="the bot asking to exit")

    assert app.exit_code == EXIT_GATEWAY_CLOSED
    (line,) = [r.getMessage() for r in caplog.records if r.name == "bot.app"]
    assert f"close code {code}" in line
    assert hint in line
    status, body = await _ready(app)
    assert status == 503
    assert body["checks"]["gateway"]["ok"] is False
    assert app.report.snapshot().discord_up is False


async def test_a_resumable_close_reconnects_and_is_not_fatal(
    start_bot: Callable[..., Any], discord: DiscordEmulator
) -> None:
    app: BotApp = await start_bot(ops_port=0)
    resumed = discord.resume_count
    await discord.disconnect_gateway(0, code=4000)
    await discord.wait_for(lambda: discord.resume_count > resumed, what="the shard to resume")
    await discord.wait_for(lambda: app.gateway.connected, what="the handshake to finish")
    assert not app.exit_requested
    assert (await _ready(app))[0] == 200
