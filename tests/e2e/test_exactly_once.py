"""Each accepted question gets exactly one answer or one notice, whatever delivers it twice
(a replayed gateway event, a queue entry that came back) and whatever fails in between (the
store, a stop mid-answer). The whole bot against the emulators; kill -9 is in test_chaos.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.app import BotApp
from bot.chat.resume import resend_undelivered
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator
from tests.fakes import FakeClock


def _replies_to(discord: DiscordEmulator, message_id: int) -> list[str]:
    return [m.content for m in discord.sent_messages if m.reply_to == message_id]


async def _ask(discord: DiscordEmulator, text: str, name: str = "asker") -> int:
    user = discord.create_user(name)
    dm = discord.create_dm(user)
    message = await discord.send_message(dm, author=user, content=text)
    return int(message["id"])


def _refuse_in_db(db: Path, statement: str, key_like: str) -> None:
    """A trigger that makes SQLite refuse one kind of write, as a locked or failing disk would."""
    with sqlite3.connect(db) as conn:
        conn.execute(
            f"CREATE TRIGGER refuse_{statement.lower()} BEFORE {statement} ON kv "
            f"WHEN {'OLD' if statement == 'DELETE' else 'NEW'}.key LIKE '{key_like}' "
            "BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
        )


def _allow_in_db(db: Path, statement: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(f"DROP TRIGGER refuse_{statement.lower()}")


async def test_a_replayed_message_create_gets_no_second_reply_even_after_a_restart(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    # With a cooldown, the replay used to get "going a bit fast"; without, a second answer.
    app: BotApp = await start_bot(user_cooldown_seconds=30)
    message_id = await _ask(discord, "what is a monad?")
    await discord.wait_for_reply(message_id)

    await discord.redeliver_message(message_id)
    await discord.wait_for(lambda: app.answers.stats.duplicates_total["gateway"] == 1)
    assert len(_replies_to(discord, message_id)) == 1
    assert len(gemini.requests) == 1

    await app.stop()
    again: BotApp = await start_bot(user_cooldown_seconds=30)
    await discord.redeliver_message(message_id)
    await discord.wait_for(lambda: again.answers.stats.duplicates_total["gateway"] == 1)
    assert len(_replies_to(discord, message_id)) == 1
    assert len(gemini.requests) == 1


async def test_a_question_the_store_cannot_queue_is_told_so_and_never_promised(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    app: BotApp = await start_bot(retry_max_attempts=1)
    _refuse_in_db(app.store.path, "INSERT", "queue:%")
    gemini.fail_all(503)

    message_id = await _ask(discord, "are you there?")
    reply = await discord.wait_for_reply(message_id)

    assert "queued" not in reply.content
    assert "couldn't save your question" in reply.content
    assert app.queue.size == 0
    assert app.queue.stats.dropped_total["store_error"] == 1
    assert app.pipeline.stats.errors["store"] >= 1
    await discord.wait_for(lambda: app.answers.is_final(message_id))  # told: nothing to resume
    assert len(_replies_to(discord, message_id)) == 1


async def test_a_queue_entry_whose_delete_failed_is_not_answered_twice_after_a_restart(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    first: BotApp = await start_bot(retry_max_attempts=1, queue_retry_interval_seconds=0.2)
    db = first.store.path
    gemini.fail_all(503)
    message_id = await _ask(discord, "queue me")
    await discord.wait_for(lambda: len(_replies_to(discord, message_id)) == 1)
    assert "queued" in _replies_to(discord, message_id)[0]

    _refuse_in_db(db, "DELETE", "queue:%")
    gemini.heal()
    await discord.wait_for(lambda: len(_replies_to(discord, message_id)) == 2, timeout=20)
    await discord.wait_for(lambda: first.queue.stats.answered_total == 1)
    await first.stop()  # the delete fails at the shutdown flush too: the entry stays

    _allow_in_db(db, "DELETE")
    second: BotApp = await start_bot(queue_retry_interval_seconds=0.2)
    await discord.wait_for(lambda: second.answers.stats.duplicates_total["queue"] == 1, timeout=20)
    await discord.wait_for(lambda: second.queue.size == 0)
    assert len(_replies_to(discord, message_id)) == 2  # the notice and one answer
    assert len(gemini.requests) == 2  # the failed call and the answer; none after the restart


async def test_a_question_in_flight_at_shutdown_is_told_and_answered_after_the_restart(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    first: BotApp = await start_bot(shutdown_grace_seconds=0.2, gemini_timeout_seconds=30)
    gemini.latency = 3.0
    message_id = await _ask(discord, "a slow one")
    await gemini.wait_for_requests(1)
    await first.stop()  # the answer cannot finish within the grace
    notices = _replies_to(discord, message_id)
    assert len(notices) == 1 and "restarting" in notices[0]

    gemini.latency = 0.0
    second: BotApp = await start_bot()
    await discord.wait_for(lambda: len(_replies_to(discord, message_id)) == 2, timeout=20)
    assert _replies_to(discord, message_id)[1].startswith("You said: a slow one")
    assert second.answers.stats.resumed_total["requeued"] == 1
    await discord.wait_for(lambda: second.answers.is_final(message_id))
    await discord.wait_for(lambda: second.queue.size == 0)
    assert len(_replies_to(discord, message_id)) == 2


async def test_a_reply_discord_refused_past_the_hold_is_kept_and_sent_later(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    # Issue 16 item 10: a Discord 5xx on the reply threw away a paid-for answer.
    app: BotApp = await start_bot(
        discord_hold_max_seconds=0.5,
        discord_rest_max_retries=0,
        discord_breaker_reset_timeout_seconds=0.1,
    )
    discord.inject_rest_fault(503, count=None, route_contains="/messages")
    message_id = await _ask(discord, "keep my answer")
    await discord.wait_for(lambda: app.pipeline.stats.errors["discord"] == 1, timeout=20)
    assert [r.message_id for r in app.answers.undelivered()] == [message_id]

    discord.clear_rest_faults()
    assert await resend_undelivered(app.pipeline, app.answers) == 1
    assert _replies_to(discord, message_id) == ["You said: keep my answer\n(turns: 1, images: 0)"]
    assert len(gemini.requests) == 1  # the same answer, not a second model call
    assert app.answers.is_final(message_id) and app.answers.undelivered() == []


async def test_a_question_in_flight_too_long_ago_is_told_after_the_restart(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    clock = FakeClock.in_a_fresh_minute()
    first: BotApp = await start_bot(clock=clock, shutdown_grace_seconds=0.2)
    gemini.latency = 3.0
    message_id = await _ask(discord, "too slow")
    await gemini.wait_for_requests(1)
    await first.stop()
    assert "restarting" in _replies_to(discord, message_id)[0]

    clock.advance(first.settings.queue_max_age_seconds + 1)  # down for longer than it may wait
    gemini.latency = 0.0
    second: BotApp = await start_bot(clock=clock)
    await discord.wait_for(lambda: len(_replies_to(discord, message_id)) == 2, timeout=20)
    assert "couldn't keep your question" in _replies_to(discord, message_id)[1]
    await discord.wait_for(lambda: second.answers.stats.resumed_total["told"] == 1)
    assert len(gemini.requests) == 1  # no model call for a question too old to answer


def _message_calls(discord: DiscordEmulator, method: str) -> int:
    return sum(
        1
        for m, path, _ in discord.requests
        if m == method and path.endswith("/messages") and "/channels/" in path
    )


async def test_an_interrupted_reply_older_than_the_nonce_window_is_looked_up_not_resent(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    clock = FakeClock.in_a_fresh_minute()
    app: BotApp = await start_bot(
        clock=clock,
        discord_hold_max_seconds=0.5,
        discord_rest_max_retries=0,
        discord_breaker_reset_timeout_seconds=0.1,
    )
    # Discord posts the reply but the answer is lost, then fails every retry.
    discord.inject_rest_lost_answer("drop", count=1, route_contains="/messages")
    discord.inject_rest_fault(503, count=None, route_contains="/messages")
    message_id = await _ask(discord, "posted but unheard")
    await discord.wait_for(lambda: app.pipeline.stats.errors["discord"] == 1, timeout=20)
    assert len(_replies_to(discord, message_id)) == 1  # in Discord; the bot cannot know
    assert [r.message_id for r in app.answers.undelivered()] == [message_id]

    discord.clear_rest_faults()
    clock.advance(600)  # past Discord's nonce window: a re-send could post a second copy
    posts = _message_calls(discord, "POST")
    assert await resend_undelivered(app.pipeline, app.answers) == 1
    assert _message_calls(discord, "GET") >= 1  # looked in the channel...
    assert _message_calls(discord, "POST") == posts  # ...found it, and sent nothing
    assert len(_replies_to(discord, message_id)) == 1
    assert app.answers.is_final(message_id)
