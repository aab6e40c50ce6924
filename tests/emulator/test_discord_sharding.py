"""The emulator runs a sharded bot like Discord: /gateway/bot's shard count and identify
buckets, IDENTIFY's shard honoured, guild events only to the owning shard (DMs to shard 0),
shards spread over separate clients (processes), and identifies over the bucket rate refused."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import hikari

from bot.emulator.discord import DiscordEmulator
from bot.emulator.discord.ids import shard_for_guild
from tests.emulator.conftest import BotFactory

INVALID_SESSION = 9


async def _gateway_bot(emu: DiscordEmulator) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{emu.rest_url}/gateway/bot", headers={"Authorization": f"Bot {emu.token}"}
        ) as response,
    ):
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


async def test_gateway_bot_reports_shards_and_max_concurrency() -> None:
    async with DiscordEmulator(shards=4, max_concurrency=2) as emu:
        body = await _gateway_bot(emu)
    assert body["shards"] == 4
    assert body["session_start_limit"]["max_concurrency"] == 2
    async with DiscordEmulator(shards=3) as emu:  # default: every shard in one bucket
        assert (await _gateway_bot(emu))["session_start_limit"]["max_concurrency"] == 3


async def _identify(http: aiohttp.ClientSession, emu: DiscordEmulator, shard: list[int]) -> Any:
    """Identify on `shard` over a raw websocket; the first frame after HELLO."""
    ws = await http.ws_connect(f"{emu.gateway_url}?v=10&encoding=json")
    hello = await ws.receive_json()
    assert hello["op"] == 10
    await ws.send_json({"op": 2, "d": {"token": emu.token, "intents": 513, "shard": shard}})
    frame = await ws.receive_json(timeout=5)
    await ws.close()
    return frame


async def test_identifying_faster_than_the_bucket_allows_is_refused() -> None:
    async with (
        DiscordEmulator(shards=2, max_concurrency=1, identify_interval_s=5.0) as emu,
        aiohttp.ClientSession() as http,
    ):
        first = await _identify(http, emu, [0, 2])
        assert first["t"] == "READY" and first["d"]["shard"] == [0, 2]
        # Shard 1 is in the same bucket (1 % 1 == 0) and comes at once: INVALID_SESSION.
        refused = await _identify(http, emu, [1, 2])
        assert refused == {"op": INVALID_SESSION, "d": False, "s": None, "t": None}
        assert emu.identify_rate_limited == {1: 1}
        assert dict(emu.identifies) == {0: 1}


async def test_separate_buckets_identify_together() -> None:
    async with (
        DiscordEmulator(shards=2, max_concurrency=2, identify_interval_s=5.0) as emu,
        aiohttp.ClientSession() as http,
    ):
        frames = [await _identify(http, emu, [shard, 2]) for shard in (0, 1)]
        assert [f["t"] for f in frames] == ["READY", "READY"]
        assert not emu.identify_rate_limited


async def test_each_shard_in_its_own_client_gets_only_its_guilds(start_bot: BotFactory) -> None:
    """Two GatewayBots, as two processes would run them: shard 0 and shard 1 of 2."""
    async with DiscordEmulator(shards=2) as emu:
        guilds: dict[int, int] = {}
        while len(set(guilds.values())) < 2 or len(guilds) < 4:
            guild_id = emu.create_guild(f"g{len(guilds)}")
            guilds[guild_id] = shard_for_guild(guild_id, 2)
            await asyncio.sleep(0.002)  # snowflakes carry milliseconds: the next lands elsewhere
        erin = emu.create_user("erin")
        seen: dict[int, list[int]] = {0: [], 1: []}  # client -> message ids

        def listen(client: int) -> Any:
            def attach(bot: hikari.GatewayBot) -> None:
                async def on_message(event: hikari.MessageCreateEvent) -> None:
                    seen[client].append(int(event.message.id))

                bot.subscribe(hikari.MessageCreateEvent, on_message)

            return attach

        for client in (0, 1):
            await start_bot(
                emu,
                before_start=listen(client),
                wait_ready=False,
                start_options={"shard_ids": [client], "shard_count": 2},
            )
        await emu.wait_until_ready()
        assert dict(emu.identifies) == {0: 1, 1: 1}
        sent: dict[int, int] = {}
        for guild_id, shard in guilds.items():
            message = await emu.send_message(
                emu.guild_text_channel(guild_id), author=erin, content="hi"
            )
            sent[int(message["id"])] = shard
        dm = await emu.send_message(emu.create_dm(erin), author=erin, content="dm")
        sent[int(dm["id"])] = 0
        await emu.wait_for(lambda: len(seen[0]) + len(seen[1]) == len(sent))
        for client in (0, 1):
            assert sorted(seen[client]) == sorted(m for m, s in sent.items() if s == client)
