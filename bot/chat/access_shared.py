"""Per-user cooldowns and video budgets of a fleet (REDIS_URL): the same rules as
`bot.chat.access`, with the state in Redis so that a user cooling down on one process is cooling
down on every process, and the video windows count every process's videos.

Each check is one atomic Redis step (SET NX PX for a cooldown, one Lua script for a video), so
two processes checking the same user at once cannot both pass. While Redis is unreachable each
process falls back to its own in-process `UserCooldown` / `VideoLimiter` (a user may then get
one request per process per cooldown, and each process spends up to the whole video budget:
the risk is bounded by the outage); Redis is tried again every couple of seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.chat.access import UserCooldown, VideoLimiter
from bot.chat.refusal import Refusal
from bot.resilience.fleet_fallback import FleetFallback
from bot.store.redis_limits import RedisCooldowns, RedisVideoBudget
from bot.store.redis_link import RedisUnavailable

__all__ = ["SharedCooldown", "SharedVideoLimiter"]


class SharedCooldown:
    """A `CooldownGate` kept in Redis; `local` while Redis is away."""

    def __init__(
        self, cooldowns: RedisCooldowns, local: UserCooldown, fallback: FleetFallback | None = None
    ) -> None:
        self._redis = cooldowns
        self.local = local
        self.fallback = fallback or FleetFallback("cooldowns")

    @property
    def cooldown_s(self) -> float:
        return self.local.cooldown_s

    async def acquire(self, user_id: int) -> float:
        if self.local.cooldown_s == 0:
            return 0.0
        if self.fallback.try_redis():
            try:
                wait = await self._redis.try_acquire(user_id, self.local.cooldown_s)
            except RedisUnavailable as exc:
                self.fallback.failed(exc)
            else:
                self.fallback.succeeded()
                return wait
        return self.local.try_acquire(user_id)


class SharedVideoLimiter:
    """A `VideoGate` whose windows and cooldowns are in Redis; `local` while Redis is away."""

    def __init__(
        self,
        budget: RedisVideoBudget,
        local: VideoLimiter,
        *,
        cooldown_s: float,
        fallback: FleetFallback | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = budget
        self.local = local
        self.cooldown_s = cooldown_s
        self.fallback = fallback or FleetFallback("video budgets")
        self._clock = clock  # wall clock: the fleet's windows are compared across machines

    async def acquire(self, user_id: int, estimated_tokens: int) -> Refusal | None:
        if estimated_tokens < 0:
            raise ValueError(f"estimated_tokens must not be negative, got {estimated_tokens}")
        if self.fallback.try_redis():
            now = self._clock()
            limits = self.local
            try:
                verdict = await self._redis.try_acquire(
                    user_id=user_id,
                    tokens=estimated_tokens,
                    now=now,
                    token_caps=(limits.tokens_per_hour, limits.tokens_per_day),
                    request_caps=(limits.requests_per_hour, limits.requests_per_day),
                    cooldown_s=self.cooldown_s,
                )
            except RedisUnavailable as exc:
                self.fallback.failed(exc)
            else:
                self.fallback.succeeded()
                if verdict.counted:
                    return None
                return limits.explain(
                    verdict.cooldown_s, estimated_tokens, verdict.hour, verdict.day, now
                )
        return self.local.try_acquire(user_id, estimated_tokens)
