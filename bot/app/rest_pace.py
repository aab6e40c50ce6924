"""Wiring of Discord's REST pace for a fleet: shared through Redis, or each process's own."""

from __future__ import annotations

from bot.config import Settings
from bot.llm.quota_shared import SharedQuota
from bot.resilience.rest_pace import SharedPace
from bot.store.redis_link import RedisLink
from bot.store.redis_rest import RedisRestSlots

__all__ = ["fleet_rest_pace"]


def fleet_rest_pace(
    settings: Settings, redis: RedisLink | None, shared_quota: SharedQuota | None
) -> SharedPace | None:
    """The fleet's shared pace (REDIS_URL set and DISCORD_REST_SHARED_LIMIT=true), whose local
    share while Redis is down divides by the live instances the quota's heartbeat last saw;
    None: the process paces its own calls (`LocalPace`)."""
    if redis is None or not settings.discord_rest_shared_limit:
        return None
    fleet = shared_quota.fleet if shared_quota is not None else None
    return SharedPace(
        RedisRestSlots(redis, settings.discord_rest_max_rps),
        settings.discord_rest_max_rps,
        live_instances=lambda: fleet.live_instances if fleet is not None else 1,
    )
