"""/heal status, /heal run and /heal undo: the admin view of self-healing, through interactions."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

import bot.app
from bot.app import BotApp
from bot.discord.commands import CommandServices
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator
from bot.healing.actions import HEAL_ACTIONS
from bot.healing.testing import sample_alert, sample_body

MANAGE_GUILD = 1 << 5
TOKEN = "heal-commands-token"
JSON = dict[str, Any]


@pytest.fixture
def services_seen(monkeypatch: pytest.MonkeyPatch) -> list[CommandServices]:
    """Every CommandServices the app builds, so a test can see what the commands were given."""
    seen: list[CommandServices] = []
    original = bot.app.CommandServices

    def capture(*args: Any, **kwargs: Any) -> CommandServices:
        services = original(*args, **kwargs)
        seen.append(services)
        return services

    monkeypatch.setattr(bot.app, "CommandServices", capture)
    return seen


@pytest.fixture
async def app(start_bot: Callable[..., Any], services_seen: list[CommandServices]) -> BotApp:
    started: BotApp = await start_bot(alert_webhook_token=TOKEN)
    (services,) = services_seen
    if services.healer is None:
        # bot/app/__init__.py does not pass `healer=self.healer` yet: the wiring test below says so;
        # the other tests check the commands themselves.
        services.healer = started.healer
    return started


@pytest.fixture
async def place(discord: DiscordEmulator, app: BotApp) -> tuple[int, JSON]:
    guild = discord.create_guild("Ops")
    channel = discord.guild_text_channel(guild)
    alice = discord.create_user("alice")
    discord.add_member(guild, alice)
    return channel, alice


async def _heal(
    discord: DiscordEmulator,
    place: tuple[int, JSON],
    sub: str,
    action: str | None = None,
    *,
    admin: bool = True,
) -> str:
    channel, user = place
    options = {sub: {"action": action} if action else {}}
    ix = await discord.send_interaction(
        "heal",
        user=user,
        channel_id=channel,
        options=options,
        permissions=MANAGE_GUILD if admin else 0,
    )
    text = await ix.wait_for_response()
    assert ix.ephemeral, f"/heal {sub} must answer ephemerally"
    return text


async def _chat(discord: DiscordEmulator, name: str, text: str) -> str:
    user = discord.create_user(name)
    dm = discord.create_dm(user)
    msg = await discord.send_message(dm, author=user, content=text)
    return (await discord.wait_for_reply(int(msg["id"]))).content


def _count(app: BotApp, action: str, outcome: str) -> int:
    return app.healer.stats.actions_total[(action, outcome)]


async def test_the_app_gives_the_commands_its_healer(
    start_bot: Callable[..., Any], services_seen: list[CommandServices]
) -> None:
    started: BotApp = await start_bot()
    (services,) = services_seen
    assert services.healer is started.healer, (
        "bot/app/__init__.py must build the commands with the heal receiver: construct "
        "`self.healer` "
        "before `self.gateway.attach(...)` and pass `CommandServices(..., healer=self.healer)`"
    )


async def test_heal_group_is_registered_for_admins_with_its_choices(
    app: BotApp, discord: DiscordEmulator
) -> None:
    await discord.wait_for(lambda: any(c["name"] == "heal" for c in discord.registered_commands))
    (heal,) = [c for c in discord.registered_commands if c["name"] == "heal"]
    assert heal["default_member_permissions"] == str(MANAGE_GUILD)
    subs = {option["name"]: option for option in heal["options"]}
    assert set(subs) == {"status", "run", "undo"}
    (run_action,) = subs["run"]["options"]
    assert [c["value"] for c in run_action["choices"]] == list(HEAL_ACTIONS)
    (undo_action,) = subs["undo"]["options"]
    # Only lasting actions can be undone; one-shot clean-ups have nothing to undo.
    assert [c["value"] for c in undo_action["choices"]] == ["response_time", "error_rate", "queue"]


async def test_non_admins_are_turned_away_and_nothing_runs(
    app: BotApp, discord: DiscordEmulator, place: tuple[int, JSON]
) -> None:
    for sub, action in (("status", None), ("run", "memory"), ("undo", "queue")):
        text = await _heal(discord, place, sub, action, admin=False)
        assert "Only bot admins" in text
    assert _count(app, "memory", "ok") == 0
    assert not app.healer.events


async def test_status_of_a_quiet_bot(
    app: BotApp, discord: DiscordEmulator, place: tuple[int, JSON]
) -> None:
    text = await _heal(discord, place, "status")
    assert f"`{app.healer.instance}`" in text
    assert "In force: nothing" in text
    assert "no heal events yet" in text


async def test_run_memory_by_hand_is_counted_and_shown(
    app: BotApp, discord: DiscordEmulator, place: tuple[int, JSON]
) -> None:
    await _chat(discord, "bob", "fill the cache")
    assert app.llm.cache.stats.entries == 1

    text = await _heal(discord, place, "run", "memory")

    assert text.startswith("✅ `memory` ran")
    assert "bytes_freed=" in text
    assert "stays in force" not in text  # one-shot
    assert app.llm.cache.stats.entries == 0
    assert _count(app, "memory", "ok") == 1
    assert app.healer.stats.last_success_timestamp["memory"] > 0
    (event,) = [e for e in app.healer.events if e.action == "memory"]
    assert event.outcome == "ok"
    assert event.detail.startswith("apply by hand (alice (")
    assert event.fingerprint == "manual:memory"

    status = await _heal(discord, place, "status")
    assert "`memory` **ok** — apply by hand (alice" in status
    assert "In force: nothing" in status  # nothing lasting was applied
    assert "Cooldowns" not in status  # a run by hand starts no alert cooldown

    undo = await _heal(discord, place, "undo", "queue")
    assert undo == (
        "Nothing ran: queue was not applied by hand; a heal an alert started is undone when "
        "the alert resolves"
    )


async def test_lasting_action_stays_until_undone_by_hand(
    app: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator, place: tuple[int, JSON]
) -> None:
    text = await _heal(discord, place, "run", "response_time")
    assert text.startswith("✅ `response_time` ran: reduced mode")
    assert text.endswith("It stays in force until `/heal undo action:response_time`.")
    await _chat(discord, "carol", "short answers now?")
    assert gemini.requests[-1].generation_config.get("maxOutputTokens") == 512

    status = await _heal(discord, place, "status")
    assert "In force:\n• `response_time` since <t:" in status
    assert "by hand; `/heal undo action:response_time` ends it" in status
    assert app.healer.stats.active_heals == 1

    undone = await _heal(discord, place, "undo", "response_time")
    assert undone.startswith("↩️ `response_time` undone: reduced mode off")
    assert _count(app, "response_time", "ok") == 1
    assert _count(app, "response_time", "reverted") == 1
    assert app.healer.stats.active_heals == 0
    await _chat(discord, "dave", "long answers again?")
    assert "maxOutputTokens" not in gemini.requests[-1].generation_config

    again = await _heal(discord, place, "undo", "response_time")
    assert again.startswith("Nothing ran: response_time was not applied by hand")
    assert _count(app, "response_time", "reverted") == 1


async def test_status_shows_an_alerts_heal_and_its_cooldown(
    app: BotApp, discord: DiscordEmulator, place: tuple[int, JSON]
) -> None:
    alert = sample_alert(heal="error_rate", instance=app.healer.instance, fingerprint="ab12cd34")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{app.ops.url}/alerts",
            data=sample_body(alert),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status == 202
    await app.healer.join()

    status = await _heal(discord, place, "status")
    assert "• `error_rate` since <t:" in status
    assert "(alert ab12cd34, applied 1×)" in status
    assert re.search(r"Cooldowns: `error_rate` (5m 00s|4m 5\ds)", status)  # 300 s from now
    assert "`error_rate` **ok** LLMBotHighMemory — apply: degradation medium" in status
    # The alert's heal is not the operator's to undo by hand.
    undo = await _heal(discord, place, "undo", "error_rate")
    assert undo.startswith("Nothing ran: error_rate was not applied by hand")
