"""Healing across a fleet: Alertmanager may call any instance's `/alerts`; each alert runs where
its `instance` label says.

`HealFanOut.route` splits a webhook payload before the local receiver sees it: alerts for this
instance stay here; alerts naming another instance are published on that instance's channel
(`heal:<instance>`); fleet-wide alerts (no `instance` label, e.g. the quota's) are handled here
and published on `heal:all` for every other instance. `listen` feeds what arrives on this
instance's channels into its receiver, which decides (deduplication, cooldowns, audit) exactly
as for a webhook call, so the audit of the instance that acted records it. When Redis cannot
be reached, or no instance listens on a channel, the alerts stay here and the receiver ignores
them as another instance's, counted as before.
"""

from __future__ import annotations

import json
import logging
from typing import Protocol

from bot.healing.payload import Alert, PayloadError, WebhookPayload, parse_payload
from bot.healing.receiver import INSTANCE_LABEL, HealReceiver, ReceiverClosedError

__all__ = ["ALL_CHANNEL", "HealChannels", "HealFanOut", "instance_channel"]

log = logging.getLogger(__name__)

ALL_CHANNEL = "heal:all"


def instance_channel(instance: str) -> str:
    return f"heal:{instance}"


class HealChannels(Protocol):
    """Publish/listen on the fleet's channels (`bot.store.redis_pubsub.RedisChannels`)."""

    async def publish(self, channel: str, message: bytes) -> int: ...


class HealFanOut:
    """Routes alerts to the instance they name, through the fleet's channels."""

    def __init__(self, receiver: HealReceiver, channels: HealChannels) -> None:
        self._receiver = receiver
        self._channels = channels
        self.forwarded_total = 0  # alerts published to another instance or to all
        self.received_total = 0  # alerts that arrived from another instance

    @property
    def channels(self) -> tuple[str, str]:
        """The channels this instance listens on."""
        return instance_channel(self._receiver.instance), ALL_CHANNEL

    async def route(self, payload: WebhookPayload) -> WebhookPayload:
        """Publish what other instances must run; return the payload this instance handles."""
        own = self._receiver.instance
        local: list[Alert] = []
        fleet_wide: list[Alert] = []
        remote: dict[str, list[Alert]] = {}
        for alert in payload.alerts:
            instance = alert.labels.get(INSTANCE_LABEL)
            if instance is None:
                local.append(alert)
                fleet_wide.append(alert)
            elif instance == own:
                local.append(alert)
            else:
                remote.setdefault(instance, []).append(alert)
        for instance, alerts in remote.items():
            if not await self._publish(instance_channel(instance), payload, alerts):
                local.extend(alerts)  # nobody got them: the receiver ignores and counts them
        if fleet_wide:
            await self._publish(ALL_CHANNEL, payload, fleet_wide)
        return payload.model_copy(update={"alerts": local})

    async def _publish(self, channel: str, payload: WebhookPayload, alerts: list[Alert]) -> bool:
        part = payload.model_copy(update={"alerts": alerts})
        message = json.dumps(
            {
                "from": self._receiver.instance,
                "payload": part.model_dump(mode="json", by_alias=True),
            }
        ).encode()
        try:
            listeners = await self._channels.publish(channel, message)
        except Exception as exc:
            log.warning("heal: could not forward %d alert(s) on %s: %s", len(alerts), channel, exc)
            return False
        if listeners:
            self.forwarded_total += len(alerts)
        return listeners > 0

    async def deliver(self, channel: str, message: bytes) -> None:
        """One message from a channel this instance listens on: hand it to the receiver."""
        try:
            envelope = json.loads(message)
            if envelope.get("from") == self._receiver.instance:
                return  # our own fleet-wide alert, already handled here
            payload = parse_payload(json.dumps(envelope["payload"]).encode())
        except (ValueError, KeyError, TypeError, AttributeError, PayloadError) as exc:
            log.warning("heal: ignored a malformed message on %s: %s", channel, exc)
            return
        self.received_total += len(payload.alerts)
        try:
            self._receiver.submit(payload)
        except ReceiverClosedError:
            log.info("heal: %d forwarded alert(s) arrived while stopping", len(payload.alerts))
