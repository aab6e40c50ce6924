"""The fleet's response cache in Redis: LRU with a TTL, bounded by entries and bytes fleet-wide.

Every operation is one Lua script, atomic across processes. Keys, under a prefix (`llmbot` by
default):

    {p}:cache:v        hash: cache key (a sha256 hex) -> the encoded answer
    {p}:cache:m        hash: cache key -> "<size> <tag>" (bytes counted, conversation tag)
    {p}:cache:lru      sorted set: cache key -> last use (the LRU order)
    {p}:cache:exp      sorted set: cache key -> expiry time
    {p}:cache:bytes    the bytes of every entry together
    {p}:cache:t:{tag}  set: the keys stored for one conversation (for /clear)

Why sorted sets rather than Redis key TTLs and a count: the bound must be exact and the evicted
entry the least recently used one fleet-wide, and an expired entry must take its bytes and tag
with it; with one script trimming `lru` after each store, the cache never holds more than
`max_entries` entries nor `max_bytes` bytes, whatever the number of processes. Expired entries
are dropped when read, by each store (up to 100 at a time) and by the periodic sweep.
Times are the callers' wall clocks (keep the fleet's clocks in sync with NTP, as for the quota).
The tag sets' names are built inside the scripts: this needs one Redis, not a Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from bot.store.redis_link import RedisLink

__all__ = ["CacheFigures", "RedisCacheEntries"]

# Shared by every script: KEYS v, m, lru, exp, bytes; ARGV[1] the tag sets' prefix.
_REMOVE: Final = """
local function remove(key)
  local meta = redis.call('HGET', KEYS[2], key)
  if not meta then
    redis.call('ZREM', KEYS[3], key)
    redis.call('ZREM', KEYS[4], key)
    return 0
  end
  local size, tag = string.match(meta, '^(%d+) (.*)$')
  redis.call('HDEL', KEYS[1], key)
  redis.call('HDEL', KEYS[2], key)
  redis.call('ZREM', KEYS[3], key)
  redis.call('ZREM', KEYS[4], key)
  redis.call('DECRBY', KEYS[5], size)
  if tag ~= '' then redis.call('SREM', ARGV[1] .. tag, key) end
  return 1
end
local function expire(now, limit)
  local keys = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, limit)
  for _, key in ipairs(keys) do remove(key) end
  return #keys
end
local function figures()
  return {redis.call('ZCARD', KEYS[3]), tonumber(redis.call('GET', KEYS[5]) or '0')}
end
"""

# ARGV: tag prefix, key, now. Returns {outcome (1 hit, 0 miss, -1 expired), entries, bytes, value}.
_GET: Final = (
    _REMOVE
    + """
local key, now = ARGV[2], tonumber(ARGV[3])
local expires = redis.call('ZSCORE', KEYS[4], key)
if not expires then
  local f = figures()
  return {0, f[1], f[2], false}
end
if tonumber(expires) <= now then
  remove(key)
  local f = figures()
  return {-1, f[1], f[2], false}
end
redis.call('ZADD', KEYS[3], now, key)
local f = figures()
return {1, f[1], f[2], redis.call('HGET', KEYS[1], key)}
"""
)

# ARGV: tag prefix, key, value, size, tag ('' for none), now, ttl, max entries, max bytes.
# Returns {expired evicted, lru evicted, entries, bytes}.
_PUT: Final = (
    _REMOVE
    + """
local key, size, tag = ARGV[2], tonumber(ARGV[4]), ARGV[5]
local now, ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
local max_entries, max_bytes = tonumber(ARGV[8]), tonumber(ARGV[9])
remove(key)
local expired = expire(now, 100)
redis.call('HSET', KEYS[1], key, ARGV[3])
redis.call('HSET', KEYS[2], key, tostring(size) .. ' ' .. tag)
redis.call('ZADD', KEYS[3], now, key)
redis.call('ZADD', KEYS[4], now + ttl, key)
redis.call('INCRBY', KEYS[5], size)
if tag ~= '' then redis.call('SADD', ARGV[1] .. tag, key) end
local lru = 0
while redis.call('ZCARD', KEYS[3]) > max_entries
    or tonumber(redis.call('GET', KEYS[5]) or '0') > max_bytes do
  local oldest = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  if not oldest then break end
  remove(oldest)
  lru = lru + 1
end
local f = figures()
return {expired, lru, f[1], f[2]}
"""
)

# ARGV: tag prefix, tag. Returns {removed, entries, bytes}.
_CLEAR_TAG: Final = (
    _REMOVE
    + """
local removed = 0
for _, key in ipairs(redis.call('SMEMBERS', ARGV[1] .. ARGV[2])) do
  removed = removed + remove(key)
end
redis.call('DEL', ARGV[1] .. ARGV[2])
local f = figures()
return {removed, f[1], f[2]}
"""
)

# ARGV: tag prefix, now. Returns {expired, entries, bytes}.
_SWEEP: Final = (
    _REMOVE
    + """
local expired = expire(tonumber(ARGV[2]), 1000)
local f = figures()
return {expired, f[1], f[2]}
"""
)


@dataclass(frozen=True, slots=True)
class CacheFigures:
    """What one script did and saw: entries removed (by reason), the fleet cache's size."""

    entries: int
    bytes: int
    expired: int = 0
    lru: int = 0
    cleared: int = 0


class RedisCacheEntries:
    """The fleet's cache entries: values are opaque bytes (the caller encodes answers)."""

    def __init__(self, link: RedisLink, prefix: str = "llmbot") -> None:
        self._link = link
        base = f"{prefix}:cache"
        self._keys = [f"{base}:v", f"{base}:m", f"{base}:lru", f"{base}:exp", f"{base}:bytes"]
        self._tags = f"{base}:t:"
        client = link.client
        self._get = client.register_script(_GET)
        self._put = client.register_script(_PUT)
        self._clear_tag = client.register_script(_CLEAR_TAG)
        self._sweep = client.register_script(_SWEEP)

    async def _call(self, script: Any, *args: object) -> list[Any]:
        argv = [self._tags, *args]
        result: list[Any] = await self._link.run(
            "cache", lambda: script(keys=self._keys, args=argv)
        )
        return result

    async def get(self, key: str, now: float) -> tuple[bytes | None, bool, CacheFigures]:
        """(value or None, whether it had expired, figures); a hit counts as a use (LRU)."""
        raw = await self._call(self._get, key, now)
        expired = int(raw[0]) == -1
        figures = CacheFigures(int(raw[1]), int(raw[2]), expired=int(expired))
        value = raw[3] if int(raw[0]) == 1 and isinstance(raw[3], bytes) else None
        return value, expired, figures

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        size: int,
        tag: str,
        now: float,
        ttl_s: float,
        max_entries: int,
        max_bytes: int,
    ) -> CacheFigures:
        """Store (replacing the same key), then evict expired and least recently used entries
        until the fleet's cache is within `max_entries` and `max_bytes`."""
        raw = await self._call(self._put, key, value, size, tag, now, ttl_s, max_entries, max_bytes)
        return CacheFigures(int(raw[2]), int(raw[3]), expired=int(raw[0]), lru=int(raw[1]))

    async def clear_tag(self, tag: str) -> CacheFigures:
        raw = await self._call(self._clear_tag, tag)
        return CacheFigures(int(raw[1]), int(raw[2]), cleared=int(raw[0]))

    async def sweep(self, now: float) -> CacheFigures:
        raw = await self._call(self._sweep, now)
        return CacheFigures(int(raw[1]), int(raw[2]), expired=int(raw[0]))
