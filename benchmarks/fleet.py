"""10. `fleet` (only with `--only fleet`): bot processes sharing one Redis (REDIS_URL).

Three measurements, each against emulators and a redis-server of its own (Debian's binary on a
free loopback port, persistence off, started and stopped here):

* quota: 3 processes (`python -m bot run`, shards 0, 1 and 2 of 3) against a Gemini emulator
  enforcing exactly 60 RPM, margin 1.0, a sustained backlog spread over the three shards'
  guilds: the share of the quota used in full minute windows, and 429s;
* Redis's cost per answer: one process with REDIS_URL and one without (SQLite, the default)
  answer the same mentions, taking turns phase by phase: Redis round trips per answer (the
  bot's `llmbot_redis_commands_total`, one per command, script or pipeline) and commands
  executed (redis-server `INFO commandstats`), bot CPU per answer as a ratio, and
  redis-server's own CPU per answer;
* ingest: guild messages that do not address the bot, queued while the processes are stopped
  and drained as fast as they take them, with 1 process (both shards) and 2 processes (one
  shard each, REDIS_URL): events per second of wall time on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.harness import Lab, Mode, Result, Row, User
from bot.emulator.discord import DiscordEmulator
from bot.emulator.discord.ids import shard_for_guild
from bot.emulator.gemini import GeminiEmulator
from bot.emulator.local_server import free_port
from bot.loadtest import BotProcess, bot_command, bot_env

__all__ = ["FLEET_SCALES", "FleetScale", "fleet"]

QUOTA_RPM = 60
QUOTA_PROCESSES = 3
LANES_PER_SHARD = 7


@dataclass(frozen=True, slots=True)
class FleetScale:
    quota_windows: int  # full minute windows; 0 = `quota_seconds` of one
    quota_seconds: float
    cost_phases: int
    cost_answers: int  # per phase and contender
    ingest_phases: int
    ingest_events: int  # per phase and contender


FLEET_SCALES: dict[Mode, FleetScale] = {
    "full": FleetScale(2, 0.0, 6, 300, 6, 6_000),
    "quick": FleetScale(1, 0.0, 3, 150, 3, 3_000),
    "smoke": FleetScale(0, 3.0, 1, 10, 1, 200),
}


# -- the pieces ----------------------------------------------------------------------------------


class RedisServer:
    """A private redis-server on a free loopback port, persistence off."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: apt-get install redis-server")
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self._log = (workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir), "--protected-mode", "no"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._ps = psutil.Process(self.process.pid)

    async def wait_up(self) -> None:
        deadline = time.monotonic() + 10
        while not await asyncio.to_thread(_pong, self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            await asyncio.sleep(0.05)

    def cpu_s(self) -> float:
        times = self._ps.cpu_times()
        return float(times.user + times.system)

    async def commandstats(self) -> Counter[str]:
        """Calls so far by command (`INFO commandstats`; the INFO itself included)."""
        client = aioredis.Redis.from_url(self.url)
        try:
            info: dict[str, Any] = await client.info("commandstats")
        finally:
            await client.aclose()
        return Counter(
            {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()}
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.asynccontextmanager
async def _redis(workdir: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(workdir)
    try:
        await server.wait_up()
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def _lab(scratch: Path, shards: int, rpm_limit: int | None = None) -> AsyncIterator[Lab]:
    await asyncio.to_thread(scratch.mkdir, parents=True, exist_ok=True)
    async with (
        DiscordEmulator(
            shards=shards, enforce_limits=False, validate=False, history_limit=1_000_000
        ) as discord,
        GeminiEmulator(rpm_limit=rpm_limit, max_recorded=1_000_000) as gemini,
    ):
        yield Lab(scratch, discord, gemini)


@dataclass
class _Proc:
    proc: BotProcess
    ops_port: int

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        url = f"http://127.0.0.1:{self.ops_port}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            text = await response.text()
        values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return values

    async def total(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples whose labels include `labels`."""
        want = set(labels.items())
        return sum(
            value
            for (sample, sample_labels), value in (await self.metrics()).items()
            if sample == name and want <= set(sample_labels)
        )

    async def ready(self) -> bool:
        url = f"http://127.0.0.1:{self.ops_port}/readyz"
        try:
            async with aiohttp.ClientSession() as http, http.get(url) as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False


@contextlib.asynccontextmanager
async def _processes(
    lb: Lab, settings: list[dict[str, object]], name: str
) -> AsyncIterator[list[_Proc]]:
    """Start every process at once (each waits for the others' shards), until all are ready."""
    async with contextlib.AsyncExitStack() as stack:
        procs = []
        for index, s in enumerate(settings):
            proc = BotProcess(
                bot_command(),
                bot_env(s),
                cwd=lb.scratch,
                log_path=lb.scratch / f"{name}-{index}.log",
                name=f"{name}-{index}",
            )
            await stack.enter_async_context(proc)
            procs.append(_Proc(proc, int(str(s["ops_port"]))))
        deadline = time.monotonic() + 120
        while not all([await p.ready() for p in procs]):
            for p in procs:
                if not p.proc.running:
                    raise RuntimeError(f"{p.proc.name} exited:\n{p.proc.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: not ready in 120 s")
            await asyncio.sleep(0.2)
        await lb.discord.wait_until_ready(timeout=60)
        lb.watcher.start()
        try:
            yield procs
        finally:
            await lb.watcher.stop()


def _guilds_by_shard(discord: DiscordEmulator, shards: int) -> list[int]:
    """One guild owned by each shard, in shard order."""
    found: dict[int, int] = {}
    while len(found) < shards:
        guild = discord.create_guild("Fleet")
        found.setdefault(shard_for_guild(guild, shards), guild)
        time.sleep(0.002)  # snowflakes carry milliseconds: the next lands elsewhere
    return [found[shard] for shard in range(shards)]


def _lanes(lb: Lab, guilds: list[int], per_guild: int) -> list[tuple[int, User]]:
    """(channel, member) pairs, `per_guild` in each guild, interleaved across guilds."""
    lanes: list[list[tuple[int, User]]] = []
    for g, guild in enumerate(guilds):
        row = []
        for n in range(per_guild):
            user = lb.discord.create_user(f"member-{g}-{n}")
            lb.discord.add_member(guild, user)
            row.append((lb.discord.create_channel(guild, name=f"lane-{n}"), user))
        lanes.append(row)
    return [lane for group in zip(*lanes, strict=True) for lane in group]


def _fleet_settings(
    lb: Lab, redis_url: str, shard: int, shards: int, **extra: object
) -> dict[str, object]:
    return lb.settings(
        redis_url=redis_url,
        discord_shard_ids=str(shard),
        discord_shard_count=shards,
        **extra,
    )


# -- quota with 3 processes ----------------------------------------------------------------------


async def _quota(scale: FleetScale, scratch: Path) -> dict[str, Any]:
    rpm = QUOTA_RPM
    async with _redis(scratch / "redis") as server, _lab(scratch, QUOTA_PROCESSES, rpm) as lb:
        guilds = _guilds_by_shard(lb.discord, QUOTA_PROCESSES)
        lanes = _lanes(lb, guilds, LANES_PER_SHARD)
        quota = {
            "gemini_rate_limit_rpm": rpm,
            "gemini_rate_limit_daily": 1_000_000,
            "gemini_rate_limit_safety_margin": 1.0,
            "queue_max_age_seconds": 3600,
            "idempotency_ttl_seconds": 7200,
            "queue_max_size": 10_000,
        }
        settings = [
            _fleet_settings(lb, server.url, shard, QUOTA_PROCESSES, **quota)
            for shard in range(QUOTA_PROCESSES)
        ]
        async with _processes(lb, settings, "quota") as procs:
            sent = 0
            kinds: Counter[str] = Counter()

            async def ask() -> None:
                nonlocal sent
                index = sent
                sent += 1
                channel, user = lanes[index % len(lanes)]
                with contextlib.suppress(TimeoutError):
                    _, reply = await lb.ask(
                        channel, user, f"[f{index}] backlog question", timeout_s=600
                    )
                    kinds["queued" if "queued" in reply.content else "first reply"] += 1

            tasks: set[asyncio.Task[None]] = set()

            def spawn() -> None:
                task = asyncio.create_task(ask())
                tasks.add(task)
                task.add_done_callback(tasks.discard)

            started = time.time()
            for _ in range(2 * rpm):
                spawn()
            first, end = started, started + scale.quota_seconds
            if scale.quota_windows:
                first = math.floor(started / 60) * 60 + 60.0
                if first - started < 5:  # too close: the backlog would not be there yet
                    first += 60
                end = first + 60 * scale.quota_windows
            interval = 60 / (2 * rpm)
            while time.time() < end:
                await asyncio.sleep(interval)
                spawn()
            requests = list(lb.gemini.requests)
            rate_limited = lb.gemini.rate_limited_count
            answered = [await p.total("llmbot_messages_total", outcome="answered") for p in procs]
            fallbacks = [await p.total("llmbot_llm_quota_fallbacks_total") for p in procs]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    per_window: Counter[int] = Counter(
        math.floor(r.received_at / 60) for r in requests if first <= r.received_at < end
    )
    windows = sorted(per_window)
    used = sum(min(per_window[w], rpm) for w in windows)
    capacity = rpm * (scale.quota_windows or max(1, len(windows)))
    return {
        "processes": QUOTA_PROCESSES,
        "windows": {str(w * 60): per_window[w] for w in windows},
        "used": used,
        "capacity": capacity,
        "used_share": used / capacity,
        "rate_limited": rate_limited,
        "requests_total": len(requests),
        "answered_by_process": answered,
        "quota_fallbacks": fallbacks,
        "replies": dict(kinds),
    }


# -- Redis's cost per answer ---------------------------------------------------------------------


@dataclass
class _CostSide:
    name: str
    lb: Lab
    proc: _Proc
    lanes: list[tuple[int, User]]
    cpu_s: float = 0.0
    answers: int = 0
    phase_us: list[float] | None = None


async def _cost(scale: FleetScale, scratch: Path) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(_redis(scratch / "redis"))
        sides: list[_CostSide] = []
        for name in ("sqlite", "redis"):
            lb = await stack.enter_async_context(_lab(scratch / name, 1))
            guild = lb.discord.create_guild("Cost")
            lanes = _lanes(lb, [guild], 20)
            extra: dict[str, object] = {"redis_url": server.url} if name == "redis" else {}
            (proc,) = await stack.enter_async_context(
                _processes(lb, [lb.settings(**extra)], f"cost-{name}")
            )
            for channel, user in lanes[:5]:  # warm-up
                await lb.ask(channel, user, "warm-up")
            sides.append(_CostSide(name, lb, proc, lanes, phase_us=[]))
        trips: Counter[str] = Counter()
        commands: Counter[str] = Counter()
        redis_cpu_s = 0.0
        asked = 0
        for _ in range(scale.cost_phases):
            for side in sides:
                jobs = []
                for n in range(scale.cost_answers):
                    channel, user = side.lanes[n % len(side.lanes)]
                    jobs.append((channel, user, f"[c{asked + n}] a question"))
                if side.name == "redis":
                    stats_before = await server.commandstats()
                    trips_before = await _redis_trips(side.proc)
                    redis_before = server.cpu_s()
                before = side.proc.proc.usage()
                done = await side.lb.closed_loop(jobs, concurrency=20)
                after = side.proc.proc.usage()
                if side.name == "redis":
                    redis_cpu_s += server.cpu_s() - redis_before
                    trips += await _redis_trips(side.proc) - trips_before
                    stats = await server.commandstats()
                    stats.subtract(stats_before)
                    stats["info"] -= 1  # our own INFO
                    commands += +stats
                side.cpu_s += after.cpu_s - before.cpu_s
                side.answers += done
                assert side.phase_us is not None
                side.phase_us.append((after.cpu_s - before.cpu_s) * 1e6 / max(1, done))
            asked += scale.cost_answers
    sqlite, redis_side = sides
    sqlite_us = sqlite.cpu_s * 1e6 / max(1, sqlite.answers)
    redis_us = redis_side.cpu_s * 1e6 / max(1, redis_side.answers)
    answers = redis_side.answers
    ratios = [
        r / s if s > 0 else math.nan
        for r, s in zip(redis_side.phase_us or [], sqlite.phase_us or [], strict=True)
    ]
    return {
        "answers_per_side": answers,
        "sqlite_us": sqlite_us,
        "redis_us": redis_us,
        "ratio": redis_us / sqlite_us if sqlite_us > 0 else math.nan,
        "phase_ratios": ratios,
        "round_trips_per_answer": sum(trips.values()) / max(1, answers),
        "round_trips_by_op": {op: n / max(1, answers) for op, n in sorted(trips.items())},
        "commands_per_answer": sum(commands.values()) / max(1, answers),
        "commands_by_name": {c: n / max(1, answers) for c, n in commands.most_common()},
        "redis_server_us": redis_cpu_s * 1e6 / max(1, answers),
    }


async def _redis_trips(proc: _Proc) -> Counter[str]:
    metrics = await proc.metrics()
    return Counter(
        {
            dict(labels)["op"]: int(value)
            for (name, labels), value in metrics.items()
            if name == "llmbot_redis_commands_total"
        }
    )


# -- ingest with 1 and 2 processes ---------------------------------------------------------------


async def _ingest(scale: FleetScale, scratch: Path) -> dict[str, Any]:
    per_phase = scale.ingest_events
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(_redis(scratch / "redis"))
        contenders: list[tuple[str, Lab, list[_Proc], list[tuple[int, User]]]] = []
        for name, processes in (("1 process", 1), ("2 processes", 2)):
            lb = await stack.enter_async_context(_lab(scratch / f"ingest-{processes}", 2))
            guilds = _guilds_by_shard(lb.discord, 2)
            lanes = _lanes(lb, guilds, 10)
            if processes == 1:
                settings = [lb.settings()]  # both shards in one process, no Redis
            else:
                settings = [_fleet_settings(lb, server.url, shard, 2) for shard in range(2)]
            procs = await stack.enter_async_context(_processes(lb, settings, f"ingest-{processes}"))
            contenders.append((name, lb, procs, lanes))

        async def phase(lb: Lab, procs: list[_Proc], lanes: list[tuple[int, User]]) -> float:
            """Queue `per_phase` events while stopped; seconds from resuming to drained."""
            for p in procs:
                p.proc.pause()
            try:
                sends = [
                    asyncio.create_task(
                        lb.discord.send_message(
                            lanes[i % len(lanes)][0],
                            author=lanes[i % len(lanes)][1],
                            content=f"just chatting among ourselves, message {i}",
                        )
                    )
                    for i in range(per_phase)
                ]
                await asyncio.sleep(0)  # every send has now queued its dispatch
            finally:
                started = time.monotonic()
                for p in procs:
                    p.proc.resume()
            await asyncio.gather(*sends)
            # A mention on each shard, answered once every earlier event of it was handled.
            await asyncio.gather(
                *(lb.ask(channel, user, "sentinel: are you there?") for channel, user in lanes[:2])
            )
            return time.monotonic() - started

        figures: dict[str, dict[str, Any]] = {}
        for name, lb, procs, lanes in contenders:
            await phase(lb, procs, lanes)  # warm-up
            figures[name] = {"seconds": [], "cpu_s": []}
        for _ in range(scale.ingest_phases):
            for name, lb, procs, lanes in contenders:
                before = sum(p.proc.usage().cpu_s for p in procs)
                seconds = await phase(lb, procs, lanes)
                figures[name]["seconds"].append(seconds)
                figures[name]["cpu_s"].append(sum(p.proc.usage().cpu_s for p in procs) - before)
    events = per_phase * scale.ingest_phases
    out: dict[str, Any] = {"events_per_side": events}
    for name, f in figures.items():
        out[name] = {
            "events_per_s": events / sum(f["seconds"]),
            "phase_events_per_s": [per_phase / s for s in f["seconds"]],
            "cpu_us_per_event": sum(f["cpu_s"]) * 1e6 / events,
        }
    return out


# -- the scenario --------------------------------------------------------------------------------


async def fleet(mode: Mode, scratch: Path) -> Result:
    """The `fleet` scenario: quota, Redis's cost per answer, ingest with 1 and 2 processes."""
    scale = FLEET_SCALES[mode]
    result = Result("fleet", "10. Fleet: processes sharing one Redis (REDIS_URL)")
    load: list[float] = []

    async def sampled(
        part: Callable[[FleetScale, Path], Awaitable[dict[str, Any]]], name: str
    ) -> dict[str, Any]:
        figures = await part(scale, scratch / name)
        load.append(psutil.getloadavg()[0])
        return figures

    load.append(psutil.getloadavg()[0])
    quota = await sampled(_quota, "quota")
    cost = await sampled(_cost, "cost")
    ingest = await sampled(_ingest, "ingest")
    result.data = {"quota": quota, "cost": cost, "ingest": ingest, "load_average_1m": load}
    share = quota["used_share"]
    result.rows = [
        Row(
            f"quota used, {QUOTA_PROCESSES} processes, margin 1.0",
            f"{share:.1%} ({quota['used']}/{quota['capacity']}; answers by process "
            + "/".join(str(int(n)) for n in quota["answered_by_process"])
            + ")",
            "≥ 98 %",
            ("met" if share >= 0.98 else "missed") if scale.quota_windows else "info",
        ),
        Row(
            "429s received from Gemini",
            str(quota["rate_limited"]),
            "0",
            "met" if quota["rate_limited"] == 0 else "missed",
        ),
        Row(
            "Redis round trips per answer (bot side)",
            f"{cost['round_trips_per_answer']:.2f} ("
            + ", ".join(f"{op} {n:.2f}" for op, n in cost["round_trips_by_op"].items() if n)
            + ")",
        ),
        Row(
            "Redis commands executed per answer (INFO commandstats)",
            f"{cost['commands_per_answer']:.2f} ("
            + ", ".join(f"{c} {n:.2f}" for c, n in list(cost["commands_by_name"].items())[:5])
            + ")",
        ),
        Row(
            "bot CPU per answer, Redis / SQLite",
            f"{cost['ratio']:.2f}× ({cost['redis_us']:.0f} / {cost['sqlite_us']:.0f} µs; "
            + (
                f"phases {min(cost['phase_ratios']):.2f}–{max(cost['phase_ratios']):.2f})"
                if len(cost["phase_ratios"]) > 1
                else "1 phase)"
            ),
        ),
        Row("redis-server CPU per answer", f"{cost['redis_server_us']:.0f} µs"),
    ]
    for name in ("1 process", "2 processes"):
        f = ingest[name]
        spread = f["phase_events_per_s"]
        result.rows.append(
            Row(
                f"ingest events/s, {name}",
                f"{f['events_per_s']:,.0f}/s (phases {min(spread):,.0f}–{max(spread):,.0f}; "
                f"{f['cpu_us_per_event']:.0f} µs CPU per event)",
            )
        )
    windows = scale.quota_windows
    result.notes.append(
        f"Quota: {QUOTA_PROCESSES} `python -m bot run` processes (shards 0, 1, 2 of 3, one "
        "REDIS_URL), Gemini emulator enforcing exactly "
        f"{QUOTA_RPM} RPM; "
        + (
            f"{windows} full minute window(s) measured"
            if windows
            else f"{scale.quota_seconds:g} s of one window (smoke: no full window)"
        )
        + f"; the backlog is a burst of {2 * QUOTA_RPM} mentions, then {2 * QUOTA_RPM} per "
        f"minute, round robin over {LANES_PER_SHARD} channels in each shard's guild."
    )
    result.notes.append(
        f"Cost: one process with REDIS_URL and one without take turns, {scale.cost_phases} "
        f"phases of {scale.cost_answers} mentions each (20 in flight, Gemini at zero latency, "
        "limits relaxed as in scenario 2, so every answer runs the shared quota's and the "
        "shared REST pace's scripts). Round trips: the bot's `llmbot_redis_commands_total` "
        "(a command, script or pipeline each); commands: redis-server's `INFO commandstats`, "
        "heartbeats and other background commands during the phases included."
    )
    result.notes.append(
        f"Ingest: {scale.ingest_phases} phases of {scale.ingest_events:,} MESSAGE_CREATE events "
        "(half to each shard's guild) queued while the processes are stopped, then drained; "
        "events/s = events / seconds from resuming to both shards' sentinel answered. The "
        "harness (emulators) shares the same cores. 1-minute load average before and after "
        "each part: " + ", ".join(f"{v:.2f}" for v in load) + "."
    )
    return result
