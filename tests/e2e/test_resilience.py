"""Quota, provider 429s, the queue across restarts, the breaker, the cache and maintenance,
through the real clients. Time-dependent parts use a controllable clock, never sleeps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bot.app import BotApp
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import Fault, GeminiEmulator
from tests.fakes import FakeClock


def _replies_to(discord: DiscordEmulator, message_id: int) -> list[str]:
    return [m.content for m in discord.sent_messages if m.reply_to == message_id]


async def _dm_burst(discord: DiscordEmulator, count: int) -> list[int]:
    ids = []
    for i in range(count):
        user = discord.create_user(f"user{i}")
        dm = discord.create_dm(user)
        msg = await discord.send_message(dm, author=user, content=f"question {i}")
        ids.append(int(msg["id"]))
    return ids


async def test_quota_burst_sends_at_most_the_effective_limit_and_answers_the_rest_later(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    clock = FakeClock.in_a_fresh_minute()
    app: BotApp = await start_bot(
        clock=clock, gemini_rate_limit_rpm=10, queue_max_size=100, queue_max_age_seconds=900
    )

    ids = await _dm_burst(discord, 50)
    await discord.wait_for(lambda: all(_replies_to(discord, i) for i in ids), timeout=30)

    first = [_replies_to(discord, i)[0] for i in ids]
    answered_now = [t for t in first if t.startswith("You said")]
    queued = [t for t in first if "queued" in t]
    assert len(answered_now) == 9  # RPM 10 with the 0.9 margin
    assert len(queued) == 41
    assert len(gemini.requests) == 9

    # Each new minute lets exactly 9 more through, until everyone is answered.
    for window in range(1, 6):
        clock.advance(60)
        app.queue.wake()
        expected = min(9 * (window + 1), 50)
        await discord.wait_for(lambda e=expected: len(gemini.requests) >= e, timeout=30)
        await discord.wait_for(lambda e=expected: app.queue.size == 50 - e, timeout=30)
        assert len(gemini.requests) == expected
    # Everyone got exactly one answer; nobody got a failure notice.
    for i in ids:
        replies = _replies_to(discord, i)
        assert sum(r.startswith("You said") for r in replies) == 1
        assert not any("Sorry" in r for r in replies)


async def test_provider_retry_delay_is_honoured_before_the_next_call(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    clock = FakeClock.in_a_fresh_minute()
    app: BotApp = await start_bot(clock=clock, breaker_failure_threshold=1)
    gemini.queue_fault(Fault.rate_limited(retry_delay_s=90))

    (message_id,) = await _dm_burst(discord, 1)
    await discord.wait_for(lambda: bool(_replies_to(discord, message_id)))
    assert "request limit" in _replies_to(discord, message_id)[0]
    assert app.llm.breaker.state == "closed"  # a 429 is the quota's business, not a failure

    asked_at = clock.now
    # The question waits for the provider's delay, not just for the next minute.
    (item,) = app.queue.items
    assert item.not_before >= asked_at + 90
    clock.advance(61)
    assert not app.llm.quota.try_acquire().allowed  # the limiter holds calls as well
    app.queue.wake()
    assert app.queue.due() == []

    clock.advance(30)
    app.queue.wake()
    await discord.wait_for(lambda: len(_replies_to(discord, message_id)) == 2, timeout=10)
    assert len(gemini.requests) == 2


async def test_queued_question_survives_a_restart_and_is_answered(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    first: BotApp = await start_bot(queue_retry_interval_seconds=0.2, retry_max_attempts=1)
    gemini.fail_all(503)
    (message_id,) = await _dm_burst(discord, 1)
    await discord.wait_for(lambda: bool(_replies_to(discord, message_id)))
    assert "queued" in _replies_to(discord, message_id)[0]
    await first.stop()
    assert first.queue.size == 1  # kept in the store, not dropped

    gemini.heal()
    second: BotApp = await start_bot(queue_retry_interval_seconds=0.2)
    await discord.wait_for(lambda: len(_replies_to(discord, message_id)) == 2, timeout=20)

    assert _replies_to(discord, message_id)[1].startswith("You said: question 0")
    await discord.wait_for(lambda: second.queue.size == 0)


async def test_quota_counts_survive_a_restart(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    clock = FakeClock.in_a_fresh_minute()
    first: BotApp = await start_bot(clock=clock, gemini_rate_limit_rpm=10)
    ids = await _dm_burst(discord, 4)
    await discord.wait_for(lambda: all(_replies_to(discord, i) for i in ids))
    await first.stop()

    second: BotApp = await start_bot(clock=clock, gemini_rate_limit_rpm=10)
    snapshot = second.llm.quota.snapshot()

    assert snapshot.minute.used == 4
    assert snapshot.day.used == 4
    assert snapshot.minute.remaining == 5


async def test_breaker_opens_after_consecutive_failures_and_serves_the_cache(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    app: BotApp = await start_bot(
        retry_max_attempts=2, breaker_failure_threshold=3, queue_retry_interval_seconds=60
    )
    user = discord.create_user("fay")
    dm = discord.create_dm(user)
    cached_q = await discord.send_message(dm, author=user, content="cached question")
    await discord.wait_for_reply(int(cached_q["id"]))
    await discord.wait_for(lambda: bool(app.memory.history(dm)))
    app.memory.clear(dm)  # so the same question has the same context again

    gemini.fail_all(500)
    for i in range(3):
        other = discord.create_user(f"other{i}")
        ids = await _dm_burst_from(discord, other, f"failing {i}")
        await discord.wait_for(lambda ids=ids: bool(_replies_to(discord, ids)))
    assert app.llm.breaker.state == "open"
    calls = len(gemini.requests)

    # Open: no call is made; a cached answer is still served, others are queued.
    again = await discord.send_message(dm, author=user, content="cached question")
    cached_reply = await discord.wait_for_reply(int(again["id"]))
    fresh_id = await _dm_burst_from(discord, discord.create_user("gus"), "new question")
    await discord.wait_for(lambda: bool(_replies_to(discord, fresh_id)))

    assert cached_reply.content.startswith("You said: cached question")
    assert "having trouble" in _replies_to(discord, fresh_id)[0]
    assert len(gemini.requests) == calls


async def _dm_burst_from(discord: DiscordEmulator, user: dict[str, Any], text: str) -> int:
    dm = discord.create_dm(user)
    msg = await discord.send_message(dm, author=user, content=text)
    return int(msg["id"])


async def test_same_question_and_context_hits_the_cache_other_context_misses(
    bot: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    a, b = discord.create_user("ann"), discord.create_user("ben")
    for user in (a, b):
        msg = await discord.send_message(discord.create_dm(user), author=user, content="hi")
        await discord.wait_for_reply(int(msg["id"]))
    # Same words, same (empty) history: one model call for both.
    assert len(gemini.requests) == 1
    assert bot.llm.cache.stats.hits == 1

    # Ann continues: the history differs now, so it misses.
    follow = await discord.send_message(discord.create_dm(a), author=a, content="hi")
    await discord.wait_for_reply(int(follow["id"]))
    assert len(gemini.requests) == 2


@pytest.mark.parametrize("cached", [False, True])
async def test_maintenance_mode_answers_without_calling_the_model(
    start_bot: Callable[..., Any],
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
    cached: bool,
) -> None:
    app: BotApp = await start_bot()
    user = discord.create_user("hal")
    dm = discord.create_dm(user)
    if cached:
        warm = await discord.send_message(dm, author=user, content="warm")
        await discord.wait_for_reply(int(warm["id"]))
        await discord.wait_for(lambda: bool(app.memory.history(dm)))
        app.memory.clear(dm)
    app.degradation.enter_maintenance("test")
    calls = len(gemini.requests)

    msg = await discord.send_message(dm, author=user, content="warm" if cached else "cold")
    reply = await discord.wait_for_reply(int(msg["id"]))

    if cached:
        assert reply.content.startswith("You said: warm")
    else:
        assert "maintenance" in reply.content
    assert len(gemini.requests) == calls
    assert app.degradation.stats.fallbacks_total["cached" if cached else "maintenance"] == 1


async def test_conversations_survive_a_restart_when_persisted(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    first: BotApp = await start_bot(persist_conversations=True)
    user = discord.create_user("ivy")
    dm = discord.create_dm(user)
    msg = await discord.send_message(dm, author=user, content="my name is Ivy")
    await discord.wait_for_reply(int(msg["id"]))
    await discord.wait_for(lambda: bool(first.memory.history(dm)))
    await first.stop()

    second: BotApp = await start_bot(persist_conversations=True)
    again = await discord.send_message(dm, author=user, content="what is my name?")
    await discord.wait_for_reply(int(again["id"]))

    texts = [c["parts"][-1]["text"] for c in gemini.requests[-1].contents]
    assert texts[0] == "my name is Ivy"
    assert texts[-1] == "what is my name?"
    await discord.wait_for(lambda: len(second.memory.history(dm)) == 4)
