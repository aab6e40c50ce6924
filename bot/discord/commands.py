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

    def __init__(self, pipeline: ChatPipeline, reporter: StatusReporter) -> None:
        self.pipeline = pipeline
        self.reporter = reporter


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

    commands: list[Any] = [Chat, Clear, Status, Health]
    return commands
