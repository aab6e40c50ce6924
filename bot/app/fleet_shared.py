"""Builds the state a fleet shares through Redis besides the quota: the response cache, per-user
cooldowns and video budgets (each with its in-process stand-in). Without REDIS_URL each is the
in-process one, exactly as in a single process."""

from __future__ import annotations

import asyncio

from bot.chat.access import CooldownGate, UserCooldown, VideoGate, VideoLimiter
from bot.chat.access_shared import SharedCooldown, SharedVideoLimiter
from bot.chat.fleet_clear import CHANNEL as CLEAR_CHANNEL
from bot.chat.fleet_clear import FleetClear
from bot.chat.pipeline import ChatPipeline
from bot.config import Settings
from bot.llm.cache import AnswerCache, ResponseCache
from bot.llm.cache_shared import SharedResponseCache
from bot.resilience.degradation import DegradationState
from bot.resilience.fleet_fallback import FleetFallback, FleetFallbackStats, FleetPart
from bot.resilience.fleet_overrides import CHANNEL as OVERRIDES_CHANNEL
from bot.resilience.fleet_overrides import FleetOverrides
from bot.store.redis_cache import RedisCacheEntries
from bot.store.redis_limits import RedisCooldowns, RedisVideoBudget
from bot.store.redis_link import RedisLink
from bot.store.redis_pubsub import RedisChannels

__all__ = ["FleetFollowers", "SharedState"]


class SharedState:
    """The response cache, cooldown and video budgets this process uses: on Redis with their
    in-process stand-ins (REDIS_URL), else the in-process ones; `fallbacks` (by the `part`
    label of `llmbot_fleet_fallback`) says which are on their stand-in now."""

    def __init__(self, s: Settings, redis: RedisLink | None) -> None:
        self.fallbacks: dict[FleetPart, FleetFallback] = {}
        cache = ResponseCache(s.cache_max_entries, s.cache_max_bytes, s.cache_ttl_seconds)
        cooldown = UserCooldown(s.user_cooldown_seconds)
        video = VideoLimiter(
            tokens_per_hour=s.video_tokens_per_hour,
            tokens_per_day=s.video_tokens_per_day,
            requests_per_hour=s.video_requests_per_hour,
            requests_per_day=s.video_requests_per_day,
            cooldown_s=s.video_user_cooldown_seconds,
        )
        self.cache: AnswerCache = cache
        self.cooldown: CooldownGate = cooldown
        self.video: VideoGate = video
        if redis is None:
            return
        if cache.enabled:  # CACHE_MAX_ENTRIES=0: off, in a fleet too
            shared_cache = SharedResponseCache(RedisCacheEntries(redis), cache)
            self.cache, self.fallbacks["cache"] = shared_cache, shared_cache.fallback
        shared_cooldown = SharedCooldown(RedisCooldowns(redis), cooldown)
        self.cooldown, self.fallbacks["cooldowns"] = shared_cooldown, shared_cooldown.fallback
        shared_video = SharedVideoLimiter(
            RedisVideoBudget(redis), video, cooldown_s=s.video_user_cooldown_seconds
        )
        self.video, self.fallbacks["video"] = shared_video, shared_video.fallback

    def fallback_stats(self) -> dict[str, FleetFallbackStats]:
        return {part: fallback.stats for part, fallback in self.fallbacks.items()}


class FleetFollowers:
    """What a process hears from the fleet besides alerts and maintenance: /clear made on
    another process, and fleet-wide degradation overrides (restored at start)."""

    def __init__(
        self,
        channels: RedisChannels,
        pipeline: ChatPipeline,
        degradation: DegradationState,
        instance: str,
    ) -> None:
        self._channels = channels
        self.clear = FleetClear(pipeline, channels, instance)
        self.overrides = FleetOverrides(degradation, channels, instance)

    async def start(self, instance: str) -> list[asyncio.Task[None]]:
        """Restore the fleet's overrides and listen (`instance`: this process's, known now)."""
        self.clear.instance = self.overrides.instance = instance
        await self.overrides.restore()
        return [
            asyncio.create_task(
                self._channels.listen([CLEAR_CHANNEL], self.clear.deliver),
                name="fleet /clear listener",
            ),
            asyncio.create_task(
                self._channels.listen([OVERRIDES_CHANNEL], self.overrides.deliver),
                name="fleet overrides listener",
            ),
        ]

    async def join(self) -> None:
        """Wait for what this process is still telling the fleet."""
        await self.clear.join()
        await self.overrides.join()
