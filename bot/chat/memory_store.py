"""Conversation memory across restarts (PERSIST_CONVERSATIONS): saved to the store's
`conversations` namespace with the session timeout as TTL, loaded back at start."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from bot.chat.memory import ConversationMemory, Turn
from bot.store import Namespace, StoreError

__all__ = ["MemoryPersistence", "turns_from_json", "turns_to_json"]

log = logging.getLogger(__name__)


class MemoryPersistence:
    """Writes each live conversation as one JSON value; a conversation that has since gone
    (cleared, expired, evicted) is deleted, and the TTL drops what nobody cleans up."""

    def __init__(
        self,
        memory: ConversationMemory,
        namespace: Namespace,
        ttl_s: float,
        *,
        on_store_error: Callable[[], None] | None = None,
    ) -> None:
        # Told of every failed save (the app counts them as store errors).
        self._on_store_error = on_store_error
        self._memory = memory
        self._ns = namespace
        self._ttl_s = ttl_s
        self._saved: set[str] = set()

    async def load(self) -> int:
        """Restore the saved conversations; unreadable entries are skipped and reported."""
        restored = 0
        for key, raw in await self._ns.items():
            try:
                turns = [_turn(t) for t in _json_list(raw)]
                self._memory.append(int(key), *turns)
            except (ValueError, TypeError, KeyError):
                log.warning("skipping an unreadable saved conversation")
                continue
            self._saved.add(key)
            restored += 1
        return restored

    async def save(self) -> int:
        """Write every live conversation; returns how many were written."""
        live = {str(key): turns for key, turns in self._memory.conversations()}
        try:
            for key in self._saved - live.keys():
                await self._ns.delete(key)
            for key, turns in live.items():
                await self._ns.set_json(key, [asdict(t) for t in turns], ttl_s=self._ttl_s)
        except StoreError:
            log.exception("saving conversations failed; they stay in memory")
            if self._on_store_error is not None:
                self._on_store_error()
            return 0
        self._saved = set(live)
        return len(live)


def turns_to_json(turns: list[Turn]) -> bytes:
    """A conversation's turns as compact UTF-8 JSON (as saved by `MemoryPersistence`)."""
    return json.dumps([asdict(t) for t in turns], separators=(",", ":")).encode()


def turns_from_json(raw: bytes) -> list[Turn]:
    """The turns saved by `turns_to_json`; raises ValueError when unreadable."""
    try:
        return [_turn(t) for t in _json_list(raw)]
    except (TypeError, KeyError) as exc:
        raise ValueError(f"unreadable turns: {type(exc).__name__}") from None


def _json_list(raw: bytes) -> list[dict[str, Any]]:
    value = json.loads(raw)
    if not isinstance(value, list):
        raise ValueError("not a list of turns")
    return value


def _turn(data: dict[str, Any]) -> Turn:
    return Turn(
        role=data["role"],
        text=str(data["text"]),
        author_id=data.get("author_id"),
        message_id=data.get("message_id"),
        at=float(data["at"]),
        image_digests=tuple(data.get("image_digests", ())),
        reply_to=data.get("reply_to"),
    )
