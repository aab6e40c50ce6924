"""The adapter from the running bot: `sources_from_app` points each `MetricSources` field at
the part of a `BotApp` that keeps the figure (parts it does not have yet read as zeros)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.ops.metrics.catalogue import AlertThresholds
from bot.ops.metrics.collector import MetricSources, ShardFigures

if TYPE_CHECKING:
    from bot.app import BotApp
    from bot.ops.history import HealthHistory


def sources_from_app(app: BotApp, *, history: HealthHistory | None = None) -> MetricSources:
    """The sources of a `BotApp`; parts it does not have yet (queue, store, ...) read as zeros."""
    # Imported here: health.py reads the app too and this keeps the module graph acyclic.
    from bot.ops.health import dependency_health, guild_count

    def part(name: str) -> Any:
        return getattr(app, name, None)

    def stats_of(name: str) -> Callable[[], Any]:
        return lambda: getattr(part(name), "stats", None)

    def held_snapshots() -> int:
        held = history if history is not None else part("history")
        return len(held) if held is not None else 0

    gateway_bot = getattr(app.gateway, "bot", None)

    return MetricSources(
        chat=lambda: app.pipeline.stats,
        cache=lambda: app.llm.cache.stats,
        quota=app.llm.quota.snapshot,
        llm_timeout=lambda: app.llm.timeout.current() if app.llm.timeout else None,
        breakers=lambda: {app.llm.breaker.name: app.llm.breaker.state},
        dependencies=lambda: dependency_health(app),
        memory=app.memory.stats,
        store=stats_of("store"),
        queue=stats_of("queue"),
        degradation=stats_of("degradation"),
        heal=stats_of("healer"),
        shards=lambda: _shard_figures(gateway_bot),
        guilds=lambda: guild_count(app),
        health_snapshots=held_snapshots,
        data_dir=Path(app.settings.data_dir),
        thresholds=AlertThresholds.from_settings(app.settings),
    )


def _shard_figures(gateway_bot: Any) -> dict[int, ShardFigures]:
    # Read off hikari's shard objects by attribute: only discord/ imports hikari.
    shards: Mapping[int, Any] = getattr(gateway_bot, "shards", None) or {}
    return {
        int(shard_id): ShardFigures(
            bool(getattr(shard, "is_connected", False)),
            float(getattr(shard, "heartbeat_latency", math.nan)),
        )
        for shard_id, shard in shards.items()
    }
