"""What the chat domain needs from the outside world, as small protocols the adapters fill in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

from bot.chat.models import Attachment, MessageTarget, QuotedMessage, Reply, ReplyTarget

__all__ = [
    "DiscordPort",
    "DownloadRefused",
    "DownloadTooLarge",
    "ReplyStream",
    "StreamStopped",
    "StreamingPort",
]

T = TypeVar("T")


class DownloadTooLarge(Exception):
    """The file turned out bigger than allowed while it was being downloaded."""


class DownloadRefused(Exception):
    """The attachment's URL is not on Discord's CDN (or an allowed origin): not fetched."""


class DiscordPort(Protocol):
    """Implemented by `bot.discord`; the pipeline never sees hikari objects."""

    async def deliver(self, target: ReplyTarget, reply: Reply) -> list[int]:
        """Send the reply's chunks in order; returns the ids of the messages created."""
        ...

    async def replace_messages(
        self, target: MessageTarget, message_ids: Sequence[int], reply: Reply
    ) -> list[int]:
        """Make the bot's messages `message_ids` (a streamed answer cut short by a restart)
        exactly the reply's chunks: edit them, post the missing ones, delete the extra ones;
        returns the ids of the reply's messages."""
        ...

    async def find_reply(self, channel_id: int, message_id: int) -> int | None:
        """The id of the bot's reply to `message_id` among the messages just after it (one
        bounded page), or None: for a re-send older than Discord's nonce window."""
        ...

    async def fetch_quoted(self, channel_id: int, message_id: int) -> QuotedMessage | None:
        """One message of a reply chain, or None when it is gone or unreadable."""
        ...

    async def download(self, attachment: Attachment, max_bytes: int) -> bytes:
        """The attachment's bytes; raises DownloadTooLarge past max_bytes."""
        ...

    async def react(self, channel_id: int, message_id: int, emoji: str) -> None:
        """Add the bot's reaction to a message (a silent answer, e.g. over budget)."""


class StreamStopped(Exception):
    """The asker (or a moderator) pressed Stop on a streaming answer."""


class ReplyStream(Protocol):
    """One answer streaming into Discord messages (a `bot.llm.streaming.TextSink` too)."""

    @property
    def text(self) -> str:
        """The answer text received so far."""
        ...

    def partial(self, text: str) -> None:
        """The answer so far (a retry starts again from "")."""
        ...

    def shown(self) -> bool:
        """Is some of the answer visible in Discord?"""
        ...

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run the model call; raises StreamStopped (after cancelling it) when Stop is pressed."""
        ...

    async def finish(self, reply: Reply) -> list[int]:
        """Make the messages exactly `reply`'s chunks (or deliver it whole when nothing was
        shown yet), remove the Stop button; returns the message ids."""
        ...

    def close(self) -> None:
        """Give up without a final reply (a bug or shutdown): stop editing, free the stream."""
        ...


class StreamingPort(Protocol):
    """Opens streams; implemented by `bot.discord.streaming`."""

    def open_stream(
        self,
        target: ReplyTarget,
        asker_id: int,
        on_posted: Callable[[tuple[int, ...]], Awaitable[None]] | None = None,
        *,
        question_id: int = 0,
    ) -> ReplyStream | None:
        """A stream replying to `target` (a message, or a deferred /chat whose interaction is
        `question_id`), or None when streaming is off or at its limit; `on_posted` gets the
        ids of all messages posted so far after each new one."""
        ...
