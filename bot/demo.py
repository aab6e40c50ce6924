"""`python -m bot demo`: the real bot against the local Discord and Gemini emulators, with
simulated users talking to it. A line is printed for each conversation turn."""

from __future__ import annotations

import random

from bot.app import BotApp, run_until_signal
from bot.config import Settings
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator
from bot.emulator.traffic import Traffic, TurnRecord

__all__ = ["demo_settings", "run_demo"]

# Generous enough that a demo at its default rate shows answers, not quota notices; an operator
# who sets the GEMINI_RATE_LIMIT_* variables gets exactly those.
DEMO_QUOTA = {"gemini_rate_limit_rpm": 120, "gemini_rate_limit_daily": 10_000}


def demo_settings(settings: Settings, discord: DiscordEmulator, gemini: GeminiEmulator) -> Settings:
    update: dict[str, object] = {
        "discord_rest_url": discord.rest_url,
        "gemini_base_url": gemini.base_url,
    }
    for name, value in DEMO_QUOTA.items():
        if name not in settings.model_fields_set:
            update[name] = value
    return settings.model_copy(update=update)


def _short(text: str | None, width: int = 70) -> str:
    if text is None:
        return "(no reply in time)"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def print_turn(turn: TurnRecord) -> None:
    print(
        f"[{turn.place}] {turn.user}: {_short(turn.asked, 50)}\n"
        f"    → bot ({turn.seconds:.1f} s): {_short(turn.answer)}",
        flush=True,
    )


async def run_demo(
    settings: Settings,
    *,
    users: int = 4,
    rate: float = 0.5,
    duration: float | None = None,
    seed: int = 1,
) -> int:
    """Run until Ctrl-C (or `duration` seconds); returns the process exit code."""
    rng = random.Random(seed)
    async with (
        DiscordEmulator() as discord,
        GeminiEmulator(latency=lambda: rng.uniform(0.2, 1.2), seed=seed) as gemini,
    ):
        app = BotApp(
            demo_settings(settings, discord, gemini),
            discord_token=discord.token,
            gemini_api_key=gemini.api_key,
        )
        traffic = Traffic(discord, users=users, rate=rate, seed=seed, on_turn=print_turn)
        await app.start()
        try:
            await discord.wait_until_ready()
            print(
                f"demo: the bot is connected to the Discord emulator at {discord.base_url}\n"
                f"demo: Gemini emulator at {gemini.base_url}\n"
                f"demo: {users} simulated users, about {rate:g} messages/s; Ctrl-C stops",
                flush=True,
            )
            await run_until_signal(traffic.run(duration))
        finally:
            await app.stop()
        answered = sum(1 for t in traffic.turns if t.answer is not None)
        print(f"demo: stopped after {len(traffic.turns)} turns ({answered} answered)", flush=True)
    return 0 if answered or not traffic.turns else 1
