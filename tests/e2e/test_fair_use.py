"""Fair use through the real hikari and google-genai clients and the emulators: daily token
budgets (user, server, admin overrides, across a restart), `/quota`, auto-reply channels and a
channel's persona and model (inherited by threads), and budgets and memory on Redis going on
while Redis is lost (tests/e2e/test_fleet_fair_use.py has the fleet of processes)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client.parser import text_string_to_metric_families

from bot.app import BotApp
from bot.chat.budget import OVER_BUDGET_REACTION, budget_day
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator
from tests.e2e.conftest import new_guild_with
from tests.e2e.test_fleet import _until
from tests.e2e.test_observability import scrape
from tests.redis_server import RedisServer

StartBot = Callable[..., Any]
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
TOKENS_PER_ANSWER = (10, 20)  # the emulator reports 30 tokens for every answer


def _reset_epoch() -> int:
    return int(budget_day(time.time(), ZoneInfo("America/Los_Angeles"))[1])


async def _ask(discord: DiscordEmulator, channel: int, user: dict[str, Any], text: str) -> str:
    msg = await discord.send_message(channel, author=user, content=text, mention_bot=True)
    return (await discord.wait_for_reply(int(msg["id"]))).content


async def _metric(app: BotApp, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(await scrape(app.ops.url)):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"{name}{labels} is not on /metrics")


async def test_a_user_budget_allows_two_answers_then_refuses_naming_the_reset(
    start_bot: StartBot, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    bot: BotApp = await start_bot(user_daily_token_budget=50)
    gemini.fixed_usage = TOKENS_PER_ANSWER
    _guild, channel, alice = new_guild_with(discord, "alice")

    first = await _ask(discord, channel, alice, "one")
    second = await _ask(discord, channel, alice, "two")
    refused = await _ask(discord, channel, alice, "three")

    assert "token budget" not in first + second
    assert "your daily token budget is used up (60 of 50 tokens today)" in refused
    assert f"<t:{_reset_epoch()}:" in refused
    assert len(gemini.requests) == 2

    # Within the hour after the notice: a reaction, no second notice, still no model call.
    again = await discord.send_message(channel, author=alice, content="four?", mention_bot=True)
    await discord.wait_for(
        lambda: (channel, int(again["id"]), OVER_BUDGET_REACTION, True) in discord.reactions
    )
    assert len(discord.messages_in(channel)) == 3
    assert len(gemini.requests) == 2
    assert await _metric(bot, "llmbot_budget_refusals_total", scope="user") == 2
    assert await _metric(bot, "llmbot_budget_user_usage_at_refusal_tokens_count") == 2
    assert await _metric(bot, "llmbot_budget_user_usage_at_refusal_tokens_sum") == 120
    assert await _metric(bot, "llmbot_fair_use_entries", map="notices") == 1


async def test_a_server_budget_stops_its_members_but_not_another_server_nor_dms(
    start_bot: StartBot, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    bot: BotApp = await start_bot(guild_daily_token_budget=50)
    gemini.fixed_usage = TOKENS_PER_ANSWER
    guild, channel, alice = new_guild_with(discord, "alice")
    bob = discord.create_user("bob")
    discord.add_member(guild, bob)
    _other, other_channel, carol = new_guild_with(discord, "carol")

    await _ask(discord, channel, alice, "one")
    await _ask(discord, channel, alice, "two")
    refused = await _ask(discord, channel, bob, "me too")
    elsewhere = await _ask(discord, other_channel, carol, "and here?")
    dm = discord.create_dm(bob)
    in_dm = await discord.send_message(dm, author=bob, content="in private")
    private = (await discord.wait_for_reply(int(in_dm["id"]))).content

    assert "this server's daily token budget is used up (60 of 50 tokens today)" in refused
    assert "budget" not in elsewhere
    assert "budget" not in private  # a DM counts against the user's budget only
    assert len(gemini.requests) == 4
    assert bot.budgets.stats.refusals == {"user": 0, "guild": 1, "role": 0}


async def test_quota_shows_the_callers_numbers_the_servers_and_the_bots_quota(
    start_bot: StartBot, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    await start_bot(user_daily_token_budget=100, guild_daily_token_budget=1000)
    gemini.fixed_usage = TOKENS_PER_ANSWER
    _guild, channel, alice = new_guild_with(discord, "alice")
    await _ask(discord, channel, alice, "one")

    quota = await discord.send_interaction("quota", user=alice, channel_id=channel)
    text = await quota.wait_for_response()

    assert quota.ephemeral
    assert "**Your tokens today**: 30 of 100 used, 70 left" in text
    assert "**This server today**: 30 of 1,000 used, 970 left" in text
    assert f"Budgets reset <t:{_reset_epoch()}:R>" in text
    # The one request this minute, or none when a new minute began before /quota; 1 today.
    assert re.search(
        r"\*\*The bot's Gemini quota\*\*: [01] of [\d,]+ requests this minute, 1 of", text
    )


async def test_an_admin_raises_a_budget_and_the_user_is_answered_again(
    start_bot: StartBot, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    guild, channel, alice = new_guild_with(discord, "alice")
    admin = discord.create_user("admin")
    discord.add_member(guild, admin)
    bot: BotApp = await start_bot(user_daily_token_budget=50, admin_user_ids=str(admin["id"]))
    gemini.fixed_usage = TOKENS_PER_ANSWER
    await _ask(discord, channel, alice, "one")
    await _ask(discord, channel, alice, "two")
    assert "budget is used up" in await _ask(discord, channel, alice, "three")

    # A server admin may not lift a user's budget (it counts in every server); a bot admin may.
    denied = await discord.send_interaction(
        "quota-set",
        user=alice,
        channel_id=channel,
        options={"scope": "user", "user": alice["id"], "tokens": 0},
        permissions=MANAGE_GUILD,
    )
    assert "only bot admins" in await denied.wait_for_response()
    raised = await discord.send_interaction(
        "quota-set",
        user=admin,
        channel_id=channel,
        options={"scope": "user", "user": alice["id"], "tokens": 200},
    )
    assert "is now 200 tokens a day" in await raised.wait_for_response()
    answered = await _ask(discord, channel, alice, "four")

    assert "budget" not in answered
    assert len(gemini.requests) == 3
    audit = await bot.budgets.audit()
    assert [(e["by"], e["scope"], e["target"], e["before"], e["after"]) for e in audit] == [
        (int(admin["id"]), "user", int(alice["id"]), None, 200)
    ]
    assert audit[0]["at"] > 0


async def test_admin_commands_are_registered_with_their_permissions(
    bot: BotApp, discord: DiscordEmulator
) -> None:
    await discord.wait_for(lambda: {"quota", "quota-set", "channel"} <= _names(discord))
    by_name = {c["name"]: c for c in discord.registered_commands}

    assert by_name["quota"]["default_member_permissions"] is None
    assert by_name["quota-set"]["default_member_permissions"] == str(MANAGE_GUILD)
    assert by_name["channel"]["default_member_permissions"] == str(MANAGE_CHANNELS)
    subcommands = {o["name"] for o in by_name["channel"]["options"]}
    assert subcommands == {"autoreply", "persona", "model", "reset"}


def _names(discord: DiscordEmulator) -> set[str]:
    return {c["name"] for c in discord.registered_commands}


async def test_autoreply_channels_answer_without_a_mention_and_threads_inherit(
    start_bot: StartBot, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    blocked = discord.create_user("blocked")
    bot: BotApp = await start_bot(
        gemini_allowed_models="gemini-2.5-pro", blocked_user_ids=str(blocked["id"])
    )
    guild, channel, mod = new_guild_with(discord, "mod")
    discord.add_member(guild, blocked)

    async def channel_command(name: str, options: dict[str, Any], who: Any = mod) -> str:
        ix = await discord.send_interaction(
            "channel",
            user=who,
            channel_id=channel,
            options={name: options},
            permissions=MANAGE_CHANNELS if who is mod else 0,
        )
        return await ix.wait_for_response()

    # Without Manage Channels nothing changes.
    someone = discord.create_user("someone")
    discord.add_member(guild, someone)
    assert "Manage Channels" in await channel_command("autoreply", {"mode": "on"}, someone)
    assert "Auto-reply is on" in await channel_command("autoreply", {"mode": "on"})
    assert "persona is set" in await channel_command("persona", {"text": "You are a pirate."})
    assert "gemini-2.5-pro" in await channel_command("model", {"name": "gemini-2.5-pro"})

    ignored = await discord.send_message(channel, author=mod, content="// note to self")
    unheard = await discord.send_message(channel, author=blocked, content="me too")  # no notice
    plain = await discord.send_message(channel, author=mod, content="no mention here")
    await discord.wait_for_reply(int(plain["id"]))
    thread = discord.create_channel(guild, name="a thread", type=11, parent_id=channel)
    in_thread = await discord.send_message(thread, author=mod, content="in the thread")
    await discord.wait_for_reply(int(in_thread["id"]))

    # The blocked user's message was handled (refused, counted) and nothing was sent for it.
    await discord.wait_for(lambda: bot.pipeline.stats.outcomes["rejected"] == 1)
    assert int(ignored["id"]) not in {m.reply_to for m in discord.sent_messages}
    assert int(unheard["id"]) not in {m.reply_to for m in discord.sent_messages}
    assert len(gemini.requests) == 2
    for request in gemini.requests:
        assert request.system_instruction == "You are a pirate."
        assert request.model == "gemini-2.5-pro"
    assert await _metric(bot, "llmbot_autoreply_channels") == 1

    assert "reset" in await channel_command("reset", {})
    quiet = await discord.send_message(thread, author=mod, content="anyone?")
    asked = await discord.send_message(thread, author=mod, content="hello", mention_bot=True)
    await discord.wait_for_reply(int(asked["id"]))
    assert int(quiet["id"]) not in {m.reply_to for m in discord.sent_messages}
    assert gemini.requests[-1].model == "gemini-2.5-flash"
    assert gemini.requests[-1].system_instruction == bot.settings.gemini_system_instruction


async def test_budgets_and_channel_settings_survive_a_restart(
    start_bot: StartBot, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    first: BotApp = await start_bot(user_daily_token_budget=50)
    gemini.fixed_usage = TOKENS_PER_ANSWER
    _guild, channel, alice = new_guild_with(discord, "alice")
    await _ask(discord, channel, alice, "one")
    await _ask(discord, channel, alice, "two")
    await first.channels.update(channel, autoreply=True)
    await first.stop()

    await start_bot(user_daily_token_budget=50)
    refused = await _ask(discord, channel, alice, "three")
    unmentioned = await discord.send_message(channel, author=alice, content="still auto?")
    await discord.wait_for(
        lambda: (channel, int(unmentioned["id"]), OVER_BUDGET_REACTION, True) in discord.reactions
    )

    assert "your daily token budget is used up" in refused
    assert len(gemini.requests) == 2


async def test_the_cache_keeps_each_channels_persona_apart(
    start_bot: StartBot, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    bot: BotApp = await start_bot()
    guild, pirate, alice = new_guild_with(discord, "alice")
    robot, plain, also_plain = (discord.create_channel(guild, name=n) for n in ("r", "p", "q"))
    await bot.channels.update(pirate, persona="You are a pirate.")
    await bot.channels.update(robot, persona="You are a robot.")

    for channel in (pirate, robot, plain, also_plain):
        await _ask(discord, channel, alice, "what is the time?")

    # The same words under two personas are two questions; without one, the second is cached.
    assert [r.system_instruction for r in gemini.requests] == [
        "You are a pirate.",
        "You are a robot.",
        bot.settings.gemini_system_instruction,
    ]


async def test_role_budgets_and_server_admins_by_role(
    start_bot: StartBot, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    guild, channel, member = new_guild_with(discord, "member")
    helpers = discord.create_role(guild, "helpers")
    managers = discord.create_role(guild, "managers", permissions=MANAGE_GUILD)
    discord.add_member(guild, member, roles=[helpers])
    boss = discord.create_user("boss")
    discord.add_member(guild, boss, roles=[managers])
    await start_bot(user_daily_token_budget=10, role_token_budgets=f"{helpers}:40")
    gemini.fixed_usage = TOKENS_PER_ANSWER

    await _ask(discord, channel, member, "one")
    await _ask(discord, channel, member, "two")  # 30 of 40: the role's budget, not the user's 10
    refused = await _ask(discord, channel, member, "three")
    office = discord.create_channel(guild, name="office")  # Discord's 5 messages / 5 s / channel
    for text in ("one", "two", "three"):  # Manage Server through a role: exempt
        assert "budget" not in await _ask(discord, office, boss, text)

    assert "your role's daily token budget is used up (60 of 40 tokens today)" in refused
    assert len(gemini.requests) == 5


async def test_quota_set_refuses_bad_input_and_caps_server_admins(
    start_bot: StartBot, discord: DiscordEmulator
) -> None:
    bot: BotApp = await start_bot(guild_daily_token_budget=1000)
    _guild, channel, member = new_guild_with(discord, "member")

    async def quota_set(options: dict[str, Any], permissions: int = 0) -> str:
        ix = await discord.send_interaction(
            "quota-set", user=member, channel_id=channel, options=options, permissions=permissions
        )
        return await ix.wait_for_response()

    assert "Only bot admins" in await quota_set({"scope": "server", "tokens": 10})
    assert "needs the user option" in await quota_set({"scope": "user", "tokens": 10}, MANAGE_GUILD)
    assert "caps this budget at 1,000" in await quota_set(
        {"scope": "server", "tokens": 5000}, MANAGE_GUILD
    )
    assert "caps this budget at 1,000" in await quota_set(
        {"scope": "server", "tokens": 0}, MANAGE_GUILD
    )
    assert bot.budgets.stats.overrides == 0
    assert "now 500 tokens a day" in await quota_set(
        {"scope": "server", "tokens": 500}, MANAGE_GUILD
    )
    assert bot.budgets.guild_limit(_guild) == 500
    assert "back to the settings" in await quota_set(
        {"scope": "server", "tokens": 0, "remove": True}, MANAGE_GUILD
    )
    assert bot.budgets.guild_limit(_guild) == 1000
    assert len(await bot.budgets.audit()) == 2


async def test_redis_lost_budgets_and_memory_go_on_locally_and_catch_up(
    start_bot: StartBot,
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
    redis_server: RedisServer,
) -> None:
    """A bot on Redis (REDIS_URL); Redis stops, then comes back empty (persistence off)."""
    gemini.fixed_usage = (10, 20)
    bot: BotApp = await start_bot(
        redis_url=redis_server.url, user_daily_token_budget=80, persist_conversations=True
    )
    _guild, channel, alice = new_guild_with(discord, "alice")
    assert "budget" not in await _ask(discord, channel, alice, "the secret word is mango")

    redis_server.stop()
    # Memory goes on from the process's copy; the budget from its last figure plus local counts.
    assert "budget" not in await _ask(discord, channel, alice, "what was the secret word?")
    assert "the secret word is mango" in str(gemini.requests[-1].contents)
    assert "budget" not in await _ask(discord, channel, alice, "three")  # 60 of 80 before it
    refused = await _ask(discord, channel, alice, "four")
    assert "your daily token budget is used up (90 of 80 tokens today)" in refused
    assert len(gemini.requests) == 3
    assert bot.budgets.stats.store_errors == 0  # the fallback, not a failure let through

    redis_server.start()  # empty: persistence is off
    day = budget_day(time.time(), ZoneInfo("America/Los_Angeles"))[0]
    assert bot.redis is not None
    client = bot.redis.client

    async def outage_tokens_added() -> bool:
        # A budget read (here: /quota's) adds the tokens counted during the outage, once Redis
        # answers and the 2 s after the last failure have passed.
        await bot.budgets.status_of(int(alice["id"]), None)
        return await client.hget(f"llmbot:fairuse:usage:{day}", f"user:{alice['id']}") == b"60"

    await _until(outage_tokens_added, 10, "the outage's tokens added to Redis")
    quota = await discord.send_interaction("quota", user=alice, channel_id=channel)
    assert "**Your tokens today**: 60 of 80 used" in await quota.wait_for_response()

    # The conversation, changed during the outage, is written by itself once Redis is back.
    async def in_redis() -> bool:
        raw = await client.get(f"llmbot:conversation:{channel}")
        return raw is not None and b"what was the secret word?" in raw

    await _until(in_redis, 10, "the conversation written to Redis")
