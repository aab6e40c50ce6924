"""The fair-use families, read at scrape time: budget refusals by scope, per-user daily usage
at refusal, auto-reply channels, and the size and limit of each fair-use map. No label carries
a user, role, guild or channel id: only the scope and the map's name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from bot.chat.budget import BUDGET_SCOPES, USAGE_BUCKETS, BudgetStats
from bot.chat.channels import ChannelStats
from bot.store.redis_fairuse import FairUseFallbackStats

__all__ = ["FAIR_USE_MAPS", "FLEET_USAGE_MAPS", "FairUseFigures", "fair_use_families"]

FAIR_USE_MAPS = ("notices", "overrides", "channels")
# With REDIS_URL only: the usage figures a process keeps for a Redis outage.
FLEET_USAGE_MAPS = ("usage_known", "usage_pending")


@dataclass(frozen=True, slots=True)
class FairUseFigures:
    budgets: BudgetStats
    channels: ChannelStats
    local_usage: FairUseFallbackStats | None = None  # with REDIS_URL


def fair_use_families(read: Callable[[], FairUseFigures | None]) -> Iterator[Metric]:
    """The families (zeros when the bot has no fair-use parts)."""
    figures = read()
    budgets = figures.budgets if figures is not None else BudgetStats()
    channels = figures.channels if figures is not None else ChannelStats(0, 0, 0)
    refusals = CounterMetricFamily(
        "llmbot_budget_refusals_total",
        "Questions not sent to the model because a daily token budget was used up, by the "
        "budget's scope.",
        labels=["scope"],
    )
    for scope in BUDGET_SCOPES:
        refusals.add_metric([scope], budgets.refusals.get(scope, 0))
    yield refusals
    usage = HistogramMetricFamily(
        "llmbot_budget_user_usage_at_refusal_tokens",
        "The refused user's tokens used today, at each budget refusal.",
    )
    buckets = [
        (repr(float(bound)), float(count))
        for bound, count in zip(USAGE_BUCKETS, budgets.usage_buckets, strict=True)
    ]
    buckets.append(("+Inf", float(budgets.usage_count)))
    usage.add_metric([], buckets, budgets.usage_sum)
    yield usage
    autoreply = GaugeMetricFamily(
        "llmbot_autoreply_channels", "Channels and threads where auto-reply is switched on."
    )
    autoreply.add_metric([], channels.autoreply_channels)
    yield autoreply
    sizes = {
        "notices": (budgets.notices_tracked, budgets.notices_capacity),
        "overrides": (budgets.overrides, budgets.overrides_capacity),
        "channels": (channels.channels, channels.capacity),
    }
    entries = GaugeMetricFamily(
        "llmbot_fair_use_entries",
        "Entries of each fair-use map: users told they are over budget this hour, budget "
        "overrides, channels with settings; with Redis, usage figures last read from Redis "
        "and usage counted during a Redis outage, not yet added.",
        labels=["map"],
    )
    capacity = GaugeMetricFamily(
        "llmbot_fair_use_capacity", "The most entries each fair-use map keeps.", labels=["map"]
    )
    local = figures.local_usage if figures is not None else None
    if local is not None:
        sizes["usage_known"] = (local.known, local.capacity)
        sizes["usage_pending"] = (local.pending, local.capacity)
    for name in (*FAIR_USE_MAPS, *(FLEET_USAGE_MAPS if local is not None else ())):
        entries.add_metric([name], sizes[name][0])
        capacity.add_metric([name], sizes[name][1])
    yield entries
    yield capacity
