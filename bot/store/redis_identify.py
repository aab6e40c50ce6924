"""Discord's identify rule across the processes of a fleet, coordinated through Redis.

Discord lets a bot IDENTIFY one shard per bucket (`shard_id % max_concurrency`) every 5 s.
hikari keeps that rule among the shards of one process only, so the processes of a fleet take
turns: a process holds the fleet's identify lock (`SET NX PX`) while its shards identify, and
keeps it for the 5 s bucket interval after the last one before handing it on. That is stricter
than the rule when `max_concurrency` > 1 (processes never identify at once), never looser.
The lock has a time to live, so a process that dies holding it blocks the others for at most
`ttl_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

from bot.store.redis_link import RedisLink

__all__ = ["IDENTIFY_BUCKET_S", "IdentifyTurns"]

IDENTIFY_BUCKET_S: Final = 5.0  # Discord: one IDENTIFY per bucket per 5 seconds
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class IdentifyTurns:
    """`async with turns.turn(): await gateway.start()`: one process identifies at a time."""

    def __init__(
        self,
        link: RedisLink,
        instance: str,
        *,
        prefix: str = "llmbot",
        ttl_s: float = 120.0,
        interval_s: float = IDENTIFY_BUCKET_S,
        poll_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._link = link
        self.instance = instance
        self._key = f"{prefix}:identify:lock"
        self._ttl_ms = int(ttl_s * 1000)
        self._interval_s = interval_s
        self._poll_s = poll_s
        self._clock = clock
        self._release = link.client.register_script(_RELEASE)
        self.waited_s = 0.0  # how long the last turn waited for the lock
        self._handover: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        started = self._clock()
        while True:  # the lock lives in Redis: nothing to wait on here but time
            taken = await self._link.run(
                "identify",
                lambda: self._link.client.set(self._key, self.instance, nx=True, px=self._ttl_ms),
            )
            if taken:
                break
            await asyncio.sleep(self._poll_s)
        self.waited_s = self._clock() - started
        try:
            yield
        finally:
            # The last IDENTIFY went out before start() returned: the bucket is free 5 s
            # later. The hand-over waits in the background, so start-up does not.
            self._handover = asyncio.get_running_loop().create_task(self._hand_over())

    async def _hand_over(self) -> None:
        await asyncio.sleep(self._interval_s)
        await self._release_lock()

    async def _release_lock(self) -> None:
        """Delete the lock if this process still holds it (never another's)."""
        with contextlib.suppress(Exception):
            await self._link.run(
                "identify", lambda: self._release(keys=[self._key], args=[self.instance])
            )

    async def close(self) -> None:
        """Hand the lock over at once if this process still holds it (the shards have
        identified or are closing anyway; the lock's time to live bounds a crash)."""
        task, self._handover = self._handover, None
        if task is None:
            return
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._release_lock()
