"""The fair-use maps on /metrics: the local usage maps of a fleet process appear with Redis
only, with their sizes and bound."""

from __future__ import annotations

from bot.chat.budget import BudgetStats
from bot.chat.channels import ChannelStats
from bot.ops.metrics.fair_use import FairUseFigures, fair_use_families
from bot.store.redis_fairuse import FairUseFallbackStats


def _maps(figures: FairUseFigures) -> dict[tuple[str, str], float]:
    found = {}
    for family in fair_use_families(lambda: figures):
        if family.name in ("llmbot_fair_use_entries", "llmbot_fair_use_capacity"):
            for sample in family.samples:
                found[(family.name, sample.labels["map"])] = sample.value
    return found


def test_local_usage_maps_only_with_redis() -> None:
    single = _maps(FairUseFigures(BudgetStats(), ChannelStats(0, 0, 10)))
    assert {m for _, m in single} == {"notices", "overrides", "channels"}
    fleet = _maps(
        FairUseFigures(
            BudgetStats(), ChannelStats(0, 0, 10), FairUseFallbackStats(known=7, pending=2)
        )
    )
    assert fleet[("llmbot_fair_use_entries", "usage_known")] == 7
    assert fleet[("llmbot_fair_use_entries", "usage_pending")] == 2
    assert fleet[("llmbot_fair_use_capacity", "usage_pending")] == 50_000
