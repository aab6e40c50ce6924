"""The `soak` scenario: a long run of mixed traffic, sampling what would show a leak.

Not part of the default run (`python -m benchmarks --only soak [--duration S]`): 20 minutes of
mentions, DMs, replies, images, threads and `/chat` from simulated users (`bot.emulator.traffic`)
against the emulators, with Gemini failing every request for a short spell every few minutes.
Each sampling interval (a minute in the full run) it reads the bot's RSS and open file
descriptors (psutil), its unfinished asyncio tasks (`llmbot_asyncio_tasks` on /metrics) and the
size of its store (the SQLite file with its WAL). After the warm-up none of them should grow: the
report gives each one's least-squares slope per minute and its growth over the measured part, and
checks that every message a user sent got a final reply (an answer, a refusal or a notice; a
"queued" notice alone does not count).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from benchmarks.harness import Result, Row, lab
from bot.emulator.discord import DiscordEmulator
from bot.emulator.fault_schedule import FaultPhase, run_schedule
from bot.emulator.traffic import Traffic, TurnRecord
from bot.loadtest import BotProcess, classify_reply

__all__ = ["SOAK_FULL_S", "SoakSample", "fault_plan", "slope_per_minute", "soak"]

SOAK_FULL_S = 20 * 60.0
SAMPLE_EVERY_S = 60.0
FAULT_EVERY_S = 240.0  # a Gemini outage every four minutes ...
FAULT_LENGTH_S = 20.0  # ... of twenty seconds (every request answered 500)
RSS_GROWTH_TARGET = 5 * 2**20  # bytes over the measured part of the run
USERS = 20
RATE = 2.0  # turns started per second (a user waits for each answer, then thinks 2.5 s)
DRAIN_S = 120.0  # after the traffic: time for queued questions to get their answers
# `SOAK_TRACEMALLOC=N` (frames) switches tracemalloc on in the bot after the warm-up (through
# POST /debug/memory; `SOAK_TRACEMALLOC_AFTER=S`: S seconds into the traffic instead) and
# writes what was allocated after it and is still alive at the end (GET /debug/memory, by file,
# line and traceback) to soak-tracemalloc.json in the scratch dir. Diagnosis only: tracing costs
# memory and CPU, so its figures are not the soak's.
TRACE_ENV = "SOAK_TRACEMALLOC"
TRACE_AFTER_ENV = "SOAK_TRACEMALLOC_AFTER"  # seconds into the traffic (default: the warm-up)
_DEBUG_TOKEN = "soak-debug-token"

# Gauges read from the bot's /metrics at each sample: the task count, and what shows whether
# memory growth is the bounded structures filling up (the response cache, conversations) or
# Python objects piling up (the heap).
GAUGES: dict[str, str] = {
    "tasks": "llmbot_asyncio_tasks",
    "heap_bytes": "llmbot_python_heap_bytes",
    "cache_entries": "llmbot_cache_entries",
    "cache_bytes": "llmbot_cache_bytes",
    "conversations": "llmbot_active_conversations",
}


@dataclass(frozen=True, slots=True)
class SoakSample:
    """One reading of the bot process."""

    at_s: float  # since the traffic started
    rss_bytes: int
    tasks: int
    fds: int
    store_bytes: int
    heap_bytes: int = 0
    cache_entries: int = 0
    cache_bytes: int = 0
    conversations: int = 0


def fault_plan(duration_s: float) -> list[FaultPhase]:
    """Gemini errors for a short spell every few minutes (scaled down for a short run)."""
    every = min(FAULT_EVERY_S, duration_s / 3)
    length = min(FAULT_LENGTH_S, every / 6)
    starts = [every / 2 + i * every for i in range(int(duration_s // every) + 1)]
    return [FaultPhase("errors", start, length) for start in starts if start + length < duration_s]


def slope_per_minute(samples: list[SoakSample], field: str) -> float:
    """Least-squares slope of `field` against time, per minute (0 with fewer than 2 samples)."""
    if len(samples) < 2:
        return 0.0
    xs = [s.at_s / 60 for s in samples]
    ys = [float(getattr(s, field)) for s in samples]
    if len(set(xs)) < 2:
        return 0.0
    return statistics.linear_regression(xs, ys).slope


def _store_bytes(data_dir: Path) -> int:
    return sum(
        path.stat().st_size
        for path in data_dir.glob("bot.db*")  # the database, its WAL and shared memory
        if path.is_file()
    )


async def _gauges(session: aiohttp.ClientSession, url: str) -> dict[str, int]:
    """The `GAUGES` from one scrape (-1 for a gauge the bot does not export)."""
    async with session.get(url) as response:
        text = await response.text()
    values: dict[str, int] = {}
    for field_name, metric in GAUGES.items():
        match = re.search(rf"^{metric} (\S+)$", text, re.MULTILINE)
        values[field_name] = int(float(match.group(1))) if match else -1
    return values


async def _sample(
    proc: BotProcess, session: aiohttp.ClientSession, url: str, data_dir: Path, at_s: float
) -> SoakSample:
    ps = psutil.Process(proc.pid)
    fds = ps.num_fds()
    gauges = await _gauges(session, url)
    store = await asyncio.to_thread(_store_bytes, data_dir)
    return SoakSample(at_s, proc.usage().rss_bytes, fds=fds, store_bytes=store, **gauges)


def _trace_frames() -> int:
    raw = os.environ.get(TRACE_ENV, "").strip()
    if not raw:
        return 0
    try:
        frames = int(raw)
    except ValueError:
        raise SystemExit(f"{TRACE_ENV}={raw!r}: set it to a frame count (1-100)") from None
    if not 1 <= frames <= 100:
        raise SystemExit(f"{TRACE_ENV}={raw!r}: set it to a frame count (1-100)")
    return frames


async def _trace(
    session: aiohttp.ClientSession, base: str, frames: int, after_s: float, out: Path
) -> None:
    """Tracing on after `after_s`; the sites still alive when cancelled go to `out`."""
    headers = {"Authorization": f"Bearer {_DEBUG_TOKEN}"}
    await asyncio.sleep(after_s)
    async with session.post(
        f"{base}/debug/memory", params={"trace": "on", "frames": str(frames)}, headers=headers
    ) as response:
        response.raise_for_status()
    try:
        await asyncio.Event().wait()
    finally:
        report: dict[str, Any] = {}
        long = aiohttp.ClientTimeout(total=300)
        for group in ("filename", "lineno", "traceback"):
            async with session.get(
                f"{base}/debug/memory",
                params={"group_by": group, "limit": "40"},
                headers=headers,
                timeout=long,
            ) as response:
                report[group] = await response.json()
        await asyncio.to_thread(out.write_text, json.dumps(report, indent=1))
        print(f"soak: tracemalloc report in {out}", file=sys.stderr)
        for site in report["filename"].get("top", [])[:15]:
            print(
                f"  {site['size_bytes'] / 1024:9.0f} KiB {site['count']:7d} {site['file']}",
                file=sys.stderr,
            )


def _final_replies(discord: DiscordEmulator, turns: list[TurnRecord]) -> Counter[str]:
    """Each user message's last reply by kind: `answered`, a notice, `queued` (never followed by
    an answer), or `none` (no reply at all)."""
    by_message: dict[int, list[str]] = {}
    for message in discord.sent_messages:
        if message.reply_to is not None:
            by_message.setdefault(message.reply_to, []).append(message.content)
    outcome: Counter[str] = Counter()
    for turn in turns:
        if turn.message_id is None:  # a slash command: its response and follow-ups
            outcome["answered" if turn.answer is not None else "none"] += 1
            continue
        replies = by_message.get(turn.message_id, [])
        outcome[classify_reply(replies[-1]) if replies else "none"] += 1
    return outcome


def _slash_finals(discord: DiscordEmulator) -> Counter[str]:
    outcome: Counter[str] = Counter()
    for record in discord.interactions:
        texts = [str(m.get("content", "")) for m in record.followup_messages]
        last = texts[-1] if texts else record.final_content
        outcome["none" if last is None else classify_reply(last)] += 1
    return outcome


async def soak(duration_s: float, scratch: Path) -> Result:
    """Run the soak for `duration_s` seconds of traffic (20 minutes in the full run)."""
    result = Result("soak", "9. Soak: mixed traffic with Gemini faults")
    interval = min(SAMPLE_EVERY_S, duration_s / 6)
    warm_up = duration_s * 0.15
    samples: list[SoakSample] = []
    faults: list[str] = []
    trace_frames = _trace_frames()
    debug: dict[str, object] = {"ops_admin_token": _DEBUG_TOKEN} if trace_frames else {}
    async with lab(scratch / "soak", latency=0.05) as lb:
        settings = lb.settings(
            # The relaxed limits, but the queue as shipped: faults make it fill and drain.
            queue_max_size=100,
            queue_retry_interval_seconds=2.0,
            health_snapshot_interval_seconds=10,
            **debug,
        )
        data_dir = Path(str(settings["data_dir"]))
        metrics_url = f"http://127.0.0.1:{settings['ops_port']}/metrics"
        traffic = Traffic(lb.discord, users=USERS, guilds=3, rate=RATE, seed=7)
        async with lb.child(settings, name="soak") as proc:
            timeout = aiohttp.ClientTimeout(total=10)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                started = time.monotonic()

                async def sampler() -> None:
                    tick = 0
                    while True:
                        at = time.monotonic() - started
                        try:
                            samples.append(await _sample(proc, session, metrics_url, data_dir, at))
                        except (aiohttp.ClientError, TimeoutError) as exc:
                            # A scrape that timed out on a busy machine: no sample this time.
                            print(f"soak: no sample at {at:.0f} s: {exc!r}", file=sys.stderr)
                        tick += 1
                        next_at = started + tick * interval
                        await asyncio.sleep(max(0.0, next_at - time.monotonic()))

                sampling = asyncio.create_task(sampler(), name="soak sampler")
                schedule = asyncio.create_task(
                    run_schedule(lb.gemini, fault_plan(duration_s), faults.append)
                )
                tracing = (
                    asyncio.create_task(
                        _trace(
                            session,
                            metrics_url.removesuffix("/metrics"),
                            trace_frames,
                            float(os.environ.get(TRACE_AFTER_ENV, warm_up)),
                            scratch / "soak-tracemalloc.json",
                        )
                    )
                    if trace_frames
                    else None
                )
                try:
                    await traffic.run(duration_s=duration_s)
                    # Queued questions get their answers once Gemini is back.
                    with contextlib.suppress(TimeoutError):
                        await lb.discord.wait_for(
                            lambda: _final_replies(lb.discord, traffic.turns)["queued"] == 0,
                            timeout=DRAIN_S if duration_s >= 600 else 30.0,
                            what="queued questions to be answered",
                        )
                    at = time.monotonic() - started
                    try:
                        samples.append(await _sample(proc, session, metrics_url, data_dir, at))
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        print(f"soak: no last sample at {at:.0f} s: {exc!r}", file=sys.stderr)
                finally:
                    for task in (sampling, schedule, tracing):
                        if task is None:
                            continue
                        task.cancel()
                        try:
                            await task
                        except asyncio.CancelledError:
                            pass
                        except Exception as exc:  # a helper's failure must not lose the run
                            print(f"soak: {task.get_name()} failed: {exc!r}", file=sys.stderr)
                    lb.gemini.heal()
        finals = _final_replies(lb.discord, traffic.turns)
        slash = _slash_finals(lb.discord)
        actions: Counter[str] = Counter(str(turn.action) for turn in traffic.turns)
    _fill(result, samples, warm_up, duration_s, finals, slash, actions, faults)
    return result


def _fill(
    result: Result,
    samples: list[SoakSample],
    warm_up: float,
    duration_s: float,
    finals: Counter[str],
    slash: Counter[str],
    actions: Counter[str],
    faults: list[str],
) -> None:
    measured = [s for s in samples if s.at_s >= warm_up] or samples
    first, last = measured[0], measured[-1]
    fields = ("rss_bytes", "tasks", "fds", "store_bytes", "heap_bytes", "cache_entries")
    slopes = {f: slope_per_minute(measured, f) for f in fields}
    half = [s for s in samples if s.at_s >= samples[-1].at_s / 2] or samples
    rss_growth = last.rss_bytes - first.rss_bytes
    unanswered = finals["none"] + finals["queued"]
    mib = 2**20
    minutes = (last.at_s - first.at_s) / 60

    def trend(field_name: str) -> float:  # the fitted growth over the measured part
        return slopes[field_name] * minutes

    result.data = {
        "duration_s": duration_s,
        "warm_up_s": warm_up,
        "samples": [vars_of(s) for s in samples],
        "slopes_per_minute": slopes,
        "rss_growth_bytes": rss_growth,
        "rss_growth_second_half_bytes": half[-1].rss_bytes - half[0].rss_bytes,
        "turns": dict(actions),
        "final_replies": dict(finals),
        "slash_final_replies": dict(slash),
        "faults": faults,
    }
    result.rows = [
        Row(
            "RSS over the measured part",
            f"{first.rss_bytes / mib:.1f} → {last.rss_bytes / mib:.1f} MiB "
            f"({rss_growth / mib:+.2f} MiB; slope {slopes['rss_bytes'] / mib:+.3f} MiB/min)",
            "growth < 5 MB",
            "met" if rss_growth < RSS_GROWTH_TARGET else "missed",
        ),
        Row(
            "asyncio tasks",
            f"{first.tasks} → {last.tasks} (slope {slopes['tasks']:+.2f}/min, "
            f"max {max(s.tasks for s in measured)})",
            "fitted growth < 5",
            "met" if trend("tasks") < 5 else "missed",
        ),
        Row(
            "open file descriptors",
            f"{first.fds} → {last.fds} (slope {slopes['fds']:+.2f}/min, "
            f"max {max(s.fds for s in measured)}; HTTP connections come and go)",
            "fitted growth < 5",
            "met" if trend("fds") < 5 else "missed",
        ),
        Row(
            "RSS over the second half of the run",
            f"{half[0].rss_bytes / mib:.1f} → {half[-1].rss_bytes / mib:.1f} MiB "
            f"({(half[-1].rss_bytes - half[0].rss_bytes) / mib:+.2f} MiB; slope "
            f"{slope_per_minute(half, 'rss_bytes') / mib:+.3f} MiB/min)",
        ),
        Row(
            "Python heap (llmbot_python_heap_bytes)",
            f"{first.heap_bytes / mib:.1f} → {last.heap_bytes / mib:.1f} MiB "
            f"(slope {slopes['heap_bytes'] / mib:+.3f} MiB/min)",
        ),
        Row(
            "response cache and conversations (bounded: 1,000 entries / 16 MiB)",
            f"cache {first.cache_entries} → {last.cache_entries} entries "
            f"({first.cache_bytes / mib:.1f} → {last.cache_bytes / mib:.1f} MiB); "
            f"conversations {first.conversations} → {last.conversations}",
        ),
        Row(
            "store size (SQLite file + WAL)",
            f"{first.store_bytes / 1024:.0f} → {last.store_bytes / 1024:.0f} KiB "
            f"(slope {slopes['store_bytes'] / 1024:+.1f} KiB/min)",
        ),
        Row(
            "messages with a final reply",
            f"{sum(finals.values()) - unanswered:,} of {sum(finals.values()):,} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(finals.items()))})",
            "all",
            "met" if unanswered == 0 and sum(finals.values()) > 0 else "missed",
        ),
    ]
    result.notes.append(
        f"{duration_s / 60:.1f} min of traffic from {USERS} users (~{RATE:g} turns/s: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(actions.items()))}), Gemini answering in "
        f"50 ms and failing every request for {len(faults) // 2} short spells "
        f"({'; '.join(faults[::2]) or 'none'}). {len(samples)} samples; the first "
        f"{warm_up / 60:.1f} min are warm-up, slopes are over the {minutes:.1f} min after. "
        f"Slash commands: {', '.join(f'{k} {v}' for k, v in sorted(slash.items())) or 'none'}."
    )


def vars_of(sample: SoakSample) -> dict[str, Any]:
    """A sample as JSON."""
    return {
        "at_s": round(sample.at_s, 1),
        "rss_bytes": sample.rss_bytes,
        "tasks": sample.tasks,
        "fds": sample.fds,
        "store_bytes": sample.store_bytes,
        "heap_bytes": sample.heap_bytes,
        "cache_entries": sample.cache_entries,
        "cache_bytes": sample.cache_bytes,
        "conversations": sample.conversations,
    }
