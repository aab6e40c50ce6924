"""The bot's own heal actions: what each `heal` label does to the running bot, and its undo.

Each action is idempotent and measurable (its `ActionResult.figures` land in the log line and
the span of the run). Lasting changes (reduced mode, a degradation override, a faster queue)
stay while any alert that asked for them still fires and are undone when the last resolves;
one-shot clean-ups (memory, disk) have nothing to undo.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, replace

import psutil

from bot.healing.actions import ActionResult
from bot.healing.controls import BotControls
from bot.healing.payload import Alert
from bot.healing.receiver import INSTANCE_LABEL
from bot.resilience.degradation import (
    LIGHT_HISTORY_MESSAGES,
    LIGHT_MAX_OUTPUT_TOKENS,
    DegradationLevel,
)

__all__ = ["build_remedies"]

log = logging.getLogger(__name__)

_PROCESS = psutil.Process()
HEAL_OVERRIDE_SOURCE = "heal:error_rate"
HISTORY_KEEP_S = 86_400.0
TOP_ALLOCATIONS = 5  # allocation sites the memory heal records while tracemalloc is on


def _fleet_wide(alert: Alert) -> bool:
    """An alert without an `instance` label is about the fleet (or the provider), not one
    process: its degradation override holds on every process (bot/resilience/fleet_overrides.py).
    One process's alerts (its memory, its own error rate) change that process only."""
    return INSTANCE_LABEL not in alert.labels


def _sites(sites: list[tuple[str, int]]) -> str:
    return ", ".join(f"{where} {size / 1_048_576:.1f} MiB" for where, size in sites) or "none"


@dataclass(frozen=True, slots=True)
class ReducedMode:
    """What `response_time` changes while its alert fires (the request limits of degradation
    level MEDIUM, without refusing videos); `queue` divides the queue's retry interval."""

    history_messages: int = LIGHT_HISTORY_MESSAGES
    max_output_tokens: int = LIGHT_MAX_OUTPUT_TOKENS
    queue_retry_divisor: float = 3.0


class _Remedy:
    """Tracks which firing alerts hold a lasting action, so the undo waits for the last of them.

    `lasting` is False for one-shot clean-ups: nothing stays applied, so nothing is held and
    the undo has nothing to do.
    """

    name = ""
    lasting = True

    def __init__(self) -> None:
        self._holders: set[str] = set()

    async def apply(self, alert: Alert) -> ActionResult:
        first = not self._holders
        if self.lasting:
            self._holders.add(alert.fingerprint)
        return await self._on(alert, first)

    async def revert(self, alert: Alert) -> ActionResult:
        self._holders.discard(alert.fingerprint)
        if self._holders:
            held = len(self._holders)
            return ActionResult.success(f"still held by {held} firing alert(s) or a run by hand")
        return await self._off(alert)

    async def _on(self, alert: Alert, first: bool) -> ActionResult:
        raise NotImplementedError

    async def _off(self, alert: Alert) -> ActionResult:
        return ActionResult.success("nothing to undo")


class MemoryRemedy(_Remedy):
    """Clear the response cache, forget idle conversations, trim history, collect garbage."""

    name = "memory"
    lasting = False

    def __init__(self, bot: BotControls) -> None:
        super().__init__()
        self._bot = bot

    async def apply(self, alert: Alert) -> ActionResult:
        """The clean-up, with tracemalloc's top allocations before and after while tracing."""
        before = await self._bot.top_allocations(TOP_ALLOCATIONS)
        result = await super().apply(alert)
        if not before:
            return result
        after = await self._bot.top_allocations(TOP_ALLOCATIONS)
        detail = (
            f"{result.detail}; top allocations before: {_sites(before)}; after: {_sites(after)}"
        )
        return replace(result, detail=detail)

    async def _on(self, alert: Alert, first: bool) -> ActionResult:
        # bytes_freed is what the cache and the conversations held by their own accounting:
        # it cannot go negative. RSS moves for other reasons too (the allocator keeps freed
        # pages, other tasks allocate meanwhile), so it is reported beside, not as the result.
        before = _PROCESS.memory_info().rss
        cache = self._bot.clear_response_cache()
        idle = self._bot.forget_idle_conversations()
        trimmed = await self._bot.trim_history(HISTORY_KEEP_S)
        collected = gc.collect()
        after = _PROCESS.memory_info().rss
        freed = max(0, cache.bytes) + max(0, idle.bytes)
        return ActionResult.success(
            f"freed {freed / 1024:.1f} KiB: {cache.items} cache entries, {idle.items} idle "
            f"conversations; RSS {before / 1_048_576:.1f} -> {after / 1_048_576:.1f} MiB",
            bytes_freed=float(freed),
            cache_bytes_freed=float(max(0, cache.bytes)),
            conversation_bytes_freed=float(max(0, idle.bytes)),
            rss_before_bytes=float(before),
            rss_after_bytes=float(after),
            cache_entries_cleared=float(cache.items),
            conversations_forgotten=float(idle.items),
            history_trimmed=float(trimmed),
            gc_objects_collected=float(collected),
        )


class ResponseTimeRemedy(_Remedy):
    """Reduced mode: a shorter context, shorter answers, and the queue worked off faster."""

    name = "response_time"

    def __init__(self, bot: BotControls, mode: ReducedMode) -> None:
        super().__init__()
        self._bot = bot
        self._mode = mode

    async def _on(self, alert: Alert, first: bool) -> ActionResult:
        self._bot.set_reduced_mode(self._mode.history_messages, self._mode.max_output_tokens)
        return ActionResult.success(
            f"reduced mode: {self._mode.history_messages} history messages, "
            f"{self._mode.max_output_tokens} output tokens",
            history_messages=float(self._mode.history_messages),
            max_output_tokens=float(self._mode.max_output_tokens),
        )

    async def _off(self, alert: Alert) -> ActionResult:
        self._bot.set_reduced_mode(None, None)
        return ActionResult.success("reduced mode off: settings restored")


class ErrorRateRemedy(_Remedy):
    """Degrade to medium (lighter requests, no video: see bot.resilience.degradation) and
    renew the Gemini client."""

    name = "error_rate"

    def __init__(self, bot: BotControls) -> None:
        super().__init__()
        self._bot = bot

    async def _on(self, alert: Alert, first: bool) -> ActionResult:
        fleet_wide = _fleet_wide(alert)
        self._bot.override_degradation(
            HEAL_OVERRIDE_SOURCE,
            DegradationLevel.MEDIUM,
            "error-rate alert firing",
            fleet_wide=fleet_wide,
        )
        await self._bot.reset_model_client()
        where = " on every process" if fleet_wide else ""
        return ActionResult.success(f"degradation medium{where}; Gemini client recreated")

    async def _off(self, alert: Alert) -> ActionResult:
        self._bot.clear_degradation(HEAL_OVERRIDE_SOURCE, fleet_wide=_fleet_wide(alert))
        return ActionResult.success("degradation override cleared")


class ApiHealthRemedy(_Remedy):
    """Recreate the failing client; for Gemini also let the breaker probe right away."""

    name = "api_health"
    lasting = False

    def __init__(self, bot: BotControls) -> None:
        super().__init__()
        self._bot = bot

    async def _on(self, alert: Alert, first: bool) -> ActionResult:
        dependency = alert.labels.get("dependency", "gemini")
        if dependency == "discord":
            shard = int(alert.labels.get("shard", "0"))
            await self._bot.reconnect_shard(shard)
            probing = self._bot.probe_discord_now()
            return ActionResult.success(
                f"Discord shard {shard} reconnected"
                + ("; REST breaker half-open for the held replies" if probing else ""),
                breaker_half_open=float(probing),
            )
        await self._bot.reset_model_client()
        probing = self._bot.probe_model_now()
        return ActionResult.success(
            "Gemini client recreated" + ("; breaker half-open for a probe" if probing else ""),
            breaker_half_open=float(probing),
        )


class DiskRemedy(_Remedy):
    """Drop expired store entries, compact the database, trim the health history."""

    name = "disk"
    lasting = False

    def __init__(self, bot: BotControls) -> None:
        super().__init__()
        self._bot = bot

    async def _on(self, alert: Alert, first: bool) -> ActionResult:
        removed = await self._bot.clean_store()
        trimmed = await self._bot.trim_history(HISTORY_KEEP_S)
        return ActionResult.success(
            f"{removed} expired entries removed, store compacted",
            expired_removed=float(removed),
            history_trimmed=float(trimmed),
        )


class QueueRemedy(_Remedy):
    """Tell the users of expired questions, and work the queue off faster until resolved."""

    name = "queue"

    def __init__(self, bot: BotControls, divisor: float) -> None:
        super().__init__()
        self._bot = bot
        self._divisor = divisor
        self._saved_interval: float | None = None

    async def _on(self, alert: Alert, first: bool) -> ActionResult:
        bot = self._bot
        expired = await bot.drop_expired_questions()
        if self._saved_interval is None:
            self._saved_interval = bot.queue_retry_interval_s
            bot.set_queue_retry_interval(max(1.0, self._saved_interval / self._divisor))
        return ActionResult.success(
            f"{expired} expired questions dropped with notices; "
            f"retry every {bot.queue_retry_interval_s:.0f} s",
            expired_dropped=float(expired),
            retry_interval_s=bot.queue_retry_interval_s,
        )

    async def _off(self, alert: Alert) -> ActionResult:
        if self._saved_interval is not None:
            self._bot.set_queue_retry_interval(self._saved_interval)
            self._saved_interval = None
        return ActionResult.success("queue retry interval restored")


def build_remedies(bot: BotControls, mode: ReducedMode | None = None) -> list[_Remedy]:
    """One action per `heal` label, acting on the bot through its controls."""
    mode = mode or ReducedMode()
    return [
        MemoryRemedy(bot),
        ResponseTimeRemedy(bot, mode),
        ErrorRateRemedy(bot),
        ApiHealthRemedy(bot),
        DiskRemedy(bot),
        QueueRemedy(bot, mode.queue_retry_divisor),
    ]
