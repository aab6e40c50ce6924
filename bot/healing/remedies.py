"""The bot's own heal actions: what each `heal` label does to the running bot, and its undo.

Each action is idempotent and measurable (its `ActionResult.figures` land in the log line and
the span of the run). Lasting changes (reduced mode, a degradation override, a faster queue)
stay while any alert that asked for them still fires and are undone when the last resolves;
one-shot clean-ups (memory, disk) have nothing to undo.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

from bot.healing.actions import ActionResult
from bot.healing.payload import Alert
from bot.resilience.degradation import DegradationLevel

if TYPE_CHECKING:
    from bot.app import BotApp

__all__ = ["build_remedies"]

log = logging.getLogger(__name__)

_PROCESS = psutil.Process()
HEAL_OVERRIDE_SOURCE = "heal:error_rate"
HISTORY_KEEP_S = 86_400.0


@dataclass(frozen=True, slots=True)
class ReducedMode:
    """What `response_time` changes while its alert fires."""

    history_messages: int = 10
    max_output_tokens: int = 512
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

    def __init__(self, app: BotApp) -> None:
        super().__init__()
        self._app = app

    async def _on(self, alert: Alert, first: bool) -> ActionResult:
        before = _PROCESS.memory_info().rss
        cleared = self._app.llm.cache.clear()
        forgotten = self._app.memory.sweep()
        trimmed = await _trim_history(self._app)
        collected = gc.collect()
        after = _PROCESS.memory_info().rss
        return ActionResult.success(
            f"cleared {cleared} cache entries, {forgotten} idle conversations; "
            f"RSS {before / 1_048_576:.1f} -> {after / 1_048_576:.1f} MiB",
            bytes_freed=float(before - after),
            rss_before_bytes=float(before),
            rss_after_bytes=float(after),
            cache_entries_cleared=float(cleared),
            conversations_forgotten=float(forgotten),
            history_trimmed=float(trimmed),
            gc_objects_collected=float(collected),
        )


class ResponseTimeRemedy(_Remedy):
    """Reduced mode: a shorter context, shorter answers, and the queue worked off faster."""

    name = "response_time"

    def __init__(self, app: BotApp, mode: ReducedMode) -> None:
        super().__init__()
        self._app = app
        self._mode = mode

    async def _on(self, alert: Alert, first: bool) -> ActionResult:
        tuning = self._app.pipeline.tuning
        tuning.history_messages = self._mode.history_messages
        tuning.max_output_tokens = self._mode.max_output_tokens
        return ActionResult.success(
            f"reduced mode: {self._mode.history_messages} history messages, "
            f"{self._mode.max_output_tokens} output tokens",
            history_messages=float(self._mode.history_messages),
            max_output_tokens=float(self._mode.max_output_tokens),
        )

    async def _off(self, alert: Alert) -> ActionResult:
        tuning = self._app.pipeline.tuning
        tuning.history_messages = None
        tuning.max_output_tokens = None
        return ActionResult.success("reduced mode off: settings restored")


class ErrorRateRemedy(_Remedy):
    """Degrade to medium (queue and fallbacks instead of retry storms) and renew the client."""

    name = "error_rate"

    def __init__(self, app: BotApp) -> None:
        super().__init__()
        self._app = app

    async def _on(self, alert: Alert, first: bool) -> ActionResult:
        self._app.degradation.set_override(
            HEAL_OVERRIDE_SOURCE, DegradationLevel.MEDIUM, "error-rate alert firing"
        )
        await self._app.gemini.reset()
        return ActionResult.success("degradation medium; Gemini client recreated")

    async def _off(self, alert: Alert) -> ActionResult:
        self._app.degradation.clear_override(HEAL_OVERRIDE_SOURCE)
        return ActionResult.success("degradation override cleared")


class ApiHealthRemedy(_Remedy):
    """Recreate the failing client; for Gemini also let the breaker probe right away."""

    name = "api_health"
    lasting = False

    def __init__(self, app: BotApp) -> None:
        super().__init__()
        self._app = app

    async def _on(self, alert: Alert, first: bool) -> ActionResult:
        dependency = alert.labels.get("dependency", "gemini")
        if dependency == "discord":
            shard = int(alert.labels.get("shard", "0"))
            await self._app.gateway.reconnect_shard(shard)
            return ActionResult.success(f"Discord shard {shard} reconnected")
        await self._app.gemini.reset()
        probing = self._app.llm.breaker.force_half_open()
        self._app.queue.wake()
        return ActionResult.success(
            "Gemini client recreated" + ("; breaker half-open for a probe" if probing else ""),
            breaker_half_open=float(probing),
        )


class DiskRemedy(_Remedy):
    """Drop expired store entries, compact the database, trim the health history."""

    name = "disk"
    lasting = False

    def __init__(self, app: BotApp) -> None:
        super().__init__()
        self._app = app

    async def _on(self, alert: Alert, first: bool) -> ActionResult:
        removed = await self._app.store.cleanup_expired()
        await self._app.store.compact()
        trimmed = await _trim_history(self._app)
        return ActionResult.success(
            f"{removed} expired entries removed, store compacted",
            expired_removed=float(removed),
            history_trimmed=float(trimmed),
        )


class QueueRemedy(_Remedy):
    """Tell the users of expired questions, and work the queue off faster until resolved."""

    name = "queue"

    def __init__(self, app: BotApp, divisor: float) -> None:
        super().__init__()
        self._app = app
        self._divisor = divisor
        self._saved_interval: float | None = None

    async def _on(self, alert: Alert, first: bool) -> ActionResult:
        queue = self._app.queue
        expired = await queue.expire()
        for item in expired:
            await self._app.pipeline.notify_dropped(item.payload, "expired")
        if self._saved_interval is None:
            self._saved_interval = queue.retry_interval_s
            queue.set_retry_interval(max(1.0, self._saved_interval / self._divisor))
        return ActionResult.success(
            f"{len(expired)} expired questions dropped with notices; "
            f"retry every {queue.retry_interval_s:.0f} s",
            expired_dropped=float(len(expired)),
            retry_interval_s=queue.retry_interval_s,
        )

    async def _off(self, alert: Alert) -> ActionResult:
        if self._saved_interval is not None:
            self._app.queue.set_retry_interval(self._saved_interval)
            self._saved_interval = None
        return ActionResult.success("queue retry interval restored")


async def _trim_history(app: BotApp) -> int:
    """Keep the last day of health history: enough for the incident at hand."""
    return await app.history.trim(HISTORY_KEEP_S)


def build_remedies(app: BotApp, mode: ReducedMode | None = None) -> list[_Remedy]:
    """One action per `heal` label, bound to this bot."""
    mode = mode or ReducedMode()
    return [
        MemoryRemedy(app),
        ResponseTimeRemedy(app, mode),
        ErrorRateRemedy(app),
        ApiHealthRemedy(app),
        DiskRemedy(app),
        QueueRemedy(app, mode.queue_retry_divisor),
    ]
