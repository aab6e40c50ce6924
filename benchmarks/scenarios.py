"""The scenarios (the burst is in benchmarks/burst.py, the soak in benchmarks/soak.py). Each runs
the bot in its own process, with a baseline in the same run."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import statistics
import time
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from benchmarks.bare_bot import SENTINEL
from benchmarks.burst import burst
from benchmarks.fleet import fleet
from benchmarks.harness import (
    JSON,
    Lab,
    Mode,
    Result,
    Row,
    User,
    bare_bot_command,
    harness_gc_paused,
    lab,
    per_answer_us,
    quantiles_ms,
    scrape_metrics,
)
from benchmarks.otlp import SpanCounter
from benchmarks.profiling import Profiler
from benchmarks.soak import SOAK_FULL_S, soak
from bot.chat.memory import ConversationMemory, Turn
from bot.emulator.discord import SentMessage
from bot.emulator.gemini import GeminiRequest
from bot.loadtest import BotProcess, ProcessUsage, message_time

__all__ = ["ALL_SCENARIOS", "OPT_IN", "SCENARIOS", "Options", "Scale", "scale_for"]


@dataclass(frozen=True, slots=True)
class Scale:
    """How much of each scenario a mode runs."""

    ingest_events: int
    ingest_rounds: int  # phases per contender
    answer_conversations: int
    answer_exchanges: int
    latency_seconds: float
    latency_rate: float
    scrape_world: tuple[int, int]  # guilds, users per guild
    scrapes: int
    memory_conversations: int
    memory_turns: int
    quota_rpm: int
    quota_windows: int  # full minute windows measured; 0 = a few seconds of one window
    quota_seconds: float  # used when quota_windows == 0


SCALES: dict[Mode, Scale] = {
    "full": Scale(40_000, 20, 300, 10, 30.0, 50.0, (200, 50), 200, 10_000, 20, 60, 3, 0.0),
    "quick": Scale(10_000, 5, 100, 10, 10.0, 50.0, (20, 10), 200, 1_000, 20, 60, 1, 0.0),
    "smoke": Scale(200, 1, 3, 3, 1.0, 20.0, (2, 2), 5, 6, 4, 5, 0, 3.0),
}


def scale_for(mode: Mode) -> Scale:
    """The scale of a mode."""
    return SCALES[mode]


@dataclass(frozen=True, slots=True)
class Options:
    """What one harness run does beyond the figures."""

    mode: Mode
    scratch: Path
    instrumentation: bool = True  # measure metrics + tracing on vs off
    profile_dir: Path | None = None  # attach py-spy to the bot during measured phases
    soak_seconds: float | None = None  # the soak's traffic time (None: the mode's)

    @property
    def scale(self) -> Scale:
        return SCALES[self.mode]


def _ratio(value: float, baseline: float) -> float:
    """value / baseline; nan when the baseline measured no CPU at all (clock-tick resolution)."""
    return value / baseline if baseline > 0 else math.nan


def _spread(ratios: list[float]) -> str:
    return f"phases {min(ratios):.2f}–{max(ratios):.2f}" if len(ratios) > 1 else "1 phase"


def _verdict(ok: bool) -> Any:
    return "met" if ok else "missed"


@contextlib.asynccontextmanager
async def _profiled(
    options: Options, proc: BotProcess, name: str
) -> AsyncIterator[Profiler | None]:
    if options.profile_dir is None:
        yield None
        return
    async with Profiler(proc.pid, options.profile_dir / f"{name}.txt") as profiler:
        yield profiler


# -- 1. ingest ----------------------------------------------------------------------------------


@dataclass
class _Contender:
    """One process under comparison: its lab, and how to run phase k (returns items done)."""

    name: str
    lab: Lab
    proc: BotProcess
    phase: Callable[[int], Awaitable[int]]
    overhead_cpu_s: float = 0.0  # taken off every phase (the closing sentinel)


@dataclass(frozen=True, slots=True)
class _Phases:
    """CPU seconds and items of each phase of each contender."""

    cpu_s: dict[str, list[float]]
    items: dict[str, list[int]]

    def per_item_us(self, name: str) -> float:
        return sum(self.cpu_s[name]) * 1e6 / max(1, sum(self.items[name]))

    def ratios(self, name: str, baseline: str) -> list[float]:
        """Phase-by-phase ratios of CPU per item (each phase next to the baseline's)."""
        return [
            _ratio(c / max(1, n), b / max(1, m))
            for c, n, b, m in zip(
                self.cpu_s[name],
                self.items[name],
                self.cpu_s[baseline],
                self.items[baseline],
                strict=True,
            )
        ]


async def _interleave(contenders: list[_Contender], phases: int, settle_s: float) -> _Phases:
    """Run phase k of every contender in turn, k = 0..phases-1, reading each one's CPU around it.

    All contenders stay up, idle between their phases, so a drift of the machine's speed
    (a shared VM) hits them alike instead of whichever ran last.
    """
    cpu: dict[str, list[float]] = {c.name: [] for c in contenders}
    items: dict[str, list[int]] = {c.name: [] for c in contenders}
    for k in range(phases):
        for contender in contenders:
            before = contender.proc.usage()
            done = await contender.phase(k)
            # Work that trails the phase (span export batches) is still the phase's.
            await asyncio.sleep(settle_s)
            after = contender.proc.usage()
            cpu[contender.name].append(after.cpu_s - before.cpu_s - contender.overhead_cpu_s)
            items[contender.name].append(done)
    return _Phases(cpu, items)


async def ingest(options: Options) -> Result:
    """Guild messages that do not address the bot: CPU per event, bot vs a bare hikari bot."""
    scale = options.scale
    result = Result("ingest", "1. Ingest: guild messages that do not address the bot")
    per_phase = scale.ingest_events // scale.ingest_rounds
    specs: list[tuple[str, list[str] | None, str, bool]] = [
        ("bot", None, "sentinel: are you there?", True),
        ("bare hikari", bare_bot_command("noop"), SENTINEL, False),
    ]
    async with contextlib.AsyncExitStack() as stack:
        contenders = []
        for name, argv, sentinel_text, mention in specs:
            slug = name.replace(" ", "-")
            lb = await stack.enter_async_context(lab(options.scratch / f"ingest-{slug}"))
            guild = lb.discord.create_guild("Ingest")
            channel = lb.discord.guild_text_channel(guild)
            users = _members(lb, guild, 20, "chatter")
            proc = await stack.enter_async_context(lb.child(lb.settings(), argv, name))

            async def phase(
                k: int,
                lb: Lab = lb,
                proc: BotProcess = proc,
                channel: int = channel,
                users: list[User] = users,
                text: str = sentinel_text,
                mention: bool = mention,
            ) -> int:
                # The whole phase is queued while the process is stopped, then it drains the
                # backlog as fast as it can: saturated, whatever the harness's own speed.
                proc.pause()
                try:
                    sends = _queue_events(lb, channel, users, per_phase)
                    await asyncio.sleep(0)  # every send has now queued its dispatch
                finally:
                    proc.resume()
                await asyncio.gather(*sends)
                # Answered only once every earlier event was handled.
                await lb.ask(channel, users[0], text, mention=mention)
                return per_phase

            await phase(-1)  # warm-up
            # What the closing sentinel itself costs, to take it off every phase.
            calibrate = 10
            before = proc.usage()
            for _ in range(calibrate):
                await lb.ask(channel, users[0], sentinel_text, mention=mention)
            sentinel_cpu_s = (proc.usage().cpu_s - before.cpu_s) / calibrate
            await stack.enter_async_context(_profiled(options, proc, f"ingest-{slug}"))
            contenders.append(_Contender(name, lb, proc, phase, sentinel_cpu_s))
        phases = await _interleave(contenders, scale.ingest_rounds, settle_s=0.0)
    bot, bare = phases.per_item_us("bot"), phases.per_item_us("bare hikari")
    ratio = _ratio(bot, bare)
    ratios = phases.ratios("bot", "bare hikari")
    result.data = {
        "events": per_phase * scale.ingest_rounds,
        "phases": scale.ingest_rounds,
        "cpu_s": phases.cpu_s,
        "ratios": ratios,
        "bot_us": bot,
        "bare_us": bare,
        "ratio": ratio,
    }
    result.rows = [
        Row("bot CPU per event", f"{bot:.1f} µs"),
        Row("bare hikari GatewayBot CPU per event", f"{bare:.1f} µs"),
        Row(
            "ratio bot / bare hikari",
            f"{ratio:.2f}× ({_spread(ratios)})",
            "≤ 1.2×",
            _verdict(ratio <= 1.2),
        ),
    ]
    result.notes.append(
        f"Both processes run side by side against emulators of their own and take turns: "
        f"{scale.ingest_rounds} phases each of {per_phase:,} MESSAGE_CREATE events from 20 "
        "members in one channel. A phase is queued at the gateway emulator while the process is "
        "stopped (SIGSTOP), so it then drains the backlog as fast as it can take it; it is "
        "closed by a sentinel message that is answered "
        "once every earlier event was handled; the sentinel's own cost (measured over 10 before) "
        "is taken off. CPU per event = total CPU / total events; the range is the spread of "
        "the phase-by-phase ratios."
    )
    return result


def _members(lb: Lab, guild: int, count: int, prefix: str) -> list[User]:
    users = []
    for index in range(count):
        user = lb.discord.create_user(f"{prefix}-{index + 1}")
        lb.discord.add_member(guild, user)
        users.append(user)
    return users


def _queue_events(lb: Lab, channel: int, users: list[User], count: int) -> list[asyncio.Task[JSON]]:
    """Start `count` chatter messages; each queues its dispatch on its first step."""
    return [
        asyncio.create_task(
            lb.discord.send_message(
                channel,
                author=users[index % len(users)],
                content=f"just chatting among ourselves, message {index}",
            )
        )
        for index in range(count)
    ]


# -- 2. answer path ------------------------------------------------------------------------------


async def answer_path(options: Options) -> Result:
    """Mentions answered at zero Gemini latency: CPU per answer, vs a bare replying hikari bot."""
    scale = options.scale
    result = Result("answer", "2. Answer path: mentions, Gemini at zero latency, limits relaxed")
    receiver = SpanCounter() if options.instrumentation else None
    scrape_every_s = 0.5 if options.mode == "smoke" else 5.0
    specs: list[tuple[str, list[str] | None, dict[str, object]]] = [
        ("bot", None, {}),
        ("bare hikari", bare_bot_command("reply"), {}),
    ]
    if receiver is not None:
        receiver.start()
        specs += [
            ("instrumentation off", None, {"otel_sdk_disabled": "true"}),
            (
                "instrumentation on",
                None,
                {
                    "otel_exporter_otlp_endpoint": receiver.endpoint,
                    "otel_bsp_schedule_delay": "500",
                },
            ),
        ]
    conversations, exchanges = scale.answer_conversations, scale.answer_exchanges
    scrapers: list[_Scraper] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            contenders = []
            for name, argv, extra in specs:
                slug = name.replace(" ", "-")
                lb = await stack.enter_async_context(lab(options.scratch / f"answer-{slug}"))
                guild = lb.discord.create_guild("Answers")
                channels = [
                    lb.discord.create_channel(guild, name=f"talk-{i}") for i in range(conversations)
                ]
                users = _members(lb, guild, conversations, "asker")
                warm = lb.discord.create_channel(guild, name="warm-up")
                settings = lb.settings(**extra)
                proc = await stack.enter_async_context(lb.child(settings, argv, name))
                scraper = None
                if name == "instrumentation on":
                    url = f"http://127.0.0.1:{settings['ops_port']}/metrics"
                    scraper = _Scraper(url, scrape_every_s)
                    scrapers.append(scraper)

                async def phase(
                    k: int,
                    lb: Lab = lb,
                    channels: list[int] = channels,
                    users: list[User] = users,
                    scraper: _Scraper | None = scraper,
                ) -> int:
                    # Phase k is exchange k of every conversation: the history grows by phase.
                    jobs = [
                        (channels[i], users[i], f"question {k} in conversation {i}: a monad?")
                        for i in range(conversations)
                    ]
                    async with scraper or contextlib.nullcontext():
                        return await lb.closed_loop(jobs, concurrency=32)

                for k in range(10):
                    await lb.ask(warm, users[0], f"warm-up {k}")
                await stack.enter_async_context(_profiled(options, proc, f"answer-{slug}"))
                contenders.append(_Contender(name, lb, proc, phase))
            # 0.7 s after each phase: the last span batch (exported every 0.5 s) is its cost.
            phases = await _interleave(contenders, exchanges, settle_s=0.7 if receiver else 0.0)
    finally:
        if receiver is not None:
            receiver.stop()
    bot_us, bare_us = phases.per_item_us("bot"), phases.per_item_us("bare hikari")
    ratio = _ratio(bot_us, bare_us)
    result.rows = [
        Row("bot CPU per answered message", f"{bot_us:.0f} µs"),
        Row("bare hikari bot replying a fixed string", f"{bare_us:.0f} µs"),
        Row("ratio bot / bare hikari", f"{ratio:.1f}×"),
    ]
    result.data = {
        "answers": conversations * exchanges,
        "cpu_s": phases.cpu_s,
        "bot_us": bot_us,
        "bare_us": bare_us,
        "ratio": ratio,
        "bot_us_by_phase": [
            c * 1e6 / max(1, n)
            for c, n in zip(phases.cpu_s["bot"], phases.items["bot"], strict=True)
        ],
    }
    if receiver is None:
        result.rows.append(
            Row(
                "instrumentation on / off (metrics + OTLP tracing)",
                "TODO: not measured in this run (--no-instrumentation)",
                "≤ 1.10×",
                "TODO",
            )
        )
    else:
        served = any(s.served for s in scrapers)
        off_us = phases.per_item_us("instrumentation off")
        on_us = phases.per_item_us("instrumentation on")
        instr = _ratio(on_us, off_us)
        instr_ratios = phases.ratios("instrumentation on", "instrumentation off")
        result.data |= {
            "instr_off_us": off_us,
            "instr_on_us": on_us,
            "instr_ratio": instr,
            "instr_ratios": instr_ratios,
            "spans_received": receiver.spans,
            "metrics_served": served,
        }
        wired = receiver.spans > 0 and served
        result.rows.append(
            Row(
                f"instrumentation on / off (OTLP tracing + /metrics every {scrape_every_s:g} s)",
                f"{instr:.3f}× ({on_us:.0f} / {off_us:.0f} µs; {_spread(instr_ratios)})"
                if wired
                else f"TODO: pending the ops wiring ({receiver.spans} spans received, /metrics "
                f"{'served' if served else 'not served'})",
                "≤ 1.10×",
                _verdict(instr <= 1.10) if wired else "TODO",
            )
        )
        result.notes.append(
            "Instrumentation on: spans exported in batches every 0.5 s to an OTLP/gRPC receiver "
            f"in the harness ({receiver.spans:,} spans received) and /metrics scraped every "
            f"{scrape_every_s:g} s. Off: OTEL_SDK_DISABLED=true (no spans at all) and no scrapes. "
            "Metric recording itself has no switch, so it is in both."
        )
    result.notes.insert(
        0,
        f"All contenders run side by side against emulators of their own and take turns, one "
        f"phase each: {conversations} channels (one conversation each) × {exchanges} exchanges, "
        f"phase k being exchange k of every conversation, 32 in flight. The history sent to "
        f"Gemini grows from 0 to {2 * (exchanges - 1)} turns. The bot runs with its defaults: "
        "one generateContent call per answer (no SSE stream) and no typing indicator for an "
        "answer that takes under DISCORD_TYPING_DELAY_SECONDS (1 s); like the bare bot it makes "
        "one REST call per answer. Ratios are of total CPU; the range is the spread of "
        "phase-by-phase ratios.",
    )
    return result


class _Scraper:
    """Scrapes a /metrics URL every `interval_s` while active, as Prometheus would."""

    def __init__(self, url: str, interval_s: float) -> None:
        self.url = url
        self.interval_s = interval_s
        self.served = False
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            self.served |= not isinstance(await scrape_metrics(self.url, 1), str)
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# -- 3. added latency ----------------------------------------------------------------------------

_TAG = re.compile(r"\[q(\d+)\]")


async def _open_loop(
    lb: Lab, total: int, rate: float, argv: list[str] | None, options: Options, name: str
) -> tuple[dict[int, tuple[float, float]], float, ProcessUsage, ProcessUsage, int]:
    """`total` mentions at `rate`/s over lanes of 10, to the bot (or `argv`) in a child.

    Returns (message created, reply created) per message, the wall time, the child's usage
    before and after, and how many Gemini requests the warm-up made.
    """
    timings: dict[int, tuple[float, float]] = {}
    guild = lb.discord.create_guild("Latency")
    lanes = max(1, math.ceil(total / 10))
    channels = [lb.discord.create_channel(guild, name=f"lane-{i}") for i in range(lanes)]
    users = _members(lb, guild, lanes, "asker")
    async with lb.child(lb.settings(), argv=argv, name=name) as proc:
        for k in range(20):
            await lb.ask(channels[0], users[0], f"warm-up {k}")
        warm_requests = len(lb.gemini.requests)

        async def one(index: int) -> None:
            lane = index % lanes
            sent, reply = await lb.ask(
                channels[lane], users[lane], f"[q{index}] what is the capital of Australia?"
            )
            timings[index] = (message_time(sent), message_time(reply.message))

        async with _profiled(options, proc, name):
            with harness_gc_paused():
                before = proc.usage()
                started = time.perf_counter()
                tasks = []
                for index in range(total):
                    delay = started + index / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(one(index)))
                await asyncio.gather(*tasks)
                wall = time.perf_counter() - started
                after = proc.usage()
    return timings, wall, before, after, warm_requests


async def added_latency(options: Options) -> Result:
    """At a fixed rate with 200 ms Gemini latency: what the bot adds on top of Gemini."""
    scale = options.scale
    gemini_s = 0.2
    result = Result("latency", "3. Added latency at a fixed rate, Gemini latency 200 ms")
    total = int(scale.latency_rate * scale.latency_seconds)
    async with lab(options.scratch / "latency", latency=gemini_s) as lb:
        timings, wall, before, after, warm_requests = await _open_loop(
            lb, total, scale.latency_rate, None, options, "latency"
        )
        received = _gemini_received(lb.gemini.requests[warm_requests:])
    # The floor of this measurement: the same schedule to a bare hikari bot that replies at once
    # (emulator delivery, hikari's parsing, one REST call, the harness's own timing).
    async with lab(options.scratch / "latency-bare") as lb:
        bare, *_ = await _open_loop(
            lb, total, scale.latency_rate, bare_bot_command("reply"), options, "latency-bare"
        )
    q_bare = quantiles_ms([reply - sent for sent, reply in bare.values()])
    added = [reply - sent - gemini_s for sent, reply in timings.values()]
    before_gemini = [received[i] - timings[i][0] for i in timings if i in received]
    after_gemini = [timings[i][1] - received[i] - gemini_s for i in timings if i in received]
    q_added = quantiles_ms(added)
    result.data = {
        "messages": total,
        "rate": total / wall,
        "added_ms": q_added,
        "before_gemini_ms": quantiles_ms(before_gemini),
        "after_gemini_ms": quantiles_ms(after_gemini),
        "bare_reply_ms": q_bare,
        "cpu_us_per_answer": per_answer_us(before, after, total),
    }
    cpu_share = (after.cpu_s - before.cpu_s) / wall
    result.rows = [
        Row("answered messages per second (achieved)", f"{total / wall:.1f}"),
        Row("added latency p50", f"{q_added['p50']:.1f} ms"),
        Row(
            "added latency p99",
            f"{q_added['p99']:.1f} ms",
            "≤ 10 ms",
            _verdict(q_added["p99"] <= 10.0),
        ),
        Row(
            "of which before the Gemini request (p50 / p99)",
            "{p50:.1f} / {p99:.1f} ms".format(**result.data["before_gemini_ms"]),
        ),
        Row(
            "of which after the Gemini answer (p50 / p99)",
            "{p50:.1f} / {p99:.1f} ms".format(**result.data["after_gemini_ms"]),
        ),
        Row("bot CPU busy during the run", f"{cpu_share:.0%} of one core"),
        Row(
            "floor: a bare hikari bot replying at once, same schedule (p50 / p99)",
            "{p50:.1f} / {p99:.1f} ms".format(**q_bare),
        ),
    ]
    result.notes.append(
        f"{total} mentions at {scale.latency_rate:g}/s (open loop, evenly spaced) over "
        f"{max(1, math.ceil(total / 10))} "
        "channels; added latency = reply created at the Discord emulator − user message "
        "created − 200 ms, timestamps from the emulators' records. The split uses the time the "
        "Gemini emulator received each request (before: message → Gemini request; after: "
        "Gemini request + 200 ms → reply), so timer slack of the emulator itself lands in "
        "'after'. The harness runs with its garbage collector paused while it measures. The floor "
        "row is the same schedule sent to the bare hikari bot, which replies with a fixed string "
        "at once: what this harness measures for a bot that adds nothing."
    )
    return result


def _gemini_received(requests: list[GeminiRequest]) -> dict[int, float]:
    received: dict[int, float] = {}
    for request in requests:
        found = _TAG.search(request.last_user_text)
        if found is not None:
            received.setdefault(int(found.group(1)), request.received_at)
    return received


# -- 4. scrape cost ------------------------------------------------------------------------------

# prometheus_client's own writers render the ~650 series in about 11 ms (OpenMetrics): at one
# scrape per 15 s that is 0.07 % of a core, so the private fast writer was removed (see
# bot/ops/metrics/telemetry.py) and the target is what the library does with room to spare.
SCRAPE_TARGET_MS = 15.0


async def scrape_cost(options: Options) -> Result:
    """`/metrics` render time and size after small and large traffic (same series count)."""
    scale = options.scale
    result = Result("scrape", "4. Scrape cost: GET /metrics")
    big_guilds, big_users = scale.scrape_world
    worlds = [
        ("1 guild × 1 user", 1, 1),
        (f"{big_guilds} guilds × {big_users} users", *scale.scrape_world),
    ]
    measured: dict[str, dict[str, float]] = {}
    pending: str | None = None
    for label, guilds, users_per_guild in worlds:
        async with lab(options.scratch / f"scrape-{guilds}x{users_per_guild}") as lb:
            jobs: list[tuple[int, User, str]] = []
            for g in range(guilds):
                guild = lb.discord.create_guild(f"Scrape guild {g + 1}")
                channel = lb.discord.guild_text_channel(guild)
                for u, user in enumerate(_members(lb, guild, users_per_guild, f"g{g}-user")):
                    jobs.append((channel, user, f"hello from user {u} of guild {g}"))
            settings = lb.settings(max_conversation_messages=2)
            url = f"http://127.0.0.1:{settings['ops_port']}/metrics"
            async with lb.child(settings) as proc:
                await lb.closed_loop(jobs, concurrency=32)
                first = await scrape_metrics(url, 1)
                if isinstance(first, str):
                    pending = first
                    continue
                async with _profiled(options, proc, f"scrape-{guilds}x{users_per_guild}"):
                    before = proc.usage()
                    scrapes = await scrape_metrics(url, scale.scrapes)
                    after = proc.usage()
                if isinstance(scrapes, str):
                    pending = scrapes
                    continue
                measured[label] = {
                    "messages": len(jobs),
                    "median_ms": statistics.median(s.seconds for s in scrapes) * 1000,
                    "cpu_ms_per_scrape": (after.cpu_s - before.cpu_s) * 1000 / len(scrapes),
                    "body_bytes": scrapes[-1].body_bytes,
                    "series": scrapes[-1].series,
                }
    result.data = {"worlds": measured, "pending": pending}
    if pending is not None or len(measured) < 2:
        result.rows = [
            Row(
                "/metrics render time (median of scrapes)",
                f"pending the ops server: {pending}",
                "≤ 15 ms",
                "pending",
            ),
            Row(
                "series count independent of guilds/users",
                "pending the ops server",
                "equal",
                "pending",
            ),
        ]
        result.notes.append(
            "The code path scrapes GET http://OPS_HOST:OPS_PORT/metrics of the bot child; the "
            "bot did not serve it when this ran."
        )
        return result
    small, big = (measured[label] for label, _, _ in worlds)
    for label, figures in measured.items():
        result.rows.append(
            Row(
                f"render time, median of {scale.scrapes} ({label})",
                f"{figures['median_ms']:.2f} ms (CPU {figures['cpu_ms_per_scrape']:.2f} ms)",
                "≤ 15 ms",
                _verdict(figures["median_ms"] <= SCRAPE_TARGET_MS),
            )
        )
        result.rows.append(
            Row(f"body size / series ({label})", f"{figures['body_bytes']} B / {figures['series']}")
        )
    result.rows.append(
        Row(
            "series count independent of guilds/users",
            f"{small['series']} vs {big['series']}",
            "equal",
            _verdict(small["series"] == big["series"]),
        )
    )
    result.notes.append(
        "Render time is the client-side time of one GET (HTTP on loopback included); CPU is the "
        "bot process's CPU time per scrape. Each world's users mention the bot once in their "
        "guild's #general (MAX_CONVERSATION_MESSAGES=2 to keep the traffic cheap)."
    )
    return result


# -- 5. memory -----------------------------------------------------------------------------------


def _short_answer(request: GeminiRequest) -> str:
    return f"noted, turn {len(request.contents)}"


async def memory(options: Options) -> Result:
    """RSS at idle and with many live conversations, driven through the Discord emulator."""
    scale = options.scale
    result = Result("memory", "5. Memory: live conversations")
    conversations, turns = scale.memory_conversations, scale.memory_turns
    text_chars = 0
    async with lab(options.scratch / "memory", responder=_short_answer) as lb:
        users = [lb.discord.create_user(f"dm-user-{i}") for i in range(conversations)]
        dms = [lb.discord.create_dm(user) for user in users]
        jobs = [
            (dms[i], users[i], f"turn {t} of conversation {i}: please remember the number {t * i}")
            for t in range(turns // 2)
            for i in range(conversations)
        ]

        def count_text(sent: JSON, reply: SentMessage) -> None:
            nonlocal text_chars
            text_chars += len(str(sent["content"])) + len(reply.content)

        async with lb.child(lb.settings(max_conversations=conversations * 2)) as proc:
            settle_s = 0.5 if options.mode == "smoke" else 3.0
            await asyncio.sleep(settle_s)
            idle = proc.usage()
            started = time.perf_counter()
            async with _profiled(options, proc, "memory"):
                answered = await lb.closed_loop(jobs, concurrency=64, on_reply=count_text)
            wall = time.perf_counter() - started
            await asyncio.sleep(settle_s)
            loaded = proc.usage()
    grown = loaded.rss_bytes - idle.rss_bytes
    per_conversation = grown / conversations
    text_per_conversation = text_chars / conversations
    overhead = per_conversation - text_per_conversation
    in_process = _memory_in_process(conversations, turns)
    result.data = {
        "conversations": conversations,
        "turns": turns,
        "answered": answered,
        "seconds": wall,
        "idle_rss": idle.rss_bytes,
        "loaded_rss": loaded.rss_bytes,
        "peak_rss": loaded.peak_rss_bytes,
        "text_chars_per_conversation": text_per_conversation,
        "rss_bytes_per_conversation": per_conversation,
        "in_process": in_process,
    }
    mib = 2**20
    result.rows = [
        Row("RSS at idle after start-up", f"{idle.rss_bytes / mib:.1f} MiB"),
        Row(
            f"RSS with {conversations:,} live conversations of {turns} turns",
            f"{loaded.rss_bytes / mib:.1f} MiB (peak {loaded.peak_rss_bytes / mib:.1f} MiB)",
            "≤ 500 MB" if conversations >= 10_000 else "≤ 500 MB at 10,000",
            _verdict(loaded.peak_rss_bytes <= 500e6),
        ),
        Row(
            "RSS growth per conversation, beyond its text",
            f"{overhead:,.0f} B (growth {per_conversation:,.0f} B − text "
            f"{text_per_conversation:,.0f} B)",
        ),
        Row(
            "ConversationMemory alone, per conversation beyond its text (tracemalloc)",
            f"{in_process['overhead_bytes_per_conversation']:,.0f} B",
        ),
    ]
    result.notes.append(
        f"Driven through the Discord emulator: {conversations:,} DM conversations × "
        f"{turns // 2} exchanges ({answered:,} answers in {wall:.0f} s, 64 in flight), short "
        "answers from the Gemini emulator. RSS growth includes everything the bot keeps per "
        "conversation (hikari's user and DM-channel cache, the response cache up to its "
        "1,000-entry cap, allocator slack); the tracemalloc line is the memory structure alone."
    )
    return result


def _memory_in_process(conversations: int, turns: int) -> dict[str, float]:
    """Bytes ConversationMemory holds per conversation beyond the characters of its turns."""
    texts = [
        (
            f"turn {t} of conversation {i}: please remember the number {t * i}",
            f"noted, turn {2 * t + 1}",
        )
        for i in range(conversations)
        for t in range(turns // 2)
    ]
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        store = ConversationMemory(max_conversations=conversations * 2)
        chars = 0
        now = time.time()
        for index, (asked, answered) in enumerate(texts):
            key = index % conversations
            # Fresh strings, as the bot's would be (decoded from the wire each time).
            asked, answered = "".join(asked), "".join(answered)
            chars += len(asked) + len(answered)
            store.append(
                key,
                Turn("user", asked, 1000 + key, 10_000 + index, now),
                Turn("model", answered, None, 20_000 + index, now, reply_to=10_000 + index),
            )
        held = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    del texts
    return {
        "bytes_per_conversation": held / conversations,
        "text_chars_per_conversation": chars / conversations,
        "overhead_bytes_per_conversation": (held - chars) / conversations,
        "stats_estimate_bytes_per_conversation": store.stats().approx_bytes / conversations,
    }


# -- 6. quota use --------------------------------------------------------------------------------


async def quota_use(options: Options) -> Result:
    """A sustained backlog against an exact RPM quota: share used and 429s, margin 1.0 and 0.9."""
    scale = options.scale
    result = Result(
        "quota", f"6. Quota use: Gemini emulator enforcing exactly {scale.quota_rpm} RPM"
    )
    runs = await asyncio.gather(_quota_run(options, 1.0), _quota_run(options, 0.9))
    for margin, figures in zip((1.0, 0.9), runs, strict=True):
        used_share = figures["used_share"]
        if margin == 1.0:
            result.rows.append(
                Row(
                    "quota used, margin 1.0",
                    f"{used_share:.1%} ({figures['used']}/{figures['capacity']})",
                    "≥ 98 %",
                    _verdict(used_share >= 0.98) if scale.quota_windows else "info",
                )
            )
        else:
            result.rows.append(
                Row(
                    "quota used, default margin 0.9",
                    f"{used_share:.1%} ({figures['used']}/{figures['capacity']})",
                )
            )
        result.rows.append(
            Row(
                f"429s received, margin {margin:.1f}",
                str(figures["rate_limited"]),
                "0",
                _verdict(figures["rate_limited"] == 0),
            )
        )
    result.data = {"margin_1.0": runs[0], "margin_0.9": runs[1]}
    windows = scale.quota_windows
    result.notes.append(
        (
            f"{windows} full minute window(s) measured"
            if windows
            else f"{scale.quota_seconds:g} s of one window (smoke: no full window)"
        )
        + f"; the backlog is a burst of {2 * scale.quota_rpm} mentions, then "
        f"{2 * scale.quota_rpm} per minute, from 20 users in 20 channels. Used = requests the "
        "emulator accepted in the measured windows; 429s are counted over the whole run "
        "(including the partial window before). Both margins run at the same time against "
        "separate emulators."
    )
    return result


async def _quota_run(options: Options, margin: float) -> dict[str, Any]:
    scale = options.scale
    rpm = scale.quota_rpm
    scratch = options.scratch / f"quota-{margin:g}"
    async with lab(scratch, rpm_limit=rpm) as lb:
        guild = lb.discord.create_guild("Quota")
        channels = [lb.discord.create_channel(guild, name=f"q-{i}") for i in range(20)]
        users = _members(lb, guild, 20, "asker")
        settings = lb.settings(
            gemini_rate_limit_rpm=rpm,
            gemini_rate_limit_daily=1_000_000,
            gemini_rate_limit_safety_margin=margin,
            queue_max_age_seconds=3600,
            idempotency_ttl_seconds=7200,  # must outlast the queue's maximum age
            queue_max_size=10_000,
        )
        kinds: Counter[str] = Counter()
        async with lb.child(settings, name=f"bot-margin-{margin:g}"):
            sent = 0

            async def ask() -> None:
                nonlocal sent
                index = sent
                sent += 1
                lane = index % len(channels)
                with contextlib.suppress(TimeoutError):
                    _, reply = await lb.ask(
                        channels[lane], users[lane], f"[q{index}] backlog question", timeout_s=600
                    )
                    kinds["queued" if "queued" in reply.content else "first reply"] += 1

            tasks: set[asyncio.Task[None]] = set()

            def spawn() -> None:
                task = asyncio.create_task(ask())
                tasks.add(task)
                task.add_done_callback(tasks.discard)

            run_started = time.time()
            for _ in range(2 * rpm):
                spawn()
            first, end = run_started, run_started + scale.quota_seconds
            if scale.quota_windows:
                first = math.floor(run_started / 60) * 60 + 60.0
                if first - run_started < 5:  # too close: the backlog would not be there yet
                    first += 60
                end = first + 60 * scale.quota_windows
            interval = 60 / (2 * rpm)
            while time.time() < end:
                await asyncio.sleep(interval)
                spawn()
            requests = list(lb.gemini.requests)
            rate_limited = lb.gemini.rate_limited_count
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    per_window: Counter[int] = Counter(
        math.floor(r.received_at / 60) for r in requests if first <= r.received_at < end
    )
    windows = sorted(per_window)
    used = sum(min(per_window[w], rpm) for w in windows)
    capacity = rpm * (scale.quota_windows or 1)
    if not scale.quota_windows:
        capacity = rpm * max(1, len(windows))
    return {
        "margin": margin,
        "windows": {str(w * 60): per_window[w] for w in windows},
        "used": used,
        "capacity": capacity,
        "used_share": used / capacity,
        "rate_limited": rate_limited,
        "requests_total": len(requests),
        "replies": dict(kinds),
    }


# -- 7. streaming ---------------------------------------------------------------------------

STREAM_CONVERSATIONS = 20
STREAM_CHUNKS = 20
STREAM_FIRST_CHUNK_S = 0.5
STREAM_TOTAL_S = 4.0
STREAM_ROUNDS: dict[Mode, int] = {"full": 6, "quick": 3, "smoke": 1}
_STREAM_ANSWER = " ".join(
    f"Point {n}: streaming shows the answer while it is being written, sentence by sentence."
    for n in range(1, 15)
)


def _stream_answer(request: GeminiRequest) -> str:
    return _STREAM_ANSWER


async def streaming(options: Options) -> Result:
    """20 conversations with a slowly streaming Gemini: time to first visible text, edits per
    answer, 429s, and CPU per answer streamed vs posted whole (STREAM_REPLIES=false)."""
    rounds = STREAM_ROUNDS[options.mode]
    result = Result(
        "streaming",
        f"8. Streaming: {STREAM_CONVERSATIONS} conversations, Gemini streaming {STREAM_CHUNKS} "
        f"chunks over {STREAM_TOTAL_S:g} s, first after {STREAM_FIRST_CHUNK_S:g} s",
    )
    interval = (STREAM_TOTAL_S - STREAM_FIRST_CHUNK_S) / (STREAM_CHUNKS - 1)
    names = ("streamed", "whole", "whole over SSE")
    first_visible: dict[str, list[float]] = {name: [] for name in names}
    edits: dict[str, int] = dict.fromkeys(names, 0)
    limited: dict[str, int] = {}
    asked_at: dict[str, dict[int, float]] = {name: {} for name in names}
    to_gemini: dict[str, list[float]] = {}
    async with contextlib.AsyncExitStack() as stack:
        contenders = []
        for name, streamed, sse in (
            ("streamed", True, True),
            ("whole", False, False),
            ("whole over SSE", False, True),
        ):
            lb = await stack.enter_async_context(
                lab(
                    options.scratch / f"streaming-{name.replace(' ', '-')}",
                    # Not streamed: the answer comes whole when the stream would have ended.
                    latency=STREAM_TOTAL_S,
                    responder=_stream_answer,
                    discord_limits=True,
                    # Request validation (jsonschema, in the harness process) would make the
                    # harness the bottleneck of 20 streams; tests/e2e check the edits' shape.
                    discord_validation=False,
                )
            )
            lb.gemini.stream_chunks = STREAM_CHUNKS
            lb.gemini.stream_first_chunk_s = STREAM_FIRST_CHUNK_S
            lb.gemini.stream_chunk_interval_s = interval
            guild = lb.discord.create_guild("Streams")
            channels = [
                lb.discord.create_channel(guild, name=f"s-{i}") for i in range(STREAM_CONVERSATIONS)
            ]
            users = _members(lb, guild, STREAM_CONVERSATIONS, "asker")
            # Discord's own limits are on, and so is the bot's default REST pacing.
            settings = lb.settings(
                stream_replies=streamed, gemini_stream=sse, discord_rest_max_rps=45.0
            )
            slug = name.replace(" ", "-")
            proc = await stack.enter_async_context(lb.child(settings, name=f"bot-{slug}"))

            async def ask(
                lane: int,
                k: int,
                lb: Lab = lb,
                name: str = name,
                channels: list[int] = channels,
                users: list[User] = users,
            ) -> None:
                discord = lb.discord
                index = k * STREAM_CONVERSATIONS + lane
                sent, reply = await lb.ask(channels[lane], users[lane], f"[q{index}] question")
                if k >= 0:  # round -1 warms up (connections, the SDK client, imports)
                    asked_at[name][index] = message_time(sent)
                    first_visible[name].append(message_time(reply.message) - message_time(sent))
                # The next question waits for this answer to end (its Stop button to go).
                await discord.wait_for(
                    lambda: not discord.streaming_in(channels[lane]), timeout=60, what="the end"
                )

            async def phase(k: int, ask: Callable[[int, int], Awaitable[None]] = ask) -> int:
                await asyncio.gather(*(ask(i, k) for i in range(STREAM_CONVERSATIONS)))
                return STREAM_CONVERSATIONS

            contenders.append(_Contender(name, lb, proc, phase))
        warm_sent: dict[str, int] = {}
        for contender in contenders:
            await contender.phase(-1)
            warm_sent[contender.name] = len(contender.lab.discord.sent_messages)
        phases = await _interleave(contenders, rounds, settle_s=0.0)
        for contender in contenders:
            sent_messages = contender.lab.discord.sent_messages[warm_sent[contender.name] :]
            edits[contender.name] = sum(len(m.edits) for m in sent_messages)
            limited[contender.name] = contender.lab.discord.rate_limited_count
            received = _gemini_received(contender.lab.gemini.requests)
            asked = asked_at[contender.name]
            to_gemini[contender.name] = [received[i] - asked[i] for i in asked if i in received]
    answers = rounds * STREAM_CONVERSATIONS
    streamed_us, whole_us = phases.per_item_us("streamed"), phases.per_item_us("whole")
    sse_us = phases.per_item_us("whole over SSE")
    ratio = _ratio(streamed_us, whole_us)
    sse_ratio = _ratio(streamed_us, sse_us)
    q_streamed = quantiles_ms(first_visible["streamed"])
    q_whole = quantiles_ms(first_visible["whole"])
    target_ms = (STREAM_FIRST_CHUNK_S + 0.5) * 1000
    q_to_gemini = {name: quantiles_ms(values) for name, values in to_gemini.items()}
    result.data = {
        "to_gemini_ms": q_to_gemini,
        "answers": answers,
        "first_visible_ms": {"streamed": q_streamed, "whole": q_whole},
        "edits_per_answer": {k: v / answers for k, v in edits.items()},
        "rate_limited": limited,
        "cpu_us": {"streamed": streamed_us, "whole": whole_us, "whole over SSE": sse_us},
        "cpu_ratio": ratio,
        "cpu_ratios": phases.ratios("streamed", "whole"),
        "cpu_ratio_sse": sse_ratio,
    }
    result.rows = [
        Row("time to first visible text, streamed p50", f"{q_streamed['p50']:.0f} ms"),
        Row(
            "time to first visible text, streamed p95",
            f"{q_streamed['p95']:.0f} ms",
            f"≤ {target_ms:.0f} ms (first chunk + 0.5 s)",
            _verdict(q_streamed["p95"] <= target_ms),
        ),
        Row(
            "time to first visible text, not streamed (p50 / p95)",
            f"{q_whole['p50']:.0f} / {q_whole['p95']:.0f} ms",
        ),
        Row(
            "of which user message → Gemini request, streamed / whole (p50; p95)",
            "{} / {} ms; {} / {} ms".format(
                *(f"{q_to_gemini[n][p]:.0f}" for p in ("p50", "p95") for n in ("streamed", "whole"))
            ),
        ),
        Row("edits per streamed answer", f"{edits['streamed'] / answers:.1f}"),
        Row(
            "429s from Discord (streamed / whole / whole over SSE)",
            " / ".join(str(limited[n]) for n in names),
            "0",
            _verdict(not any(limited.values())),
        ),
        Row(
            "CPU per answer, streamed / not streamed",
            f"{ratio:.2f}× ({streamed_us:.0f} / {whole_us:.0f} µs; "
            f"{_spread(result.data['cpu_ratios'])})",
            "≤ 1.5×",
            _verdict(ratio <= 1.5),
        ),
        Row(
            "CPU per answer, streamed / whole over SSE (GEMINI_STREAM=true: the same "
            "Gemini stream, posted whole)",
            f"{sse_ratio:.2f}× ({streamed_us:.0f} / {sse_us:.0f} µs; "
            f"{_spread(phases.ratios('streamed', 'whole over SSE'))})",
        ),
    ]
    result.notes.append(
        f"{STREAM_CONVERSATIONS} channels, one conversation each, all asking at once, "
        f"{rounds} round(s); each answer ({len(_STREAM_ANSWER)} characters) streams in "
        f"{STREAM_CHUNKS} chunks, the first after {STREAM_FIRST_CHUNK_S:g} s and then every "
        f"{interval * 1000:.0f} ms. Streamed: the defaults (STREAM_REPLIES=true, "
        "STREAM_EDIT_INTERVAL_SECONDS=1.0, STREAM_FIRST_POST_SECONDS=0.03). Whole: "
        f"STREAM_REPLIES=false against a Gemini emulator that answers whole after "
        f"{STREAM_TOTAL_S:g} s; whole over SSE: also GEMINI_STREAM=true, so the bot reads the "
        "same stream of chunks through the SDK and posts the answer once at its end. The "
        "Discord emulator enforces Discord's limits (50 requests/s, 5 messages and 5 edits "
        "per 5 s per channel; its request validation is off) and the bot its default 45 "
        "requests/s. Each bot first answers "
        "one unmeasured warm-up round. Time to first visible text = the reply's creation − "
        "the user message's creation "
        "(emulator timestamps). The three bots take turns round by round."
    )
    return result


SCENARIOS: dict[str, Callable[[Options], Awaitable[Result]]] = {
    "ingest": ingest,
    "answer": answer_path,
    "latency": added_latency,
    "scrape": scrape_cost,
    "memory": memory,
    "quota": quota_use,
    "burst": burst,
    "streaming": streaming,
}


SOAK_SECONDS: dict[Mode, float] = {"full": SOAK_FULL_S, "quick": 180.0, "smoke": 8.0}


async def soak_run(options: Options) -> Result:
    """The soak, for `options.soak_seconds` or the mode's length."""
    seconds = options.soak_seconds or SOAK_SECONDS[options.mode]
    return await soak(seconds, options.scratch)


async def fleet_run(options: Options) -> Result:
    """The fleet scenario (benchmarks/fleet.py) at the mode's scale."""
    return await fleet(options.mode, options.scratch / "fleet")


# Run only when named (`--only soak`, `--only fleet`): twenty minutes is too long for the
# default run, and the fleet (about 6 minutes) measures scale-out, not the bot's cost.
OPT_IN: dict[str, Callable[[Options], Awaitable[Result]]] = {"soak": soak_run, "fleet": fleet_run}
ALL_SCENARIOS = {**SCENARIOS, **OPT_IN}
