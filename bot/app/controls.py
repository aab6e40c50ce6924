"""`BotControls` over a running `BotApp`'s components: what heal remedies and admin commands
may change (bot/healing/controls.py has the protocol; the app builds one for itself)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.healing.controls import Freed
from bot.resilience.degradation import DegradationLevel

if TYPE_CHECKING:
    from bot.app import BotApp

__all__ = ["AppControls"]


class AppControls:
    """`BotControls` over this bot's components: what remedies and admin commands may change."""

    def __init__(self, app: BotApp) -> None:
        self._app = app

    def clear_response_cache(self) -> Freed:
        cache = self._app.llm.cache
        held = cache.stats.bytes
        cleared = cache.clear()
        return Freed(cleared, max(0, held - cache.stats.bytes))

    def forget_idle_conversations(self) -> Freed:
        memory = self._app.memory
        held = memory.stats().approx_bytes
        forgotten = memory.sweep()
        return Freed(forgotten, max(0, held - memory.stats().approx_bytes))

    async def trim_history(self, keep_s: float) -> int:
        return await self._app.history.trim(keep_s)

    async def clean_store(self) -> int:
        removed = await self._app.store.cleanup_expired()
        await self._app.store.compact()
        return removed

    def set_reduced_mode(self, history_messages: int | None, max_output_tokens: int | None) -> None:
        tuning = self._app.pipeline.tuning
        tuning.history_messages = history_messages
        tuning.max_output_tokens = max_output_tokens

    def override_degradation(
        self, source: str, level: DegradationLevel, reason: str, *, fleet_wide: bool = False
    ) -> None:
        if fleet_wide and self._app.fleet_overrides is not None:
            self._app.fleet_overrides.set(source, level, reason)  # every process of the fleet
        else:
            self._app.degradation.set_override(source, level, reason)

    def clear_degradation(self, source: str, *, fleet_wide: bool = False) -> None:
        if fleet_wide and self._app.fleet_overrides is not None:
            self._app.fleet_overrides.clear(source)
        else:
            self._app.degradation.clear_override(source)

    def enter_maintenance(self, reason: str) -> None:
        if self._app.fleet_maintenance is not None:
            self._app.fleet_maintenance.enter(reason)  # every process of the fleet
        else:
            self._app.degradation.enter_maintenance(reason)

    def exit_maintenance(self) -> bool:
        if self._app.fleet_maintenance is not None:
            return self._app.fleet_maintenance.exit()
        return self._app.degradation.exit_maintenance()

    async def reset_model_client(self) -> None:
        await self._app.gemini.reset()

    def probe_model_now(self) -> bool:
        probing = self._app.llm.breaker.force_half_open()
        self._app.queue.wake()
        return probing

    async def reconnect_shard(self, shard_id: int) -> None:
        await self._app.gateway.reconnect_shard(shard_id)

    def probe_discord_now(self) -> bool:
        return self._app.gateway.delivery.hold.probe_now()

    async def top_allocations(self, limit: int) -> list[tuple[str, int]]:
        return await self._app.tracer.top_allocations(limit)

    async def drop_expired_questions(self) -> int:
        expired = await self._app.queue.expire()
        for item in expired:
            await self._app.pipeline.notify_dropped(item.payload, "expired")
        return len(expired)

    @property
    def queue_retry_interval_s(self) -> float:
        return self._app.queue.retry_interval_s

    def set_queue_retry_interval(self, seconds: float) -> None:
        self._app.queue.set_retry_interval(seconds)
