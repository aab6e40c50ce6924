"""Real component figures, driven by hand, behind `MetricSources`; and exposition helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bot.chat.memory import ConversationMemory
from bot.healing.receiver import HealStats
from bot.llm.cache import ResponseCache
from bot.llm.call_stats import LLMCallStats
from bot.llm.quota import QuotaLimiter
from bot.ops.health import HealthSnapshot
from bot.ops.metrics import (
    ERROR_COMPONENTS,
    MESSAGE_OUTCOMES,
    AlertThresholds,
    MetricSources,
    ShardFigures,
    Telemetry,
)
from bot.ops.runtime import BuildInfo
from bot.resilience.breaker import CircuitBreaker
from bot.resilience.degradation import DegradationState
from bot.resilience.queue import QueueStats
from bot.store.stats import StoreStats
from tests.fakes import FakeClock

START = 1_700_000_000.0
MODEL = "gemini-2.5-flash"
BUILD = BuildInfo(version="1.2.3", python="3.11.7", hikari="2.6.0", genai="3.6.1")

# (metric name, frozenset of label pairs) -> value
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class FakeChat:
    """The shape of ChatStats the collector reads."""

    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MESSAGE_OUTCOMES, 0))
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_COMPONENTS, 0))
    late: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MESSAGE_OUTCOMES, 0))
    in_flight: int = 0


class World:
    """One of each component whose figures the collector exports, on a fake clock."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.clock = FakeClock()
        self.chat = FakeChat()
        self.cache = ResponseCache(max_entries=100_000, max_bytes=1 << 30, clock=self.clock)
        self.quota = QuotaLimiter(1_000_000, 10_000_000, 1.0, clock=self.clock)
        self.calls = LLMCallStats()
        self.breaker = CircuitBreaker("gemini", failure_threshold=2, clock=self.clock)
        self.memory = ConversationMemory(max_conversations=100_000, clock=self.clock)
        self.store = StoreStats(backend="memory")
        self.queue = QueueStats(capacity=50)
        self.degradation = DegradationState(clock=self.clock)
        self.heal = HealStats()
        self.shards = {0: ShardFigures(True, 0.042)}
        self.guilds = 0
        self.snapshots = 0
        self.data_dir = data_dir

    def sources(self) -> MetricSources:
        return MetricSources(
            chat=lambda: self.chat,
            cache=lambda: self.cache.stats,
            quota=self.quota.snapshot,
            llm_calls=lambda: self.calls,
            breakers=lambda: {self.breaker.name: self.breaker.state},
            dependencies=lambda: {"gemini": self.breaker.state != "open", "discord": True},
            memory=self.memory.stats,
            store=lambda: self.store,
            queue=lambda: self.queue,
            degradation=lambda: self.degradation.stats,
            heal=lambda: self.heal,
            shards=lambda: self.shards,
            guilds=lambda: self.guilds,
            health_snapshots=lambda: self.snapshots,
            asyncio_tasks=lambda: 7,
            heap_bytes=lambda: 123_456,
            data_dir=self.data_dir,
            thresholds=AlertThresholds(),
            build=BUILD,
        )

    def telemetry(self) -> Telemetry:
        return Telemetry(models=[MODEL], sources=self.sources())


def scrape(telemetry: Telemetry) -> Series:
    """Every sample of the text exposition, keyed by name and labels."""
    body, _ = telemetry.render(openmetrics=False)
    series: Series = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            series[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return series


def value(series: Series, name: str, **labels: str) -> float:
    """The value of one series; KeyError names the series when it is missing."""
    key = (name, frozenset(labels.items()))
    if key not in series:
        raise KeyError(f"no series {name}{labels}")
    return series[key]


def make_snapshot(timestamp: float = START, **changes: Any) -> HealthSnapshot:
    """A health snapshot with plausible figures; `changes` override fields."""
    figures: dict[str, Any] = {
        "timestamp": timestamp,
        "uptime_s": 60.0,
        "rss_bytes": 100 * 1024 * 1024,
        "active_conversations": 3,
        "context_chars": 1200,
        "quota_minute_remaining": 8,
        "quota_minute_limit": 9,
        "quota_day_remaining": 400,
        "quota_day_limit": 450,
        "messages_total": 10,
        "messages_failed": 1,
        "error_rate": 0.1,
        "response_p50_s": 0.8,
        "response_p95_s": 2.5,
        "response_p99_s": 4.0,
        "gemini_up": True,
        "discord_up": True,
        "breaker_state": "closed",
        "cache_hits": 2,
        "cache_misses": 8,
        "cache_hit_rate": 0.2,
        "cache_entries": 8,
        "cache_bytes": 4096,
        "in_flight": 0,
        "heap_bytes": 50 * 1024 * 1024,
        "guilds": 4,
    }
    figures.update(changes)
    return HealthSnapshot(**figures)
