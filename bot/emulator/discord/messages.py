"""Message objects: creation, edits, mentions and the gateway form of a message."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from bot.emulator.discord.ids import iso_timestamp

__all__ = [
    "MAX_CONTENT_LENGTH",
    "allowed_mention_ids",
    "apply_edit",
    "has_message_body",
    "mentioned_ids",
    "message_object",
    "reply_reference",
    "without_content",
]

JSON = dict[str, Any]

# Discord's documented limit; the OpenAPI preview says 4000 for message create, the docs win.
MAX_CONTENT_LENGTH = 2000
_MESSAGE_TYPE_DEFAULT = 0
_MESSAGE_TYPE_REPLY = 19
_USER_MENTION = re.compile(r"<@!?(\d+)>")
# Fields that make a message non-empty, per Discord's "Cannot send an empty message" rule.
_BODY_FIELDS = ("content", "embeds", "sticker_ids", "components", "poll", "attachments")


def mentioned_ids(content: str) -> list[int]:
    """Return the user ids mentioned as ``<@id>`` in content, in order, without repeats."""
    return list(dict.fromkeys(int(m) for m in _USER_MENTION.findall(content)))


def allowed_mention_ids(
    content: str, allowed_mentions: Mapping[str, Any] | None, replied_author: int | None
) -> list[int]:
    """Return the user ids a bot message really pings under its ``allowed_mentions``."""
    parsed = mentioned_ids(content)
    if allowed_mentions is None:
        # Without allowed_mentions Discord parses every mention; replies ping by default.
        return list(dict.fromkeys([*parsed, *([replied_author] if replied_author else [])]))
    parse = allowed_mentions.get("parse") or []
    listed = {int(u) for u in allowed_mentions.get("users") or []}
    pinged = [u for u in parsed if "users" in parse or u in listed]
    if replied_author is not None and allowed_mentions.get("replied_user"):
        pinged.append(replied_author)
    return list(dict.fromkeys(pinged))


def has_message_body(body: Mapping[str, Any], files: int = 0) -> bool:
    """Whether a create body carries anything Discord would display."""
    return files > 0 or any(body.get(name) for name in _BODY_FIELDS)


def message_object(
    *,
    message_id: int,
    channel_id: int,
    author: JSON,
    content: str,
    mentions: Iterable[JSON] = (),
    attachments: Iterable[JSON] = (),
    embeds: Iterable[JSON] = (),
    components: Iterable[JSON] = (),
    reference: JSON | None = None,
    referenced: JSON | None = None,
    flags: int = 0,
    tts: bool = False,
    nonce: str | int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSON:
    """Return a full message object as REST answers it (no guild_id/member)."""
    message: JSON = {
        "id": str(message_id),
        "channel_id": str(channel_id),
        "author": author,
        "content": content,
        "timestamp": iso_timestamp(),
        "edited_timestamp": None,
        "tts": tts,
        "mention_everyone": False,
        "mentions": list(mentions),
        "mention_roles": [],
        "attachments": list(attachments),
        "embeds": list(embeds),
        "components": with_component_ids(components),
        "pinned": False,
        "type": _MESSAGE_TYPE_REPLY if reference else _MESSAGE_TYPE_DEFAULT,
        "flags": flags,
    }
    if nonce is not None:
        message["nonce"] = nonce
    if reference is not None:
        message["message_reference"] = reference
        message["referenced_message"] = referenced
    if extra:
        message.update(extra)
    return message


def reply_reference(
    referenced: JSON, guild_id: int | None, *, fail_if_not_exists: bool = True
) -> JSON:
    """Return the ``message_reference`` of a reply to ``referenced``."""
    reference: JSON = {
        "type": 0,
        "message_id": referenced["id"],
        "channel_id": referenced["channel_id"],
        "fail_if_not_exists": fail_if_not_exists,
    }
    if guild_id is not None:
        reference["guild_id"] = str(guild_id)
    return reference


def with_component_ids(components: Iterable[JSON]) -> list[JSON]:
    """Components as Discord answers them: each numbered (``id``) in order, rows included."""
    counter = 0

    def number(component: JSON) -> JSON:
        nonlocal counter
        counter += 1
        numbered = {**component, "id": component.get("id", counter)}
        if isinstance(component.get("components"), list):
            numbered["components"] = [number(c) for c in component["components"]]
        return numbered

    return [number(c) for c in components]


def apply_edit(message: JSON, body: Mapping[str, Any], mentions: list[JSON] | None) -> None:
    """Apply a PATCH body to a stored message in place."""
    for name in ("content", "embeds", "components", "attachments"):
        if name in body:
            value = body[name]
            message[name] = value if value is not None else ("" if name == "content" else [])
    if body.get("components"):
        message["components"] = with_component_ids(body["components"])
    if body.get("flags") is not None:
        message["flags"] = int(body["flags"])
    if mentions is not None:
        message["mentions"] = mentions
    message["edited_timestamp"] = iso_timestamp()


def without_content(message: JSON) -> JSON:
    """Return the message as a bot without the MESSAGE_CONTENT intent receives it."""
    return {**message, "content": "", "embeds": [], "attachments": [], "components": []}
