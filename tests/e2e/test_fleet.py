"""A fleet: `python -m bot fleet --processes 2` (real bot processes) against one Discord emulator
(two shards, Discord's identify buckets enforced), one Gemini emulator (the provider's per-minute
limit enforced) and a real redis-server.

Each test takes 10-30 s: two processes start one after the other (the identify rule: 5 s apart).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import math
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.emulator.discord import DiscordEmulator
from bot.emulator.discord.ids import shard_for_guild
from bot.emulator.gemini import GeminiEmulator
from bot.healing.testing import sample_alert, sample_body
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
SETTING_PREFIXES = ("DISCORD_", "GEMINI_", "GOOGLE_", "OTEL_", "OPS_", "LOG_", "REDIS_", "DATA_")
SHARDS = 2
WEBHOOK_TOKEN = "fleet-test-webhook-token"
AUTH = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}


def _consecutive_free_ports(n: int) -> int:
    """A port p such that p .. p+n-1 are free on the loopback (now)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + n > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + n):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no consecutive free ports")


@dataclass
class Fleet:
    process: asyncio.subprocess.Process
    ports: list[int]
    data_dir: Path

    async def metrics(self, index: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{self.ports[index]}/metrics") as response,
        ):
            text = await response.text()
        values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return values

    async def value(self, index: int, name: str, **labels: str) -> float:
        return (await self.metrics(index)).get((name, tuple(sorted(labels.items()))), math.nan)

    async def post_alert(self, index: int, body: bytes) -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{self.ports[index]}/alerts", data=body, headers=AUTH
            ) as response,
        ):
            return response.status

    async def audit(self, index: int) -> list[dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{self.ports[index]}/heal/audit", headers=AUTH) as response,
        ):
            entries: list[dict[str, Any]] = (await response.json())["entries"]
            return entries


async def _ready(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def _until(check: Callable[[], Any], within_s: float, what: str) -> None:
    """Poll an async condition (another process's state: nothing to wait on but the check)."""
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def discord() -> AsyncIterator[DiscordEmulator]:
    # Discord's identify rule: the two processes must take turns, 5 s apart.
    async with DiscordEmulator(shards=SHARDS, max_concurrency=1, identify_interval_s=5.0) as emu:
        yield emu


@pytest.fixture
async def start_fleet(
    tmp_path: Path, discord: DiscordEmulator, gemini: GeminiEmulator, redis_server: RedisServer
) -> AsyncIterator[Callable[..., Any]]:
    started: list[Fleet] = []

    async def start(**settings: str) -> Fleet:
        base = _consecutive_free_ports(2)
        data_dir = tmp_path / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
        env.update(
            PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            DISCORD_TOKEN=discord.token,
            GEMINI_API_KEY=gemini.api_key,
            DISCORD_REST_URL=discord.rest_url,
            GEMINI_BASE_URL=gemini.base_url,
            REDIS_URL=redis_server.url,
            OPS_PORT=str(base),
            DATA_DIR=str(data_dir),
            USER_COOLDOWN_SECONDS="0",
            SHUTDOWN_GRACE_SECONDS="2",
            RETRY_INITIAL_BACKOFF_SECONDS="0.01",
            RETRY_MAX_BACKOFF_SECONDS="0.05",
            DISCORD_TYPING_DELAY_SECONDS="5",
            ALERT_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        )
        env.update(settings)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "fleet", "--processes", "2", "--shard-count", "2",
            cwd=tmp_path,
            env=env,
        )  # fmt: skip
        fleet = Fleet(process, [base, base + 1], data_dir)
        started.append(fleet)

        async def all_ready() -> bool:
            if process.returncode is not None:
                raise AssertionError(f"the fleet exited with {process.returncode}")
            return all([await _ready(port) for port in fleet.ports])

        # Two Python processes starting on a shared 2-core machine, then 5 s between their
        # identify turns: allow for a slow start.
        await _until(all_ready, 45, "both fleet processes ready")
        await discord.wait_until_ready()
        return fleet

    yield start
    for fleet in started:
        if fleet.process.returncode is None:
            fleet.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await fleet.process.wait()
            except TimeoutError:
                fleet.process.kill()
                await fleet.process.wait()
            assert fleet.process.returncode == 0


def _guilds_on_both_shards(discord: DiscordEmulator, per_shard: int) -> dict[int, list[int]]:
    """Guild ids by owning shard, `per_shard` each."""
    by_shard: dict[int, list[int]] = {0: [], 1: []}
    while min(len(g) for g in by_shard.values()) < per_shard:
        guild = discord.create_guild("Guild")
        shard = shard_for_guild(guild, SHARDS)
        if len(by_shard[shard]) < per_shard:
            by_shard[shard].append(guild)
        time.sleep(0.002)  # snowflakes carry milliseconds: the next lands elsewhere
    return by_shard


async def test_each_guild_is_answered_once_by_its_shards_process(
    start_fleet: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    guilds = _guilds_on_both_shards(discord, 2)
    alice = discord.create_user("alice")
    fleet: Fleet = await start_fleet()
    # The processes took turns: no IDENTIFY was refused by the bucket rule.
    assert dict(discord.identifies) == {0: 1, 1: 1}
    assert not discord.identify_rate_limited

    asked: dict[int, int] = {}  # message id -> owning shard
    for shard, ids in guilds.items():
        for n, guild in enumerate(ids):
            discord.add_member(guild, alice)
            message = await discord.send_message(
                discord.guild_text_channel(guild),
                author=alice,
                content=f"question {shard}.{n}",
                mention_bot=True,
            )
            asked[int(message["id"])] = shard
    for message_id in asked:
        await discord.wait_for_reply(message_id, timeout=15)

    async def both_counted() -> bool:
        answered = [
            await fleet.value(i, "llmbot_messages_total", outcome="answered") for i in (0, 1)
        ]
        return answered == [2.0, 2.0]

    # Process 0 runs shard 0 and process 1 shard 1: each answered its own guilds' questions.
    await _until(both_counted, 10, "each process to count its two answers")
    replies = [m for m in discord.sent_messages if m.reply_to in asked]
    assert sorted(m.reply_to for m in replies if m.reply_to) == sorted(asked)  # once each
    assert len(gemini.requests) == 4
    for index in (0, 1):
        assert await fleet.value(index, "llmbot_dependency_up", dependency="redis") == 1
        assert await fleet.value(index, "llmbot_fleet_live_instances") == 2
    # An alert about process 1 posted to process 0's /alerts runs on process 1 only.
    about_1 = sample_alert(instance=f"127.0.0.1:{fleet.ports[1]}", fingerprint="f1eet")
    assert await fleet.post_alert(0, sample_body(about_1)) == 202

    async def ran_on_1() -> bool:
        return any(
            e["fingerprint"] == "f1eet" and e["outcome"] == "ok" for e in await fleet.audit(1)
        )

    await _until(ran_on_1, 10, "process 1 to run the alert posted to process 0")
    assert not any(e["fingerprint"] == "f1eet" for e in await fleet.audit(0))
    targets = json.loads((fleet.data_dir / "fleet-targets.json").read_text())
    assert [t["targets"] for t in targets] == [[f"127.0.0.1:{p}"] for p in fleet.ports]
    assert [t["labels"]["shards"] for t in targets] == ["0", "1"]


async def _a_fresh_minute(margin_s: float) -> None:
    """Wait (if need be) until at least `margin_s` of the current wall-clock minute remain, so
    a burst is counted in one provider window."""
    left = 60 - time.time() % 60
    if left < margin_s:
        await asyncio.sleep(left + 0.5)  # the condition is the clock itself


async def test_a_burst_to_one_shard_uses_the_whole_fleet_quota_and_no_more(
    start_fleet: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    gemini.rpm_limit = 6  # the provider enforces it: a request over it gets a 429
    guilds = _guilds_on_both_shards(discord, 1)
    alice = discord.create_user("alice")
    fleet: Fleet = await start_fleet(
        GEMINI_RATE_LIMIT_RPM="6", GEMINI_RATE_LIMIT_SAFETY_MARGIN="1.0"
    )
    for ids in guilds.values():
        discord.add_member(ids[0], alice)
    await _a_fresh_minute(12)
    window = math.floor(time.time() / 60)

    async def ask(shard: int, n: int) -> int:
        message = await discord.send_message(
            discord.guild_text_channel(guilds[shard][0]),
            author=alice,
            content=f"burst question {shard}.{n}",
            mention_bot=True,
        )
        return int(message["id"])

    burst = [await ask(0, n) for n in range(9)]  # all to shard 0: process 0
    for message_id in burst:
        await discord.wait_for_reply(message_id, timeout=15)  # an answer or a queued notice
    assert len(gemini.requests) == 6  # process 0 used the fleet's whole minute, alone
    late = await ask(1, 0)  # shard 1's process finds the fleet's minute used up
    await discord.wait_for_reply(late, timeout=15)
    assert math.floor(time.time() / 60) == window, "the burst crossed a minute boundary"
    assert len(gemini.requests) == 6
    assert gemini.rate_limited_count == 0
    assert await fleet.value(0, "llmbot_messages_total", outcome="answered") == 6
    assert await fleet.value(1, "llmbot_messages_total", outcome="answered") == 0
    assert await fleet.value(1, "llmbot_llm_quota_rejections_total", window="minute") >= 1
    per_minute: dict[int, int] = {}
    for request in gemini.requests:
        key = math.floor(request.received_at / 60)
        per_minute[key] = per_minute.get(key, 0) + 1
    assert max(per_minute.values()) <= 6


async def test_redis_stopped_and_restarted_under_traffic(
    start_fleet: Callable[..., Any],
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
    redis_server: RedisServer,
) -> None:
    gemini.rpm_limit = 60
    guilds = _guilds_on_both_shards(discord, 1)
    alice = discord.create_user("alice")
    fleet: Fleet = await start_fleet(
        GEMINI_RATE_LIMIT_RPM="60", GEMINI_RATE_LIMIT_SAFETY_MARGIN="1.0"
    )
    for ids in guilds.values():
        discord.add_member(ids[0], alice)
    count = 0

    async def ask_both() -> None:
        nonlocal count
        for shard in (0, 1):
            count += 1
            message = await discord.send_message(
                discord.guild_text_channel(guilds[shard][0]),
                author=alice,
                content=f"question {count}",
                mention_bot=True,
            )
            await discord.wait_for_reply(int(message["id"]), timeout=15)

    for _ in range(2):
        await ask_both()
    redis_server.stop()
    for _ in range(3):  # answered on each process's local share
        await ask_both()

    async def both_fell_back() -> bool:
        return all([await fleet.value(i, "llmbot_llm_quota_fallback") == 1 for i in (0, 1)])

    await _until(both_fell_back, 10, "both processes on their local share")
    for index in (0, 1):
        assert await fleet.value(index, "llmbot_dependency_up", dependency="redis") == 0
    redis_server.start()

    async def both_recovered() -> bool:
        return all(
            [await fleet.value(i, "llmbot_dependency_up", dependency="redis") == 1 for i in (0, 1)]
        )

    await _until(both_recovered, 15, "both processes back on Redis")
    for _ in range(2):
        await ask_both()
    assert gemini.rate_limited_count == 0
    answered = [await fleet.value(i, "llmbot_messages_total", outcome="answered") for i in (0, 1)]
    assert answered == [7.0, 7.0]
    for index in (0, 1):
        assert await fleet.value(index, "llmbot_llm_quota_fallback") == 0
        assert await fleet.value(index, "llmbot_llm_quota_fallbacks_total") == 1
        # Discord's REST pace fell back to its local share with the quota, and came back too.
        assert await fleet.value(index, "llmbot_discord_rest_shared_fallbacks_total") == 1

    async def rest_pace_shared_again() -> bool:
        return all(
            [await fleet.value(i, "llmbot_discord_rest_shared_fallback") == 0 for i in (0, 1)]
        )

    await _until(rest_pace_shared_again, 10, "both processes pacing REST through Redis again")


async def test_both_processes_together_keep_to_one_rest_rate(
    start_fleet: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    # A fleet rate of 10/s (DISCORD_REST_MAX_RPS) makes sharing visible in a few seconds:
    # each process alone would send its 20 replies at 10/s, together 20/s.
    guilds = _guilds_on_both_shards(discord, 1)
    alice = discord.create_user("alice")
    channels: list[int] = []
    for ids in guilds.values():
        discord.add_member(ids[0], alice)
        channels += [discord.create_channel(ids[0], f"c{n}") for n in range(20)]
    fleet: Fleet = await start_fleet(DISCORD_REST_MAX_RPS="10", GEMINI_RATE_LIMIT_RPM="1000")
    # A question each: the same question twice would be answered from the response cache.
    asked = [
        int(
            (await discord.send_message(c, author=alice, content=f"hi {n}", mention_bot=True))["id"]
        )
        for n, c in enumerate(channels)
    ]
    for message_id in asked:
        await discord.wait_for_reply(message_id, timeout=30)
    replies = sorted(m.created_at for m in discord.sent_messages if m.reply_to in asked)
    assert len(replies) == 40
    # One schedule for both: the 40 replies' turns are 0.1 s apart, so the last comes at least
    # 3.9 s after the first's turn (each process pacing only itself: both at once, 2 s). Counted
    # at the emulator as they arrived, a stalled loop bunches calls whose turns have passed (the
    # first reply may come late too), so the bounds leave room for that and still tell one
    # shared pace from two.
    span = replies[-1] - replies[0]
    assert span >= 3.0, f"40 replies in {span:.1f} s from a fleet paced at 10/s"
    busiest = max(bisect.bisect_left(replies, t + 1.0) - i for i, t in enumerate(replies))
    assert busiest <= 16, f"{busiest} replies in one second from a fleet paced at 10/s"
    assert discord.rate_limited_count == 0
    for index in (0, 1):
        assert await fleet.value(index, "llmbot_messages_total", outcome="answered") == 20
        assert await fleet.value(index, "llmbot_redis_commands_total", op="rest") >= 20
        assert await fleet.value(index, "llmbot_discord_rest_shared_fallback") == 0


async def test_fleet_without_redis_url_is_one_clear_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "fleet", "--processes", "2",
        cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate()
    lines = err.decode().strip().splitlines()
    assert process.returncode == 2
    assert lines == [
        "error: python -m bot fleet needs REDIS_URL (its processes share the quota through "
        "Redis): set REDIS_URL, e.g. redis://127.0.0.1:6379/0"
    ]


async def test_redis_unreachable_at_start_is_one_line_with_code_69(
    tmp_path: Path, discord: DiscordEmulator, gemini: GeminiEmulator, redis_server: RedisServer
) -> None:
    redis_server.stop()
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        DISCORD_TOKEN=discord.token,
        GEMINI_API_KEY=gemini.api_key,
        DISCORD_REST_URL=discord.rest_url,
        GEMINI_BASE_URL=gemini.base_url,
        REDIS_URL=redis_server.url.replace("redis://", "redis://:hunter2pw@"),
        OPS_PORT="0",
        DATA_DIR=str(tmp_path / "data"),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run",
        cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate()
    lines = [line for line in err.decode().splitlines() if line.startswith("error:")]
    assert process.returncode == 69
    assert len(lines) == 1 and "cannot reach Redis at redis://***@127.0.0.1:" in lines[0]
    assert "hunter2pw" not in err.decode()


async def test_check_pings_redis_and_hides_its_password(
    tmp_path: Path,
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = RedisServer(tmp_path_factory.mktemp("redis"), password="pw-s3cret")
    server.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        DISCORD_TOKEN=discord.token,
        GEMINI_API_KEY=gemini.api_key,
        DISCORD_REST_URL=discord.rest_url,
        GEMINI_BASE_URL=gemini.base_url,
    )

    async def check(url: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "check",
            cwd=tmp_path, env={**env, "REDIS_URL": url},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out.decode()

    try:
        code, out = await check(server.url)
        assert code == 0, out
        assert "REDIS_URL redis://***@127.0.0.1:" in out and ": ok" in out
        code, out = await check(server.url.replace("pw-s3cret", "wrong-pw"))
        assert code == 3
        assert "REDIS_URL: rejected" in out
        server.stop()
        code, out = await check(server.url)
        assert code == 4
        assert "REDIS_URL: could not verify" in out
        assert "pw-s3cret" not in out and "wrong-pw" not in out
    finally:
        server.stop()
