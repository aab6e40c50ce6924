"""Degradation overrides across a fleet: an override meant for the whole fleet holds on every
process, including one that starts later, and is cleared on every process.

Which overrides are fleet-wide (docs/runbooks.md, "Degradation overrides in a fleet"): those a
heal remedy sets for an alert without an `instance` label (a fleet-level alert; the heal
fan-out already runs its remedy on every instance) — one process's alerts (memory, its own
error rate) keep theirs on that process. A fleet-wide override is kept under the source
`fleet:<source>` so it never meets the per-instance override of the same remedy.

The process that sets or clears one writes it to the Redis hash `overrides` (read at start by
a process that starts later) and publishes the change on the `overrides` channel; every other
process applies it when the message arrives. Without Redis (or while it is away) the change is
local only, logged, as in a single process.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Protocol

from bot.resilience.degradation import DegradationLevel, DegradationState

__all__ = ["CHANNEL", "FleetOverrides", "OverrideChannels", "fleet_source"]

log = logging.getLogger(__name__)

CHANNEL = "overrides"


def fleet_source(source: str) -> str:
    """The override source a fleet-wide override is kept under."""
    return f"fleet:{source}"


class OverrideChannels(Protocol):
    """`bot.store.redis_pubsub.RedisChannels`."""

    async def publish(self, channel: str, message: bytes) -> int: ...

    async def remember_field(self, key: str, field: str, value: str | None) -> None: ...

    async def recall_fields(self, key: str) -> dict[str, str]: ...


class FleetOverrides:
    """Sets and clears fleet-wide overrides here and tells the fleet; follows the fleet."""

    def __init__(
        self, degradation: DegradationState, channels: OverrideChannels, instance: str
    ) -> None:
        self._degradation = degradation
        self._channels = channels
        self.instance = instance
        self._pending: set[asyncio.Task[None]] = set()

    def set(self, source: str, level: DegradationLevel, reason: str) -> None:
        self._degradation.set_override(fleet_source(source), level, reason)
        self._tell(source, {"level": int(level), "reason": reason})

    def clear(self, source: str) -> None:
        self._degradation.clear_override(fleet_source(source))
        self._tell(source, None)

    def _tell(self, source: str, override: dict[str, object] | None) -> None:
        task = asyncio.get_running_loop().create_task(self._announce(source, override))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _announce(self, source: str, override: dict[str, object] | None) -> None:
        kept = None if override is None else json.dumps(override)
        message = json.dumps({"from": self.instance, "source": source, "override": override})
        try:
            await self._channels.remember_field(CHANNEL, source, kept)
            await self._channels.publish(CHANNEL, message.encode())
        except Exception as exc:
            log.warning(
                "degradation override %s changed on this process only (the fleet was not told): %s",
                source,
                exc,
            )

    def _apply(self, source: str, override: object) -> None:
        if override is None:
            self._degradation.clear_override(fleet_source(source))
            return
        if not isinstance(override, dict):
            raise TypeError(f"an override is an object, not {type(override).__name__}")
        level = DegradationLevel(int(override["level"]))
        self._degradation.set_override(fleet_source(source), level, str(override["reason"]))

    async def restore(self) -> None:
        """At start: hold the fleet-wide overrides in force."""
        try:
            kept = await self._channels.recall_fields(CHANNEL)
        except Exception as exc:
            log.warning("could not read the fleet's degradation overrides: %s", exc)
            return
        for source, raw in kept.items():
            try:
                self._apply(source, json.loads(raw))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignored a malformed fleet override %s: %s", source, exc)
                continue
            log.warning("fleet-wide degradation override in force: %s", source)

    async def deliver(self, channel: str, message: bytes) -> None:
        """A change made on another process."""
        try:
            change = json.loads(message)
            sender, source = change["from"], str(change["source"])
            if sender == self.instance:
                return
            self._apply(source, change["override"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignored a malformed message on %s: %s", channel, exc)
            return
        log.warning(
            "fleet-wide degradation override %s %s by %s",
            source,
            "cleared" if change["override"] is None else "set",
            sender,
        )

    async def join(self) -> None:
        """Wait for announcements still being sent."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
