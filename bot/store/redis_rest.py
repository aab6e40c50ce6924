"""The fleet's Discord REST pace in Redis: one Lua script, one atomic round trip per call.

Discord allows a bot 50 REST requests per second across every route and every process that
uses its token; the bot spends DISCORD_REST_MAX_RPS (45) of them. A single process spaces its
calls with an in-process limiter (`aiolimiter`, `LocalPace`: a small burst). A fleet keeps one
schedule in Redis, as a GCRA ("generic cell rate algorithm", a token bucket of capacity 1 held
as one number): the key holds the theoretical arrival time (TAT) of the fleet's next free slot,
in microseconds of Redis's own clock.

* `reserve`: take the next free slot, however far ahead, and return how long to wait for it;
  the caller sleeps that long and sends. One round trip, no polling, no herd of retries, and
  the fleet's calls are served in the order they asked, whichever process they come from.
* `take_if_free`: take a slot only if one is free now (the TAT is not ahead of now); used by
  cosmetic calls (typing), so that they never take a turn a reply of any process waits for.

Why a script of our own and not the `limits` library (whose async Redis storage was the other
candidate): its strategies answer "allowed or not" (`hit`) and "when does the window reset"
(`get_window_stats`) in separate round trips, so a waiting caller polls, and nothing in it
reserves a future slot; its moving window allows a burst of the whole budget in one instant
instead of even spacing; and it opens a connection pool of its own beside `RedisLink`, outside
the bot's Redis metrics, timeout and password redaction. The script is twelve lines.

Times come from Redis (`TIME`), not the callers: 22 ms slots need no clock agreement between
the fleet's machines (scripts replicate their effects since Redis 5, so TIME is allowed).
Key, under a prefix (`llmbot` by default): `{p}:discord:rest:tat`, expiring a second after the
last reserved slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from bot.store.redis_link import RedisLink

__all__ = ["RedisRestSlots", "SlotResult"]

# KEYS: tat. ARGV: interval (µs), mode ("reserve" | "free"), max_wait (µs).
# Returns {taken (1/0), wait (µs): until the slot taken, or until the next free one, and the
# slot's time (µs, Redis clock; as a string, beyond Lua's integer conversion)}.
_SLOT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now
local slot = string.format('%.0f', tat)
if (ARGV[2] == 'free' and wait > 0) or wait > tonumber(ARGV[3]) then return {0, wait, slot} end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat),
           'PX', math.floor((next_tat - now) / 1000) + 1000)
return {1, wait, slot}
"""


@dataclass(frozen=True, slots=True)
class SlotResult:
    """A slot taken (`wait_s` until it comes), or refused (`wait_s` until the next free one)."""

    taken: bool
    wait_s: float
    at_s: float = 0.0  # when the slot is (or the next free one would be), Redis's epoch clock


class RedisRestSlots:
    """The fleet's evenly spaced REST slots, `rps` a second, shared through Redis."""

    def __init__(
        self, link: RedisLink, rps: float, *, max_wait_s: float = 10.0, prefix: str = "llmbot"
    ) -> None:
        if rps <= 0:
            raise ValueError("rps must be positive")
        self._link = link
        # Rounded up: never a slot shorter than 1/rps.
        self._interval_us = math.ceil(1_000_000 / rps)
        self._max_wait_us = int(max_wait_s * 1_000_000)
        self._key = f"{prefix}:discord:rest:tat"
        self._script = link.client.register_script(_SLOT)

    async def _run(self, mode: str) -> SlotResult:
        keys = [self._key]
        args: list[str | int] = [self._interval_us, mode, self._max_wait_us]
        raw: list[Any] = await self._link.run("rest", lambda: self._script(keys=keys, args=args))
        return SlotResult(
            taken=int(raw[0]) == 1,
            wait_s=max(0, int(raw[1])) / 1_000_000,
            at_s=int(raw[2]) / 1_000_000,
        )

    async def reserve(self) -> SlotResult:
        """The fleet's next free slot (refused only when it is more than `max_wait_s` away)."""
        return await self._run("reserve")

    async def take_if_free(self) -> SlotResult:
        """A slot now, or none: never one that a waiting call of any process needs."""
        return await self._run("free")

    async def probe(self) -> None:
        """One PING (raises RedisUnavailable): is Redis back?"""
        await self._link.ping()
