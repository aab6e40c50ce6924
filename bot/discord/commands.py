"""Slash commands (hikari-lightbulb 3): /chat, /clear, /status, /health."""

from __future__ import annotations

import logging
from typing import Any, Protocol

import hikari
import lightbulb

from bot.chat.models import IncomingMessage, InteractionTarget
from bot.chat.pipeline import ChatPipeline

__all__ = ["CommandServices", "StatusReporter", "build_commands"]

log = logging.getLogger(__name__)


class StatusReporter(Protocol):
    def status_text(self) -> str: ...

    def health_text(self) -> str: ...


class CommandServices:
    """What the commands need, gathered so the command classes stay declarations."""

    def __init__(
        self, pipeline: ChatPipeline, reporter: StatusReporter, admin_user_ids: frozenset[int]
    ) -> None:
        self.pipeline = pipeline
        self.reporter = reporter
        self.admin_user_ids = admin_user_ids

    def is_admin(self, ctx: lightbulb.Context) -> bool:
        """ADMIN_USER_IDS, or Manage Server in the guild the command came from."""
        if int(ctx.user.id) in self.admin_user_ids:
            return True
        member = ctx.member
        return member is not None and bool(member.permissions & ADMIN_PERMISSIONS)


# Discord hides admin commands from members without these; the bot checks again on use.
ADMIN_PERMISSIONS = hikari.Permissions.MANAGE_GUILD
NOT_ADMIN_TEXT = "Only bot admins (ADMIN_USER_IDS) or members with Manage Server can do that."


def _can_manage_messages(ctx: lightbulb.Context) -> bool:
    member = ctx.member
    if member is None:  # a DM: the user owns the conversation
        return True
    return bool(member.permissions & hikari.Permissions.MANAGE_MESSAGES)


def build_commands(services: CommandServices) -> list[type[lightbulb.SlashCommand]]:
    """The command classes, bound to this bot's services."""

    class Chat(lightbulb.SlashCommand, name="chat", description="Ask the bot something"):
        message = lightbulb.string("message", "What you want to ask", max_length=4000)

        @lightbulb.invoke
        async def invoke(self, ctx: lightbulb.Context) -> None:
            await ctx.defer()
            interaction = ctx.interaction
            member = ctx.member
            incoming = IncomingMessage(
                message_id=int(interaction.id),
                channel_id=int(interaction.channel_id),
                guild_id=int(interaction.guild_id) if interaction.guild_id else None,
                author_id=int(ctx.user.id),
                author_name=member.display_name if member else ctx.user.username,
                text=str(self.message),
                target=InteractionTarget(
                    int(interaction.application_id), interaction.token, int(interaction.channel_id)
                ),
                role_ids=frozenset(int(r) for r in member.role_ids) if member else frozenset(),
                source="slash",
            )
            await services.pipeline.handle(incoming)

    class Clear(
        lightbulb.SlashCommand,
        name="clear",
        description="Forget your part of this channel's conversation, or all of it",
    ):
        scope = lightbulb.string(
            "scope",
            "Whose messages to forget",
            default="me",
            choices=[lightbulb.Choice("mine", "me"), lightbulb.Choice("everyone's", "channel")],
        )

        @lightbulb.invoke
        async def invoke(self, ctx: lightbulb.Context) -> None:
            channel = int(ctx.interaction.channel_id)
            pipeline = services.pipeline
            if self.scope == "channel":
                if not _can_manage_messages(ctx):
                    await ctx.respond(
                        "Forgetting everyone's messages needs the Manage Messages permission; "
                        "`/clear` without options forgets yours.",
                        ephemeral=True,
                    )
                    return
                pipeline.memory.clear(channel)
                text = "Done: I forgot this channel's whole conversation."
            else:
                pipeline.memory.clear_user(channel, int(ctx.user.id))
                text = "Done: I forgot your messages in this channel."
            pipeline.llm.cache.clear_tag(channel)
            await ctx.respond(text, ephemeral=True)

    class Status(lightbulb.SlashCommand, name="status", description="The bot's current state"):
        @lightbulb.invoke
        async def invoke(self, ctx: lightbulb.Context) -> None:
            await ctx.respond(services.reporter.status_text(), ephemeral=True)

    class Health(lightbulb.SlashCommand, name="health", description="A compact health summary"):
        @lightbulb.invoke
        async def invoke(self, ctx: lightbulb.Context) -> None:
            await ctx.respond(services.reporter.health_text(), ephemeral=True)

    class Maintenance(
        lightbulb.SlashCommand,
        name="maintenance",
        description="Turn maintenance mode on or off (admins only)",
        default_member_permissions=ADMIN_PERMISSIONS,
    ):
        mode = lightbulb.string(
            "mode",
            "on: stop calling the model; off: back to normal",
            choices=[lightbulb.Choice("on", "on"), lightbulb.Choice("off", "off")],
        )

        @lightbulb.invoke
        async def invoke(self, ctx: lightbulb.Context) -> None:
            if not services.is_admin(ctx):
                await ctx.respond(NOT_ADMIN_TEXT, ephemeral=True)
                return
            degradation = services.pipeline.degradation
            if self.mode == "on":
                degradation.enter_maintenance(f"maintenance set by {ctx.user.username}")
                text = "Maintenance mode is on: I answer with the maintenance text or the cache."
            else:
                was_on = degradation.exit_maintenance()
                text = "Maintenance mode is off." if was_on else "Maintenance mode was not on."
            log.warning("maintenance mode %s by an admin", self.mode)
            await ctx.respond(text, ephemeral=True)

    commands: list[Any] = [Chat, Clear, Status, Health, Maintenance]
    return commands
