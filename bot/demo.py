"""`python -m bot demo`: the real bot against the local Discord and Gemini emulators, with
simulated users talking to it. A line is printed for each conversation turn."""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bot.app import BotApp, run_until_signal
from bot.config import Settings
from bot.emulator.discord import DiscordEmulator
from bot.emulator.fault_schedule import FaultPhase, run_schedule
from bot.emulator.gemini import LONG_ANSWER, GeminiEmulator
from bot.emulator.traffic import Traffic, TurnRecord
from bot.store.atomic import atomic_write_bytes

__all__ = ["demo_settings", "run_demo"]

# Generous enough that a demo at its default rate shows answers, not quota notices; an operator
# who sets the GEMINI_RATE_LIMIT_* variables gets exactly those.
DEMO_QUOTA = {"gemini_rate_limit_rpm": 120, "gemini_rate_limit_daily": 10_000}


def demo_settings(settings: Settings, discord: DiscordEmulator, gemini: GeminiEmulator) -> Settings:
    update: dict[str, object] = {
        "discord_rest_url": discord.rest_url,
        "gemini_base_url": gemini.base_url,
    }
    if settings.alert_webhook_token is None and settings.alert_webhook_token_file is None:
        update["alert_webhook_token_file"] = demo_webhook_token(settings.data_dir)
    for name, value in DEMO_QUOTA.items():
        if name not in settings.model_fields_set:
            update[name] = value
    return settings.model_copy(update=update)


def demo_webhook_token(data_dir: Path) -> Path:
    """The demo's /alerts bearer token, made once under DATA_DIR; Alertmanager reads the same
    file (`python deploy/local_stack.py --token-file ...`)."""
    path = data_dir / "webhook_token"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, secrets.token_hex(32).encode() + b"\n")
    return path


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
    faults: list[FaultPhase] | None = None,
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
        schedule: asyncio.Task[None] | None = None
        try:
            await discord.wait_until_ready()
            token_file = app.settings.alert_webhook_token_file
            print(
                f"demo: the bot is connected to the Discord emulator at {discord.base_url}\n"
                f"demo: Gemini emulator at {gemini.base_url}\n"
                f"demo: ops endpoints at {app.ops.url}/metrics /healthz /readyz /status /alerts "
                "/heal/audit\n"
                + (
                    f"demo: webhook token in {token_file}; watch alerts heal the bot with:\n"
                    f"      python deploy/local_stack.py --bot {app.ops.host_port} "
                    f"--token-file {token_file}   (the committed timings: heals within 2 minutes)\n"
                    if token_file
                    else ""
                )
                + f"demo: {users} simulated users, about {rate:g} messages/s; Ctrl-C stops",
                flush=True,
            )
            if faults:
                schedule = asyncio.create_task(
                    run_schedule(gemini, faults, lambda line: print(f"demo: {line}", flush=True))
                )
            await run_until_signal(traffic.run(duration))
        finally:
            if schedule is not None:
                schedule.cancel()
            await app.stop()
        summary = summarise(
            traffic.turns,
            lambda mid: [m.content for m in discord.sent_messages if m.reply_to == mid],
        )
        print(f"demo: stopped after {len(traffic.turns)} turns ({summary.text()})", flush=True)
        for line in summary.told:
            print(f"demo: told: {line}", flush=True)
    return 0 if summary.answered or not traffic.turns else 1


_QUEUED_MARK = "your question is queued"


def is_model_answer(text: str) -> bool:
    """Did this reply come from the (emulated) model? The demo's Gemini emulator answers with an
    echo or its long markdown answer; everything else the bot says is a notice of its own
    (queued, refused, cooldown, maintenance, restarting, failed)."""
    return text.startswith(("You said:", "You sent no text.", LONG_ANSWER[:40]))


@dataclass
class Summary:
    """How the demo's questions ended: a queued notice is not an answer."""

    answered: int = 0  # a real answer, at once or later from the queue
    answered_later: int = 0
    queued: int = 0  # still waiting when the demo stopped
    notices: int = 0  # refused, failed or dropped, with a reply saying so
    unanswered: int = 0  # nothing came back in time
    told: list[str] = field(default_factory=list)

    def text(self) -> str:
        parts = [f"{self.answered} answered"]
        if self.answered_later:
            parts[0] += f", {self.answered_later} of them later from the queue"
        if self.queued:
            parts.append(f"{self.queued} still queued")
        if self.notices:
            parts.append(f"{self.notices} told they could not be answered")
        if self.unanswered:
            parts.append(f"{self.unanswered} without a reply")
        return "; ".join(parts)


def summarise(turns: list[TurnRecord], replies_to: Callable[[int], list[str]]) -> Summary:
    """Each question's last word from the bot (`replies_to(message id)` lists the bot's replies
    to it, in order): answered, still queued, or a notice."""
    summary = Summary()
    for turn in turns:
        replies = [turn.answer] if turn.answer is not None else []
        if turn.message_id is not None:  # replies that came later count too
            replies = replies_to(turn.message_id) or replies
        if not replies:
            summary.unanswered += 1
            continue
        answers = [r for r in replies if is_model_answer(r)]
        if answers:
            summary.answered += 1
            summary.answered_later += not is_model_answer(replies[0])
        elif _QUEUED_MARK in replies[-1]:
            summary.queued += 1
        else:
            summary.notices += 1
            summary.told.append(f"{turn.user} in {turn.place}: {_short(replies[-1])}")
    return summary
