"""Conversation memory on the fleet's Redis (PERSIST_CONVERSATIONS with REDIS_URL).

One string per conversation, `<prefix>:conversation:<channel id>`: the turns as JSON, with the
session timeout as its TTL (renewed at each write), so an idle conversation goes by itself.
The chat layer's `SharedMemory` reads and writes it; nothing here logs a value.
"""

from __future__ import annotations

from bot.store.redis_link import RedisLink

__all__ = ["RedisConversations"]


class RedisConversations:
    """Get, put and delete a conversation's JSON by key (raises RedisUnavailable)."""

    def __init__(self, link: RedisLink, prefix: str = "llmbot") -> None:
        self._link = link
        self._prefix = f"{prefix}:conversation"

    def _name(self, key: int) -> str:
        return f"{self._prefix}:{key}"

    async def get(self, key: int) -> bytes | None:
        name = self._name(key)
        raw = await self._link.run("memory", lambda: self._link.client.get(name))
        return raw.encode() if isinstance(raw, str) else raw

    async def put(self, key: int, value: bytes, ttl_s: float) -> None:
        name, ttl_ms = self._name(key), max(1, int(ttl_s * 1000))
        await self._link.run("memory", lambda: self._link.client.set(name, value, px=ttl_ms))

    async def delete(self, key: int) -> None:
        name = self._name(key)
        await self._link.run("memory", lambda: self._link.client.delete(name))
