"""The emulated Discord world: users, guilds, channels, messages and attachments."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bot.emulator.discord import payloads
from bot.emulator.discord.ids import SnowflakeFactory, iso_timestamp
from bot.emulator.discord.payloads import ChannelType
from bot.emulator.discord.records import BoundedDict

__all__ = ["DiscordState", "Guild", "Member", "StoredAttachment"]

JSON = dict[str, Any]


@dataclass
class Member:
    """A user's membership in a guild."""

    user: JSON
    roles: list[int]
    permissions: int
    joined_at: str


@dataclass
class Guild:
    """A guild with its roles, channels (threads included) and members."""

    id: int
    name: str
    owner_id: int
    roles: dict[int, JSON] = field(default_factory=dict)
    channels: dict[int, JSON] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)
    general_channel_id: int = 0
    joined_at: str = ""


@dataclass
class StoredAttachment:
    """Bytes served at an attachment URL, with the attachment object describing them."""

    payload: JSON
    data: bytes


class DiscordState:
    """Everything that exists in the emulated Discord, with bounded history."""

    def __init__(self, ids: SnowflakeFactory, bot_user: JSON, *, history_limit: int) -> None:
        self.ids = ids
        self.bot_user = bot_user
        self.bot_id = int(bot_user["id"])
        self.history_limit = history_limit
        self.users: dict[int, JSON] = {self.bot_id: bot_user}
        self.guilds: dict[int, Guild] = {}
        self.dm_channels: dict[int, JSON] = {}
        self._dm_by_user: dict[int, int] = {}
        self._channel_guild: dict[int, int] = {}
        self.messages: BoundedDict[int, JSON] = BoundedDict(history_limit)
        self._history: dict[int, deque[int]] = {}
        self.attachments: BoundedDict[int, StoredAttachment] = BoundedDict(history_limit)
        self.owner = payloads.user(ids.next(), "guild-owner")

    # Users, guilds and channels

    def create_user(self, username: str, *, bot: bool = False) -> JSON:
        """Create and remember a user."""
        new = payloads.user(self.ids.next(), username, bot=bot)
        self.users[int(new["id"])] = new
        return new

    def create_guild(self, name: str) -> Guild:
        """Create a guild with @everyone, the bot's role and member, and a #general channel."""
        guild_id = self.ids.next()
        guild = Guild(id=guild_id, name=name, owner_id=int(self.owner["id"]))
        guild.joined_at = iso_timestamp()
        # Discord gives @everyone the guild's own id.
        guild.roles[guild_id] = payloads.role(
            guild_id, "@everyone", permissions=payloads.EVERYONE_PERMISSIONS, position=0
        )
        bot_role = self.ids.next()
        guild.roles[bot_role] = payloads.role(
            bot_role,
            self.bot_user["username"],
            permissions=payloads.BOT_PERMISSIONS,
            position=1,
            bot_id=self.bot_id,
        )
        guild.members[self.bot_id] = Member(self.bot_user, [bot_role], 0, guild.joined_at)
        self.guilds[guild_id] = guild
        guild.general_channel_id = int(self.create_channel(guild_id, "general")["id"])
        return guild

    def create_role(self, guild_id: int, name: str, permissions: int) -> JSON:
        """Create a role in a guild."""
        guild = self.guild(guild_id)
        role_id = self.ids.next()
        guild.roles[role_id] = payloads.role(
            role_id, name, permissions=permissions, position=len(guild.roles)
        )
        return guild.roles[role_id]

    def create_channel(
        self,
        guild_id: int,
        name: str,
        kind: ChannelType = ChannelType.GUILD_TEXT,
        parent_id: int | None = None,
    ) -> JSON:
        """Create a guild channel or thread (threads need a text ``parent_id``)."""
        guild = self.guild(guild_id)
        if kind.is_thread and (parent_id is None or parent_id not in guild.channels):
            msg = f"a thread needs parent_id, a channel of guild {guild_id}"
            raise ValueError(msg)
        channel_id = self.ids.next()
        guild.channels[channel_id] = payloads.channel(
            channel_id,
            guild_id,
            name,
            kind,
            position=len(guild.channels),
            parent_id=parent_id,
            owner_id=self.bot_id,
        )
        self._channel_guild[channel_id] = guild_id
        return guild.channels[channel_id]

    def add_member(self, guild_id: int, user: JSON, roles: list[int], permissions: int) -> Member:
        """Add (or replace) a user's membership in a guild."""
        guild = self.guild(guild_id)
        unknown = [r for r in roles if r not in guild.roles]
        if unknown:
            msg = f"roles {unknown} do not exist in guild {guild_id}: use create_role() first"
            raise ValueError(msg)
        self.users.setdefault(int(user["id"]), user)
        added = Member(user, list(roles), permissions, iso_timestamp())
        guild.members[int(user["id"])] = added
        return added

    def create_dm(self, user: JSON) -> JSON:
        """Return the DM channel between the bot and a user, creating it once."""
        user_id = int(user["id"])
        self.users.setdefault(user_id, user)
        if (existing := self._dm_by_user.get(user_id)) is not None:
            return self.dm_channels[existing]
        channel_id = self.ids.next()
        self.dm_channels[channel_id] = payloads.dm_channel(channel_id, user)
        self._dm_by_user[user_id] = channel_id
        return self.dm_channels[channel_id]

    def guild(self, guild_id: int) -> Guild:
        """Return a guild or raise a KeyError that names it."""
        try:
            return self.guilds[guild_id]
        except KeyError:
            msg = f"unknown guild {guild_id}: create it with create_guild()"
            raise KeyError(msg) from None

    def channel(self, channel_id: int) -> JSON | None:
        """Return a guild channel, thread or DM channel, or None."""
        if (guild_id := self._channel_guild.get(channel_id)) is not None:
            return self.guilds[guild_id].channels.get(channel_id)
        return self.dm_channels.get(channel_id)

    def guild_id_of(self, channel_id: int) -> int | None:
        """Return the guild a channel belongs to (None for DMs and unknown channels)."""
        return self._channel_guild.get(channel_id)

    def member_payload(self, guild_id: int, user_id: int, *, with_user: bool = True) -> JSON:
        """Return a member object, adding the user as a plain member if needed."""
        guild = self.guild(guild_id)
        found = guild.members.get(user_id)
        if found is None:
            found = self.add_member(guild_id, self.users[user_id], [], 0)
        return payloads.member(
            found.user if with_user else None, roles=found.roles, joined_at=found.joined_at
        )

    def permissions(self, guild_id: int, user_id: int) -> int:
        """Return a member's permissions: @everyone, their roles and their extra grants."""
        guild = self.guild(guild_id)
        total = int(guild.roles[guild_id]["permissions"])
        found = guild.members.get(user_id)
        if found is not None:
            total |= found.permissions
            for role_id in found.roles:
                total |= int(guild.roles[role_id]["permissions"])
        return total

    def guild_create_payload(
        self, guild_id: int, *, all_members: bool, newly_joined: bool = False
    ) -> JSON:
        """Return the GUILD_CREATE data of a guild (members: the bot's, or all of them).

        A guild the bot just joined has no ``unavailable`` key, which is how clients tell a
        join from a guild becoming available after READY.
        """
        guild = self.guild(guild_id)
        members = [
            payloads.member(m.user, roles=m.roles, joined_at=m.joined_at)
            for user_id, m in guild.members.items()
            if all_members or user_id == self.bot_id
        ]
        channels = [c for c in guild.channels.values() if not ChannelType(c["type"]).is_thread]
        threads = [
            {
                **c,
                "member": {
                    "id": c["id"],
                    "user_id": str(self.bot_id),
                    "flags": 0,
                    "join_timestamp": c["thread_metadata"]["create_timestamp"],
                },
            }
            for c in guild.channels.values()
            if ChannelType(c["type"]).is_thread
        ]
        payload: JSON = {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(guild.owner_id),
            "application_id": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "widget_enabled": False,
            "widget_channel_id": None,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "nsfw": False,
            "features": [],
            "system_channel_id": str(guild.general_channel_id),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "max_presences": None,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "incidents_data": None,
            "hub_type": None,
            "roles": list(guild.roles.values()),
            "emojis": [],
            "stickers": [],
            "joined_at": guild.joined_at,
            "large": False,
            "lazy": True,
            "unavailable": False,
            "member_count": len(guild.members),
            "members": members,
            "channels": channels,
            "threads": threads,
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "embedded_activities": [],
        }
        if newly_joined:
            del payload["unavailable"]
        return payload

    # Messages and attachments

    def store_message(self, message: JSON) -> None:
        """Remember a message so REST can fetch it and channel history can list it."""
        message_id = int(message["id"])
        channel_id = int(message["channel_id"])
        self.messages[message_id] = message
        history = self._history.get(channel_id)
        if history is None:
            history = self._history[channel_id] = deque(maxlen=self.history_limit)
        history.append(message_id)
        if (channel := self.channel(channel_id)) is not None:
            channel["last_message_id"] = str(message_id)

    def history(self, channel_id: int) -> list[JSON]:
        """Return the remembered messages of a channel, oldest first."""
        ids = self._history.get(channel_id, ())
        return [self.messages[i] for i in ids if i in self.messages]

    def store_attachment(self, payload: JSON, data: bytes) -> None:
        """Remember bytes to serve at the attachment's URL."""
        self.attachments[int(payload["id"])] = StoredAttachment(payload, data)
