"""Conversation memory: the recent turns of each channel, thread or DM, bounded and forgetful."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

__all__ = ["ConversationMemory", "MemoryStats", "Role", "Turn"]

Role = Literal["user", "model"]

# Rough CPython costs (object headers, deque slots, dict entries) for the memory estimate.
_TURN_OVERHEAD_BYTES = 160
_CONVERSATION_OVERHEAD_BYTES = 400


@dataclass(frozen=True, slots=True)
class Turn:
    """One message in a conversation, from a user or from the model."""

    role: Role
    text: str
    author_id: int | None
    message_id: int | None
    at: float
    image_digests: tuple[str, ...] = ()
    reply_to: int | None = None
    """For a model turn, the message id of the user turn it answers (else: the one before it)."""


@dataclass(frozen=True, slots=True)
class MemoryStats:
    """What the memory holds right now, conversations awaiting `sweep` included."""

    conversations: int
    turns: int
    chars: int
    largest_conversation_chars: int
    approx_bytes: int
    """Estimate: one byte per character plus a fixed overhead per turn and conversation."""


@dataclass(slots=True)
class _Conversation:
    last_active: float
    turns: deque[Turn] = field(default_factory=deque)
    chars: int = 0


class ConversationMemory:
    """Recent turns per conversation key (a channel, thread or DM channel id, never a user).

    A conversation keeps at most `max_messages` turns and `max_chars` characters, oldest dropped
    first; it is forgotten after `session_timeout_s` without a new turn; at most
    `max_conversations` are kept, the least recently active evicted first. Not thread-safe:
    use it from the event loop only.
    """

    def __init__(
        self,
        max_messages: int = 100,
        max_chars: int = 50_000,
        session_timeout_s: float = 1800.0,
        max_conversations: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (
            ("max_messages", max_messages),
            ("max_chars", max_chars),
            ("session_timeout_s", session_timeout_s),
            ("max_conversations", max_conversations),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.max_messages = max_messages
        self.max_chars = max_chars
        self.session_timeout_s = session_timeout_s
        self.max_conversations = max_conversations
        self._clock = clock
        # Ordered by last activity, oldest first: the LRU victim and the sweep both start there.
        self._conversations: OrderedDict[int, _Conversation] = OrderedDict()
        self._chars = 0
        self._turns = 0
        # Told the key of a conversation changed by append/clear/clear_user (not by expiry or
        # eviction): the fleet's shared memory writes it to Redis (bot/chat/memory_shared.py).
        self.on_change: Callable[[int], None] | None = None

    def history(self, key: int) -> list[Turn]:
        """The turns of conversation `key`, oldest first; [] if it is unknown or has expired."""
        conversation = self._live(key)
        return list(conversation.turns) if conversation else []

    def append(self, key: int, *turns: Turn) -> None:
        """Add turns to conversation `key`, trimming the oldest to stay within the caps.

        A turn longer than `max_chars` keeps only its first `max_chars` characters.
        """
        if not turns:
            return
        conversation = self._live(key)
        if conversation is None:
            conversation = self._conversations[key] = _Conversation(last_active=self._clock())
        else:
            conversation.last_active = self._clock()
            self._conversations.move_to_end(key)
        for turn in turns:
            if len(turn.text) > self.max_chars:
                turn = replace(turn, text=turn.text[: self.max_chars])
            conversation.turns.append(turn)
            conversation.chars += len(turn.text)
            self._chars += len(turn.text)
            self._turns += 1
        self._trim(conversation)
        while len(self._conversations) > self.max_conversations:
            oldest = next(iter(self._conversations))
            self._drop(oldest)
        self._changed(key)

    def restore(self, key: int, turns: list[Turn]) -> None:
        """Replace conversation `key` by `turns` (none: forget it) as kept elsewhere, without
        telling `on_change`; the caps apply as to `append`."""
        if key in self._conversations:
            self._drop(key)
        if turns:
            listener, self.on_change = self.on_change, None
            try:
                self.append(key, *turns)
            finally:
                self.on_change = listener

    def conversations(self) -> list[tuple[int, list[Turn]]]:
        """Every live conversation with its turns, least recently active first."""
        now = self._clock()
        return [
            (key, list(c.turns))
            for key, c in self._conversations.items()
            if not self._expired(c, now)
        ]

    def clear(self, key: int) -> bool:
        """Forget conversation `key`; True if there was one."""
        self._changed(key)  # also when absent here: a copy kept elsewhere is forgotten too
        if key not in self._conversations:
            return False
        self._drop(key)
        return True

    def clear_user(self, key: int, user_id: int) -> int:
        """Remove `user_id`'s turns from conversation `key` and the model turns answering them.

        A model turn answers the user turn named by its `reply_to`, or without one, the user
        turn before it. Returns the number of turns removed.
        """
        conversation = self._live(key)
        if conversation is None:
            return 0
        kept: deque[Turn] = deque()
        removed_ids: set[int] = set()
        previous_user_removed = False
        for turn in conversation.turns:
            if turn.role == "user":
                remove = previous_user_removed = turn.author_id == user_id
                if remove and turn.message_id is not None:
                    removed_ids.add(turn.message_id)
            elif turn.reply_to is not None:
                remove = turn.reply_to in removed_ids
            else:
                remove = previous_user_removed
            if not remove:
                kept.append(turn)
        removed = len(conversation.turns) - len(kept)
        if removed:
            kept_chars = sum(len(turn.text) for turn in kept)
            self._chars -= conversation.chars - kept_chars
            self._turns -= removed
            conversation.turns, conversation.chars = kept, kept_chars
            if not kept:
                self._drop(key)
            self._changed(key)
        return removed

    def find_turn(self, key: int, message_id: int) -> Turn | None:
        """The turn of conversation `key` with Discord message id `message_id`, if remembered."""
        conversation = self._live(key)
        if conversation is None:
            return None
        # Replies usually point at recent messages: search from the newest.
        for turn in reversed(conversation.turns):
            if turn.message_id == message_id:
                return turn
        return None

    def sweep(self) -> int:
        """Forget every expired conversation; returns how many were forgotten."""
        now = self._clock()
        swept = 0
        # Oldest activity first, so the scan stops at the first live conversation.
        while self._conversations:
            key, conversation = next(iter(self._conversations.items()))
            if not self._expired(conversation, now):
                break
            self._drop(key)
            swept += 1
        return swept

    def stats(self) -> MemoryStats:
        """Counts for the metrics; O(conversations) for the largest, the totals are kept."""
        largest = max((c.chars for c in self._conversations.values()), default=0)
        count = len(self._conversations)
        return MemoryStats(
            conversations=count,
            turns=self._turns,
            chars=self._chars,
            largest_conversation_chars=largest,
            approx_bytes=(
                self._chars
                + self._turns * _TURN_OVERHEAD_BYTES
                + count * _CONVERSATION_OVERHEAD_BYTES
            ),
        )

    def _live(self, key: int) -> _Conversation | None:
        conversation = self._conversations.get(key)
        if conversation is not None and self._expired(conversation, self._clock()):
            self._drop(key)
            return None
        return conversation

    def _expired(self, conversation: _Conversation, now: float) -> bool:
        return now - conversation.last_active >= self.session_timeout_s

    def _trim(self, conversation: _Conversation) -> None:
        trimmed = False
        while len(conversation.turns) > self.max_messages or conversation.chars > self.max_chars:
            self._pop_oldest(conversation)
            trimmed = True
        # A model turn whose question was trimmed away would start the history mid-exchange.
        while trimmed and conversation.turns and conversation.turns[0].role == "model":
            self._pop_oldest(conversation)

    def _pop_oldest(self, conversation: _Conversation) -> None:
        turn = conversation.turns.popleft()
        conversation.chars -= len(turn.text)
        self._chars -= len(turn.text)
        self._turns -= 1

    def _changed(self, key: int) -> None:
        if self.on_change is not None:
            self.on_change(key)

    def _drop(self, key: int) -> None:
        conversation = self._conversations.pop(key)
        self._chars -= conversation.chars
        self._turns -= len(conversation.turns)
