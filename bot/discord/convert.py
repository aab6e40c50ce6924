"""hikari objects in, the chat domain's dataclasses out (the only direction data crosses here)."""

from __future__ import annotations

import re

import hikari

from bot.chat.models import Attachment, IncomingMessage, MessageTarget, QuotedMessage, Source

__all__ = [
    "addresses_bot",
    "manages_guild",
    "message_source",
    "message_to_incoming",
    "strip_mention",
    "to_incoming",
    "to_quoted",
]

_GUILD_ADMIN = hikari.Permissions.MANAGE_GUILD | hikari.Permissions.ADMINISTRATOR


def strip_mention(content: str, bot_id: int) -> str:
    """The prompt without the bot's own `<@id>` / `<@!id>` mention."""
    return re.sub(rf"<@!?{bot_id}>", "", content).strip()


def _attachments(message: hikari.PartialMessage) -> tuple[Attachment, ...]:
    found = message.attachments or ()
    return tuple(Attachment(a.filename, a.media_type, a.size, a.url) for a in found)


def to_quoted(message: hikari.PartialMessage, bot_id: int) -> QuotedMessage:
    author_id = int(message.author.id) if message.author else 0
    ref = message.message_reference
    return QuotedMessage(
        message_id=int(message.id),
        author_id=author_id,
        from_bot=author_id == bot_id,
        text=strip_mention(message.content or "", bot_id),
        attachments=_attachments(message),
        reply_to_id=int(ref.id) if ref and ref.id is not None else None,
    )


def addresses_bot(event: hikari.MessageCreateEvent, bot_id: int) -> Source | None:
    """Why this message is for the bot ("dm", "mention", "reply"), or None when it is not."""
    return message_source(event.message, bot_id, dm=isinstance(event, hikari.DMMessageCreateEvent))


def message_source(message: hikari.Message, bot_id: int, *, dm: bool) -> Source | None:
    """`addresses_bot` for a message read over REST (which says nothing of its guild: `dm` comes
    from the channel)."""
    if dm:
        return "dm"
    mentioned = message.user_mentions_ids or ()
    if bot_id in mentioned or re.search(rf"<@!?{bot_id}>", message.content or ""):
        return "mention"
    ref = message.referenced_message
    if ref and ref.author and int(ref.author.id) == bot_id:
        return "reply"
    return None


def to_incoming(
    event: hikari.MessageCreateEvent, bot_id: int, source: Source, thread_parent: int | None
) -> IncomingMessage:
    """The domain's message; `thread_parent` is the channel a thread belongs to, if any."""
    message = event.message
    roles: frozenset[int] = frozenset()
    author_name = message.author.username
    if isinstance(event, hikari.GuildMessageCreateEvent) and event.member is not None:
        roles = frozenset(int(r) for r in event.member.role_ids)
        author_name = event.member.display_name
    guild_id = int(message.guild_id) if message.guild_id else None
    return message_to_incoming(
        message,
        bot_id,
        source,
        guild_id=guild_id,
        thread_parent=thread_parent,
        roles=roles,
        author_name=author_name,
    )


def message_to_incoming(
    message: hikari.Message,
    bot_id: int,
    source: Source,
    *,
    guild_id: int | None,
    thread_parent: int | None,
    roles: frozenset[int],
    author_name: str,
    caught_up: bool = False,
) -> IncomingMessage:
    """The domain's message from a hikari message (of an event, or read over REST)."""
    ref = message.referenced_message
    return IncomingMessage(
        message_id=int(message.id),
        channel_id=int(message.channel_id),
        guild_id=guild_id,
        author_id=int(message.author.id),
        author_name=author_name,
        text=strip_mention(message.content or "", bot_id),
        target=MessageTarget(int(message.channel_id), int(message.id)),
        role_ids=roles,
        attachments=_attachments(message),
        quoted=to_quoted(ref, bot_id) if ref else None,
        source=source,
        parent_channel_id=thread_parent,
        caught_up=caught_up,
    )


def manages_guild(cache: hikari.api.Cache, event: hikari.MessageCreateEvent) -> bool:
    """Does the author own the guild or hold a role with Manage Server (or Administrator)?

    Read from the gateway's cache of the guild and its roles; False when they are unknown.
    """
    if not isinstance(event, hikari.GuildMessageCreateEvent) or event.member is None:
        return False
    guild = cache.get_guild(event.guild_id)
    if guild is not None and guild.owner_id == event.member.id:
        return True
    for role_id in (*event.member.role_ids, event.guild_id):  # @everyone has the guild's id
        role = cache.get_role(role_id)
        if role is not None and role.permissions & _GUILD_ADMIN:
            return True
    return False
