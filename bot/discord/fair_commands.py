"""Fair-use slash commands: `/quota`, `/quota-set` (admins) and the `/channel` group.

`/quota-set` is a command of its own rather than a `set` sub-command of `/quota`: Discord sets
`default_member_permissions` per top-level command, and a command with sub-commands cannot be
run by itself, so this is how `/quota` stays open to everyone while Discord hides the admin
command from members without Manage Server.
"""

from __future__ import annotations

import logging
from typing import Any, Final, Protocol

import hikari
import lightbulb

from bot.chat.budget import BudgetGate, BudgetStatus, Scope
from bot.chat.channels import ChannelSettings
from bot.chat.pipeline import ChatPipeline
from bot.llm.quota import QuotaSnapshot
from bot.store import StoreError

__all__ = ["CHANNEL_PERMISSIONS", "CommandServices", "build_fair_commands", "quota_text"]


class CommandServices(Protocol):
    """What these commands need of `bot.discord.commands.CommandServices`."""

    pipeline: ChatPipeline
    admin_user_ids: frozenset[int]

    def is_admin(self, ctx: lightbulb.Context) -> bool: ...

    def manages_guild(self, ctx: lightbulb.Context) -> bool: ...


log = logging.getLogger(__name__)

# Discord hides `/channel` from members without this; the bot checks again on use.
CHANNEL_PERMISSIONS: Final = hikari.Permissions.MANAGE_CHANNELS
NO_BUDGETS_TEXT: Final = "Token budgets are not wired into this bot."
NO_CHANNELS_TEXT: Final = "Channel settings are not wired into this bot."
GUILD_ONLY_TEXT: Final = "Channel settings are for server channels, not DMs."
NOT_CHANNEL_ADMIN_TEXT: Final = (
    "Only bot admins (ADMIN_USER_IDS) or members with Manage Channels can change this channel."
)
_SCOPE_OF_CHOICE: Final[dict[str, Scope]] = {"user": "user", "role": "role", "server": "guild"}


def _amount(used: int, limit: int) -> str:
    if not limit:
        return f"{used:,} used (no limit)"
    return f"{used:,} of {limit:,} used, {max(0, limit - used):,} left"


def quota_text(status: BudgetStatus, quota: QuotaSnapshot | None) -> str:
    """What `/quota` shows: the caller's tokens, the server's, the reset, the bot's quota."""
    reset = int(status.resets_at)
    mine = _amount(status.user_used, status.user_limit)
    if status.user_scope == "role" and status.user_limit:
        mine += " (your role's budget)"
    lines = [f"**Your tokens today**: {mine}"]
    if status.exempt:
        lines.append("You are a bot admin here: budgets do not apply to you.")
    if status.guild_used is not None:
        lines.append(f"**This server today**: {_amount(status.guild_used, status.guild_limit)}")
    lines.append(f"Budgets reset <t:{reset}:R> (<t:{reset}:f>).")
    if quota is not None:
        lines.append(
            f"**The bot's Gemini quota**: {quota.minute.used} of {quota.minute.limit} requests "
            f"this minute, {quota.day.used:,} of {quota.day.limit:,} today (resets "
            f"<t:{int(quota.day.resets_at)}:R>)."
        )
    return "\n".join(lines)


def _roles(ctx: lightbulb.Context) -> frozenset[int]:
    member = ctx.member
    return frozenset(int(r) for r in member.role_ids) if member is not None else frozenset()


def _may_set(
    services: CommandServices,
    gate: BudgetGate,
    ctx: lightbulb.Context,
    scope: Scope,
    tokens: int | None,
) -> str | None:
    """None if the caller may set this budget, else why not.

    Bot admins (ADMIN_USER_IDS) may set any budget. A server's admins (Manage Server) may
    set their own server's budget and its roles', but not above what the operator's settings
    allow (nor to unlimited while a limit is set), and no user's (a user's budget is global).
    `tokens` None removes an override: back to the settings, always within them.
    """
    if int(ctx.user.id) in services.admin_user_ids:
        return None
    if not services.is_admin(ctx):
        return "Only bot admins (ADMIN_USER_IDS) or members with Manage Server can do that."
    if scope == "user":
        return "A user's budget counts in every server: only bot admins (ADMIN_USER_IDS) set it."
    ceiling = gate.policy.guild_daily if scope == "guild" else gate.policy.user_daily
    if ceiling and tokens is not None and (tokens == 0 or tokens > ceiling):
        return (
            f"The bot's operator caps this budget at {ceiling:,} tokens a day: "
            "server admins can set it lower, not higher."
        )
    return None


def build_fair_commands(services: CommandServices) -> list[Any]:
    """`/quota`, `/quota-set` and `/channel`, bound to this bot's services."""
    budgets = services.pipeline.budgets
    channels = services.pipeline.channels

    class Quota(
        lightbulb.SlashCommand,
        name="quota",
        description="Your token budget today, the server's, and the bot's Gemini quota",
    ):
        @lightbulb.invoke
        async def invoke(self, ctx: lightbulb.Context) -> None:
            if budgets is None:
                await ctx.respond(NO_BUDGETS_TEXT, ephemeral=True)
                return
            guild_id = int(ctx.guild_id) if ctx.guild_id else None
            status = await budgets.status_of(
                int(ctx.user.id), guild_id, _roles(ctx), services.manages_guild(ctx)
            )
            quota = services.pipeline.llm.quota.snapshot()
            await ctx.respond(quota_text(status, quota), ephemeral=True)

    class QuotaSet(
        lightbulb.SlashCommand,
        name="quota-set",
        description="Set a user's, role's or this server's daily token budget (admins only)",
        default_member_permissions=hikari.Permissions.MANAGE_GUILD,
    ):
        scope = lightbulb.string(
            "scope",
            "Whose budget",
            choices=[lightbulb.Choice(name, name) for name in _SCOPE_OF_CHOICE],
        )
        tokens = lightbulb.integer("tokens", "Tokens per day (0: unlimited)", min_value=0)
        user = lightbulb.user("user", "The user (scope user)", default=None)
        role = lightbulb.role("role", "The role (scope role)", default=None)
        remove = lightbulb.boolean(
            "remove", "Remove the override: back to the settings' budget", default=False
        )

        @lightbulb.invoke
        async def invoke(self, ctx: lightbulb.Context) -> None:
            if budgets is None:
                await ctx.respond(NO_BUDGETS_TEXT, ephemeral=True)
                return
            scope = _SCOPE_OF_CHOICE[str(self.scope)]
            guild_id = int(ctx.guild_id) if ctx.guild_id else None
            target: int | None
            if scope == "user":
                target = int(self.user.id) if self.user is not None else None
            elif scope == "role":
                target = int(self.role.id) if self.role is not None else None
            else:
                target = guild_id
            if target is None:
                what = {"user": "the user option", "role": "the role option", "guild": "a server"}
                await ctx.respond(
                    f"Nothing changed: scope {self.scope} needs {what[scope]}.", ephemeral=True
                )
                return
            tokens = None if self.remove else int(self.tokens)
            refusal = _may_set(services, budgets, ctx, scope, tokens)
            if refusal is not None:
                await ctx.respond(refusal, ephemeral=True)
                return
            try:
                await budgets.set_override(
                    scope, target, tokens, by_user_id=int(ctx.user.id), guild_id=guild_id
                )
            except (OverflowError, StoreError) as exc:
                await ctx.respond(f"Nothing changed: {exc}.", ephemeral=True)
                return
            shown = {"user": f"<@{target}>", "role": f"<@&{target}>", "guild": "this server"}
            if tokens is None:
                text = f"The budget of {shown[scope]} is back to the settings' value."
            else:
                amount = "unlimited" if tokens == 0 else f"{tokens:,} tokens a day"
                text = f"The budget of {shown[scope]} is now {amount}."
            await ctx.respond(text, ephemeral=True)

    channel = lightbulb.Group(
        "channel",
        "This channel's auto-reply, persona and model (Manage Channels)",
        default_member_permissions=CHANNEL_PERMISSIONS,
    )

    async def _channel_admin(ctx: lightbulb.Context) -> ChannelSettings | None:
        if channels is None:
            await ctx.respond(NO_CHANNELS_TEXT, ephemeral=True)
            return None
        if ctx.guild_id is None:
            await ctx.respond(GUILD_ONLY_TEXT, ephemeral=True)
            return None
        member = ctx.member
        allowed = int(ctx.user.id) in services.admin_user_ids or (
            member is not None and bool(member.permissions & CHANNEL_PERMISSIONS)
        )
        if not allowed:
            await ctx.respond(NOT_CHANNEL_ADMIN_TEXT, ephemeral=True)
            return None
        return channels

    async def _update(ctx: lightbulb.Context, what: str, **changes: Any) -> bool:
        settings = await _channel_admin(ctx)
        if settings is None:
            return False
        try:
            await settings.update(int(ctx.channel_id), **changes)
        except (ValueError, StoreError) as exc:
            await ctx.respond(f"Nothing changed: {exc}.", ephemeral=True)
            return False
        # Who changed which setting where; never the persona's text.
        log.warning(
            "channel %s: %s changed by user %s", int(ctx.channel_id), what, int(ctx.user.id)
        )
        return True

    @channel.register
    class ChannelAutoreply(
        lightbulb.SlashCommand,
        name="autoreply",
        description="Answer every message here without a mention (threads follow)",
    ):
        mode = lightbulb.string(
            "mode",
            "on: answer every message; off: only mentions and replies",
            choices=[lightbulb.Choice("on", "on"), lightbulb.Choice("off", "off")],
        )

        @lightbulb.invoke
        async def invoke(self, ctx: lightbulb.Context) -> None:
            on = self.mode == "on"
            if not await _update(ctx, f"autoreply {self.mode}", autoreply=on):
                return
            prefix = channels.ignore_prefix if channels is not None else ""
            text = (
                "Auto-reply is on: I answer every message here (and in its threads)"
                + (f", except those starting with `{prefix}`." if prefix else ".")
                if on
                else "Auto-reply is off: I answer mentions and replies here."
            )
            await ctx.respond(text, ephemeral=True)

    max_persona = channels.persona_max_chars if channels is not None else 1000

    @channel.register
    class ChannelPersona(
        lightbulb.SlashCommand,
        name="persona",
        description="The system instruction for this channel (and its threads)",
    ):
        text = lightbulb.string(
            "text", "Who the bot is here, e.g. 'You are a pirate'", max_length=max_persona
        )

        @lightbulb.invoke
        async def invoke(self, ctx: lightbulb.Context) -> None:
            if await _update(ctx, "persona", persona=str(self.text)):
                await ctx.respond("This channel's persona is set.", ephemeral=True)

    models = channels.allowed_models if channels is not None else ()

    @channel.register
    class ChannelModel(
        lightbulb.SlashCommand,
        name="model",
        description="The Gemini model for this channel (and its threads)",
    ):
        name = lightbulb.string(
            "name", "One of the allowed models", choices=[lightbulb.Choice(m, m) for m in models]
        )

        @lightbulb.invoke
        async def invoke(self, ctx: lightbulb.Context) -> None:
            if await _update(ctx, f"model {self.name}", model=str(self.name)):
                await ctx.respond(f"This channel now uses `{self.name}`.", ephemeral=True)

    @channel.register
    class ChannelReset(
        lightbulb.SlashCommand,
        name="reset",
        description="Forget this channel's auto-reply, persona and model",
    ):
        @lightbulb.invoke
        async def invoke(self, ctx: lightbulb.Context) -> None:
            settings = await _channel_admin(ctx)
            if settings is None:
                return
            try:
                had = await settings.reset(int(ctx.channel_id))
            except StoreError as exc:
                await ctx.respond(f"Nothing changed: {exc}.", ephemeral=True)
                return
            log.warning(
                "channel %s: settings reset by user %s", int(ctx.channel_id), int(ctx.user.id)
            )
            text = "This channel's settings are reset." if had else "This channel had none."
            await ctx.respond(text, ephemeral=True)

    return [Quota, QuotaSet, channel]
