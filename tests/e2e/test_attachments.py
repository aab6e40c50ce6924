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


async def test_files_that_cannot_fit_one_request_are_refused_before_any_download(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    """Issue #16 item 1: one question's files share one budget below the provider's limit."""
    await start_bot(attachments_max_total_bytes=150)
    bob = discord.create_user("bob")
    dm = discord.create_dm(bob)
    files = [discord.add_attachment(PNG, f"p{i}.png", "image/png") for i in range(3)]

    msg = await discord.send_message(dm, author=bob, content="all of them", attachments=files)
    reply = await discord.wait_for_reply(int(msg["id"]))

    assert "add up to 216 bytes" in reply.content
    assert "150 bytes" in reply.content
    assert list(discord.attachment_downloads) == []
    assert gemini.requests == []


async def test_a_lying_size_cannot_get_past_the_budget(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    await start_bot(attachments_max_total_bytes=100)
    bob = discord.create_user("bob")
    dm = discord.create_dm(bob)
    first = discord.add_attachment(PNG, "a.png", "image/png")
    second = dict(discord.add_attachment(PNG, "b.png", "image/png"), size=1)  # says 1 byte

    msg = await discord.send_message(dm, author=bob, content="two", attachments=[first, second])
    reply = await discord.wait_for_reply(int(msg["id"]))

    assert "`b.png` is larger than I can accept" in reply.content
    assert gemini.requests == []


async def test_attachment_urls_off_discord_are_never_fetched(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    """Issue #16 item 3 (SSRF): a URL at the bot's own ops server is refused, not fetched."""
    app: BotApp = await start_bot(ops_port=0)
    bob = discord.create_user("bob")
    dm = discord.create_dm(bob)
    image = discord.add_attachment(PNG, "status.png", "image/png")
    for url in (
        f"{app.ops.url}/status",
        "http://169.254.169.254/latest/meta-data/x.png",
        "file:///etc/passwd",
    ):
        forged = dict(image, url=url)
        msg = await discord.send_message(dm, author=bob, content="look", attachments=[forged])
        reply = await discord.wait_for_reply(int(msg["id"]))
        assert "is not stored on Discord" in reply.content, url
    assert gemini.requests == []
