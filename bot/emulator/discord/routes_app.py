"""REST routes for the gateway, users, the application, its commands and guilds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.emulator.discord import payloads
from bot.emulator.discord.commands import CommandRegistry
from bot.emulator.discord.gateway import GatewayServer
from bot.emulator.discord.rest import Call, DiscordError, Reply, Route
from bot.emulator.discord.state import DiscordState

__all__ = ["AppRoutes"]

JSON = dict[str, Any]


class AppRoutes:
    """Handlers for ``/gateway``, ``/users``, ``/oauth2``, ``/applications`` and ``/guilds``."""

    def __init__(
        self,
        state: DiscordState,
        commands: CommandRegistry,
        gateway: GatewayServer,
        *,
        application_id: int,
        shards: int,
        gateway_url: Callable[[], str],
        max_concurrency: int | None = None,
    ) -> None:
        self._state = state
        self._commands = commands
        self._gateway = gateway
        self._application_id = application_id
        self._shards = shards
        self._max_concurrency = max_concurrency or max(shards, 1)
        self._gateway_url = gateway_url

    def routes(self) -> list[Route]:
        """Return this module's routes (``@me`` before ``{user_id}``)."""
        app = "/applications/{application_id}"
        guild_app = "/applications/{application_id}/guilds/{guild_id}"
        return [
            Route("GET", "/gateway", self.gateway, auth=False, bucket=None),
            Route("GET", "/gateway/bot", self.gateway_bot),
            Route("GET", "/users/@me", self.me),
            Route("GET", "/users/{user_id}", self.user),
            Route("GET", "/oauth2/applications/@me", self.application),
            Route("GET", "/applications/@me", self.application),
            Route("GET", f"{app}/commands", self.list_commands),
            Route("PUT", f"{app}/commands", self.put_commands, operation="commands_put"),
            Route("POST", f"{app}/commands", self.create_command, operation="command_create"),
            Route("GET", f"{app}/commands/{{command_id}}", self.get_command),
            Route("PATCH", f"{app}/commands/{{command_id}}", self.patch_command),
            Route("DELETE", f"{app}/commands/{{command_id}}", self.delete_command),
            Route("GET", f"{guild_app}/commands", self.list_commands, major=("guild_id",)),
            Route(
                "PUT",
                f"{guild_app}/commands",
                self.put_commands,
                major=("guild_id",),
                operation="guild_commands_put",
            ),
            Route(
                "POST",
                f"{guild_app}/commands",
                self.create_command,
                major=("guild_id",),
                operation="guild_command_create",
            ),
            Route(
                "GET", f"{guild_app}/commands/{{command_id}}", self.get_command, major=("guild_id",)
            ),
            Route(
                "PATCH",
                f"{guild_app}/commands/{{command_id}}",
                self.patch_command,
                major=("guild_id",),
            ),
            Route(
                "DELETE",
                f"{guild_app}/commands/{{command_id}}",
                self.delete_command,
                major=("guild_id",),
            ),
            Route("GET", "/guilds/{guild_id}", self.guild, major=("guild_id",)),
            Route("GET", "/guilds/{guild_id}/channels", self.guild_channels, major=("guild_id",)),
            Route("GET", "/guilds/{guild_id}/roles", self.guild_roles, major=("guild_id",)),
            Route(
                "GET",
                "/guilds/{guild_id}/members/{user_id}",
                self.guild_member,
                major=("guild_id",),
            ),
        ]

    async def gateway(self, _: Call) -> Reply:
        """GET /gateway."""
        return Reply({"url": self._gateway_url()})

    async def gateway_bot(self, _: Call) -> Reply:
        """GET /gateway/bot: the URL, the shard count and the start limit (by default one
        that never waits: every shard in one identify bucket)."""
        started = sum(self._gateway.identifies.values())
        return Reply(
            {
                "url": self._gateway_url(),
                "shards": self._shards,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": max(1000 - started, self._shards),
                    "reset_after": 86_400_000,
                    # Default: all shards in one window (hikari waits 5 s between windows).
                    "max_concurrency": self._max_concurrency,
                },
            }
        )

    async def me(self, _: Call) -> Reply:
        """GET /users/@me."""
        bot = self._state.bot_user
        return Reply(payloads.own_user(int(bot["id"]), str(bot["username"])))

    async def user(self, call: Call) -> Reply:
        """GET /users/{id}."""
        found = self._state.users.get(call.snowflake("user_id"))
        if found is None:
            raise DiscordError(404, 10013, "Unknown User")
        return Reply(found)

    async def application(self, _: Call) -> Reply:
        """GET /oauth2/applications/@me."""
        return Reply(
            payloads.application(self._application_id, self._state.bot_user, self._state.owner)
        )

    def _scope(self, call: Call) -> int | None:
        if call.snowflake("application_id") != self._application_id:
            raise DiscordError(403, 50001, "Missing Access", violation=True)
        if "guild_id" not in call.params:
            return None
        guild_id = call.snowflake("guild_id")
        if guild_id not in self._state.guilds:
            raise DiscordError(404, 10004, "Unknown Guild")
        return guild_id

    def _command_id(self, call: Call) -> int:
        return call.snowflake("command_id")

    async def list_commands(self, call: Call) -> Reply:
        """GET .../commands."""
        return Reply(self._commands.in_scope(self._scope(call)))

    async def put_commands(self, call: Call) -> Reply:
        """PUT .../commands: replace the scope's commands."""
        bodies = call.body if isinstance(call.body, list) else []
        return Reply(self._commands.overwrite(self._scope(call), bodies))

    async def create_command(self, call: Call) -> Reply:
        """POST .../commands: 201 when new, 200 when it replaced one of the same name."""
        command, created = self._commands.upsert(self._scope(call), call.json_body())
        return Reply(command, status=201 if created else 200)

    async def get_command(self, call: Call) -> Reply:
        """GET .../commands/{id}."""
        found = self._commands.get(self._scope(call), self._command_id(call))
        if found is None:
            raise DiscordError(404, 10063, "Unknown application command")
        return Reply(found)

    async def patch_command(self, call: Call) -> Reply:
        """PATCH .../commands/{id}."""
        found = self._commands.patch(self._scope(call), self._command_id(call), call.json_body())
        if found is None:
            raise DiscordError(404, 10063, "Unknown application command")
        return Reply(found)

    async def delete_command(self, call: Call) -> Reply:
        """DELETE .../commands/{id}."""
        if not self._commands.delete(self._scope(call), self._command_id(call)):
            raise DiscordError(404, 10063, "Unknown application command")
        return Reply()

    def _guild_id(self, call: Call) -> int:
        guild_id = call.snowflake("guild_id")
        if guild_id not in self._state.guilds:
            raise DiscordError(404, 10004, "Unknown Guild")
        return guild_id

    async def guild(self, call: Call) -> Reply:
        """GET /guilds/{id}."""
        payload = self._state.guild_create_payload(self._guild_id(call), all_members=False)
        for gateway_only in (
            "members",
            "channels",
            "threads",
            "presences",
            "voice_states",
            "joined_at",
        ):
            payload.pop(gateway_only, None)
        return Reply(payload)

    async def guild_channels(self, call: Call) -> Reply:
        """GET /guilds/{id}/channels (threads are not listed here, as on Discord)."""
        guild = self._state.guilds[self._guild_id(call)]
        return Reply(
            [c for c in guild.channels.values() if not payloads.ChannelType(c["type"]).is_thread]
        )

    async def guild_roles(self, call: Call) -> Reply:
        """GET /guilds/{id}/roles."""
        return Reply(list(self._state.guilds[self._guild_id(call)].roles.values()))

    async def guild_member(self, call: Call) -> Reply:
        """GET /guilds/{id}/members/{user_id}."""
        guild = self._state.guilds[self._guild_id(call)]
        user_id = call.snowflake("user_id")
        if user_id not in guild.members:
            raise DiscordError(404, 10007, "Unknown Member")
        return Reply(self._state.member_payload(guild.id, user_id))
