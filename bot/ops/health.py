"""The health model: one snapshot of every figure, read from the live components.

`/status` and `/health` in Discord, `GET /status` and the health history all read a
`HealthSnapshot`, so they always agree with each other (and with `/metrics`, which reads the same
component figures).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import psutil

from bot.ops.runtime import python_heap_bytes

if TYPE_CHECKING:
    from bot.app import BotApp

__all__ = ["HealthSnapshot", "dependency_health", "guild_count", "percentile", "take_snapshot"]

_PROCESS = psutil.Process()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of already sorted values; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    timestamp: float
    uptime_s: float
    rss_bytes: int
    active_conversations: int
    context_chars: int
    quota_minute_remaining: int
    quota_minute_limit: int
    quota_day_remaining: int
    quota_day_limit: int
    messages_total: int
    messages_failed: int
    error_rate: float
    response_p50_s: float
    response_p95_s: float
    response_p99_s: float
    gemini_up: bool
    discord_up: bool
    breaker_state: str
    cache_hits: int
    cache_misses: int
    cache_hit_rate: float
    cache_entries: int
    cache_bytes: int
    in_flight: int
    # Added for the health history; defaulted so code building snapshots by hand keeps working.
    heap_bytes: int = 0
    guilds: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def dependency_health(app: BotApp) -> dict[str, bool]:
    """Is each dependency usable: Gemini unless its breaker is open, Discord while connected.

    The one definition behind `/status`, the history and `llmbot_dependency_up`.
    """
    return {"gemini": app.llm.breaker.state != "open", "discord": app.gateway.connected}


def guild_count(app: BotApp) -> int:
    """Discord servers in the gateway's cache (0 before the first connection)."""
    cache = getattr(getattr(app.gateway, "bot", None), "cache", None)
    return len(cache.get_guilds_view()) if cache is not None else 0


def take_snapshot(app: BotApp) -> HealthSnapshot:
    """Read every figure now; cheap enough to call on each `/status`."""
    stats = app.pipeline.stats
    quota = app.llm.quota.snapshot()
    cache = app.llm.cache.stats
    memory = app.memory.stats()
    total = sum(stats.outcomes.values())
    failed = stats.outcomes["failed"]
    recent = sorted(stats.recent_seconds)
    lookups = cache.hits + cache.misses
    breaker = app.llm.breaker.state
    dependencies = dependency_health(app)
    return HealthSnapshot(
        timestamp=time.time(),
        uptime_s=time.time() - app.started_at,
        rss_bytes=_PROCESS.memory_info().rss,
        active_conversations=memory.conversations,
        context_chars=memory.chars,
        quota_minute_remaining=quota.minute.remaining,
        quota_minute_limit=quota.minute.limit,
        quota_day_remaining=quota.day.remaining,
        quota_day_limit=quota.day.limit,
        messages_total=total,
        messages_failed=failed,
        error_rate=failed / total if total else 0.0,
        response_p50_s=percentile(recent, 0.50),
        response_p95_s=percentile(recent, 0.95),
        response_p99_s=percentile(recent, 0.99),
        gemini_up=dependencies["gemini"],
        discord_up=dependencies["discord"],
        breaker_state=breaker,
        cache_hits=cache.hits,
        cache_misses=cache.misses,
        cache_hit_rate=cache.hits / lookups if lookups else 0.0,
        cache_entries=cache.entries,
        cache_bytes=cache.bytes,
        in_flight=stats.in_flight,
        heap_bytes=python_heap_bytes(),
        guilds=guild_count(app),
    )
