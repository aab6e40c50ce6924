"""A burst against the whole bot (issue 16, items 5 and 6), Discord's limits on:

* with a tiny MAX_CONCURRENT_MESSAGES / INTAKE_MAX_WAITING the excess is shed, every message
  ends with an answer or a notice naming its author, and /metrics says so;
* typing never takes REST budget a reply is waiting for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bot.app import BotApp
from bot.chat.pipeline import RESTARTING_NOTICE
from bot.emulator.discord import DiscordEmulator, SentMessage
from bot.emulator.gemini import GeminiEmulator
from tests.e2e.test_observability import parse_samples, scrape, value


def burst_world(
    discord: DiscordEmulator, channels: int, users_per_channel: int
) -> list[tuple[int, dict[str, Any]]]:
    """(channel, author) pairs: distinct users spread over `channels` channels of one guild."""
    guild = discord.create_guild("Burst")
    pairs = []
    for c in range(channels):
        channel = discord.create_channel(guild, name=f"burst-{c}")
        for u in range(users_per_channel):
            user = discord.create_user(f"user-{c}-{u}")
            discord.add_member(guild, user)
            pairs.append((channel, user))
    return pairs


def told(message: dict[str, Any], sent: list[SentMessage]) -> str | None:
    """How the bot ended this message: "answer" (a reply to it), "notice" (a notice in its
    channel naming its author), or None yet."""
    author = int(message["author"]["id"])
    channel = int(message["channel_id"])
    for reply in sent:
        if reply.reply_to == int(message["id"]):
            return "answer" if reply.content.startswith("answer") else "notice"
        if reply.channel_id == channel and f"<@{author}>" in reply.content:
            return "notice"
    return None


async def test_a_burst_beyond_the_intake_is_shed_with_notices_and_counted(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    app: BotApp = await start_bot(
        max_concurrent_messages=2,
        intake_max_waiting=3,
        intake_shed_notice_interval_seconds=1,
    )
    gemini.latency = 0.5  # the first two hold their slots while the rest arrive
    gemini.responder = lambda request: "answer: " + request.last_user_text[-12:]
    pairs = burst_world(discord, channels=3, users_per_channel=5)

    messages = await asyncio.gather(
        *(
            discord.send_message(channel, author=user, content=f"question {i}", mention_bot=True)
            for i, (channel, user) in enumerate(pairs)
        )
    )
    await discord.wait_for(
        lambda: all(told(m, discord.sent_messages) for m in messages),
        timeout=20,
        what="every message answered or told",
    )

    endings = [told(m, discord.sent_messages) for m in messages]
    assert endings.count("answer") == 5  # 2 at once + 3 waiting
    assert endings.count("notice") == 10
    notices = [m for m in discord.sent_messages if "too many questions" in m.content]
    # One per channel with sheds (the sheds of a burst share it; a straggler arriving after it
    # gets one more), each pinging the authors it names.
    shed_channels = {
        int(m["channel_id"]) for m, end in zip(messages, endings, strict=True) if end == "notice"
    }
    assert len(shed_channels) <= len(notices) <= 2 * len(shed_channels)
    for notice in notices:
        assert notice.allowed_mentions is not None
        named = {int(u) for u in notice.allowed_mentions.get("users", [])}
        assert named and all(f"<@{u}>" in notice.content for u in named)
    assert discord.spec_violations == []
    assert discord.rate_limited_count == 0

    # A streamed answer is visible before its handler ends (the last edit, the idempotency
    # record): the handlers all end soon after.
    await discord.wait_for(
        lambda: app.gateway.intake.stats.in_flight == 0, timeout=10, what="every handler done"
    )
    samples = parse_samples(await scrape(app.ops.url))
    assert value(samples, "llmbot_intake_shed_total", reason="full") == 10
    assert value(samples, "llmbot_intake_shed_notices_total") == len(notices)
    assert value(samples, "llmbot_intake_shed_untold_total") == 0
    assert value(samples, "llmbot_intake_wait_seconds_count") == 5
    # Three waited for a slot: at least one Gemini answer (0.5 s) each.
    assert value(samples, "llmbot_intake_wait_seconds_sum") >= 3 * 0.5
    assert value(samples, "llmbot_intake_max_in_flight") == 2
    assert value(samples, "llmbot_intake_capacity") == 3
    assert value(samples, "llmbot_intake_in_flight") == 0
    assert value(samples, "llmbot_intake_waiting") == 0


async def test_typing_does_not_take_the_budget_replies_wait_for(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    # A REST pace of 4/s makes 20 replies a 5 s backlog; typing is due at once, and before this
    # fix each message's typing call took its turn at the pace ahead of the replies (20 typing
    # calls, then 20 replies 5 s late).
    app: BotApp = await start_bot(discord_rest_max_rps=4, discord_typing_delay_seconds=0)
    gemini.responder = lambda request: "answer"
    pairs = burst_world(discord, channels=20, users_per_channel=1)
    start = len(discord.requests)

    messages = await asyncio.gather(
        *(
            discord.send_message(channel, author=user, content="hi", mention_bot=True)
            for channel, user in pairs
        )
    )
    await discord.wait_for(
        lambda: all(told(m, discord.sent_messages) == "answer" for m in messages),
        timeout=30,
        what="every message answered",
    )

    calls = [path for _method, path, _status in list(discord.requests)[start:]]
    replies = [i for i, path in enumerate(calls) if path.endswith("/messages")]
    typing = [i for i, path in enumerate(calls) if path.endswith("/typing")]
    assert len(replies) == 20
    # Typing went only while no reply waited: before the answers came back (at 4/s, a few
    # calls at most), never between the replies of the backlog.
    assert [i for i in typing if replies[0] < i < replies[-1]] == []
    assert len(typing) <= 4
    samples = parse_samples(await scrape(app.ops.url))
    assert value(samples, "llmbot_discord_typing_total", result="sent") == len(typing)
    assert value(samples, "llmbot_discord_typing_total", result="skipped") > 0


async def _three_waiting_at_stop(
    app: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Four mentions, one slot: the first is answered slowly while the bot is asked to stop,
    the other three are waiting in the intake then."""
    gemini.latency = 1.0  # the first holds the only slot while the bot is asked to stop
    gemini.responder = lambda request: "answer"
    pairs = burst_world(discord, channels=1, users_per_channel=4)
    first = await discord.send_message(
        pairs[0][0], author=pairs[0][1], content="hi", mention_bot=True
    )
    await gemini.wait_for_requests(1)
    waiting = [
        await discord.send_message(channel, author=user, content=f"hi {n}", mention_bot=True)
        for n, (channel, user) in enumerate(pairs[1:])
    ]
    await discord.wait_for(
        lambda: app.gateway.intake.stats.waiting == 3, timeout=10, what="three waiting"
    )
    await app.stop()
    return first, waiting


async def test_messages_waiting_at_shutdown_are_answered_once_after_the_restart(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    app: BotApp = await start_bot(max_concurrent_messages=1, intake_max_waiting=10)
    first, waiting = await _three_waiting_at_stop(app, discord, gemini)

    assert told(first, discord.sent_messages) == "answer"  # the one in flight was let finish
    for message in waiting:  # each journalled for the restart and its author told so
        replies = [m.content for m in discord.sent_messages if m.reply_to == int(message["id"])]
        assert replies == [RESTARTING_NOTICE]
    assert app.answers.stats.open_by_state["queued"] == 3
    assert app.gateway.intake.stats.shed_notices_total == 0  # nobody asked to come again

    gemini.latency = 0.0
    again: BotApp = await start_bot(max_concurrent_messages=1, intake_max_waiting=10)
    for message in waiting:
        await discord.wait_for(
            lambda m=message: len(_replies_to(discord, m)) == 2, timeout=15, what="the answer"
        )
    await again.queue_worker.run_once()  # nothing is left to answer a second time
    assert [_replies_to(discord, m)[1:] for m in waiting] == [["answer"]] * 3
    assert [_replies_to(discord, first)] == [["answer"]]


async def test_messages_waiting_at_shutdown_beyond_the_queue_are_told_not_dropped(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    app: BotApp = await start_bot(
        max_concurrent_messages=1, intake_max_waiting=10, queue_max_size=1
    )
    first, waiting = await _three_waiting_at_stop(app, discord, gemini)

    assert told(first, discord.sent_messages) == "answer"
    endings = [told(m, discord.sent_messages) for m in waiting]
    assert endings == ["notice"] * 3  # one kept (the queue's one place), two shed and told
    kept = [m for m in waiting if _replies_to(discord, m) == [RESTARTING_NOTICE]]
    assert len(kept) == 1
    (notice,) = [m for m in discord.sent_messages if "couldn't take" in m.content]
    assert notice.reply_to in [int(m["id"]) for m in waiting if m not in kept]
    assert app.gateway.intake.stats.shed_untold_total == 0
    assert app.answers.stats.open_by_state["queued"] == 1


def _replies_to(discord: DiscordEmulator, message: dict[str, Any]) -> list[str]:
    return [m.content for m in discord.sent_messages if m.reply_to == int(message["id"])]
