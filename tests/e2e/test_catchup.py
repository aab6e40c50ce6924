"""Restart catch-up: the whole bot against the Discord emulator, through hikari's REST client.

Questions asked while the bot is stopped (or between two gateway sessions) are read back from
the channels' history after a start or a new session and answered once, saying they are late.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bot.app import BotApp
from bot.chat.pipeline import CAUGHT_UP_NOTE
from bot.emulator.discord import DiscordEmulator
from tests.e2e.conftest import new_guild_with


def _replies_to(discord: DiscordEmulator, message_id: int) -> list[str]:
    return [m.content for m in discord.sent_messages if m.reply_to == message_id]


async def _caught_up(discord: DiscordEmulator, app: BotApp, runs: int = 1) -> None:
    """Wait until `runs` catch-up runs have finished and every reply they started is sent."""
    await discord.wait_for(lambda: app.gateway.catchup.stats.runs >= runs, timeout=20)
    await discord.wait_for(lambda: app.pipeline.stats.in_flight == 0, timeout=20)


async def _ask(discord: DiscordEmulator, channel: int, user: dict[str, Any], text: str) -> int:
    sent = await discord.send_message(channel, author=user, content=text, mention_bot=True)
    return int(sent["id"])


async def test_a_mention_sent_while_the_bot_was_stopped_is_answered_once_after_it_starts(
    discord: DiscordEmulator, start_bot: Callable[..., Any]
) -> None:
    _, channel, user = new_guild_with(discord, "ada")
    first: BotApp = await start_bot()
    before = await _ask(discord, channel, user, "asked while you were up")
    await discord.wait_for(lambda: bool(_replies_to(discord, before)))
    await first.stop()

    missed = await _ask(discord, channel, user, "asked while you were down")
    chatter = await discord.send_message(channel, author=user, content="just chatting")
    dm = discord.create_dm(user)
    second: BotApp = await start_bot()
    await _caught_up(discord, second)

    (reply,) = _replies_to(discord, missed)
    assert reply.startswith(CAUGHT_UP_NOTE + "\n")
    assert "asked while you were down" in reply  # the Gemini emulator echoes the question
    assert _replies_to(discord, int(chatter["id"])) == []  # not addressed to the bot
    assert len(_replies_to(discord, before)) == 1  # answered before the stop: not again
    stats = second.gateway.catchup.stats
    # Read but not answered: the chatter, and the bot's own reply sent before the stop.
    assert stats.messages["answered"] == 1 and stats.messages["not_for_bot"] == 2
    assert stats.channels_scanned == 1
    # Live questions after the start are answered as usual, without the late note.
    live = await _ask(discord, dm, user, "and now?")
    await discord.wait_for(lambda: bool(_replies_to(discord, live)))
    assert not _replies_to(discord, live)[0].startswith(CAUGHT_UP_NOTE)


async def test_catch_up_exports_its_metrics(
    discord: DiscordEmulator, start_bot: Callable[..., Any]
) -> None:
    _, channel, user = new_guild_with(discord, "bea")
    first: BotApp = await start_bot()
    seen = await _ask(discord, channel, user, "hello")
    await discord.wait_for(lambda: bool(_replies_to(discord, seen)))
    await first.stop()
    await _ask(discord, channel, user, "one")
    await _ask(discord, channel, user, "two")

    second: BotApp = await start_bot()
    await _caught_up(discord, second)

    text = second.telemetry.render()[0].decode()
    assert 'llmbot_catchup_messages_total{outcome="answered"} 2.0' in text
    assert "llmbot_catchup_channels_scanned_total 1.0" in text
    assert "llmbot_catchup_duration_seconds_count 1.0" in text
    assert "llmbot_catchup_tracked_channels 1.0" in text


async def test_a_question_older_than_the_window_is_not_answered(
    discord: DiscordEmulator, start_bot: Callable[..., Any]
) -> None:
    _, channel, user = new_guild_with(discord, "cy")
    first: BotApp = await start_bot()
    seen = await _ask(discord, channel, user, "hello")
    await discord.wait_for(lambda: bool(_replies_to(discord, seen)))
    await first.stop()
    old = await _ask(discord, channel, user, "asked long ago")

    # The bot starts 16 minutes later, as its clock sees it: the question is past the window.
    second: BotApp = await start_bot(clock=lambda: time.time() + 16 * 60, catchup_window_minutes=15)
    await _caught_up(discord, second)

    assert _replies_to(discord, old) == []
    assert second.gateway.catchup.stats.messages["answered"] == 0


async def test_catch_up_is_off_with_a_zero_window(
    discord: DiscordEmulator, start_bot: Callable[..., Any]
) -> None:
    _, channel, user = new_guild_with(discord, "dee")
    first: BotApp = await start_bot(catchup_window_minutes=0)
    seen = await _ask(discord, channel, user, "hello")
    await discord.wait_for(lambda: bool(_replies_to(discord, seen)))
    await first.stop()
    missed = await _ask(discord, channel, user, "anyone?")

    second: BotApp = await start_bot(catchup_window_minutes=0)
    # A live question answered after the start shows the start is complete.
    live = await _ask(discord, channel, user, "now?")
    await discord.wait_for(lambda: bool(_replies_to(discord, live)))

    assert _replies_to(discord, missed) == []
    assert second.gateway.catchup.stats.runs == 0


async def test_a_new_session_while_running_catches_up_the_gap(
    discord: DiscordEmulator, start_bot: Callable[..., Any]
) -> None:
    _, _, user = new_guild_with(discord, "eve")
    dm = discord.create_dm(user)
    app: BotApp = await start_bot()
    await _caught_up(discord, app)  # the start's run (nothing tracked yet)
    seen = await _ask(discord, dm, user, "hello")
    await discord.wait_for(lambda: bool(_replies_to(discord, seen)))
    identifies = discord.identify_count

    # Discord ends the session: hikari cannot resume, so it identifies again (READY).
    await discord.end_gateway_session(0)
    in_gap = await discord.send_message(dm, author=user, content="are you there?")
    await discord.wait_for(lambda: discord.identify_count > identifies, timeout=20)
    await _caught_up(discord, app, runs=2)

    (reply,) = _replies_to(discord, int(in_gap["id"]))
    assert reply.startswith(CAUGHT_UP_NOTE)
    assert discord.invalid_session_count >= 1
    assert len(_replies_to(discord, seen)) == 1


async def test_a_resumed_session_needs_no_catch_up(
    discord: DiscordEmulator, start_bot: Callable[..., Any]
) -> None:
    _, channel, user = new_guild_with(discord, "fay")
    app: BotApp = await start_bot()
    await _caught_up(discord, app)
    seen = await _ask(discord, channel, user, "hello")
    await discord.wait_for(lambda: bool(_replies_to(discord, seen)))
    resumes = discord.resume_count

    await discord.disconnect_gateway(0, code=4000)  # the session stays resumable
    replayed = await _ask(discord, channel, user, "sent while you reconnect")
    await discord.wait_for(lambda: discord.resume_count > resumes, timeout=20)
    await discord.wait_for(lambda: bool(_replies_to(discord, replayed)), timeout=20)
    await discord.wait_for(lambda: app.pipeline.stats.in_flight == 0)

    # Replayed by the RESUME and answered live: once, not late, and no second catch-up run.
    (reply,) = _replies_to(discord, replayed)
    assert not reply.startswith(CAUGHT_UP_NOTE)
    assert app.gateway.catchup.stats.runs == 1


async def test_caught_up_questions_pass_the_access_lists_with_the_members_roles(
    discord: DiscordEmulator, start_bot: Callable[..., Any]
) -> None:
    guild = discord.create_guild("Roles")
    channel = discord.guild_text_channel(guild)
    role = discord.create_role(guild, "askers")
    member, outsider = discord.create_user("gil"), discord.create_user("hal")
    discord.add_member(guild, member, roles=[role])
    discord.add_member(guild, outsider)
    first: BotApp = await start_bot(allowed_role_ids=str(role))
    seen = await _ask(discord, channel, member, "hello")
    await discord.wait_for(lambda: bool(_replies_to(discord, seen)))
    await first.stop()
    allowed = await _ask(discord, channel, member, "may I?")
    refused = await _ask(discord, channel, outsider, "and I?")

    second: BotApp = await start_bot(allowed_role_ids=str(role))
    await _caught_up(discord, second)

    # REST messages carry no member: the roles come from Discord, so the lists judge as live.
    assert "may I?" in _replies_to(discord, allowed)[0]
    (refusal,) = _replies_to(discord, refused)
    assert refusal.startswith(CAUGHT_UP_NOTE) and "and I?" not in refusal


async def test_a_reply_to_the_bot_in_a_thread_is_caught_up(
    discord: DiscordEmulator, start_bot: Callable[..., Any]
) -> None:
    guild, general, user = new_guild_with(discord, "ida")
    thread = discord.create_channel(guild, name="help", type=11, parent_id=general)
    first: BotApp = await start_bot()
    seen = await _ask(discord, thread, user, "hello")
    await discord.wait_for(lambda: bool(_replies_to(discord, seen)))
    bot_answer = next(m.id for m in discord.sent_messages if m.reply_to == seen)
    await first.stop()
    follow_up = await discord.send_message(
        thread, author=user, content="tell me more", reply_to=bot_answer
    )

    second: BotApp = await start_bot()
    await _caught_up(discord, second)

    (reply,) = _replies_to(discord, int(follow_up["id"]))
    assert reply.startswith(CAUGHT_UP_NOTE) and "tell me more" in reply


async def test_missed_questions_are_answered_oldest_first_across_channels(
    discord: DiscordEmulator, start_bot: Callable[..., Any]
) -> None:
    guild, first_channel, user = new_guild_with(discord, "jo")
    second_channel = discord.create_channel(guild, name="other")
    app: BotApp = await start_bot()
    for channel in (first_channel, second_channel):
        seen = await _ask(discord, channel, user, "hello")
        await discord.wait_for(lambda s=seen: bool(_replies_to(discord, s)))
    await app.stop()
    asked = [
        await _ask(discord, first_channel, user, "one"),
        await _ask(discord, second_channel, user, "two"),
        await _ask(discord, first_channel, user, "three"),
    ]

    again: BotApp = await start_bot()
    await _caught_up(discord, again)

    answered_in_order = [m.reply_to for m in discord.sent_messages if m.reply_to in asked]
    assert answered_in_order == asked
    assert again.gateway.catchup.stats.channels_scanned == 2
