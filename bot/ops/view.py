"""`BotView`: the read-only seam between the running bot and everything that reports on it.

Snapshots (`/status`, `/health`, the health history), readiness (`/readyz`), the metrics
collector and the status report read the bot only through a `BotView`: a frozen set of explicit
callables that `bot.app` builds once from its components. Nothing in `bot.ops` holds the app or
reaches into a component's parts, so a component can be rewired (or replaced by a fleet-wide
one) by changing one lambda in the composition root.

Parts a bot may lack (a store, a queue, self-healing, the health history) default to "absent";
the collector exports zeros for them and readiness does not check them, so a test builds the
view of only what it has.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bot.chat.intake import IntakeStats
from bot.chat.memory import MemoryStats
from bot.chat.pipeline import ChatStats
from bot.healing.receiver import HealStats
from bot.llm.cache import CacheStats
from bot.llm.call_stats import LLMCallStats
from bot.llm.quota import QuotaSnapshot
from bot.llm.quota_shared import FleetQuotaStats
from bot.ops.metrics import AlertThresholds, MetricSources, ShardFigures
from bot.ops.metrics.fair_use import FairUseFigures
from bot.resilience.degradation import DegradationStats
from bot.resilience.fleet_fallback import FleetFallbackStats
from bot.resilience.hold import HoldStats
from bot.resilience.queue import QueueStats
from bot.resilience.rest_pace import SharedPaceStats
from bot.store.answered import LedgerStats
from bot.store.redis_link import RedisStats
from bot.store.stats import StoreStats

__all__ = ["BotView"]


def _absent() -> None:
    return None


def _no_entries() -> Mapping[int, ShardFigures]:
    return {}


def _zero() -> int:
    return 0


def _not_connected() -> bool:
    return False


def _no_breakers() -> Mapping[str, str]:
    return {}


def _no_counts() -> Mapping[str, int]:
    return {}


@dataclass(frozen=True, slots=True)
class BotView:
    """What can be read of the running bot, each figure from the one component that owns it."""

    model: str = "unknown"
    started_at: float = field(default_factory=time.time)
    data_dir: Path | None = None
    thresholds: AlertThresholds = field(default_factory=AlertThresholds)
    chat: Callable[[], ChatStats | None] = _absent
    cache: Callable[[], CacheStats | None] = _absent
    quota: Callable[[], QuotaSnapshot | None] = _absent
    llm_timeout: Callable[[], float | None] = _absent  # seconds the next model call may take
    llm_calls: Callable[[], LLMCallStats | None] = _absent  # model calls by outcome, rejections
    breakers: Callable[[], Mapping[str, str]] = _no_breakers  # dependency -> breaker state
    memory: Callable[[], MemoryStats | None] = _absent
    gateway_connected: Callable[[], bool] = _not_connected
    guilds: Callable[[], int] = _zero
    shards: Callable[[], Mapping[int, ShardFigures]] = _no_entries
    store: Callable[[], StoreStats | None] = _absent
    queue: Callable[[], QueueStats | None] = _absent
    degradation: Callable[[], DegradationStats | None] = _absent
    # The reason while in maintenance mode, None while serving; absent: not checked.
    maintenance: Callable[[], str | None] | None = None
    heal: Callable[[], HealStats | None] = _absent
    health_snapshots: Callable[[], int] = _zero
    # Replies waiting for Discord while its REST API fails (the "discord" breaker's hold).
    discord_hold: Callable[[], HoldStats | None] = _absent
    # Backpressure on new messages: answered at once, waiting, shed (bot.chat.intake).
    intake: Callable[[], IntakeStats | None] = _absent
    # Typing triggers sent, and skipped for want of spare REST budget ("sent", "skipped").
    typing: Callable[[], Mapping[str, int]] = _no_counts
    fair_use: Callable[[], FairUseFigures | None] = _absent  # budgets, channel settings
    # The idempotency record and in-flight journal (bot.store.answered).
    answers: Callable[[], LedgerStats | None] = _absent
    # REDIS_URL set: the Redis link and the fleet's shared quota (None: a single process).
    redis: Callable[[], RedisStats | None] | None = None
    fleet: Callable[[], FleetQuotaStats | None] | None = None
    rest_pace: Callable[[], SharedPaceStats | None] | None = None  # DISCORD_REST_SHARED_LIMIT
    # REDIS_URL set: which fleet-wide parts (cache, cooldowns, video) are on their local stand-in.
    fleet_parts: Callable[[], Mapping[str, FleetFallbackStats]] | None = None

    def dependencies(self) -> dict[str, bool]:
        """Is each dependency usable: Gemini unless its breaker is open, Discord while the
        gateway is connected and its REST breaker is not open.

        The one definition behind `/status`, the history and `llmbot_dependency_up`.
        """
        breakers = self.breakers()
        up = {
            "gemini": breakers.get("gemini") != "open",
            "discord": self.gateway_connected() and breakers.get("discord") != "open",
        }
        if self.redis is not None:  # only a fleet process has (and reports) Redis
            redis = self.redis()
            up["redis"] = redis is not None and redis.up
        return up

    def metric_sources(self) -> MetricSources:
        """The collector's sources: the same callables (runtime figures are the collector's)."""
        return MetricSources(
            chat=self.chat,
            cache=self.cache,
            quota=self.quota,
            llm_timeout=self.llm_timeout,
            llm_calls=self.llm_calls,
            breakers=self.breakers,
            dependencies=self.dependencies,
            memory=self.memory,
            store=self.store,
            queue=self.queue,
            degradation=self.degradation,
            heal=self.heal,
            shards=self.shards,
            guilds=self.guilds,
            health_snapshots=self.health_snapshots,
            discord_hold=self.discord_hold,
            intake=self.intake,
            typing=self.typing,
            fair_use=self.fair_use,
            answers=self.answers,
            redis=self.redis or _absent,
            fleet=self.fleet or _absent,
            rest_pace=self.rest_pace or _absent,
            fleet_parts=self.fleet_parts or _absent,
            data_dir=self.data_dir,
            thresholds=self.thresholds,
        )
