"""The Discord emulator driven by the real hikari GatewayBot and lightbulb client."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import aiohttp
import hikari
import lightbulb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.emulator.discord import DiscordEmulator, SentMessage
from bot.emulator.discord.ids import shard_for_guild
from bot.emulator.discord.spec import SUBSET_PATH, build_subset, validate

from .conftest import BotFactory

pytestmark = pytest.mark.usefixtures("no_logged_tracebacks")

SHARED_SPEC = Path(__file__).parents[3] / "shared" / "specs" / "discord-openapi.json"


def collect(event_type: type[Any], into: list[Any]) -> Callable[[hikari.GatewayBot], None]:
    """Return a ``before_start`` hook that appends every event of a type to a list."""

    async def append(event: Any) -> None:
        into.append(event)

    return lambda bot: bot.subscribe(event_type, append)


def echo_replies(bot: hikari.GatewayBot, received: list[hikari.MessageCreateEvent]) -> None:
    """Record every message event and answer people (never the bot itself) with a reply."""

    @bot.listen()
    async def on_message(event: hikari.MessageCreateEvent) -> None:
        received.append(event)
        if not event.is_human:
            return
        await event.message.respond(f"echo: {event.message.content}", reply=event.message)


async def test_ready_fills_the_guild_cache(emu: DiscordEmulator, start_bot: BotFactory) -> None:
    guild_id = emu.create_guild("Guild 1")
    general = emu.guild_text_channel(guild_id)
    thread = emu.create_channel(guild_id, "help", type=11, parent_id=general)
    alice = emu.create_user("alice")
    mods = emu.create_role(guild_id, "mods", permissions=1 << 13)
    emu.add_member(guild_id, alice, roles=[mods])

    bot = await start_bot(emu)

    assert emu.identify_count == 1
    assert emu.gateway_compressions == ["zlib-stream"]
    me = bot.get_me()
    assert me is not None
    assert me.id == emu.bot_user_id
    await emu.wait_for(lambda: bot.cache.get_guild(guild_id) is not None)
    guild = bot.cache.get_guild(guild_id)
    assert guild is not None
    assert guild.name == "Guild 1"
    assert bot.cache.get_guild_channel(general) is not None
    assert bot.cache.get_thread(thread) is not None
    assert {r.name for r in bot.cache.get_roles_view_for_guild(guild_id).values()} >= {
        "@everyone",
        "mods",
    }
    assert bot.cache.get_member(guild_id, emu.bot_user_id) is not None


async def test_guild_message_is_dispatched_and_the_reply_recorded(
    emu: DiscordEmulator, start_bot: BotFactory
) -> None:
    guild_id = emu.create_guild()
    channel = emu.guild_text_channel(guild_id)
    alice = emu.create_user("alice")
    received: list[hikari.MessageCreateEvent] = []
    await start_bot(emu, before_start=lambda bot: echo_replies(bot, received))

    sent = await emu.send_message(channel, author=alice, content="hi", mention_bot=True)
    reply = await emu.wait_for_reply(int(sent["id"]))

    first = received[0]
    assert isinstance(first, hikari.GuildMessageCreateEvent)
    assert first.guild_id == guild_id
    assert first.author_id == int(alice["id"])
    assert first.message.content == f"<@{emu.bot_user_id}> hi"
    assert first.message.member is not None
    assert reply.content == f"echo: <@{emu.bot_user_id}> hi"
    assert reply.reply_to == int(sent["id"])
    assert reply.message["message_reference"]["message_id"] == sent["id"]
    assert reply.message["referenced_message"]["id"] == sent["id"]
    assert reply.allowed_mentions is not None
    assert emu.messages_in(channel) == [reply]
    # Discord echoes the bot's own message back over the gateway.
    await emu.wait_for(lambda: any(e.author_id == emu.bot_user_id for e in received))
    assert emu.spec_violations == []


async def test_bot_can_fetch_and_edit_its_message(
    emu: DiscordEmulator, start_bot: BotFactory
) -> None:
    guild_id = emu.create_guild()
    channel = emu.guild_text_channel(guild_id)
    updates: list[hikari.GuildMessageUpdateEvent] = []
    bot = await start_bot(emu, before_start=collect(hikari.GuildMessageUpdateEvent, updates))

    created = await bot.rest.create_message(channel, "draft")
    await bot.rest.edit_message(channel, created, "final")
    fetched = await bot.rest.fetch_message(channel, created)

    assert fetched.content == "final"
    assert fetched.edited_timestamp is not None
    [sent] = emu.messages_in(channel)
    assert sent.content == "final"
    assert [edit["content"] for edit in sent.edits] == ["final"]
    await emu.wait_for(lambda: len(updates) == 1)
    assert updates[0].message.content == "final"


async def test_direct_message(emu: DiscordEmulator, start_bot: BotFactory) -> None:
    bob = emu.create_user("bob")
    dm = emu.create_dm(bob)
    received: list[hikari.MessageCreateEvent] = []
    await start_bot(emu, before_start=lambda bot: echo_replies(bot, received))

    sent = await emu.send_message(dm, author=bob, content="psst")
    reply = await emu.wait_for_reply(int(sent["id"]))

    assert isinstance(received[0], hikari.DMMessageCreateEvent)
    assert received[0].message.guild_id is None
    assert reply.channel_id == dm
    assert reply.content == "echo: psst"
    assert emu.spec_violations == []


async def test_thread_created_after_start(emu: DiscordEmulator, start_bot: BotFactory) -> None:
    guild_id = emu.create_guild()
    carol = emu.create_user("carol")
    received: list[hikari.MessageCreateEvent] = []
    bot = await start_bot(emu, before_start=lambda b: echo_replies(b, received))

    thread = emu.create_channel(
        guild_id, "thread", type=11, parent_id=emu.guild_text_channel(guild_id)
    )
    await emu.wait_for(lambda: bot.cache.get_thread(thread) is not None)
    sent = await emu.send_message(thread, author=carol, content="in a thread")
    reply = await emu.wait_for_reply(int(sent["id"]))

    assert reply.channel_id == thread
    assert received[0].channel_id == thread


async def test_typing_is_counted(emu: DiscordEmulator, start_bot: BotFactory) -> None:
    channel = emu.guild_text_channel(emu.create_guild())
    bot = await start_bot(emu)

    await bot.rest.trigger_typing(channel)
    await bot.rest.trigger_typing(channel)

    assert emu.typing_count(channel) == 2


async def test_too_long_and_empty_messages_are_refused(
    emu: DiscordEmulator, start_bot: BotFactory
) -> None:
    channel = emu.guild_text_channel(emu.create_guild())
    bot = await start_bot(emu)

    with pytest.raises(hikari.BadRequestError) as too_long:
        await bot.rest.create_message(channel, "x" * 2001)
    with pytest.raises(hikari.BadRequestError) as empty:
        await bot.rest.create_message(channel, "")
    await bot.rest.create_message(channel, "x" * 2000)

    assert too_long.value.code == 50035
    assert too_long.value.errors is not None
    assert "content" in too_long.value.errors
    assert empty.value.code == 50006
    assert len(emu.spec_violations) == 2
    assert "Must be 2000 or fewer in length" in emu.spec_violations[0]
    assert [len(m.content) for m in emu.messages_in(channel)] == [2000]


async def test_global_rate_limit_answers_429_and_hikari_still_delivers(
    emu: DiscordEmulator, start_bot: BotFactory
) -> None:
    guild_id = emu.create_guild()
    channels = [emu.create_channel(guild_id, f"c{i}") for i in range(60)]
    bot = await start_bot(emu)
    # hikari queues every request of a route behind the first until it learns the route's
    # bucket; after one message, sends to different channels go out in parallel.
    warm_up = emu.guild_text_channel(guild_id)
    await bot.rest.create_message(warm_up, "warm up")

    await asyncio.gather(*(bot.rest.create_message(c, f"to {c}") for c in channels))

    assert emu.rate_limited_count > 0
    assert any(status == 429 for _, _, status in emu.requests)
    assert sorted(m.channel_id for m in emu.sent_messages) == sorted([warm_up, *channels])


async def test_per_channel_limit_and_headers(emu: DiscordEmulator) -> None:
    channel = emu.guild_text_channel(emu.create_guild())
    url = f"{emu.rest_url}/channels/{channel}/messages"
    headers = {"Authorization": f"Bot {emu.token}"}
    async with aiohttp.ClientSession() as http:
        answers = []
        for i in range(6):
            async with http.post(url, json={"content": str(i)}, headers=headers) as response:
                answers.append((response.status, dict(response.headers), await response.json()))

    assert [status for status, _, _ in answers] == [200] * 5 + [429]
    assert [h["X-RateLimit-Remaining"] for _, h, _ in answers[:5]] == ["4", "3", "2", "1", "0"]
    _, limited_headers, body = answers[5]
    assert body["global"] is False
    assert 0 < body["retry_after"] <= 5
    assert limited_headers["X-RateLimit-Scope"] == "user"
    assert limited_headers["X-RateLimit-Bucket"] == answers[0][1]["X-RateLimit-Bucket"]
    assert {
        "Retry-After",
        "X-RateLimit-Limit",
        "X-RateLimit-Reset",
        "X-RateLimit-Reset-After",
    } <= set(limited_headers)
    assert limited_headers["Content-Type"].startswith("application/json")


async def test_rest_faults(emu: DiscordEmulator, start_bot: BotFactory) -> None:
    channel = emu.guild_text_channel(emu.create_guild())
    bot = await start_bot(emu, max_retries=0)

    emu.inject_rest_fault(status=500, route_contains="/messages")
    with pytest.raises(hikari.InternalServerError):
        await bot.rest.create_message(channel, "lost")
    emu.inject_rest_fault(status=429, count=2, route_contains="/messages")
    await bot.rest.create_message(channel, "delivered after two 429s")

    assert [m.content for m in emu.messages_in(channel)] == ["delivered after two 429s"]
    assert emu.rate_limited_count == 2


async def test_gateway_disconnects_are_resumed_with_replay(
    emu: DiscordEmulator, start_bot: BotFactory
) -> None:
    guild_id = emu.create_guild()
    channel = emu.guild_text_channel(guild_id)
    dave = emu.create_user("dave")
    received: list[hikari.MessageCreateEvent] = []
    await start_bot(emu, before_start=lambda bot: echo_replies(bot, received))

    await emu.disconnect_gateway(shard=0, code=4000)
    missed = await emu.send_message(channel, author=dave, content="while away")
    await emu.wait_for(lambda: emu.resume_count == 1, timeout=10)
    await emu.wait_for_reply(int(missed["id"]))

    await emu.disconnect_gateway(shard=0, code=None)
    await emu.wait_for(lambda: emu.resume_count == 2, timeout=10)
    later = await emu.send_message(channel, author=dave, content="after")
    await emu.wait_for_reply(int(later["id"]))

    assert emu.identify_count == 1
    assert [e.message.content for e in received if e.is_human] == ["while away", "after"]


async def test_an_ended_session_is_not_resumed_and_its_gap_is_only_in_history(
    emu: DiscordEmulator, start_bot: BotFactory
) -> None:
    guild_id = emu.create_guild()
    channel = emu.guild_text_channel(guild_id)
    gus = emu.create_user("gus")
    received: list[hikari.MessageCreateEvent] = []
    await start_bot(emu, before_start=lambda bot: echo_replies(bot, received))

    await emu.end_gateway_session(0)
    gap = await emu.send_message(channel, author=gus, content="in the gap")
    await emu.wait_for(lambda: emu.identify_count == 2, timeout=20)
    await emu.wait_until_ready()
    later = await emu.send_message(channel, author=gus, content="after")
    await emu.wait_for_reply(int(later["id"]))

    assert emu.invalid_session_count == 1 and emu.resume_count == 0
    assert [e.message.content for e in received if e.is_human] == ["after"]
    assert emu.message(int(gap["id"])) is not None  # stored: REST history has it


async def test_two_shards_route_guilds(start_bot: BotFactory) -> None:
    async with DiscordEmulator(shards=2) as emu:
        guilds: dict[int, int] = {}
        while len(set(guilds.values())) < 2:
            guild_id = emu.create_guild(f"g{len(guilds)}")
            guilds[guild_id] = shard_for_guild(guild_id, 2)
            await asyncio.sleep(0.002)  # snowflakes carry milliseconds: the next lands elsewhere
        erin = emu.create_user("erin")
        shards_seen: dict[int, int] = {}

        def listen(bot: hikari.GatewayBot) -> None:
            async def on_message(event: hikari.MessageCreateEvent) -> None:
                shards_seen[event.message.id] = event.shard.id

            bot.subscribe(hikari.MessageCreateEvent, on_message)

        bot = await start_bot(emu, before_start=listen)
        try:
            assert set(emu.identifies) == {0, 1}
            for shard in (0, 1):
                expected = sum(1 for s in guilds.values() if s == shard)
                assert emu.dispatch_count("GUILD_CREATE", shard=shard) == expected
            sent = {}
            for guild_id, shard in guilds.items():
                message = await emu.send_message(
                    emu.guild_text_channel(guild_id), author=erin, content="hi"
                )
                sent[int(message["id"])] = shard
            dm = await emu.send_message(emu.create_dm(erin), author=erin, content="dm")
            sent[int(dm["id"])] = 0
            await emu.wait_for(lambda: len(shards_seen) == len(sent))
            assert shards_seen == sent
        finally:
            await bot.close()


async def test_attachments_download_and_upload(emu: DiscordEmulator, start_bot: BotFactory) -> None:
    channel = emu.guild_text_channel(emu.create_guild())
    frank = emu.create_user("frank")
    downloaded: list[bytes] = []

    def listen(bot: hikari.GatewayBot) -> None:
        async def on_message(event: hikari.GuildMessageCreateEvent) -> None:
            if event.is_human:
                downloaded.extend([await a.read() for a in event.message.attachments])

        bot.subscribe(hikari.GuildMessageCreateEvent, on_message)

    bot = await start_bot(emu, before_start=listen)
    attachment = emu.add_attachment(b"\x89PNG data", "cat.png", "image/png")
    await emu.send_message(channel, author=frank, content="look", attachments=[attachment])
    await emu.wait_for(lambda: downloaded == [b"\x89PNG data"])

    message = await bot.rest.create_message(
        channel, "a file", attachment=hikari.Bytes(b"hello", "note.txt")
    )

    [sent] = emu.messages_in(channel)
    assert sent.files == {"note.txt": b"hello"}
    assert await message.attachments[0].read() == b"hello"
    renamed = await bot.rest.edit_message(channel, message, "renamed")
    assert [a.filename for a in renamed.attachments] == ["note.txt"]
    stripped = await bot.rest.edit_message(channel, message, attachments=None)
    assert stripped.attachments == []
    assert emu.spec_violations == []


async def test_without_message_content_intent_only_mentions_carry_content(
    emu: DiscordEmulator, start_bot: BotFactory
) -> None:
    channel = emu.guild_text_channel(emu.create_guild())
    gina = emu.create_user("gina")
    received: list[hikari.GuildMessageCreateEvent] = []
    await start_bot(
        emu,
        intents=hikari.Intents.ALL_UNPRIVILEGED,
        before_start=collect(hikari.GuildMessageCreateEvent, received),
    )

    await emu.send_message(channel, author=gina, content="secret")
    await emu.send_message(channel, author=gina, content="hey bot", mention_bot=True)
    await emu.wait_for(lambda: len(received) == 2)

    assert [e.message.content for e in received] == [None, f"<@{emu.bot_user_id}> hey bot"]


async def test_lightbulb_slash_commands(emu: DiscordEmulator, start_bot: BotFactory) -> None:
    guild_id = emu.create_guild()
    channel = emu.guild_text_channel(guild_id)
    henry = emu.create_user("henry")
    dm = emu.create_dm(henry)

    class Chat(lightbulb.SlashCommand, name="chat", description="Talk to the bot"):
        message = lightbulb.string("message", "What to say")

        @lightbulb.invoke
        async def invoke(self, ctx: lightbulb.Context) -> None:
            await ctx.respond(f"you said: {self.message}")

    class Slow(lightbulb.SlashCommand, name="slow", description="Think first"):
        @lightbulb.invoke
        async def invoke(self, ctx: lightbulb.Context) -> None:
            await ctx.defer(ephemeral=True)
            await ctx.respond("done thinking")
            await ctx.respond("and one more")

    def setup(bot: hikari.GatewayBot) -> None:
        client = lightbulb.client_from_app(bot)
        client.register(Chat)
        client.register(Slow)
        bot.subscribe(hikari.StartedEvent, client.start)
        bot.subscribe(hikari.StoppingEvent, client.stop)

    await start_bot(emu, before_start=setup)

    assert {c["name"] for c in emu.registered_commands} == {"chat", "slow"}
    assert all({"id", "application_id", "version"} <= set(c) for c in emu.registered_commands)
    assert any(m == "PUT" and p.endswith("/commands") for m, p, _ in emu.requests)

    quick = await emu.send_interaction(
        "chat", user=henry, channel_id=channel, options={"message": "hello"}
    )
    assert await quick.wait_for_response() == "you said: hello"
    assert quick.callback_types == [4]
    assert not quick.deferred

    slow = await emu.send_interaction("slow", user=henry, channel_id=dm)
    assert await slow.wait_for_response() == "done thinking"
    await slow.wait_for_followups(2)
    assert slow.deferred
    assert slow.ephemeral
    assert slow.callback_types == [5]
    assert [f["content"] for f in slow.followups] == ["done thinking", "and one more"]
    assert len(slow.responses) == 3
    assert emu.spec_violations == []


async def test_raw_protocol_plain_json_gateway_and_rest_errors(emu: DiscordEmulator) -> None:
    guild_id = emu.create_guild()
    auth = {"Authorization": f"Bot {emu.token}"}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{emu.gateway_url}?v=10&encoding=json") as ws:
            hello = await ws.receive()
            assert hello.type == aiohttp.WSMsgType.TEXT
            assert json.loads(hello.data)["op"] == 10
            await ws.send_json(
                {"op": 2, "d": {"token": emu.token, "intents": 513, "shard": [0, 1]}}
            )
            ready = json.loads((await ws.receive()).data)
            assert (ready["t"], ready["s"]) == ("READY", 1)
            guild_create = json.loads((await ws.receive()).data)
            assert (guild_create["t"], guild_create["s"], guild_create["d"]["id"]) == (
                "GUILD_CREATE",
                2,
                str(guild_id),
            )
            await ws.send_json({"op": 1, "d": 2})
            assert json.loads((await ws.receive()).data)["op"] == 11
            await emu.wait_until_ready()

        async with http.ws_connect(f"{emu.gateway_url}?v=10&encoding=json") as ws:
            await ws.receive()
            await ws.send_json({"op": 6, "d": {"token": emu.token, "session_id": "nope", "seq": 1}})
            assert json.loads((await ws.receive()).data) == {
                "op": 9,
                "d": False,
                "s": None,
                "t": None,
            }

        async with http.get(f"{emu.rest_url}/users/@me") as response:
            assert response.status == 401
        async with http.get(f"{emu.base_url}/api/v9/nowhere", headers=auth) as response:
            assert response.status == 404
            assert await response.json() == {"message": "404: Not Found", "code": 0}
        async with http.get(f"{emu.base_url}/api/v9/users/@me", headers=auth) as response:
            assert (await response.json())["id"] == str(emu.bot_user_id)

        app_commands = f"{emu.rest_url}/applications/{emu.application_id}/commands"
        command = [{"name": "ping", "description": "Ping", "type": 1}]
        async with http.put(app_commands, json=command, headers=auth) as response:
            assert (await response.json())[0]["version"]
        ivy = emu.create_user("ivy")
        interaction = await emu.send_interaction(
            "ping", user=ivy, channel_id=emu.guild_text_channel(guild_id)
        )
        callback = f"{emu.rest_url}/interactions/{interaction.id}/{interaction.token}/callback"
        followup = f"{emu.rest_url}/webhooks/{emu.application_id}/{interaction.token}"
        async with http.post(followup, json={"content": "too early"}) as response:
            assert response.status == 404
        async with http.post(callback, json={"type": 4, "data": {"content": "pong"}}) as response:
            assert response.status == 204
        async with http.post(callback, json={"type": 4, "data": {"content": "again"}}) as response:
            assert (await response.json())["code"] == 40060
        async with http.patch(
            f"{followup}/messages/@original", json={"content": "pong!"}
        ) as response:
            assert (await response.json())["content"] == "pong!"

    assert interaction.final_content == "pong!"
    assert len(emu.spec_violations) == 2


async def test_zlib_stream_frames_end_with_sync_flush(emu: DiscordEmulator) -> None:
    emu.create_guild()
    inflator = zlib.decompressobj()
    url = f"{emu.gateway_url}?v=10&encoding=json&compress=zlib-stream"
    frames: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        hello = await ws.receive()
        assert hello.type == aiohttp.WSMsgType.BINARY
        assert hello.data.endswith(b"\x00\x00\xff\xff")
        frames.append(json.loads(inflator.decompress(hello.data)))
        await ws.send_json({"op": 2, "d": {"token": emu.token, "intents": 1, "shard": [0, 1]}})
        for _ in range(2):
            frames.append(json.loads(inflator.decompress((await ws.receive()).data)))
    assert [f["op"] for f in frames] == [10, 0, 0]
    assert [f["t"] for f in frames[1:]] == ["READY", "GUILD_CREATE"]


async def raw_identify(
    http: aiohttp.ClientSession, emu: DiscordEmulator
) -> aiohttp.ClientWebSocketResponse:
    """Open a plain-JSON gateway connection and identify on shard 0 of 1."""
    ws = await http.ws_connect(f"{emu.gateway_url}?v=10&encoding=json")
    await ws.receive()
    await ws.send_json({"op": 2, "d": {"token": emu.token, "intents": 513, "shard": [0, 1]}})
    await emu.wait_until_ready()
    return ws


async def test_switches_turn_validation_and_limits_off() -> None:
    invalid = {"content": "x", "embeds": "not a list"}
    async with (
        DiscordEmulator() as strict,
        DiscordEmulator(validate=False, enforce_limits=False) as lax,
        aiohttp.ClientSession() as http,
    ):
        results: dict[str, object] = {}
        for name, emulator in (("strict", strict), ("lax", lax)):
            channel = emulator.guild_text_channel(emulator.create_guild())
            url = f"{emulator.rest_url}/channels/{channel}/messages"
            headers = {"Authorization": f"Bot {emulator.token}"}
            async with http.post(url, json=invalid, headers=headers) as response:
                results[name] = (response.status, "X-RateLimit-Bucket" in response.headers)
            for _ in range(6):
                async with http.post(url, json={"content": "again"}, headers=headers):
                    pass
            async with http.post(url, json={"content": "y" * 2001}, headers=headers) as response:
                results[f"{name} too long"] = response.status
        assert results == {
            "strict": (400, True),
            "strict too long": 429,
            "lax": (200, False),
            "lax too long": 400,
        }
        assert lax.rate_limited_count == 0
        [violation] = lax.spec_violations
        assert "Must be 2000 or fewer in length" in violation


async def test_late_interaction_answer_is_unknown() -> None:
    async with (
        DiscordEmulator(interaction_deadline=0.0) as emu,
        aiohttp.ClientSession() as http,
    ):
        ws = await raw_identify(http, emu)
        auth = {"Authorization": f"Bot {emu.token}"}
        commands_url = f"{emu.rest_url}/applications/{emu.application_id}/commands"
        async with http.put(
            commands_url, json=[{"name": "ping", "description": "Ping"}], headers=auth
        ):
            pass
        channel = emu.guild_text_channel(emu.create_guild())
        interaction = await emu.send_interaction(
            "ping", user=emu.create_user("jo"), channel_id=channel
        )
        callback = f"{emu.rest_url}/interactions/{interaction.id}/{interaction.token}/callback"
        async with http.post(callback, json={"type": 5}) as response:
            assert (response.status, (await response.json())["code"]) == (404, 10062)
        await ws.close()
    assert not interaction.acknowledged
    assert len(emu.spec_violations) == 1


async def test_reactions_are_recorded(emu: DiscordEmulator, start_bot: BotFactory) -> None:
    channel = emu.guild_text_channel(emu.create_guild())
    bot = await start_bot(emu)
    message = await emu.send_message(channel, author=emu.create_user("kim"), content="nice")

    await bot.rest.add_reaction(channel, int(message["id"]), "👍")

    assert list(emu.reactions) == [(channel, int(message["id"]), "👍", True)]


@given(length=st.integers(min_value=0, max_value=4100))
def test_message_content_limit_is_the_documented_2000(length: int) -> None:
    problems = validate("message_create", {"content": "é" * length})
    assert bool(problems) == (length > 2000)


@pytest.mark.skipif(not SHARED_SPEC.exists(), reason="the shared OpenAPI spec is not checked out")
def test_vendored_spec_subset_matches_the_shared_spec() -> None:
    full = json.loads(SHARED_SPEC.read_text(encoding="utf-8"))
    assert json.loads(SUBSET_PATH.read_text(encoding="utf-8")) == build_subset(full)


def test_sent_message_is_a_plain_record() -> None:
    sent = SentMessage(1, 2, "x", {}, {}, None, None)
    assert sent.edits == []
    assert sent.files == {}


async def test_channel_webhook_posts_into_its_channel(emu: DiscordEmulator) -> None:
    guild_id = emu.create_guild()
    ops = emu.create_channel(guild_id, "ops")
    url = emu.create_webhook(ops, "Alertmanager")
    assert url.startswith(f"{emu.base_url}/api/webhooks/")
    embed = {"title": "[FIRING:1] LLMBotDown", "description": "The bot is down.", "color": 1}
    async with aiohttp.ClientSession() as http:
        # Alertmanager's Discord receiver: no bot token, an empty content beside the embed.
        async with http.post(url, json={"content": "", "embeds": [embed]}) as response:
            assert response.status == 204
        async with http.post(f"{url}?wait=true", json={"content": "resolved"}) as response:
            assert response.status == 200
            message = await response.json()
        # Posted messages are in the channel's history like any other.
        history_url = f"{emu.rest_url}/channels/{ops}/messages"
        auth = {"Authorization": f"Bot {emu.token}"}
        async with http.get(history_url, headers=auth) as response:
            history = [m["id"] for m in await response.json()]
    assert message["webhook_id"] == url.split("/")[-2]
    assert message["channel_id"] == str(ops)
    assert message["author"]["username"] == "Alertmanager"
    first, second = emu.webhook_messages
    assert (first.channel_id, first.embeds, first.content) == (ops, [embed], "")
    assert second.content == "resolved"
    assert history == [str(second.id), str(first.id)]  # newest first
    assert emu.spec_violations == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"content": ""}, 400, 50006),  # nothing to show
        ({"embeds": [{"title": "t" * 257}]}, 400, 50035),  # over Discord's title limit
        ({"embeds": [{"description": "d" * 4097}]}, 400, 50035),
        # Two embeds of 4000 characters each: within each limit, over the 6000 of a message.
        ({"embeds": [{"description": "d" * 4000}, {"description": "d" * 4000}]}, 400, 50035),
        ({"content": "c" * 2001}, 400, 50035),
    ],
)
async def test_channel_webhook_refuses_what_discord_refuses(
    emu: DiscordEmulator, body: dict[str, Any], status: int, code: int
) -> None:
    url = emu.create_webhook(emu.create_channel(emu.create_guild(), "ops"))
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as response:
        assert (response.status, (await response.json())["code"]) == (status, code)
    assert emu.webhook_messages == []


async def test_unknown_webhook_or_wrong_token(emu: DiscordEmulator) -> None:
    url = emu.create_webhook(emu.create_channel(emu.create_guild(), "ops"))
    base, webhook_id, token = url.rsplit("/", 2)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/{webhook_id}/{'0' * len(token)}", json={"content": "x"}) as r:
            assert (r.status, (await r.json())["code"]) == (401, 50027)
        async with http.post(f"{base}/{int(webhook_id) + 1}/{token}", json={"content": "x"}) as r:
            assert (r.status, (await r.json())["code"]) == (404, 10015)
    assert emu.webhook_messages == []
    with pytest.raises(KeyError, match="guild channel"):
        emu.create_webhook(emu.create_dm(emu.create_user("dee")))


async def test_an_enforced_nonce_answers_the_first_message_instead_of_posting_again(
    emu: DiscordEmulator, start_bot: BotFactory
) -> None:
    channel = emu.guild_text_channel(emu.create_guild())
    bot = await start_bot(emu)

    # hikari sends `enforce_nonce: true` with every nonce.
    first = await bot.rest.create_message(channel, "once", nonce="nonce-1")
    again = await bot.rest.create_message(channel, "once", nonce="nonce-1")
    other = await bot.rest.create_message(channel, "twice", nonce="nonce-2")

    assert again.id == first.id
    assert other.id != first.id
    assert [m.content for m in emu.messages_in(channel)] == ["once", "twice"]
    assert emu.spec_violations == []


async def test_a_nonce_that_is_not_enforced_does_not_deduplicate(emu: DiscordEmulator) -> None:
    channel = emu.guild_text_channel(emu.create_guild())
    url = f"{emu.rest_url}/channels/{channel}/messages"
    headers = {"Authorization": f"Bot {emu.token}"}
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.post(url, json={"content": "x", "nonce": "n"}, headers=headers) as r:
                assert r.status == 200

    assert [m.content for m in emu.messages_in(channel)] == ["x", "x"]


@pytest.mark.parametrize("kind", ["slow", "drop"])
async def test_a_lost_answer_fails_the_client_though_the_message_was_created(
    emu: DiscordEmulator, start_bot: BotFactory, kind: Literal["slow", "drop"]
) -> None:
    channel = emu.guild_text_channel(emu.create_guild())
    timeouts = hikari.impl.HTTPTimeoutSettings(total=0.3)
    bot = await start_bot(
        emu, max_retries=0, http_settings=hikari.impl.HTTPSettings(timeouts=timeouts)
    )
    emu.inject_rest_lost_answer(kind, route_contains="/messages", delay_s=1.0)

    with pytest.raises(hikari.HTTPError):
        await bot.rest.create_message(channel, "sent anyway")
    await bot.rest.create_message(channel, "and the next one normally")

    assert [m.content for m in emu.messages_in(channel)] == [
        "sent anyway",
        "and the next one normally",
    ]


async def test_an_outage_lasts_until_cleared(emu: DiscordEmulator, start_bot: BotFactory) -> None:
    channel = emu.guild_text_channel(emu.create_guild())
    bot = await start_bot(emu, max_retries=0)
    emu.inject_rest_fault(status=503, count=None, route_contains="/messages")

    for _ in range(3):
        with pytest.raises(hikari.InternalServerError):
            await bot.rest.create_message(channel, "lost")
    emu.clear_rest_faults()
    await bot.rest.create_message(channel, "back")

    assert [m.content for m in emu.messages_in(channel)] == ["back"]
