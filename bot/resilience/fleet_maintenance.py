"""Maintenance mode across a fleet: `/maintenance on|off` on any process acts on every process.

The process where an admin switched it keeps the reason in Redis (`maintenance`, read by a
process that starts later) and publishes the change on the `maintenance` channel; every other
process enters or leaves maintenance when the message arrives. Without Redis the change is
local only (logged), as in a single process.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Protocol

from bot.resilience.degradation import DegradationState

__all__ = ["CHANNEL", "FleetMaintenance", "MaintenanceChannels"]

log = logging.getLogger(__name__)

CHANNEL = "maintenance"


class MaintenanceChannels(Protocol):
    """`bot.store.redis_pubsub.RedisChannels`."""

    async def publish(self, channel: str, message: bytes) -> int: ...

    async def remember(self, key: str, value: str | None) -> None: ...

    async def recall(self, key: str) -> str | None: ...


class FleetMaintenance:
    """Switches maintenance here and tells the fleet; follows what the fleet says."""

    def __init__(
        self, degradation: DegradationState, channels: MaintenanceChannels, instance: str
    ) -> None:
        self._degradation = degradation
        self._channels = channels
        self.instance = instance
        self._pending: set[asyncio.Task[None]] = set()

    def enter(self, reason: str) -> None:
        self._degradation.enter_maintenance(reason)
        self._tell(reason)

    def exit(self) -> bool:
        was = self._degradation.exit_maintenance()
        self._tell(None)
        return was

    def _tell(self, reason: str | None) -> None:
        task = asyncio.get_running_loop().create_task(self._announce(reason))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _announce(self, reason: str | None) -> None:
        message = json.dumps({"from": self.instance, "reason": reason}).encode()
        try:
            await self._channels.remember(CHANNEL, reason)
            await self._channels.publish(CHANNEL, message)
        except Exception as exc:
            log.warning(
                "maintenance changed on this process only (the fleet was not told): %s", exc
            )

    async def restore(self) -> None:
        """At start: enter maintenance if the fleet is in it."""
        try:
            reason = await self._channels.recall(CHANNEL)
        except Exception as exc:
            log.warning("could not read the fleet's maintenance mode: %s", exc)
            return
        if reason is not None:
            self._degradation.enter_maintenance(reason)
            log.warning("the fleet is in maintenance mode (%s)", reason)

    async def deliver(self, channel: str, message: bytes) -> None:
        """A change made on another process."""
        try:
            change = json.loads(message)
            sender, reason = change["from"], change["reason"]
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignored a malformed message on %s: %s", channel, exc)
            return
        if sender == self.instance:
            return
        if reason is None:
            self._degradation.exit_maintenance()
        else:
            self._degradation.enter_maintenance(str(reason))
        log.warning("maintenance mode %s by %s", "off" if reason is None else "on", sender)

    async def join(self) -> None:
        """Wait for announcements still being sent."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
