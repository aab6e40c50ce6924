"""The fleet's families: the Redis link and the shared quota (zeros without REDIS_URL)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from bot.llm.quota_shared import FleetQuotaStats
from bot.resilience.fleet_fallback import FLEET_PARTS, FleetFallbackStats
from bot.store.redis_link import REDIS_OPS, RedisStats
from bot.store.stats import LatencyHistogram

__all__ = ["fleet_families"]


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
