"""When to show "Bot is typing…": never at the cost of a reply.

Typing calls and replies share Discord's REST budget (DISCORD_REST_MAX_RPS, paced by
`DiscordDelivery.pace`). Before this scheduler every waiting message started a typing loop of its
own after a second and refreshed it every 8 s, and the calls took their turn at the pace like
replies: a 3,000-message burst gave 2,860 typing calls and 412 replies in 80 s (~5 replies/s).

`TypingScheduler` gives replies the priority:

* one typing loop per channel at a time, however many messages of that channel are being
  answered (a trigger lasts 10 s and shows for the whole channel anyway);
* a trigger is sent only when the REST budget is spare (`DiscordDelivery.rest_budget_spare`:
  no call is waiting for the pace, the pace has room now, and Discord's breaker is not open);
  otherwise the loop tries again a little later, and skips are counted; the trigger itself
  takes a turn only if one is free at that moment (in a fleet, free in the schedule shared
  through Redis, so a typing trigger never takes a turn another process's reply waits for);
* the loop starts only once an answer has taken `delay_s` (DISCORD_TYPING_DELAY_SECONDS) and
  stops as soon as the message's handling ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import hikari

__all__ = ["TYPING_REFRESH_S", "TypingScheduler", "TypingStats"]

log = logging.getLogger(__name__)

TYPING_REFRESH_S = 8.0  # a trigger shows for 10 s: refresh a little before it fades
SPARE_RETRY_S = 0.5  # no spare budget: look again this much later


@dataclass
class TypingStats:
    """Typing triggers sent, and the times one was due but the REST budget was not spare."""

    sent: int = 0
    skipped: int = 0
    loops: int = 0  # channels showing typing now


@dataclass
class _Channel:
    holders: int
    task: asyncio.Task[None]


class TypingScheduler:
    """At most one typing loop per channel, triggering only with spare REST budget."""

    def __init__(
        self,
        trigger: Callable[[int], Awaitable[object]],
        spare: Callable[[], bool],
        *,
        delay_s: float = 0.0,
        refresh_s: float = TYPING_REFRESH_S,
        retry_s: float = SPARE_RETRY_S,
    ) -> None:
        self._trigger = trigger
        self._spare = spare
        self._delay_s = delay_s
        self._refresh_s = refresh_s
        self._retry_s = retry_s
        # Bounded by the messages being answered at once (MAX_CONCURRENT_MESSAGES).
        self._channels: dict[int, _Channel] = {}
        self.stats = TypingStats()

    @contextlib.asynccontextmanager
    async def typing(self, channel_id: int) -> AsyncIterator[None]:
        """Show typing in the channel (when budget allows) while the block runs."""
        release = self.hold(channel_id)
        try:
            yield
        finally:
            release()

    def hold(self, channel_id: int) -> Callable[[], None]:
        """Show typing in the channel (when budget allows) until the returned callable is
        called (idempotent: a streamed answer calls it at its first words, the handler again
        when it ends)."""
        entry = self._channels.get(channel_id)
        if entry is None:
            task = asyncio.create_task(self._loop(channel_id), name="typing")
            entry = self._channels[channel_id] = _Channel(0, task)
            self.stats.loops = len(self._channels)
        entry.holders += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            entry.holders -= 1
            if entry.holders == 0 and self._channels.get(channel_id) is entry:
                del self._channels[channel_id]
                self.stats.loops = len(self._channels)
                entry.task.cancel()

        return release

    async def close(self) -> None:
        """Stop every typing loop."""
        tasks = [entry.task for entry in self._channels.values()]
        self._channels.clear()
        self.stats.loops = 0
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self, channel_id: int) -> None:
        if self._delay_s > 0:
            await asyncio.sleep(self._delay_s)
        while True:
            if not self._spare():
                self.stats.skipped += 1
                await asyncio.sleep(self._retry_s)
                continue
            try:
                sent = await self._trigger(channel_id)
            except hikari.HTTPError as exc:  # cosmetic: never let it fail the answer
                log.debug("typing indicator failed: %s", exc)
                return
            if sent is False:  # the pace had no free turn after all (a fleet's shared one)
                self.stats.skipped += 1
                await asyncio.sleep(self._retry_s)
                continue
            self.stats.sent += 1
            await asyncio.sleep(self._refresh_s)
