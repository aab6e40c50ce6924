"""`/clear` across a fleet: what one process forgets, every process forgets.

The process where the user ran /clear forgets the turns and the cached answers (the fleet's
cache in Redis included), then publishes `{from, channel, user}` on the `clear` channel; every
other process forgets the same turns in its own memory and its local cache when the message
arrives. Pub/sub is at-most-once: a process reconnecting to Redis at that moment misses it
(its conversation memory then keeps those turns until they time out; the shared cache was
cleared by the sender). Without Redis, /clear acts on this process only, as in one process.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Protocol

from bot.chat.pipeline import ChatPipeline

__all__ = ["CHANNEL", "ClearChannels", "FleetClear"]

log = logging.getLogger(__name__)

CHANNEL = "clear"


class ClearChannels(Protocol):
    """`bot.store.redis_pubsub.RedisChannels`."""

    async def publish(self, channel: str, message: bytes) -> int: ...


class FleetClear:
    """Tells the fleet about each /clear made here; forgets what the fleet says to forget."""

    def __init__(self, pipeline: ChatPipeline, channels: ClearChannels, instance: str) -> None:
        self._pipeline = pipeline
        self._channels = channels
        self.instance = instance
        self.told = 0  # /clears passed to the fleet
        self.applied = 0  # /clears made elsewhere and applied here
        self._pending: set[asyncio.Task[None]] = set()
        pipeline.on_forget = self.announce

    async def announce(self, channel_id: int, user_id: int | None) -> None:
        """Tell the fleet in the background: the user's "Done" never waits for Redis."""
        task = asyncio.get_running_loop().create_task(self._publish(channel_id, user_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, channel_id: int, user_id: int | None) -> None:
        message = json.dumps({"from": self.instance, "channel": channel_id, "user": user_id})
        try:
            await self._channels.publish(CHANNEL, message.encode())
        except Exception as exc:
            log.warning("/clear acted on this process only (the fleet was not told): %s", exc)
            return
        self.told += 1

    async def deliver(self, channel: str, message: bytes) -> None:
        """A /clear made on another process."""
        try:
            change = json.loads(message)
            sender, channel_id, user_id = change["from"], int(change["channel"]), change["user"]
            user_id = None if user_id is None else int(user_id)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignored a malformed message on %s: %s", channel, exc)
            return
        if sender == self.instance:
            return
        await self._pipeline.forget(channel_id, user_id, tell_fleet=False)
        self.applied += 1

    async def join(self) -> None:
        """Wait for announcements still being sent."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
