"""A SIGTERM (or Ctrl-C) while the bot is still starting stops it cleanly: exit code 0, the store
closed, no traceback. Before, the signal handlers were installed only once the start was done,
so an orchestrator stopping a bot that was slow to connect killed it mid-start (exit -15)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator
from tests.e2e.test_chaos import BotProcess, _until


async def test_sigterm_while_starting_stops_cleanly(
    tmp_path: Path, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    bot = BotProcess(tmp_path, discord, gemini)
    # Discord is slow to say where its gateway is: the bot waits there, mid-start.
    discord.inject_rest_lost_answer("slow", route_contains="/gateway/bot", delay_s=30)
    log = tmp_path / "bot.stderr"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run",
            cwd=tmp_path, env=bot.env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip

    async def starting() -> bool:
        return discord.rest_faults_injected >= 1

    try:
        await _until("the bot asking Discord for its gateway", starting)
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = log.read_text(errors="replace")
    assert returncode == 0, text[-3000:]
    assert "bot stopped" in text
    assert "Traceback" not in text
    assert discord.identify_count == 0  # it never got as far as the gateway
