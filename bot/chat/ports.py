"""What the chat domain needs from the outside world, as small protocols the adapters fill in."""

from __future__ import annotations

from typing import Protocol

from bot.chat.models import Attachment, QuotedMessage, Reply, ReplyTarget

__all__ = ["DiscordPort", "DownloadRefused", "DownloadTooLarge"]


class DownloadTooLarge(Exception):
    """The file turned out bigger than allowed while it was being downloaded."""


class DownloadRefused(Exception):
    """The attachment's URL is not on Discord's CDN (or an allowed origin): not fetched."""


class DiscordPort(Protocol):
    """Implemented by `bot.discord`; the pipeline never sees hikari objects."""

    async def deliver(self, target: ReplyTarget, reply: Reply) -> list[int]:
        """Send the reply's chunks in order; returns the ids of the messages created."""
        ...

    async def fetch_quoted(self, channel_id: int, message_id: int) -> QuotedMessage | None:
        """One message of a reply chain, or None when it is gone or unreadable."""
        ...

    async def download(self, attachment: Attachment, max_bytes: int) -> bytes:
        """The attachment's bytes; raises DownloadTooLarge past max_bytes."""
        ...

    async def react(self, channel_id: int, message_id: int, emoji: str) -> None:
        """Add the bot's reaction to a message (a silent answer, e.g. over budget)."""
        ...
