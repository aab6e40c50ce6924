"""The fleet's quota counters in Redis: three small Lua scripts, each one atomic round trip.

The window arithmetic (which minute, which Pacific day, effective limits) stays in
`bot.llm.quota`; this module only counts. Keys, under a prefix (`llmbot` by default):

    {p}:quota:m:{minute id}        requests this minute      expires a minute after the window
    {p}:quota:d:{day id}           requests this day         expires an hour after the window
    {p}:quota:t:{minute id}        tokens this minute        (only with a TPM limit)
    {p}:quota:cap:{minute id}      this minute's limit after a provider 429
    {p}:quota:hold                 hash {until, window}: a provider 429 holds every process
    {p}:instances                  sorted set: instance id -> last heartbeat (epoch seconds);
                                   silent ones are dropped by the next heartbeat

Times are the callers' wall clocks (the windows are calendar windows; keep the fleet's clocks
in sync with NTP, as Gemini's own windows assume anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from bot.store.redis_link import RedisLink

__all__ = ["AcquireResult", "FleetFigures", "HoldResult", "RedisQuotaCounters"]

# KEYS: minute, day, tokens, cap, hold. ARGV: now, minute_end, day_end, minute_limit,
# day_limit, token_limit (-1: none). Same order of checks as QuotaLimiter.try_acquire.
_ACQUIRE: Final = """
local now = tonumber(ARGV[1])
local minute_end = tonumber(ARGV[2])
local day_end = tonumber(ARGV[3])
local minute_limit = tonumber(ARGV[4])
local day_limit = tonumber(ARGV[5])
local token_limit = tonumber(ARGV[6])
local minute_used = tonumber(redis.call('GET', KEYS[1]) or '0')
local day_used = tonumber(redis.call('GET', KEYS[2]) or '0')
local hold = redis.call('HMGET', KEYS[5], 'until', 'window')
local blocked_until = tonumber(hold[1] or '0')
local blocked_window = hold[2] or 'minute'
local blocked_for = blocked_until - now
local cap = tonumber(redis.call('GET', KEYS[4]) or '-1')
local limit = minute_limit
if cap >= 0 and cap < limit then limit = cap end
local function refuse(window, wait)
  return {0, window, tostring(wait), minute_used, day_used, limit, tostring(blocked_until)}
end
if day_used >= day_limit then
  return refuse('day', math.max(day_end - now, blocked_for))
end
if blocked_for > 0 then return refuse(blocked_window, blocked_for) end
if minute_used >= limit then return refuse('minute', minute_end - now) end
if token_limit >= 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= token_limit then
  return refuse('tokens', minute_end - now)
end
minute_used = redis.call('INCR', KEYS[1])
redis.call('PEXPIREAT', KEYS[1], math.ceil((minute_end + 60) * 1000))
day_used = redis.call('INCR', KEYS[2])
redis.call('PEXPIREAT', KEYS[2], math.ceil((day_end + 3600) * 1000))
return {1, '', '0', minute_used, day_used, limit, tostring(blocked_until)}
"""

# KEYS: minute, cap, hold. ARGV: now, minute_end, day_end, delay, max_hold.
# Same arithmetic as QuotaLimiter.on_provider_rate_limited.
_PROVIDER_429: Final = """
local now = tonumber(ARGV[1])
local minute_end = tonumber(ARGV[2])
local day_end = tonumber(ARGV[3])
local delay = tonumber(ARGV[4])
local max_hold = tonumber(ARGV[5])
local used = redis.call('GET', KEYS[1]) or '0'
redis.call('SET', KEYS[2], used, 'PXAT', math.ceil((minute_end + 60) * 1000))
local hold = redis.call('HMGET', KEYS[3], 'until', 'window')
local blocked_until = tonumber(hold[1] or '0')
local window = hold[2] or 'minute'
if blocked_until <= now then window = 'minute' end
if delay > max_hold then
  window = 'day'
  blocked_until = math.max(blocked_until, math.min(now + delay, day_end))
else
  blocked_until = math.max(blocked_until, now + delay, minute_end)
end
redis.call('HSET', KEYS[3], 'until', tostring(blocked_until), 'window', window)
redis.call('PEXPIREAT', KEYS[3], math.ceil((blocked_until + 1) * 1000))
return {window, tostring(blocked_until)}
"""

# KEYS: instances, minute, day, cap, hold. ARGV: now, instance id, ttl, minute_limit.
# Registers this instance, forgets the silent ones, and reads the fleet's figures.
_HEARTBEAT: Final = """
local now = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
redis.call('PEXPIREAT', KEYS[1], math.ceil((now + tonumber(ARGV[3]) + 3600) * 1000))
local cap = tonumber(redis.call('GET', KEYS[4]) or '-1')
local limit = tonumber(ARGV[4])
if cap >= 0 and cap < limit then limit = cap end
local hold = redis.call('HMGET', KEYS[5], 'until', 'window')
return {redis.call('ZCARD', KEYS[1]), tonumber(redis.call('GET', KEYS[2]) or '0'),
        tonumber(redis.call('GET', KEYS[3]) or '0'), limit, hold[1] or '0', hold[2] or 'minute'}
"""


@dataclass(frozen=True, slots=True)
class AcquireResult:
    """One acquire: allowed or the refusing window ("tokens" for the TPM limit), and the
    fleet's counts as the script saw them."""

    allowed: bool
    window: str
    retry_after_s: float
    minute_used: int
    day_used: int
    minute_limit: int
    blocked_until: float


@dataclass(frozen=True, slots=True)
class HoldResult:
    window: str
    blocked_until: float


@dataclass(frozen=True, slots=True)
class FleetFigures:
    """What a heartbeat reads: live instances and the fleet's counts in the current windows."""

    live_instances: int
    minute_used: int
    day_used: int
    minute_limit: int
    blocked_until: float
    blocked_window: str


class RedisQuotaCounters:
    """The quota's counters, shared by every process connected to the same Redis."""

    def __init__(self, link: RedisLink, prefix: str = "llmbot") -> None:
        self._link = link
        self._prefix = prefix
        client = link.client
        self._acquire = client.register_script(_ACQUIRE)
        self._provider_429 = client.register_script(_PROVIDER_429)
        self._heartbeat = client.register_script(_HEARTBEAT)

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, "quota", *parts))

    def _keys(self, minute_id: str, day_id: str) -> list[str]:
        return [
            self._key("m", minute_id),
            self._key("d", day_id),
            self._key("t", minute_id),
            self._key("cap", minute_id),
            self._key("hold"),
        ]

    async def acquire(
        self,
        *,
        now: float,
        minute: tuple[str, float],
        day: tuple[str, float],
        minute_limit: int,
        day_limit: int,
        token_limit: int | None,
    ) -> AcquireResult:
        """Take one request slot in both windows if the fleet has room (atomic)."""
        args = [
            now,
            minute[1],
            day[1],
            minute_limit,
            day_limit,
            -1 if token_limit is None else token_limit,
        ]
        keys = self._keys(minute[0], day[0])
        raw: list[Any] = await self._link.run("quota", lambda: self._acquire(keys=keys, args=args))
        return AcquireResult(
            allowed=int(raw[0]) == 1,
            window=_text(raw[1]),
            retry_after_s=max(0.0, float(_text(raw[2]))),
            minute_used=int(raw[3]),
            day_used=int(raw[4]),
            minute_limit=int(raw[5]),
            blocked_until=float(_text(raw[6])),
        )

    async def add(
        self,
        *,
        minute: tuple[str, float],
        day: tuple[str, float],
        minute_requests: int,
        day_requests: int,
    ) -> None:
        """Count requests made without Redis (in the fallback) once it is back."""
        m, d = self._key("m", minute[0]), self._key("d", day[0])

        async def command() -> None:
            async with self._link.client.pipeline(transaction=True) as pipe:
                pipe.incrby(m, minute_requests)
                pipe.pexpireat(m, int((minute[1] + 60) * 1000))
                pipe.incrby(d, day_requests)
                pipe.pexpireat(d, int((day[1] + 3600) * 1000))
                await pipe.execute()

        await self._link.run("quota", command)

    async def add_tokens(self, *, minute: tuple[str, float], tokens: int) -> None:
        key = self._key("t", minute[0])

        async def command() -> None:
            async with self._link.client.pipeline(transaction=True) as pipe:
                pipe.incrby(key, tokens)
                pipe.pexpireat(key, int((minute[1] + 60) * 1000))
                await pipe.execute()

        await self._link.run("quota", command)

    async def provider_rate_limited(
        self,
        *,
        now: float,
        minute: tuple[str, float],
        day: tuple[str, float],
        delay_s: float,
        max_hold_s: float,
    ) -> HoldResult:
        """A provider 429 seen by one process: cap this minute and hold every process."""
        keys = [self._key("m", minute[0]), self._key("cap", minute[0]), self._key("hold")]
        args = [now, minute[1], day[1], delay_s, max_hold_s]
        raw: list[Any] = await self._link.run(
            "quota", lambda: self._provider_429(keys=keys, args=args)
        )
        return HoldResult(window=_text(raw[0]), blocked_until=float(_text(raw[1])))

    async def heartbeat(
        self,
        *,
        now: float,
        instance: str,
        ttl_s: float,
        minute: tuple[str, float],
        day: tuple[str, float],
        minute_limit: int,
    ) -> FleetFigures:
        """Register `instance` as live for `ttl_s` and read the fleet's figures."""
        keys = [
            f"{self._prefix}:instances",
            self._key("m", minute[0]),
            self._key("d", day[0]),
            self._key("cap", minute[0]),
            self._key("hold"),
        ]
        args: list[str | float] = [now, instance, ttl_s, minute_limit]
        raw: list[Any] = await self._link.run(
            "heartbeat", lambda: self._heartbeat(keys=keys, args=args)
        )
        return FleetFigures(
            live_instances=int(raw[0]),
            minute_used=int(raw[1]),
            day_used=int(raw[2]),
            minute_limit=int(raw[3]),
            blocked_until=float(_text(raw[4])),
            blocked_window=_text(raw[5]),
        )

    async def leave(self, instance: str) -> None:
        """Deregister at a graceful stop, so the others' share grows at once."""
        key = f"{self._prefix}:instances"
        await self._link.run("heartbeat", lambda: self._link.client.zrem(key, instance))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
