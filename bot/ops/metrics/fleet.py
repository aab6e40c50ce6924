"""The fleet's families: the Redis link, the shared quota and the shared Discord REST pace
(zeros without REDIS_URL)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from bot.llm.quota_shared import FleetQuotaStats
from bot.resilience.fleet_fallback import FLEET_PARTS, FleetFallbackStats
from bot.resilience.queue import QueueStats
from bot.resilience.rest_pace import WAIT_BUCKETS_S, SharedPaceStats
from bot.store.answered import LedgerStats
from bot.store.redis_link import REDIS_OPS, RedisStats
from bot.store.stats import LatencyHistogram

__all__ = ["fleet_families", "fleet_queue_families", "rest_pace_families"]


def fleet_families(
    redis: RedisStats | None,
    fleet: FleetQuotaStats | None,
    add_histogram: Callable[
        [HistogramMetricFamily, tuple[str, ...], tuple[str, ...], LatencyHistogram], None
    ],
    *,
    parts: Mapping[str, FleetFallbackStats] | None = None,
) -> Iterator[Metric]:
    """`llmbot_redis_*` and `llmbot_fleet_*` / `llmbot_llm_quota_fallback*` families."""
    commands = CounterMetricFamily(
        "llmbot_redis_commands_total", "Redis commands and scripts sent, by use.", labels=["op"]
    )
    errors = CounterMetricFamily(
        "llmbot_redis_errors_total",
        "Redis commands that failed (refused, timed out, lost connection), by use.",
        labels=["op"],
    )
    for op in REDIS_OPS:
        commands.add_metric([op], redis.commands[op] if redis is not None else 0)
        errors.add_metric([op], redis.errors[op] if redis is not None else 0)
    yield commands
    yield errors
    duration = HistogramMetricFamily(
        "llmbot_redis_command_duration_seconds", "Time of one Redis command or script."
    )
    add_histogram(duration, (), (), redis.latency if redis is not None else LatencyHistogram())
    yield duration
    live = GaugeMetricFamily(
        "llmbot_fleet_live_instances",
        "Bot processes with a heartbeat in Redis in the last 10 s, as last seen (0: no fleet).",
    )
    live.add_metric([], fleet.live_instances if fleet is not None else 0)
    yield live
    fallback = GaugeMetricFamily(
        "llmbot_llm_quota_fallback",
        "1 while Redis is unreachable and this process counts a local share of the quota.",
    )
    fallback.add_metric([], 1 if fleet is not None and fleet.fallback else 0)
    yield fallback
    fallbacks = CounterMetricFamily(
        "llmbot_llm_quota_fallbacks_total",
        "Times this process lost Redis and fell back to its local share of the quota.",
    )
    fallbacks.add_metric([], fleet.fallbacks_total if fleet is not None else 0)
    yield fallbacks
    part_fallback = GaugeMetricFamily(
        "llmbot_fleet_fallback",
        "1 while Redis is unreachable and this process uses its own in-process stand-in for a "
        "fleet-wide part (the response cache, per-user cooldowns, video budgets).",
        labels=["part"],
    )
    part_fallbacks = CounterMetricFamily(
        "llmbot_fleet_fallbacks_total",
        "Times a fleet-wide part fell back to this process's own stand-in.",
        labels=["part"],
    )
    for part in FLEET_PARTS:
        stats = (parts or {}).get(part)
        part_fallback.add_metric([part], 1 if stats is not None and stats.fallback else 0)
        part_fallbacks.add_metric([part], stats.fallbacks_total if stats is not None else 0)
    yield part_fallback
    yield part_fallbacks


def rest_pace_families(
    pace: SharedPaceStats | None,
    add_histogram: Callable[
        [HistogramMetricFamily, tuple[str, ...], tuple[str, ...], LatencyHistogram], None
    ],
) -> Iterator[Metric]:
    """`llmbot_discord_rest_shared_*`: the fleet's REST pace in Redis."""
    wait = HistogramMetricFamily(
        "llmbot_discord_rest_shared_wait_seconds",
        "Time a Discord REST call waited for its turn in the fleet's shared pace.",
    )
    empty = LatencyHistogram(WAIT_BUCKETS_S)
    add_histogram(wait, (), (), pace.wait if pace is not None else empty)
    yield wait
    refusals = CounterMetricFamily(
        "llmbot_discord_rest_shared_refusals_total",
        "Turns the shared pace refused: busy (a typing trigger found no free turn), backlog "
        "(the fleet's schedule was over 10 s ahead; the call asked again).",
        labels=["reason"],
    )
    for reason in ("busy", "backlog"):
        refusals.add_metric([reason], pace.refusals[reason] if pace is not None else 0)
    yield refusals
    fallback = GaugeMetricFamily(
        "llmbot_discord_rest_shared_fallback",
        "1 while Redis is unreachable and this process paces a local share of the REST rate.",
    )
    fallback.add_metric([], 1 if pace is not None and pace.fallback else 0)
    yield fallback
    fallbacks = CounterMetricFamily(
        "llmbot_discord_rest_shared_fallbacks_total",
        "Times this process lost Redis and fell back to a local share of the REST rate.",
    )
    fallbacks.add_metric([], pace.fallbacks_total if pace is not None else 0)
    yield fallbacks


def fleet_queue_families(queue: QueueStats | None, answers: LedgerStats | None) -> Iterator[Metric]:
    """`llmbot_queue_*` families of the fleet's queue on Redis, and the writes both wait to
    make in Redis (zeros without REDIS_URL)."""
    counters = (
        (
            "llmbot_queue_reclaimed_total",
            "Queued questions taken over from a process that stopped touching them (died).",
            queue.reclaimed_total if queue is not None else 0,
        ),
        (
            "llmbot_queue_taken_over_total",
            "Queued questions this process held that another process reclaimed (let go).",
            queue.taken_over_total if queue is not None else 0,
        ),
        (
            "llmbot_queue_handed_over_total",
            "Queued questions kept locally while Redis was unreachable, then handed to Redis.",
            queue.handed_over_total if queue is not None else 0,
        ),
    )
    for name, text, value in counters:
        family = CounterMetricFamily(name, text)
        family.add_metric([], value)
        yield family
    size = GaugeMetricFamily(
        "llmbot_queue_fleet_messages",
        "Questions in the fleet's queue on Redis, all processes, at the last look (0: no fleet).",
    )
    size.add_metric([], (queue.fleet_size or 0) if queue is not None else 0)
    yield size
    backlog = GaugeMetricFamily(
        "llmbot_fleet_redis_backlog",
        "Writes waiting for Redis to come back (bounded at 10,000 each), by kind: queue acks of "
        "finished questions, idempotency record states.",
        labels=["kind"],
    )
    backlog.add_metric(["queue_ack"], queue.unacked if queue is not None else 0)
    backlog.add_metric(["record"], answers.redis_backlog if answers is not None else 0)
    yield backlog
