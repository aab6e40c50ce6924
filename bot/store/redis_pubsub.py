"""Redis pub/sub for a fleet: publish a message to a channel, listen on channels with reconnects.

Channels are named under a prefix (`llmbot:heal:<instance>`, `llmbot:heal:all`). Pub/sub is
at-most-once: a message published while a listener is reconnecting is lost, which the users
of this module accept (an alert is sent again by Alertmanager's repeat interval).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from bot.store.redis_link import RedisLink, RedisUnavailable

__all__ = ["RedisChannels"]

log = logging.getLogger(__name__)

RECONNECT_S: Final = 1.0


class RedisChannels:
    """Publish to and listen on prefixed channels of the fleet's Redis."""

    def __init__(self, link: RedisLink, prefix: str = "llmbot") -> None:
        self._link = link
        self._prefix = prefix
        self.listening = asyncio.Event()  # set while subscribed (tests wait for it)

    def name(self, channel: str) -> str:
        return f"{self._prefix}:{channel}"

    async def publish(self, channel: str, message: bytes) -> int:
        """Publish; the number of listeners that got it. Raises RedisUnavailable."""
        name = self.name(channel)
        count: int = await self._link.run("heal", lambda: self._link.client.publish(name, message))
        return count

    async def remember(self, key: str, value: str | None) -> None:
        """Keep `value` under the prefixed `key` (None deletes it): state a process starting
        later reads, next to the message that told the running ones."""
        name = self.name(key)
        client = self._link.client
        if value is None:
            await self._link.run("heal", lambda: client.delete(name))
        else:
            await self._link.run("heal", lambda: client.set(name, value))

    async def recall(self, key: str) -> str | None:
        """The value kept under `key`, or None."""
        name = self.name(key)
        raw = await self._link.run("heal", lambda: self._link.client.get(name))
        return raw.decode() if isinstance(raw, bytes) else raw

    async def remember_field(self, key: str, field: str, value: str | None) -> None:
        """Keep `value` as `field` of the hash under the prefixed `key` (None deletes the field):
        several entries that processes change independently (the fleet's overrides)."""
        name = self.name(key)
        client = self._link.client
        if value is None:
            await self._link.run("heal", lambda: client.hdel(name, field))
        else:
            await self._link.run("heal", lambda: client.hset(name, field, value))

    async def recall_fields(self, key: str) -> dict[str, str]:
        """Every field of the hash under `key` (empty if none)."""
        name = self.name(key)
        raw = await self._link.run("heal", lambda: self._link.client.hgetall(name))
        return {
            (k.decode() if isinstance(k, bytes) else str(k)): (
                v.decode() if isinstance(v, bytes) else str(v)
            )
            for k, v in raw.items()
        }

    async def listen(
        self, channels: Iterable[str], handle: Callable[[str, bytes], Awaitable[None]]
    ) -> None:
        """Call `handle(channel, message)` for each message, forever; reconnects after a
        failure (every second while Redis is down). Cancel the task to stop."""
        names = {self.name(channel): channel for channel in channels}
        while True:
            await self._listen_once(names, handle)
            await asyncio.sleep(RECONNECT_S)

    async def _listen_once(
        self, names: dict[str, str], handle: Callable[[str, bytes], Awaitable[None]]
    ) -> None:
        """Subscribe and hand messages over until the connection fails."""
        pubsub = self._link.client.pubsub()
        try:
            await self._link.run("heal", lambda: pubsub.subscribe(*names))
            self.listening.set()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None or message.get("type") != "message":
                    continue
                raw = message["channel"]
                channel = raw.decode() if isinstance(raw, bytes) else str(raw)
                data = message["data"]
                body = data if isinstance(data, bytes) else str(data).encode()
                await handle(names.get(channel, channel), body)
        except RedisUnavailable as exc:
            log.debug("pub/sub: %s", exc)
        except Exception as exc:  # a lost connection while reading
            log.debug("pub/sub listener lost its connection: %r", exc)
        finally:
            self.listening.clear()
            with contextlib.suppress(Exception):  # closing a broken connection may fail too
                await pubsub.aclose()
