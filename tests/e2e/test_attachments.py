"""Images reach Gemini as inline parts; what is too big or unsupported is refused with a reply."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.app import BotApp
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def test_image_attachment_reaches_gemini_inline(
    bot: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    bob = discord.create_user("bob")
    dm = discord.create_dm(bob)
    att = discord.add_attachment(PNG, "cat.png", "image/png")

    msg = await discord.send_message(dm, author=bob, content="what is this?", attachments=[att])
    await discord.wait_for_reply(int(msg["id"]))

    assert gemini.requests[-1].inline_data == [("image/png", PNG)]


async def test_image_on_the_replied_message_is_sent_too(
    bot: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    guild = discord.create_guild("Guild")
    channel = discord.guild_text_channel(guild)
    alice = discord.create_user("alice")
    bob = discord.create_user("bob")
    discord.add_member(guild, alice)
    discord.add_member(guild, bob)
    att = discord.add_attachment(PNG, "photo.png", "image/png")
    photo = await discord.send_message(channel, author=alice, content="look", attachments=[att])

    ask = await discord.send_message(
        channel, author=bob, content="what is in it?", mention_bot=True, reply_to=int(photo["id"])
    )
    await discord.wait_for_reply(int(ask["id"]))

    assert gemini.requests[-1].inline_data == [("image/png", PNG)]


async def test_oversized_and_unsupported_attachments_are_refused_with_a_reply(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    await start_bot(image_max_bytes=32)
    bob = discord.create_user("bob")
    dm = discord.create_dm(bob)
    big = discord.add_attachment(PNG, "big.png", "image/png")
    doc = discord.add_attachment(b"%PDF-1.4", "paper.exe", "application/x-msdownload")

    too_big = await discord.send_message(dm, author=bob, content="see", attachments=[big])
    refused_big = await discord.wait_for_reply(int(too_big["id"]))
    odd = await discord.send_message(dm, author=bob, content="see", attachments=[doc])
    refused_odd = await discord.wait_for_reply(int(odd["id"]))

    assert "limit" in refused_big.content.lower()
    assert "paper.exe" in refused_odd.content
    assert len(gemini.requests) == 0
