"""The health model: one snapshot of every figure, read through the `BotView`.

`/status` and `/health` in Discord, `GET /status` and the health history all read a
`HealthSnapshot`, so they always agree with each other (and with `/metrics`, which reads the same
component figures).

`error_rate` is the model-call error ratio since start (`bot.llm.call_stats`): failed Gemini
calls plus calls the open breaker refused, over calls made plus those refused. It is the same
definition as `llmbot:llm_call_error_ratio:*` and `LLMBotHighErrorRatio` (whose heal is
`error_rate`); `model_calls` and `model_calls_failed` are its two counts. A Gemini outage shows
here even though its questions are queued rather than failed. `messages_total` and
`messages_failed` stay the message counts (every reply, failed ones among them).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from bot.llm.cache import CacheStats
from bot.ops.percentile import percentile
from bot.ops.runtime import python_heap_bytes
from bot.ops.view import BotView

__all__ = ["HealthSnapshot", "take_snapshot"]

_PROCESS = psutil.Process()


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
    # Discord's REST breaker, and the replies waiting behind it.
    discord_breaker_state: str = "closed"
    discord_held_replies: int = 0
    # The two counts behind `error_rate` (see the module docstring).
    model_calls: int = 0
    model_calls_failed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def take_snapshot(view: BotView) -> HealthSnapshot:
    """Read every figure now; cheap enough to call on each `/status`."""
    stats = view.chat()
    quota = view.quota()
    cache = view.cache() or CacheStats()
    memory = view.memory()
    outcomes = stats.outcomes if stats is not None else {}
    total = sum(outcomes.values())
    failed = outcomes.get("failed", 0)
    recent = sorted(stats.recent_seconds) if stats is not None else []
    lookups = cache.hits + cache.misses
    dependencies = view.dependencies()
    breakers = view.breakers()
    hold = view.discord_hold()
    calls = view.llm_calls()
    now = time.time()
    return HealthSnapshot(
        timestamp=now,
        uptime_s=now - view.started_at,
        rss_bytes=_PROCESS.memory_info().rss,
        active_conversations=memory.conversations if memory is not None else 0,
        context_chars=memory.chars if memory is not None else 0,
        quota_minute_remaining=quota.minute.remaining if quota is not None else 0,
        quota_minute_limit=quota.minute.limit if quota is not None else 0,
        quota_day_remaining=quota.day.remaining if quota is not None else 0,
        quota_day_limit=quota.day.limit if quota is not None else 0,
        messages_total=total,
        messages_failed=failed,
        error_rate=calls.error_ratio if calls is not None else 0.0,
        response_p50_s=percentile(recent, 50, empty=0.0),
        response_p95_s=percentile(recent, 95, empty=0.0),
        response_p99_s=percentile(recent, 99, empty=0.0),
        gemini_up=dependencies["gemini"],
        discord_up=dependencies["discord"],
        breaker_state=breakers.get("gemini", "closed"),
        cache_hits=cache.hits,
        cache_misses=cache.misses,
        cache_hit_rate=cache.hits / lookups if lookups else 0.0,
        cache_entries=cache.entries,
        cache_bytes=cache.bytes,
        in_flight=stats.in_flight if stats is not None else 0,
        heap_bytes=python_heap_bytes(),
        guilds=view.guilds(),
        discord_breaker_state=breakers.get("discord", "closed"),
        discord_held_replies=hold.held if hold is not None else 0,
        model_calls=calls.wanted if calls is not None else 0,
        model_calls_failed=calls.failed if calls is not None else 0,
    )
