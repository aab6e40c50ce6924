"""A Discord user talks to the bot: mentions, DMs, threads, reply chains, memory, long answers."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from bot.app import BotApp
from bot.chat.split import DISCORD_MESSAGE_LIMIT
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator
from tests.e2e.conftest import new_guild_with

FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)


async def test_guild_mention_gets_gemini_answer_as_reply(
    bot: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    _guild, channel, alice = new_guild_with(discord, "alice")
    gemini.queue_answer("Paris is the capital of France.")

    msg = await discord.send_message(
        channel, author=alice, content="what is the capital of France?", mention_bot=True
    )
    reply = await discord.wait_for_reply(int(msg["id"]))

    assert reply.content == "Paris is the capital of France."
    assert reply.channel_id == channel
    sent = gemini.requests[-1]
    # The mention is stripped; in a guild the model is told who speaks.
    assert sent.last_user_text == "Alice: what is the capital of France?"
    assert "<@" not in sent.last_user_text
    assert sent.system_instruction
    assert discord.spec_violations == []


async def test_typing_shows_only_while_a_slow_answer_is_awaited(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    await start_bot(discord_typing_delay_seconds=0.5)
    _guild, channel, alice = new_guild_with(discord, "alice")

    fast = await discord.send_message(channel, author=alice, content="quick?", mention_bot=True)
    await discord.wait_for_reply(int(fast["id"]))
    assert discord.typing_count(channel) == 0  # answered before the indicator was due

    gemini.latency = 1.2
    # Streamed, the latency is spread over the chunks: the first words must be late too.
    gemini.stream_first_chunk_s = 1.2
    slow = await discord.send_message(channel, author=alice, content="slow?", mention_bot=True)
    await discord.wait_for_reply(int(slow["id"]))
    assert discord.typing_count(channel) >= 1


async def test_dm_gets_an_answer(
    bot: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    bob = discord.create_user("bob")
    dm = discord.create_dm(bob)
    gemini.queue_answer("Hello Bob!")

    msg = await discord.send_message(dm, author=bob, content="hello there")
    reply = await discord.wait_for_reply(int(msg["id"]))

    assert reply.content == "Hello Bob!"
    assert gemini.requests[-1].last_user_text == "hello there"


async def test_thread_works_like_a_channel_and_messages_not_for_the_bot_are_ignored(
    bot: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    guild = discord.create_guild("Guild")
    parent = discord.guild_text_channel(guild)
    thread = discord.create_channel(guild, name="a thread", type=11, parent_id=parent)
    carol = discord.create_user("carol")
    other_bot = discord.create_user("otherbot", bot=True)
    discord.add_member(guild, carol)
    discord.add_member(guild, other_bot)

    ignored_bot = await discord.send_message(
        thread, author=other_bot, content="hi bot", mention_bot=True
    )
    ignored_chatter = await discord.send_message(thread, author=carol, content="just chatting")
    asked = await discord.send_message(
        thread, author=carol, content="in a thread", mention_bot=True
    )
    reply = await discord.wait_for_reply(int(asked["id"]))

    assert reply.channel_id == thread
    replied_to = {m.reply_to for m in discord.sent_messages}
    assert int(ignored_bot["id"]) not in replied_to
    assert int(ignored_chatter["id"]) not in replied_to
    assert len(gemini.requests) == 1


async def test_channel_memory_carries_earlier_turns(
    bot: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    guild = discord.create_guild("Guild")
    channel = discord.guild_text_channel(guild)
    alice = discord.create_user("alice")
    dave = discord.create_user("dave")
    discord.add_member(guild, alice)
    discord.add_member(guild, dave)
    gemini.queue_answer("My name is Bot.")
    gemini.queue_answer("You asked my name.")

    first = await discord.send_message(
        channel, author=alice, content="your name?", mention_bot=True
    )
    answer = await discord.wait_for_reply(int(first["id"]))
    # Memory is per channel: another user in the same channel continues the same conversation,
    # and replying to the bot's message (no mention) addresses it too.
    second = await discord.send_message(
        channel, author=dave, content="what did she ask?", reply_to=answer.id
    )
    await discord.wait_for_reply(int(second["id"]))

    contents = gemini.requests[-1].contents
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[0]["parts"][0]["text"] == "Alice: your name?"
    assert contents[1]["parts"][0]["text"] == "My name is Bot."


async def test_reply_chain_is_read_back_when_memory_no_longer_has_it(
    bot: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    bob = discord.create_user("bob")
    dm = discord.create_dm(bob)
    gemini.queue_answer("Blue whales are the largest animals.")
    first = await discord.send_message(dm, author=bob, content="largest animal?")
    answer = await discord.wait_for_reply(int(first["id"]))

    bot.memory.clear(dm)  # as after an expiry or a restart
    gemini.queue_answer("About 30 metres.")
    follow = await discord.send_message(dm, author=bob, content="how long?", reply_to=answer.id)
    await discord.wait_for_reply(int(follow["id"]))

    texts = [(c["role"], c["parts"][-1]["text"]) for c in gemini.requests[-1].contents]
    assert texts == [
        ("user", "largest animal?"),
        ("model", "Blue whales are the largest animals."),
        ("user", "how long?"),
    ]


async def test_memory_is_capped_by_message_count(
    start_bot: object, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    await start_bot(max_conversation_messages=4)  # type: ignore[operator]
    bob = discord.create_user("bob")
    dm = discord.create_dm(bob)
    for i in range(4):
        msg = await discord.send_message(dm, author=bob, content=f"question {i}")
        await discord.wait_for_reply(int(msg["id"]))

    contents = gemini.requests[-1].contents
    # At most 4 remembered turns plus the new prompt; the oldest went first.
    assert len(contents) == 5
    assert contents[-1]["parts"][-1]["text"] == "question 3"
    assert contents[0]["parts"][-1]["text"] == "question 1"


async def test_long_answer_with_code_fences_is_split_in_order(
    bot: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    code = "\n".join(f"    value_{i} = compute({i})  # step {i}" for i in range(90))
    answer = (
        "Here is the plan.\n\n"
        + ("Some explanation that goes on. " * 40)
        + f"\n\n```python\ndef main():\n{code}\n```\n\n"
        + ("And a closing paragraph with more words. " * 30)
    )
    assert len(answer) > 5000
    gemini.queue_answer(answer)
    bob = discord.create_user("bob")
    dm = discord.create_dm(bob)

    msg = await discord.send_message(dm, author=bob, content="explain")
    first = await discord.wait_for_reply(int(msg["id"]))
    await discord.wait_for(lambda: "closing paragraph" in discord.messages_in(dm)[-1].content)

    chunks = [m.content for m in discord.messages_in(dm)]
    assert first.content == chunks[0]
    assert len(chunks) >= 3
    assert all(0 < len(c) <= DISCORD_MESSAGE_LIMIT for c in chunks)
    assert all(len(FENCE.findall(c)) % 2 == 0 for c in chunks)

    # Joined again without the added fence markers, it is the same text.
    def words(text: str) -> list[str]:
        return re.sub(r"```\w*", " ", text).split()

    assert words(" ".join(chunks)) == words(answer)
    # Only the first chunk is a reply; the rest follow it.
    assert [m.reply_to for m in discord.messages_in(dm)][1:] == [None] * (len(chunks) - 1)


async def test_model_output_cannot_ping_anyone(
    bot: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    _guild, channel, alice = new_guild_with(discord, "alice")
    gemini.queue_answer("@everyone @here <@&123> <@456> look at this")

    msg = await discord.send_message(channel, author=alice, content="ping", mention_bot=True)
    reply = await discord.wait_for_reply(int(msg["id"]))

    assert "@everyone" in reply.content
    allowed = reply.allowed_mentions
    assert allowed is not None
    assert allowed.get("parse", []) == []
    assert not allowed.get("users") and not allowed.get("roles")
    assert allowed.get("replied_user") is True


async def test_empty_mention_gets_a_hint(
    bot: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    _guild, channel, alice = new_guild_with(discord, "alice")

    msg = await discord.send_message(channel, author=alice, content="", mention_bot=True)
    reply = await discord.wait_for_reply(int(msg["id"]))

    assert "Ask me something" in reply.content
    assert len(gemini.requests) == 0


async def test_channel_allow_list_covers_the_threads_in_that_channel(
    start_bot: object, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    guild = discord.create_guild("Guild")
    allowed = discord.guild_text_channel(guild)
    other = discord.create_channel(guild, name="other")
    thread = discord.create_channel(guild, name="t", type=11, parent_id=allowed)
    await start_bot(allowed_channel_ids=str(allowed))  # type: ignore[operator]
    alice = discord.create_user("alice")
    discord.add_member(guild, alice)

    in_thread = await discord.send_message(thread, author=alice, content="hi", mention_bot=True)
    elsewhere = await discord.send_message(other, author=alice, content="hi", mention_bot=True)

    assert (await discord.wait_for_reply(int(in_thread["id"]))).content.startswith("You said")
    refused = await discord.wait_for_reply(int(elsewhere["id"]))
    assert not refused.content.startswith("You said")
    assert len(gemini.requests) == 1
