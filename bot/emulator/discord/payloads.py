"""Builders for Discord JSON objects, shaped as the gateway and REST API send them."""

from __future__ import annotations

import enum
from typing import Any

from bot.emulator.discord.ids import iso_timestamp, snowflake_time

__all__ = [
    "BOT_PERMISSIONS",
    "EVERYONE_PERMISSIONS",
    "ChannelType",
    "Intent",
    "application",
    "attachment",
    "channel",
    "dm_channel",
    "member",
    "own_user",
    "role",
    "user",
]

JSON = dict[str, Any]


class Intent(enum.IntFlag):
    """Gateway intents the emulator honours when it routes events."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    DIRECT_MESSAGES = 1 << 12
    MESSAGE_CONTENT = 1 << 15


class ChannelType(enum.IntEnum):
    """Channel types the emulator can create."""

    GUILD_TEXT = 0
    DM = 1
    GUILD_VOICE = 2
    GUILD_CATEGORY = 4
    GUILD_NEWS = 5
    PUBLIC_THREAD = 11
    PRIVATE_THREAD = 12

    @property
    def is_thread(self) -> bool:
        """Whether this is a thread type."""
        return self in (ChannelType.PUBLIC_THREAD, ChannelType.PRIVATE_THREAD)


# Discord's permission bits (only the ones a chat bot cares about are named).
_VIEW_CHANNEL = 1 << 10
_SEND_MESSAGES = 1 << 11
_EMBED_LINKS = 1 << 14
_ATTACH_FILES = 1 << 15
_READ_MESSAGE_HISTORY = 1 << 16
_ADD_REACTIONS = 1 << 6
_USE_APPLICATION_COMMANDS = 1 << 31
_CREATE_PUBLIC_THREADS = 1 << 35
_SEND_MESSAGES_IN_THREADS = 1 << 38

EVERYONE_PERMISSIONS = (
    _VIEW_CHANNEL
    | _SEND_MESSAGES
    | _EMBED_LINKS
    | _ATTACH_FILES
    | _READ_MESSAGE_HISTORY
    | _ADD_REACTIONS
    | _USE_APPLICATION_COMMANDS
    | _CREATE_PUBLIC_THREADS
    | _SEND_MESSAGES_IN_THREADS
)
BOT_PERMISSIONS = EVERYONE_PERMISSIONS


def user(user_id: int, username: str, *, bot: bool = False) -> JSON:
    """Return a user object."""
    return {
        "id": str(user_id),
        "username": username,
        "global_name": None if bot else username.capitalize(),
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
        "avatar_decoration_data": None,
    }


def own_user(user_id: int, username: str) -> JSON:
    """Return the bot's own user object as ``GET /users/@me`` and READY send it."""
    return {
        **user(user_id, username, bot=True),
        "flags": 0,
        "mfa_enabled": False,
        "verified": True,
        "email": None,
        "locale": "en-US",
        "premium_type": 0,
    }


def role(
    role_id: int, name: str, *, permissions: int, position: int, bot_id: int | None = None
) -> JSON:
    """Return a role object (``bot_id`` makes it the bot's managed role)."""
    payload: JSON = {
        "id": str(role_id),
        "name": name,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": position,
        "permissions": str(permissions),
        "managed": bot_id is not None,
        "mentionable": False,
        "flags": 0,
    }
    if bot_id is not None:
        payload["tags"] = {"bot_id": str(bot_id)}
    return payload


def member(
    user_payload: JSON | None, *, roles: list[int], joined_at: str, permissions: int | None = None
) -> JSON:
    """Return a guild member object; ``user_payload=None`` gives the partial form of messages."""
    payload: JSON = {
        "roles": [str(r) for r in roles],
        "joined_at": joined_at,
        "nick": None,
        "avatar": None,
        "banner": None,
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
        "communication_disabled_until": None,
    }
    if user_payload is not None:
        payload["user"] = user_payload
    if permissions is not None:
        payload["permissions"] = str(permissions)
    return payload


def channel(
    channel_id: int,
    guild_id: int,
    name: str,
    kind: ChannelType,
    *,
    position: int,
    parent_id: int | None,
    owner_id: int,
) -> JSON:
    """Return a guild channel or thread object."""
    payload: JSON = {
        "id": str(channel_id),
        "type": int(kind),
        "guild_id": str(guild_id),
        "name": name,
        "parent_id": str(parent_id) if parent_id is not None else None,
        "flags": 0,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "nsfw": False,
    }
    if kind.is_thread:
        created = iso_timestamp(snowflake_time(channel_id))
        payload.update(
            owner_id=str(owner_id),
            message_count=0,
            member_count=1,
            total_message_sent=0,
            thread_metadata={
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": created,
                "locked": False,
                "invitable": kind is ChannelType.PRIVATE_THREAD,
                "create_timestamp": created,
            },
        )
        return payload
    payload.update(position=position, permission_overwrites=[])
    if kind in (ChannelType.GUILD_TEXT, ChannelType.GUILD_NEWS):
        payload.update(topic=None, default_auto_archive_duration=1440, last_pin_timestamp=None)
    elif kind is ChannelType.GUILD_VOICE:
        payload.update(bitrate=64000, user_limit=0, rtc_region=None, video_quality_mode=1)
    return payload


def dm_channel(channel_id: int, recipient: JSON) -> JSON:
    """Return a DM channel object."""
    return {
        "id": str(channel_id),
        "type": int(ChannelType.DM),
        "recipients": [recipient],
        "last_message_id": None,
        "flags": 0,
    }


def application(app_id: int, bot_user: JSON, owner: JSON) -> JSON:
    """Return the application object of ``GET /oauth2/applications/@me``."""
    return {
        "id": str(app_id),
        "name": bot_user["username"],
        "icon": None,
        "description": "Discord emulator application",
        "summary": "",
        "type": None,
        "bot_public": True,
        "bot_require_code_grant": False,
        "bot": bot_user,
        "owner": owner,
        "team": None,
        # A 32-byte ed25519 public key in hex, as Discord sends it; hikari parses it.
        "verify_key": f"{app_id:064x}"[-64:],
        "flags": 0,
        "tags": [],
        "rpc_origins": [],
        "approximate_guild_count": 0,
        "approximate_user_install_count": 0,
        "integration_types_config": {"0": {}},
        "interactions_endpoint_url": None,
        "role_connections_verification_url": None,
        "redirect_uris": [],
    }


def attachment(
    attachment_id: int, *, url: str, filename: str, size: int, content_type: str
) -> JSON:
    """Return an attachment object whose URL the emulator serves."""
    return {
        "id": str(attachment_id),
        "filename": filename,
        "size": size,
        "url": url,
        "proxy_url": url,
        "content_type": content_type,
    }
