"""Builds the state a fleet shares through Redis besides the quota: the response cache, per-user
cooldowns and video budgets (each with its in-process stand-in). Without REDIS_URL each is the
in-process one, exactly as in a single process."""

from __future__ import annotations

from bot.chat.access import CooldownGate, UserCooldown, VideoGate, VideoLimiter
from bot.chat.access_shared import SharedCooldown, SharedVideoLimiter
from bot.config import Settings
from bot.llm.cache import AnswerCache, ResponseCache
from bot.llm.cache_shared import SharedResponseCache
from bot.store.redis_cache import RedisCacheEntries
from bot.store.redis_limits import RedisCooldowns, RedisVideoBudget
from bot.store.redis_link import RedisLink

__all__ = ["build_cache", "build_cooldown", "build_video_limiter"]


def build_cache(s: Settings, redis: RedisLink | None) -> AnswerCache:
    local = ResponseCache(s.cache_max_entries, s.cache_max_bytes, s.cache_ttl_seconds)
    if redis is None or not local.enabled:
        return local
    return SharedResponseCache(RedisCacheEntries(redis), local)


def build_cooldown(s: Settings, redis: RedisLink | None) -> CooldownGate:
    local = UserCooldown(s.user_cooldown_seconds)
    return local if redis is None else SharedCooldown(RedisCooldowns(redis), local)


def build_video_limiter(s: Settings, redis: RedisLink | None) -> VideoGate:
    local = VideoLimiter(
        tokens_per_hour=s.video_tokens_per_hour,
        tokens_per_day=s.video_tokens_per_day,
        requests_per_hour=s.video_requests_per_hour,
        requests_per_day=s.video_requests_per_day,
        cooldown_s=s.video_user_cooldown_seconds,
    )
    if redis is None:
        return local
    return SharedVideoLimiter(
        RedisVideoBudget(redis), local, cooldown_s=s.video_user_cooldown_seconds
    )
