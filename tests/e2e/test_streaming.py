"""Streamed answers, whole bot against the emulators: first words early, paced edits, the
complete text at the end, rollover with balanced fences, Stop, and faults mid-stream."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable
from typing import Any

from bot.app import BotApp
from bot.chat.split import DISCORD_MESSAGE_LIMIT, _unclosed_fence, split_message
from bot.discord.streaming import NOT_YOURS_TEXT, STOP_PREFIX
from bot.emulator.discord import DiscordEmulator
from bot.emulator.discord.records import SentMessage
from bot.emulator.gemini import Fault, GeminiEmulator
from tests.e2e.conftest import new_guild_with

MANAGE_MESSAGES = 1 << 13
ANSWER = " ".join(
    f"Sentence number {n} says something useful about the question." for n in range(1, 21)
)


def _stop_id(discord: DiscordEmulator, message_id: int) -> str | None:
    message = discord.message(message_id) or {}
    for row in message.get("components") or []:
        for component in row.get("components") or []:
            custom_id = str(component.get("custom_id", ""))
            if custom_id.startswith(STOP_PREFIX):
                return custom_id
    return None


async def _first_message(discord: DiscordEmulator, channel: int) -> SentMessage:
    await discord.wait_for(lambda: bool(discord.messages_in(channel)), what="a first message")
    return discord.messages_in(channel)[0]


def _stream_slowly(gemini: GeminiEmulator, chunks: int, interval_s: float) -> None:
    gemini.stream_chunks = chunks
    gemini.stream_first_chunk_s = 0.2
    gemini.stream_chunk_interval_s = interval_s


async def test_first_words_show_early_then_paced_edits_end_in_the_whole_answer(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    app: BotApp = await start_bot(discord_typing_delay_seconds=0, stream_edit_interval_seconds=0.5)
    _stream_slowly(gemini, chunks=12, interval_s=0.25)  # about 3 s of text
    _guild, channel, alice = new_guild_with(discord, "alice")
    gemini.queue_answer(ANSWER)

    asked = await discord.send_message(channel, author=alice, content="tell me", mention_bot=True)
    first = await _first_message(discord, channel)

    # Well before the stream ends: only the first words, with a Stop button, pinging nobody.
    assert first.content and len(first.content) < len(ANSWER)
    assert ANSWER.startswith(first.content)
    assert _stop_id(discord, first.id) is not None
    assert first.reply_to == int(asked["id"])
    assert first.allowed_mentions is not None
    assert not first.allowed_mentions.get("replied_user")  # pings nobody
    # Typing went on until the first words showed, and stops with them.
    assert discord.typing_count(channel) >= 1
    await discord.wait_for(
        lambda: int(asked["id"]) not in app.gateway.delivery._typing, what="typing stopped"
    )

    reply = await discord.wait_for_reply(int(asked["id"]))
    assert reply.content == ANSWER  # the complete text, exactly as a whole answer
    assert _stop_id(discord, reply.id) is None  # the button went with the last edit
    assert len(discord.messages_in(channel)) == 1
    # Edited as text arrived, never more often than the interval, never into a 429.
    assert len(reply.edited_at) >= 3
    gaps = [b - a for a, b in itertools.pairwise([reply.created_at, *reply.edited_at])]
    assert min(gaps) >= 0.5 - 0.02
    assert discord.rate_limited_count == 0
    assert discord.spec_violations == []
    metrics = app.telemetry.render()[0].decode()
    assert 'llmbot_time_to_first_visible_seconds_count{mode="streamed"} 1.0' in metrics
    assert re.search(r'llmbot_stream_edits_total\{outcome="ok"\} [1-9]', metrics)


async def test_a_long_streamed_answer_rolls_over_with_balanced_fences(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    await start_bot(stream_edit_interval_seconds=0.2)
    code = "\n".join(f"    value_{n} = compute({n})  # step {n}" for n in range(120))
    answer = f"Here is the code.\n\n```python\n{code}\n```\n\n{ANSWER}"
    assert len(answer) > 2 * DISCORD_MESSAGE_LIMIT
    _stream_slowly(gemini, chunks=16, interval_s=0.12)
    _guild, channel, alice = new_guild_with(discord, "alice")
    gemini.queue_answer(answer)

    asked = await discord.send_message(channel, author=alice, content="code?", mention_bot=True)
    await discord.wait_for_reply(int(asked["id"]))

    sent = discord.messages_in(channel)
    assert [m.content for m in sent] == split_message(answer)
    # Everything ever shown fitted in a message with its code blocks closed.
    shown = [m.body["content"] for m in sent] + [
        e["content"] for m in sent for e in m.edits if "content" in e
    ]
    assert len(shown) > len(sent)  # really streamed: edited, not posted whole
    for content in shown:
        assert len(content) <= DISCORD_MESSAGE_LIMIT
        assert _unclosed_fence(content) is None, content[-200:]
    assert all(_stop_id(discord, m.id) is None for m in sent)
    assert discord.rate_limited_count == 0


async def test_the_asker_stops_an_answer_and_it_keeps_what_arrived(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    await start_bot(stream_edit_interval_seconds=0.2)
    _stream_slowly(gemini, chunks=20, interval_s=0.4)  # 8 s if nobody stops it
    _guild, channel, alice = new_guild_with(discord, "alice")
    gemini.queue_answer(ANSWER)
    started = time.monotonic()

    asked = await discord.send_message(channel, author=alice, content="tell me", mention_bot=True)
    first = await _first_message(discord, channel)
    stop_id = _stop_id(discord, first.id)
    assert stop_id is not None
    press = await discord.press_button(first.id, stop_id, alice)

    reply = await discord.wait_for_reply(int(asked["id"]))
    assert time.monotonic() - started < 6  # generation was cancelled, not waited out
    assert press.callback_types == [6]  # acknowledged without a message of its own
    assert reply.content.endswith("\n\n(stopped)")
    kept = reply.content.removesuffix("\n\n(stopped)")
    assert kept and ANSWER.startswith(kept) and len(kept) < len(ANSWER)
    assert _stop_id(discord, reply.id) is None


async def test_only_the_asker_or_a_moderator_can_press_stop(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    await start_bot(stream_edit_interval_seconds=0.2)
    _stream_slowly(gemini, chunks=20, interval_s=0.4)
    guild, channel, alice = new_guild_with(discord, "alice")
    bob = discord.create_user("bob")
    mod = discord.create_user("mod")
    discord.add_member(guild, bob)
    discord.add_member(guild, mod)
    gemini.queue_answer(ANSWER)

    asked = await discord.send_message(channel, author=alice, content="tell me", mention_bot=True)
    first = await _first_message(discord, channel)
    stop_id = _stop_id(discord, first.id)
    assert stop_id is not None

    refused = await discord.press_button(first.id, stop_id, bob)
    assert await refused.wait_for_response() == NOT_YOURS_TEXT
    assert refused.ephemeral
    assert _stop_id(discord, first.id) == stop_id  # still streaming

    await discord.press_button(first.id, stop_id, mod, permissions=MANAGE_MESSAGES)
    reply = await discord.wait_for_reply(int(asked["id"]))
    assert reply.content.endswith("(stopped)")


async def test_a_stream_broken_after_shown_text_keeps_it_with_a_note_and_is_not_retried(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    await start_bot(stream_edit_interval_seconds=0.2)
    _stream_slowly(gemini, chunks=12, interval_s=0.15)
    _guild, channel, alice = new_guild_with(discord, "alice")
    gemini.queue_answer(ANSWER)
    gemini.queue_fault(Fault.broken_stream(after_chunks=6))

    asked = await discord.send_message(channel, author=alice, content="tell me", mention_bot=True)
    reply = await discord.wait_for_reply(int(asked["id"]))

    note = "\n\n(the answer was cut off: the model stopped responding)"
    assert reply.content.endswith(note)
    kept = reply.content.removesuffix(note)
    assert kept and ANSWER.startswith(kept) and len(kept) < len(ANSWER)
    assert len(gemini.requests) == 1  # shown text is never repeated by a retry
    assert len(discord.messages_in(channel)) == 1


async def test_a_stream_broken_before_anything_shows_is_retried_into_one_whole_answer(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    await start_bot()
    _guild, channel, alice = new_guild_with(discord, "alice")
    gemini.queue_answer(ANSWER)
    gemini.queue_answer(ANSWER)
    gemini.queue_fault(Fault.broken_stream())  # cut after the first chunk, at once

    asked = await discord.send_message(channel, author=alice, content="tell me", mention_bot=True)
    reply = await discord.wait_for_reply(int(asked["id"]))

    assert reply.content == ANSWER
    assert len(gemini.requests) == 2
    assert len(discord.messages_in(channel)) == 1


async def test_a_safety_stop_mid_stream_keeps_the_text_with_a_note_and_is_not_cached(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    app: BotApp = await start_bot(stream_edit_interval_seconds=0.2)
    _stream_slowly(gemini, chunks=10, interval_s=0.1)
    _guild, channel, alice = new_guild_with(discord, "alice")
    gemini.queue_answer(ANSWER)
    gemini.queue_fault(Fault.safety_mid_stream())

    asked = await discord.send_message(channel, author=alice, content="tell me", mention_bot=True)
    reply = await discord.wait_for_reply(int(asked["id"]))

    note = "\n\n(the answer was cut off: the model stopped it (safety))"
    assert reply.content.endswith(note)
    kept = reply.content.removesuffix(note)
    assert kept and ANSWER.startswith(kept) and len(kept) < len(ANSWER)
    assert len(app.llm.cache) == 0  # only complete answers are cached


async def test_a_cached_answer_is_posted_whole_at_once(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    await start_bot(stream_edit_interval_seconds=0.2)
    _stream_slowly(gemini, chunks=8, interval_s=0.15)
    guild, first_channel, alice = new_guild_with(discord, "alice")
    second_channel = discord.create_channel(guild, name="other")
    gemini.queue_answer(ANSWER)

    asked = await discord.send_message(first_channel, author=alice, content="q", mention_bot=True)
    streamed = await discord.wait_for_reply(int(asked["id"]))
    assert streamed.content == ANSWER and streamed.edits  # streamed the first time

    # The same question where there is no history yet: the same request, from the cache.
    calls = len(gemini.requests)
    again = await discord.send_message(second_channel, author=alice, content="q", mention_bot=True)
    cached = await discord.wait_for_reply(int(again["id"]))
    assert len(gemini.requests) == calls  # no stream to wait for: Gemini was not asked
    assert cached.content == ANSWER
    assert cached.edits == []  # posted whole, once, with no Stop button
    assert not cached.body.get("components")
    assert len(gemini.requests) == 1


async def test_answers_streaming_into_one_channel_share_its_edit_budget_without_429s(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    # Three answers at once in one channel: Discord allows 5 edits per 5 s there (the emulator
    # enforces it), far less than three streams editing every 0.2 s would use.
    await start_bot(stream_edit_interval_seconds=0.2)
    _stream_slowly(gemini, chunks=12, interval_s=0.25)  # about 3 s each
    guild, channel, alice = new_guild_with(discord, "alice")
    askers = [alice]
    for name in ("bob", "carol"):
        user = discord.create_user(name)
        discord.add_member(guild, user)
        askers.append(user)
    for _ in askers:
        gemini.queue_answer(ANSWER)

    asked = [
        await discord.send_message(channel, author=user, content="tell me", mention_bot=True)
        for user in askers
    ]
    replies = [await discord.wait_for_reply(int(m["id"]), timeout=20) for m in asked]

    assert [r.content for r in replies] == [ANSWER] * 3
    assert discord.rate_limited_count == 0  # paced by the bucket, never into a 429
    # Taking turns: every stream got its share of edits while they ran together.
    counts = [len(r.edits) for r in replies]
    assert min(counts) >= 2
    assert max(counts) - min(counts) <= 2, counts


async def test_with_stream_replies_off_the_answer_is_posted_whole_once(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    app: BotApp = await start_bot(stream_replies=False, gemini_stream=True)
    _stream_slowly(gemini, chunks=6, interval_s=0.1)
    _guild, channel, alice = new_guild_with(discord, "alice")
    gemini.queue_answer(ANSWER)

    asked = await discord.send_message(channel, author=alice, content="tell me", mention_bot=True)
    reply = await discord.wait_for_reply(int(asked["id"]))

    assert reply.content == ANSWER
    assert reply.edits == [] and not reply.body.get("components")
    whole = 'llmbot_time_to_first_visible_seconds_count{mode="whole"} 1.0'
    # Observed once the bot has Discord's answer to its post, just after the emulator has it.
    await discord.wait_for(lambda: whole in app.telemetry.render()[0].decode(), what=whole)
    metrics = app.telemetry.render()[0].decode()
    assert 'llmbot_time_to_first_visible_seconds_count{mode="streamed"} 0.0' in metrics


async def test_a_chat_command_streams_into_its_deferred_response_and_rolls_over_in_follow_ups(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    app: BotApp = await start_bot(stream_edit_interval_seconds=0.2)
    answer = f"{ANSWER}\n\n{ANSWER}"  # about 2,400 characters: two messages
    chunks = split_message(answer)
    assert len(chunks) == 2
    _stream_slowly(gemini, chunks=16, interval_s=0.15)
    _guild, channel, alice = new_guild_with(discord, "alice")
    gemini.queue_answer(answer)

    ix = await discord.send_interaction(
        "chat", user=alice, channel_id=channel, options={"message": "tell me"}
    )
    await discord.wait_for(lambda: bool(ix.final_content), what="the first words")
    # Well before the stream ends: the deferred response shows the first words and Stop.
    assert ix.original is not None and ix.streaming
    first = str(ix.original["content"])
    assert first and answer.startswith(first) and len(first) < len(chunks[0])

    assert await ix.wait_for_response() == chunks[0]
    assert [str(m["content"]) for m in ix.followup_messages] == chunks[1:]
    assert not ix.streaming  # the Stop button went with the last edit
    edits = [r for r in ix.responses if "content" in r]
    assert len(edits) >= 3  # edited as text arrived, not answered whole
    assert discord.rate_limited_count == 0
    assert discord.spec_violations == []
    metrics = app.telemetry.render()[0].decode()
    assert 'llmbot_time_to_first_visible_seconds_count{mode="streamed"} 1.0' in metrics


async def test_the_asker_stops_a_streaming_chat_command(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    await start_bot(stream_edit_interval_seconds=0.2)
    _stream_slowly(gemini, chunks=20, interval_s=0.4)  # 8 s if nobody stops it
    _guild, channel, alice = new_guild_with(discord, "alice")
    gemini.queue_answer(ANSWER)
    started = time.monotonic()

    ix = await discord.send_interaction(
        "chat", user=alice, channel_id=channel, options={"message": "tell me"}
    )
    await discord.wait_for(lambda: ix.streaming, what="the Stop button")
    assert ix.original is not None
    stop_id = _stop_id(discord, int(ix.original["id"]))
    assert stop_id is not None
    await discord.press_button(int(ix.original["id"]), stop_id, alice)

    final = await ix.wait_for_response()
    assert time.monotonic() - started < 6  # generation was cancelled, not waited out
    assert final.endswith("\n\n(stopped)")
    kept = final.removesuffix("\n\n(stopped)")
    assert kept and ANSWER.startswith(kept) and len(kept) < len(ANSWER)
