"""Application commands as registered by the bot, and the interactions that invoke them."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from bot.emulator.discord import payloads
from bot.emulator.discord.ids import SnowflakeFactory
from bot.emulator.discord.state import DiscordState

__all__ = ["CommandRegistry", "command_options", "component_payload", "interaction_payload"]

JSON = dict[str, Any]
_SUB_COMMAND, _SUB_COMMAND_GROUP = 1, 2
_USER, _CHANNEL, _ROLE, _MENTIONABLE, _ATTACHMENT = 6, 7, 8, 9, 11
_STRING, _INTEGER, _BOOLEAN, _NUMBER = 3, 4, 5, 10
_APPLICATION_COMMAND = 2
_MESSAGE_COMPONENT, _BUTTON = 3, 2
_CONTEXT_GUILD, _CONTEXT_BOT_DM = 0, 1
_ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024


class CommandRegistry:
    """Global and per-guild commands; ids survive re-registration like Discord's do."""

    def __init__(self, ids: SnowflakeFactory, application_id: int) -> None:
        self._ids = ids
        self._application_id = application_id
        self._scopes: dict[int | None, dict[tuple[int, str], JSON]] = {}

    def in_scope(self, guild_id: int | None) -> list[JSON]:
        """Return the commands of a scope (None is global)."""
        return list(self._scopes.get(guild_id, {}).values())

    def all(self) -> list[JSON]:
        """Return every command, global first."""
        ordered = sorted(self._scopes.items(), key=lambda item: item[0] is not None)
        return [command for _, scope in ordered for command in scope.values()]

    def overwrite(self, guild_id: int | None, bodies: list[JSON]) -> list[JSON]:
        """Replace a scope's commands (bulk PUT)."""
        old = self._scopes.get(guild_id, {})
        new: dict[tuple[int, str], JSON] = {}
        for body in bodies:
            key = _key(body)
            new[key] = self._command(guild_id, body, old.get(key))
        self._scopes[guild_id] = new
        return list(new.values())

    def upsert(self, guild_id: int | None, body: JSON) -> tuple[JSON, bool]:
        """Create or update one command; return it and whether it is new."""
        scope = self._scopes.setdefault(guild_id, {})
        key = _key(body)
        existing = scope.get(key)
        scope[key] = self._command(guild_id, body, existing)
        return scope[key], existing is None

    def get(self, guild_id: int | None, command_id: int) -> JSON | None:
        """Return a command by id."""
        for command in self._scopes.get(guild_id, {}).values():
            if int(command["id"]) == command_id:
                return command
        return None

    def patch(self, guild_id: int | None, command_id: int, body: JSON) -> JSON | None:
        """Update fields of a command by id."""
        command = self.get(guild_id, command_id)
        if command is None:
            return None
        merged = {**command, **body}
        self.delete(guild_id, command_id)
        return self.upsert(guild_id, merged)[0]

    def delete(self, guild_id: int | None, command_id: int) -> bool:
        """Delete a command by id."""
        scope = self._scopes.get(guild_id, {})
        for key, command in list(scope.items()):
            if int(command["id"]) == command_id:
                del scope[key]
                return True
        return False

    def find(self, name: str, guild_id: int | None, kind: int = 1) -> JSON | None:
        """Return the command a user would invoke by name: the guild's own first, then global."""
        for scope in ([guild_id] if guild_id is not None else []) + [None]:
            if (command := self._scopes.get(scope, {}).get((kind, name))) is not None:
                return command
        return None

    def _command(self, guild_id: int | None, body: JSON, existing: JSON | None) -> JSON:
        permissions = body.get("default_member_permissions")
        command: JSON = {
            "id": existing["id"] if existing else str(self._ids.next()),
            "application_id": str(self._application_id),
            "version": str(self._ids.next()),
            "type": int(body.get("type") or 1),
            "name": body["name"],
            "name_localizations": body.get("name_localizations") or None,
            "description": body.get("description", ""),
            "description_localizations": body.get("description_localizations") or None,
            "options": body.get("options") or [],
            "default_member_permissions": str(permissions) if permissions is not None else None,
            "dm_permission": body.get("dm_permission", True),
            "contexts": body.get("contexts"),
            "integration_types": body.get("integration_types") or [0],
            "nsfw": bool(body.get("nsfw", False)),
        }
        if guild_id is not None:
            command["guild_id"] = str(guild_id)
        return command


def _key(body: Mapping[str, Any]) -> tuple[int, str]:
    return int(body.get("type") or 1), str(body["name"])


def command_options(
    state: DiscordState,
    declared: list[JSON],
    given: Mapping[str, Any],
    guild_id: int | None,
    resolved: JSON,
) -> list[JSON]:
    """Turn ``{"name": value}`` into interaction options typed like the registered command.

    Sub-commands take a mapping of their own options. Users, channels, roles and attachments
    are added to ``resolved`` as Discord does.
    """
    by_name = {option["name"]: option for option in declared}
    unknown = [name for name in given if name not in by_name]
    if unknown:
        msg = f"unknown option(s) {unknown}; the command declares {sorted(by_name)}"
        raise ValueError(msg)
    options: list[JSON] = []
    for name, value in given.items():
        option_type = int(by_name[name]["type"])
        if option_type in (_SUB_COMMAND, _SUB_COMMAND_GROUP):
            nested = command_options(
                state, by_name[name].get("options") or [], value or {}, guild_id, resolved
            )
            options.append({"type": option_type, "name": name, "options": nested})
        else:
            converted = _option_value(state, option_type, value, guild_id, resolved)
            options.append({"type": option_type, "name": name, "value": converted})
    missing = [
        o["name"]
        for o in declared
        if o.get("required") and o["name"] not in given and o["type"] not in (1, 2)
    ]
    if missing:
        msg = f"required option(s) {missing} missing: Discord clients always send them"
        raise ValueError(msg)
    return options


def _option_value(
    state: DiscordState, option_type: int, value: Any, guild_id: int | None, resolved: JSON
) -> Any:
    if option_type == _STRING:
        return str(value)
    if option_type == _INTEGER:
        return int(value)
    if option_type == _NUMBER:
        return float(value)
    if option_type == _BOOLEAN:
        return bool(value)
    snowflake = int(value["id"]) if isinstance(value, Mapping) else int(value)
    key = str(snowflake)
    if option_type in (_USER, _MENTIONABLE) and snowflake in state.users:
        resolved.setdefault("users", {})[key] = state.users[snowflake]
        if guild_id is not None:
            member = state.member_payload(guild_id, snowflake, with_user=False)
            member["permissions"] = str(state.permissions(guild_id, snowflake))
            resolved.setdefault("members", {})[key] = member
    elif option_type in (_ROLE, _MENTIONABLE) and guild_id is not None:
        role = state.guild(guild_id).roles.get(snowflake)
        if role is not None:
            resolved.setdefault("roles", {})[key] = role
    elif option_type == _CHANNEL and (channel := state.channel(snowflake)) is not None:
        resolved.setdefault("channels", {})[key] = {**channel, "permissions": str(0)}
    elif option_type == _ATTACHMENT and (stored := state.attachments.get(snowflake)) is not None:
        resolved.setdefault("attachments", {})[key] = stored.payload
    return key


def interaction_payload(
    state: DiscordState,
    *,
    application_id: int,
    command: JSON,
    options: Mapping[str, Any],
    user: JSON,
    channel: JSON,
    extra_permissions: int,
) -> JSON:
    """Return the INTERACTION_CREATE data of ``user`` invoking ``command`` in ``channel``."""
    raw_guild = channel.get("guild_id")
    guild_id = int(raw_guild) if raw_guild is not None else None
    resolved: JSON = {}
    data: JSON = {
        "id": command["id"],
        "name": command["name"],
        "type": command["type"],
        "options": command_options(state, command["options"], options, guild_id, resolved),
    }
    if resolved:
        data["resolved"] = resolved
    if "guild_id" in command:
        data["guild_id"] = command["guild_id"]
    payload: JSON = {
        "id": str(state.ids.next()),
        "application_id": str(application_id),
        "type": _APPLICATION_COMMAND,
        "token": secrets.token_urlsafe(48),
        "version": 1,
        "data": data,
        "channel_id": channel["id"],
        "locale": "en-US",
        "entitlements": [],
        "entitlement_sku_ids": [],
        "attachment_size_limit": _ATTACHMENT_SIZE_LIMIT,
    }
    if guild_id is None:
        payload.update(
            channel={**channel},
            user=user,
            app_permissions=str(payloads.BOT_PERMISSIONS),
            authorizing_integration_owners={"0": "0"},
            context=_CONTEXT_BOT_DM,
        )
        return payload
    user_id = int(user["id"])
    granted = state.permissions(guild_id, user_id) | extra_permissions
    payload.update(
        guild_id=str(guild_id),
        guild_locale="en-US",
        guild={"id": str(guild_id), "locale": "en-US", "features": []},
        channel={**channel, "permissions": str(granted)},
        member={**state.member_payload(guild_id, user_id), "permissions": str(granted)},
        app_permissions=str(state.permissions(guild_id, state.bot_id)),
        authorizing_integration_owners={"0": str(guild_id)},
        context=_CONTEXT_GUILD,
    )
    return payload


def component_payload(
    state: DiscordState,
    *,
    application_id: int,
    message: JSON,
    custom_id: str,
    user: JSON,
    channel: JSON,
    extra_permissions: int,
) -> JSON:
    """Return the INTERACTION_CREATE data of ``user`` pressing button ``custom_id`` on
    ``message`` (a MESSAGE_COMPONENT interaction)."""
    command: JSON = {"id": "0", "name": "", "type": 1, "options": []}
    payload = interaction_payload(
        state,
        application_id=application_id,
        command=command,
        options={},
        user=user,
        channel=channel,
        extra_permissions=extra_permissions,
    )
    payload.update(
        type=_MESSAGE_COMPONENT,
        data={"custom_id": custom_id, "component_type": _BUTTON},
        message=message,
    )
    return payload
