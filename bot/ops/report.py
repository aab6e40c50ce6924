"""The text of `/status` and `/health` in Discord, from one health snapshot."""

from __future__ import annotations

from bot.ops.health import HealthSnapshot, take_snapshot
from bot.ops.view import BotView

__all__ = ["StatusReport", "format_duration"]


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def _mb(value: int) -> str:
    return f"{value / 1_048_576:.1f} MB"


class StatusReport:
    """Implements the `StatusReporter` the slash commands use."""

    def __init__(self, view: BotView) -> None:
        self._view = view

    def snapshot(self) -> HealthSnapshot:
        return take_snapshot(self._view)

    def status_text(self) -> str:
        s = self.snapshot()
        return "\n".join(
            [
                "**Status**",
                f"Model: `{self._view.model}`",
                f"Uptime: {format_duration(s.uptime_s)}",
                f"Quota left: {s.quota_minute_remaining}/{s.quota_minute_limit} this minute, "
                f"{s.quota_day_remaining}/{s.quota_day_limit} today",
                f"Messages: {s.messages_total} handled, {s.messages_failed} failed, "
                f"{s.in_flight} in progress",
                f"Gemini calls: {s.model_calls}, {s.model_calls_failed} failed or refused by "
                f"the breaker (error rate {s.error_rate:.1%})",
                f"Response time: p50 {s.response_p50_s:.2f} s, p95 {s.response_p95_s:.2f} s",
                f"Cache: {s.cache_entries} entries, {_mb(s.cache_bytes)}, "
                f"hit rate {s.cache_hit_rate:.0%}",
                f"Memory: {_mb(s.rss_bytes)} RSS, {s.active_conversations} conversations "
                f"({s.context_chars:,} characters)",
                f"Gemini breaker: {s.breaker_state}",
                f"Discord breaker: {s.discord_breaker_state}, "
                f"{s.discord_held_replies} replies waiting",
            ]
        )

    def health_text(self) -> str:
        s = self.snapshot()
        ok = s.gemini_up and s.discord_up
        mark = "healthy" if ok else "degraded"
        return (
            f"**Health: {mark}**\n"
            f"Gemini {'up' if s.gemini_up else 'DOWN'} · Discord {'up' if s.discord_up else 'DOWN'}"
            f" · Gemini errors {s.error_rate:.1%} · p95 {s.response_p95_s:.2f} s"
            f" · {_mb(s.rss_bytes)} RSS · quota {s.quota_minute_remaining}/min"
        )
