"""Which earlier turns go to the model with a message: channel memory, or the reply chain."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.chat.memory import ConversationMemory, Turn
from bot.chat.models import IncomingMessage, QuotedMessage
from bot.chat.ports import DiscordPort
from bot.llm.types import Message

__all__ = ["ContextBuilder", "speaker_text"]

log = logging.getLogger(__name__)


def speaker_text(msg: IncomingMessage) -> str:
    """The user's words as the model sees them; in a guild, prefixed by who is speaking."""
    if msg.guild_id is None:
        return msg.text
    return f"{msg.author_name}: {msg.text}" if msg.text else f"{msg.author_name}:"


class ContextBuilder:
    """Builds the history for one message.

    Normally that is the channel's memory. When the user replies to a bot message the memory no
    longer holds (expired, or from before a restart), the reply chain is read back from Discord
    instead, so continuing an old thread of conversation still works.
    """

    def __init__(
        self,
        memory: ConversationMemory,
        discord: DiscordPort,
        max_depth: int,
        *,
        refresh: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self._memory = memory
        self._discord = discord
        self._max_depth = max_depth
        # A fleet's shared memory: read the conversation back from Redis before using it.
        self._refresh = refresh

    async def refresh(self, key: int) -> None:
        """A fleet's shared memory: conversation `key` as Redis has it, read back into this
        process's memory (nothing to do without one)."""
        if self._refresh is not None:
            await self._refresh(key)

    async def history(self, msg: IncomingMessage) -> list[Message]:
        await self.refresh(msg.conversation_key)
        turns = self._memory.history(msg.conversation_key)
        quoted = msg.quoted
        if quoted is None or not quoted.from_bot:
            return [_to_message(t) for t in turns]
        if self._memory.find_turn(msg.conversation_key, quoted.message_id) is not None:
            return [_to_message(t) for t in turns]
        return await self._reply_chain(msg.channel_id, quoted)

    async def _reply_chain(self, channel_id: int, first: QuotedMessage) -> list[Message]:
        chain: list[Message] = []
        current: QuotedMessage | None = first
        seen: set[int] = set()
        while current is not None and len(chain) < self._max_depth:
            if current.message_id in seen:
                break
            seen.add(current.message_id)
            chain.append(Message(role="model" if current.from_bot else "user", text=current.text))
            if current.reply_to_id is None:
                break
            current = await self._discord.fetch_quoted(channel_id, current.reply_to_id)
        chain.reverse()
        if chain and chain[0].role == "model":
            # Gemini wants the conversation to open with a user turn; the chain began with ours.
            chain.insert(0, Message(role="user", text="(earlier in this conversation)"))
        log.debug("rebuilt a reply chain of %d turns", len(chain))
        return chain


def _to_message(turn: Turn) -> Message:
    return Message(role=turn.role, text=turn.text)
