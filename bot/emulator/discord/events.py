"""Gateway events built from the emulated world, with the intents each one needs."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.emulator.discord.gateway import GatewayServer
from bot.emulator.discord.payloads import ChannelType, Intent
from bot.emulator.discord.state import DiscordState

__all__ = ["EventPublisher"]

JSON = dict[str, Any]
Futures = list[asyncio.Future[None]]


class EventPublisher:
    """Turns changes of the world into dispatches on the right shards."""

    def __init__(self, state: DiscordState, gateway: GatewayServer) -> None:
        self._state = state
        self._gateway = gateway

    def message(self, event: str, message: JSON) -> Futures:
        """Dispatch MESSAGE_CREATE or MESSAGE_UPDATE for a stored message."""
        channel_id = int(message["channel_id"])
        guild_id = self._state.guild_id_of(channel_id)
        author_id = int(message["author"]["id"])
        data = dict(message)
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
            if "webhook_id" not in message:
                data["member"] = self._state.member_payload(guild_id, author_id, with_user=False)
        bot_id = self._state.bot_id
        mentions_bot = any(int(u["id"]) == bot_id for u in message.get("mentions", ()))
        # Without MESSAGE_CONTENT a bot still sees DMs, its own messages and its mentions.
        visible = guild_id is None or mentions_bot or author_id == bot_id
        intent = Intent.GUILD_MESSAGES if guild_id is not None else Intent.DIRECT_MESSAGES
        return self._gateway.dispatch(
            event, data, guild_id=guild_id, intent=intent, content_visible=visible
        )

    def message_delete(self, channel_id: int, message_id: int) -> Futures:
        """Dispatch MESSAGE_DELETE."""
        guild_id = self._state.guild_id_of(channel_id)
        data: JSON = {"id": str(message_id), "channel_id": str(channel_id)}
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
        intent = Intent.GUILD_MESSAGES if guild_id is not None else Intent.DIRECT_MESSAGES
        return self._gateway.dispatch("MESSAGE_DELETE", data, guild_id=guild_id, intent=intent)

    def guild_create(self, guild_id: int) -> Futures:
        """Dispatch GUILD_CREATE for a guild the bot just joined."""
        return self._gateway.dispatch_guild_create(guild_id)

    def channel_create(self, channel: JSON) -> Futures:
        """Dispatch CHANNEL_CREATE, or THREAD_CREATE for a new thread."""
        guild_id = int(channel["guild_id"])
        if ChannelType(channel["type"]).is_thread:
            data = {**channel, "newly_created": True}
            return self._gateway.dispatch(
                "THREAD_CREATE", data, guild_id=guild_id, intent=Intent.GUILDS
            )
        return self._gateway.dispatch(
            "CHANNEL_CREATE", channel, guild_id=guild_id, intent=Intent.GUILDS
        )

    def member_add(self, guild_id: int, user_id: int) -> Futures:
        """Dispatch GUILD_MEMBER_ADD (needs the privileged GUILD_MEMBERS intent)."""
        data = {**self._state.member_payload(guild_id, user_id), "guild_id": str(guild_id)}
        return self._gateway.dispatch(
            "GUILD_MEMBER_ADD", data, guild_id=guild_id, intent=Intent.GUILD_MEMBERS
        )

    def interaction_create(self, payload: JSON) -> Futures:
        """Dispatch INTERACTION_CREATE (interactions need no intent)."""
        raw_guild = payload.get("guild_id")
        guild_id = int(raw_guild) if raw_guild is not None else None
        return self._gateway.dispatch("INTERACTION_CREATE", payload, guild_id=guild_id)
