"""Slash commands answered through the interaction endpoints."""

from __future__ import annotations

from bot.app import BotApp
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator
from tests.e2e.conftest import new_guild_with

MANAGE_MESSAGES = 1 << 13


async def test_commands_are_registered(bot: BotApp, discord: DiscordEmulator) -> None:
    await discord.wait_for(lambda: len(discord.registered_commands) >= 5)
    names = {c["name"] for c in discord.registered_commands}
    assert {"chat", "clear", "status", "health", "maintenance"} <= names


async def test_chat_command_is_deferred_then_answered(
    bot: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    _guild, channel, alice = new_guild_with(discord, "alice")
    gemini.queue_answer("Slash answer.")

    ix = await discord.send_interaction(
        "chat", user=alice, channel_id=channel, options={"message": "hi"}
    )
    await ix.wait_for_response()

    assert ix.deferred
    assert ix.final_content == "Slash answer."
    assert gemini.requests[-1].last_user_text == "Alice: hi"


async def test_clear_forgets_the_users_turns_and_guards_the_channel_scope(
    bot: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    _guild, channel, alice = new_guild_with(discord, "alice")
    msg = await discord.send_message(channel, author=alice, content="remember me", mention_bot=True)
    await discord.wait_for_reply(int(msg["id"]))
    await discord.wait_for(lambda: bool(bot.memory.history(channel)))

    denied = await discord.send_interaction(
        "clear", user=alice, channel_id=channel, options={"scope": "channel"}
    )
    await denied.wait_for_response()
    assert denied.ephemeral and "Manage Messages" in (denied.final_content or "")
    assert bot.memory.history(channel)

    mine = await discord.send_interaction("clear", user=alice, channel_id=channel)
    await mine.wait_for_response()
    assert "forgot your messages" in (mine.final_content or "")
    assert bot.memory.history(channel) == []

    allowed = await discord.send_interaction(
        "clear",
        user=alice,
        channel_id=channel,
        options={"scope": "channel"},
        permissions=MANAGE_MESSAGES,
    )
    await allowed.wait_for_response()
    assert "whole conversation" in (allowed.final_content or "")


async def test_status_and_health_agree_with_the_bot(
    bot: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    bob = discord.create_user("bob")
    dm = discord.create_dm(bob)
    msg = await discord.send_message(dm, author=bob, content="hi")
    await discord.wait_for_reply(int(msg["id"]))

    status = await discord.send_interaction("status", user=bob, channel_id=dm)
    await status.wait_for_response()
    health = await discord.send_interaction("health", user=bob, channel_id=dm)
    await health.wait_for_response()

    text = status.final_content or ""
    assert status.ephemeral and health.ephemeral
    assert "gemini-2.5-flash" in text
    assert "1 handled, 0 failed" in text
    assert "1 conversations" in text
    assert "Health: healthy" in (health.final_content or "")


MANAGE_GUILD = 1 << 5


async def test_maintenance_command_is_for_admins_and_switches_the_mode(
    bot: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    _guild, channel, alice = new_guild_with(discord, "alice")

    denied = await discord.send_interaction(
        "maintenance", user=alice, channel_id=channel, options={"mode": "on"}
    )
    await denied.wait_for_response()
    assert "Only bot admins" in (denied.final_content or "")
    assert not bot.degradation.maintenance

    on = await discord.send_interaction(
        "maintenance",
        user=alice,
        channel_id=channel,
        options={"mode": "on"},
        permissions=MANAGE_GUILD,
    )
    await on.wait_for_response()
    assert bot.degradation.maintenance
    msg = await discord.send_message(channel, author=alice, content="hello?", mention_bot=True)
    reply = await discord.wait_for_reply(int(msg["id"]))
    assert "maintenance" in reply.content
    assert len(gemini.requests) == 0

    off = await discord.send_interaction(
        "maintenance",
        user=alice,
        channel_id=channel,
        options={"mode": "off"},
        permissions=MANAGE_GUILD,
    )
    await off.wait_for_response()
    assert not bot.degradation.maintenance
