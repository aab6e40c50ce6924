"""kill -9 of the real bot process in the middle of a streamed answer: after the restart the
channel holds exactly one answer, the streamed message edited to the complete text (no second
message beside a half-edited one). The kill is timed on what the Discord emulator sees: the
first message posted and then edited once (the journal records the posted message's id before
the stream's next edit, so the edit proves the record is written)."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp

from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator
from tests.e2e.test_chaos import BotProcess, _all_finished, _until

ANSWER = " ".join(
    f"Sentence number {n} says something useful about the question." for n in range(1, 21)
)


def _has_button(discord: DiscordEmulator, message_id: int) -> bool:
    message = discord.message(message_id) or {}
    return bool(message.get("components"))


async def test_kill_9_mid_stream_leaves_one_answer_edited_to_complete(
    tmp_path: Path, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    started = time.monotonic()
    gemini.stream_chunks = 20
    gemini.stream_first_chunk_s = 0.2
    gemini.stream_chunk_interval_s = 0.3  # about 6 s of text: the kill lands mid-stream
    gemini.queue_answer(ANSWER)  # the answer being streamed when the bot is killed
    gemini.queue_answer(ANSWER)  # asked again after the restart
    bot = BotProcess(tmp_path, discord, gemini)
    bot.env.update(STREAM_EDIT_INTERVAL_SECONDS="0.3", STREAM_FIRST_POST_SECONDS="0")
    user = discord.create_user("alice")
    dm = discord.create_dm(user)

    async with aiohttp.ClientSession() as http:
        await bot.start()
        calls = len(gemini.requests)  # a start-up probe may have asked Gemini already
        asked = await discord.send_message(dm, author=user, content="tell me", mention_bot=True)
        question = int(asked["id"])
        await discord.wait_for(lambda: bool(discord.messages_in(dm)), what="the first words")
        streamed = discord.messages_in(dm)[0]
        await discord.wait_for(lambda: bool(streamed.edited_at), what="an edit of them")
        await bot.kill9()
        cut = streamed.body["content"] if not streamed.edits else streamed.edits[-1]["content"]
        assert len(gemini.requests) == calls + 1 and len(cut) < len(ANSWER)  # really cut mid-stream
        assert _has_button(discord, streamed.id)  # left with its Stop button by the kill

        await bot.start()
        await _until(
            "the resumed answer", lambda: _all_finished(http, bot, discord, {question}), 30
        )
        assert await bot.terminate() == 0

    sent = discord.messages_in(dm)
    assert [m.id for m in sent] == [streamed.id]  # one answer: no second message beside it
    assert sent[0].reply_to == question
    assert (discord.message(streamed.id) or {})["content"] == ANSWER  # edited to complete
    assert not _has_button(discord, streamed.id)  # the Stop button went with the final edit
    assert len(gemini.requests) >= calls + 2  # asked again after the restart
    assert discord.rate_limited_count == 0
    print(f"\nkill -9 mid-stream and resume: {time.monotonic() - started:.1f} s")


async def test_kill_9_after_a_rollover_finishes_both_messages_without_a_third(
    tmp_path: Path, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    long_answer = f"{ANSWER}\n\n{ANSWER}\n\n{ANSWER}"  # three messages when streamed
    gemini.stream_chunks = 24
    gemini.stream_first_chunk_s = 0.2
    gemini.stream_chunk_interval_s = 0.3  # about 7 s; the rollover comes at about 4 s
    gemini.queue_answer(long_answer)
    gemini.queue_answer(ANSWER)  # after the restart the answer fits in one message
    bot = BotProcess(tmp_path, discord, gemini)
    bot.env.update(STREAM_EDIT_INTERVAL_SECONDS="0.2", STREAM_FIRST_POST_SECONDS="0")
    user = discord.create_user("alice")
    dm = discord.create_dm(user)

    async with aiohttp.ClientSession() as http:
        await bot.start()
        asked = await discord.send_message(dm, author=user, content="tell me", mention_bot=True)
        question = int(asked["id"])
        await discord.wait_for(
            lambda: len(discord.messages_in(dm)) >= 2, timeout=20, what="the rollover"
        )
        second = discord.messages_in(dm)[1]
        await discord.wait_for(lambda: bool(second.edited_at), what="an edit of the second")
        await bot.kill9()
        streamed = [m.id for m in discord.messages_in(dm)]
        assert len(streamed) == 2  # killed mid-stream: rolled over once, not yet twice

        await bot.start()
        await _until(
            "the resumed answer", lambda: _all_finished(http, bot, discord, {question}), 30
        )
        assert await bot.terminate() == 0

    # The first streamed message holds the whole (shorter) answer; the second is deleted.
    assert (discord.message(streamed[0]) or {})["content"] == ANSWER
    assert all(discord.message(i) is None for i in streamed[1:])
    assert not _has_button(discord, streamed[0])
    assert [m.id for m in discord.messages_in(dm) if discord.message(m.id)] == [streamed[0]]
