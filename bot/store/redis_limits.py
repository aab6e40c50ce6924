"""Per-user cooldowns and the video budgets of a fleet, in Redis: each check is one atomic step.

The rules (what a refusal says, how long to wait) stay in `bot.chat.access`; this module only
keeps the shared state. Keys, under a prefix (`llmbot` by default):

    {p}:cooldown:{user id}         exists while the user cools down (SET NX PX: the first of two
                                   processes asking at once wins, the other sees the wait)
    {p}:video:cooldown:{user id}   the same, for videos
    {p}:video:hour, {p}:video:day  sorted sets: one member per video request ("<seq>:<tokens>",
                                   scored by the time it was counted), pruned to the window by the
                                   script that reads them; never more members than the request cap

Times are the callers' wall clocks, like the quota's (keep the fleet's clocks in sync with NTP).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from bot.store.redis_link import RedisLink

__all__ = ["RedisCooldowns", "RedisVideoBudget", "VideoVerdict"]

# KEYS: the user's cooldown. ARGV: cooldown in ms. Returns 0 (acquired) or the ms left.
_COOLDOWN: Final = """
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
  return 0
end
return left
"""

# KEYS: hour, day, the user's video cooldown, sequence counter. ARGV: now, tokens,
# tokens_per_hour, tokens_per_day, requests_per_hour, requests_per_day, cooldown ms.
# Same checks as VideoLimiter.check; counts the video and starts the cooldown when it fits,
# otherwise returns what the caller needs to say why not: {0, cooldown ms, hour log, day log}.
_VIDEO: Final = """
local now = tonumber(ARGV[1])
local tokens = tonumber(ARGV[2])
local spans = {3600, 86400}
local token_caps = {tonumber(ARGV[3]), tonumber(ARGV[4])}
local request_caps = {tonumber(ARGV[5]), tonumber(ARGV[6])}
local logs = {}
local fits = true
for i = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - spans[i])
  local entries = redis.call('ZRANGE', KEYS[i], 0, -1, 'WITHSCORES')
  local used = 0
  for j = 1, #entries, 2 do
    used = used + tonumber(string.match(entries[j], ':(%d+)$'))
  end
  logs[i] = entries
  if #entries / 2 + 1 > request_caps[i] or used + tokens > token_caps[i] then fits = false end
end
local cooling = redis.call('PTTL', KEYS[3])
if cooling > 0 then fits = false end
if tokens > math.min(token_caps[1], token_caps[2]) then fits = false end
if not fits then return {0, cooling, logs[1], logs[2]} end
local seq = redis.call('INCR', KEYS[4])
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], now, tostring(seq) .. ':' .. tostring(tokens))
  redis.call('PEXPIRE', KEYS[i], spans[i] * 1000 + 60000)
end
if tonumber(ARGV[7]) > 0 then redis.call('SET', KEYS[3], '1', 'PX', ARGV[7]) end
return {1, 0, {}, {}}
"""


class RedisCooldowns:
    """One cooldown per user, shared by every process connected to the same Redis."""

    def __init__(self, link: RedisLink, prefix: str = "llmbot", kind: str = "cooldown") -> None:
        self._link = link
        self._prefix = f"{prefix}:{kind}"
        self._script = link.client.register_script(_COOLDOWN)

    async def try_acquire(self, user_id: int, cooldown_s: float) -> float:
        """0.0 and start the cooldown if the user may go now, else the seconds left (atomic)."""
        keys = [f"{self._prefix}:{user_id}"]
        args = [max(1, round(cooldown_s * 1000))]
        left: Any = await self._link.run("limits", lambda: self._script(keys=keys, args=args))
        return int(left) / 1000


@dataclass(frozen=True, slots=True)
class VideoVerdict:
    """One video request: counted, or refused with the state the refusal is explained from
    (`hour`/`day`: (time counted, tokens) oldest first, within the window)."""

    counted: bool
    cooldown_s: float = 0.0
    hour: tuple[tuple[float, int], ...] = ()
    day: tuple[tuple[float, int], ...] = ()


def _log(raw: list[Any]) -> tuple[tuple[float, int], ...]:
    pairs = []
    for member, score in zip(raw[::2], raw[1::2], strict=True):
        text = member.decode() if isinstance(member, bytes) else str(member)
        pairs.append((float(score), int(text.rsplit(":", 1)[1])))
    return tuple(pairs)


class RedisVideoBudget:
    """The bot-wide video windows and per-user video cooldowns, shared by the fleet."""

    def __init__(self, link: RedisLink, prefix: str = "llmbot") -> None:
        self._link = link
        self._prefix = f"{prefix}:video"
        self._script = link.client.register_script(_VIDEO)

    async def try_acquire(
        self,
        *,
        user_id: int,
        tokens: int,
        now: float,
        token_caps: tuple[int, int],
        request_caps: tuple[int, int],
        cooldown_s: float,
    ) -> VideoVerdict:
        """Count a video of `tokens` for `user_id` if it fits both windows and the user is not
        cooling down (atomic across the fleet); otherwise what the windows hold."""
        p = self._prefix
        keys = [f"{p}:hour", f"{p}:day", f"{p}:cooldown:{user_id}", f"{p}:seq"]
        args = [now, tokens, *token_caps, *request_caps, round(cooldown_s * 1000)]
        raw: list[Any] = await self._link.run("limits", lambda: self._script(keys=keys, args=args))
        if int(raw[0]) == 1:
            return VideoVerdict(counted=True)
        return VideoVerdict(
            counted=False,
            cooldown_s=max(0, int(raw[1])) / 1000,
            hour=_log(raw[2]),
            day=_log(raw[3]),
        )
