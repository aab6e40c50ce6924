"""The small dataclasses that carry one message through the chat domain (no hikari types)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "Attachment",
    "IncomingMessage",
    "InteractionTarget",
    "MessageTarget",
    "QuotedMessage",
    "Reply",
    "ReplyKind",
    "ReplyTarget",
    "Source",
    "message_from_payload",
    "message_to_payload",
]


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file on a Discord message, known by its URL; the bytes are fetched only when used."""

    filename: str
    content_type: str | None
    size: int
    url: str


@dataclass(frozen=True, slots=True)
class QuotedMessage:
    """A message the user replied to (it may be one of the bot's own answers)."""

    message_id: int
    author_id: int
    from_bot: bool  # written by this bot
    text: str
    attachments: tuple[Attachment, ...] = ()
    reply_to_id: int | None = None  # what *it* replied to, for walking a reply chain


@dataclass(frozen=True, slots=True)
class MessageTarget:
    """Answer by replying to a channel message."""

    channel_id: int
    message_id: int


@dataclass(frozen=True, slots=True)
class InteractionTarget:
    """Answer a (deferred) slash command through its interaction token."""

    application_id: int
    token: str
    channel_id: int
    ephemeral: bool = False


ReplyTarget = MessageTarget | InteractionTarget
Source = Literal["mention", "dm", "reply", "slash", "autoreply"]


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A user's request to the bot, from a mention, a DM, a reply or `/chat`."""

    message_id: int
    channel_id: int
    guild_id: int | None
    author_id: int
    author_name: str
    text: str  # the bot's mention already stripped
    target: ReplyTarget
    role_ids: frozenset[int] = frozenset()
    attachments: tuple[Attachment, ...] = ()
    quoted: QuotedMessage | None = None
    source: Source = "mention"
    parent_channel_id: int | None = None  # the channel a thread belongs to
    manages_guild: bool = False  # the author has Manage Server here (a bot admin in this guild)
    # Asked while the bot was away and found by the restart catch-up: the reply says it is late.
    caught_up: bool = False
    received_at: float = field(default_factory=time.monotonic)

    @property
    def conversation_key(self) -> int:
        """Memory is per channel, thread or DM channel, not per user."""
        return self.channel_id


ReplyKind = Literal["answer", "cached", "fallback", "queued", "notice", "refused", "failed"]


@dataclass(frozen=True, slots=True)
class Reply:
    """What the bot says back: one or more Discord-safe chunks."""

    chunks: tuple[str, ...]
    kind: ReplyKind
    ephemeral: bool = False
    # Set by the pipeline: the nonce of chunk i is f"{nonce_key}{i}", derived from the
    # question's id so that a re-send after a restart is deduplicated by Discord.
    nonce_key: str | None = None

    @classmethod
    def text(cls, text: str, kind: ReplyKind, *, ephemeral: bool = False) -> Reply:
        return cls((text,), kind, ephemeral)


def message_to_payload(msg: IncomingMessage) -> dict[str, Any]:
    """A JSON-safe form of a message, so a queued question survives a restart."""
    data = asdict(msg)
    data.pop("received_at")  # monotonic: meaningless in another process
    data["role_ids"] = sorted(msg.role_ids)
    data["target"]["kind"] = (
        "interaction" if isinstance(msg.target, InteractionTarget) else "message"
    )
    return data


def message_from_payload(data: dict[str, Any]) -> IncomingMessage:
    """The inverse of `message_to_payload`; raises KeyError/TypeError on a malformed payload."""
    target_data = dict(data["target"])
    kind = target_data.pop("kind")
    target: ReplyTarget = (
        InteractionTarget(**target_data) if kind == "interaction" else MessageTarget(**target_data)
    )
    quoted = data.get("quoted")
    return IncomingMessage(
        message_id=int(data["message_id"]),
        channel_id=int(data["channel_id"]),
        guild_id=data["guild_id"],
        author_id=int(data["author_id"]),
        author_name=str(data["author_name"]),
        text=str(data["text"]),
        target=target,
        role_ids=frozenset(data["role_ids"]),
        attachments=tuple(Attachment(**a) for a in data["attachments"]),
        quoted=None
        if quoted is None
        else QuotedMessage(
            **{**quoted, "attachments": tuple(Attachment(**a) for a in quoted["attachments"])}
        ),
        source=data["source"],
        parent_channel_id=data.get("parent_channel_id"),
        manages_guild=bool(data.get("manages_guild", False)),
        caught_up=bool(data.get("caught_up", False)),
    )
