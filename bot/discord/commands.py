"""Slash commands (hikari-lightbulb 3): /chat, /clear, /status, /health, /maintenance and the
admin group /heal (status, run, undo)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, Final, Protocol

import hikari
import lightbulb

from bot.chat.models import IncomingMessage, InteractionTarget
from bot.chat.pipeline import ChatPipeline
from bot.discord.fair_commands import build_fair_commands
from bot.discord.injection import prime_invoke_resolvers
from bot.healing.actions import HEAL_ACTIONS
from bot.healing.audit import safe_text
from bot.healing.controls import BotControls
from bot.healing.receiver import HealEvent, HealReceiver, ManualRunError, ReceiverClosedError

__all__ = ["CommandServices", "StatusReporter", "build_commands", "heal_status_text"]

log = logging.getLogger(__name__)


class StatusReporter(Protocol):
    def status_text(self) -> str: ...

    def health_text(self) -> str: ...


class CommandServices:
    """What the commands need, gathered so the command classes stay declarations."""

    def __init__(
        self,
        pipeline: ChatPipeline,
        reporter: StatusReporter,
        controls: BotControls,
        admin_user_ids: frozenset[int],
        *,
        healer: HealReceiver | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.reporter = reporter
        self.controls = controls
        self.admin_user_ids = admin_user_ids
        # None: the bot runs without self-healing and /heal says so.
        self.healer = healer

    def is_admin(self, ctx: lightbulb.Context) -> bool:
        """ADMIN_USER_IDS, or Manage Server in the guild the command came from."""
        if int(ctx.user.id) in self.admin_user_ids:
            return True
        return self.manages_guild(ctx)

    def manages_guild(self, ctx: lightbulb.Context) -> bool:
        """Manage Server in the guild the command came from."""
        member = ctx.member
        return member is not None and bool(member.permissions & ADMIN_PERMISSIONS)


# Discord hides admin commands from members without these; the bot checks again on use.
ADMIN_PERMISSIONS = hikari.Permissions.MANAGE_GUILD
NOT_ADMIN_TEXT = "Only bot admins (ADMIN_USER_IDS) or members with Manage Server can do that."


NO_HEALER_TEXT = "Self-healing is not wired into this bot."
# One-shot clean-ups (nothing stays applied) versus lasting changes, for the /heal choices when
# no receiver is wired to ask; the receiver's own answer wins otherwise.
LASTING_ACTIONS: Final = ("response_time", "error_rate", "queue")
STATUS_EVENTS: Final = 10
_DETAIL_CHARS: Final = 160
_MESSAGE_CHARS: Final = 2000


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _inert(text: str) -> str:
    """Text from an alert (already escaped and cut by the audit) made inert in a message: no
    code span it could close, no mention it could ping."""
    return text.replace("`", "'").replace("@", "@\u200b").replace("<", "‹")


def _seconds(value: float) -> str:
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def _event_line(event: HealEvent) -> str:
    # <t:...:T> shows the time in each reader's own time zone.
    detail = f" — {_inert(_clip(event.detail, _DETAIL_CHARS))}" if event.detail else ""
    # Runs by hand say so in their detail; an alert's entry names the alert.
    alert = f" {_inert(event.alertname)}" if event.alertname and not event.by else ""
    return f"<t:{int(event.time)}:T> `{event.action or '-'}` **{event.outcome}**{alert}{detail}"


def heal_status_text(healer: HealReceiver, now: float | None = None) -> str:
    """What `/heal status` shows: heals in force, cooldowns, jobs and the recent events."""
    now = time.time() if now is None else now
    stats = healer.stats
    lines = [
        f"**Self-healing** on `{healer.instance}` (alert cooldown {_seconds(healer.cooldown_s)})"
    ]
    if not healer.enabled:
        lines.append("⏸️ **Off** (HEAL_ENABLED=false): alerts are recorded, no action runs.")
    elif healer.dry_run:
        lines.append("🧪 **Dry run** (HEAL_DRY_RUN=true): decisions are recorded, nothing runs.")
    active = healer.active()
    if active and healer.dry_run:
        lines.append(f"Would be in force: {', '.join(f'`{h.action}`' for h in active)}")
    elif active:
        lines.append("In force:")
        for heal in active:
            origin = (
                f"by hand; `/heal undo action:{heal.action}` ends it"
                if heal.by_hand
                else f"alert {_inert(safe_text(heal.fingerprint, 80)[:12])}, "
                f"applied {heal.applications}×" + (", escalated" if heal.escalated else "")
            )
            lines.append(f"• `{heal.action}` since <t:{int(heal.since)}:R> ({origin})")
    else:
        lines.append("In force: nothing")
    cooldowns = healer.cooldowns()
    if cooldowns:
        waits = ", ".join(f"`{name}` {_seconds(left)}" for name, left in sorted(cooldowns.items()))
        lines.append(f"Cooldowns: {waits}")
    if stats.running_jobs or stats.queued_jobs:
        lines.append(f"Jobs: {stats.running_jobs} running, {stats.queued_jobs} waiting")
    # "queued" is always followed by the job's result; the result says more.
    events = [event for event in healer.events if event.outcome != "queued"][-STATUS_EVENTS:]
    if not events:
        lines.append("Recent: no heal events yet.")
        return "\n".join(lines)
    audit = healer.audit
    lines.append(
        f"Recent (newest first; {len(audit)} of at most {audit.capacity} kept, "
        "all in `GET /heal/audit`):"
    )
    head = "\n".join(lines)
    body: list[str] = []
    for event in reversed(events):
        line = _event_line(event)
        if len(head) + sum(len(b) + 1 for b in body) + len(line) + 1 > _MESSAGE_CHARS:
            break
        body.append(line)
    return "\n".join([head, *body])


def _run_text(event: HealEvent, *, undo: bool, lasting: bool) -> str:
    name = event.action or "?"
    # The event says "apply by hand (who): what happened"; the operator knows the first part.
    said = event.detail.partition(": ")[2] if " by hand (" in event.detail else event.detail
    detail = f": {_clip(said, 1500)}" if said else ""
    if event.outcome == "dry_run":
        return f"🧪 Dry run (HEAL_DRY_RUN=true), nothing ran: {_clip(event.detail, 1500)}"
    if event.outcome == "failed":
        return f"❌ `{name}` {'undo ' if undo else ''}failed{detail}"
    if undo:
        return f"↩️ `{name}` undone{detail}"
    text = f"✅ `{name}` ran{detail}"
    if lasting:
        text += f"\nIt stays in force until `/heal undo action:{name}`."
    return text


def _action_choices(names: Iterable[str]) -> list[lightbulb.Choice[str]]:
    return [lightbulb.Choice(name, name) for name in names]


def _can_manage_messages(ctx: lightbulb.Context) -> bool:
    member = ctx.member
    if member is None:  # a DM: the user owns the conversation
        return True
    return bool(member.permissions & hikari.Permissions.MANAGE_MESSAGES)


def build_commands(
    services: CommandServices,
) -> list[type[lightbulb.SlashCommand] | lightbulb.Group]:
    """The command classes and groups, bound to this bot's services."""

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
                manages_guild=services.manages_guild(ctx),
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
            if self.scope == "channel":
                if not _can_manage_messages(ctx):
                    await ctx.respond(
                        "Forgetting everyone's messages needs the Manage Messages permission; "
                        "`/clear` without options forgets yours.",
                        ephemeral=True,
                    )
                    return
                await services.pipeline.forget(channel)
                text = "Done: I forgot this channel's whole conversation."
            else:
                await services.pipeline.forget(channel, int(ctx.user.id))
                text = "Done: I forgot your messages in this channel."
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
            controls = services.controls
            if self.mode == "on":
                controls.enter_maintenance(f"maintenance set by {ctx.user.username}")
                text = "Maintenance mode is on: I answer with the maintenance text or the cache."
            else:
                was_on = controls.exit_maintenance()
                text = "Maintenance mode is off." if was_on else "Maintenance mode was not on."
            log.warning("maintenance mode %s by an admin", self.mode)
            await ctx.respond(text, ephemeral=True)

    healer = services.healer
    heal = lightbulb.Group(
        "heal",
        "Self-healing: what it did, and running an action by hand (admins only)",
        default_member_permissions=ADMIN_PERMISSIONS,
    )
    lasting = (
        tuple(name for name in healer.action_names if healer.lasting(name))
        if healer is not None
        else LASTING_ACTIONS
    )

    async def _admin_healer(ctx: lightbulb.Context) -> HealReceiver | None:
        if not services.is_admin(ctx):
            await ctx.respond(NOT_ADMIN_TEXT, ephemeral=True)
            return None
        if services.healer is None:
            await ctx.respond(NO_HEALER_TEXT, ephemeral=True)
            return None
        return services.healer

    async def _by_hand(ctx: lightbulb.Context, name: str, *, undo: bool) -> None:
        receiver = await _admin_healer(ctx)
        if receiver is None:
            return
        # An action can take seconds (a store compaction); Discord wants an answer within 3.
        await ctx.defer(ephemeral=True)
        who = f"{ctx.user.username} ({int(ctx.user.id)})"
        try:
            event = await receiver.run_by_hand(name, undo=undo, by=who)
        except ManualRunError as exc:
            text = f"Nothing ran: {exc}"
        except ReceiverClosedError:
            text = "Nothing ran: the bot is shutting down."
        else:
            text = _run_text(event, undo=undo, lasting=receiver.lasting(name))
        await ctx.respond(text, ephemeral=True)

    @heal.register
    class HealStatus(
        lightbulb.SlashCommand,
        name="status",
        description="Recent heal actions, heals in force and cooldowns",
    ):
        @lightbulb.invoke
        async def invoke(self, ctx: lightbulb.Context) -> None:
            receiver = await _admin_healer(ctx)
            if receiver is not None:
                await ctx.respond(heal_status_text(receiver), ephemeral=True)

    @heal.register
    class HealRun(
        lightbulb.SlashCommand,
        name="run",
        description="Run a heal action once now; lasting ones stay until /heal undo",
    ):
        action = lightbulb.string(
            "action", "Which action to run", choices=_action_choices(HEAL_ACTIONS)
        )

        @lightbulb.invoke
        async def invoke(self, ctx: lightbulb.Context) -> None:
            await _by_hand(ctx, str(self.action), undo=False)

    @heal.register
    class HealUndo(
        lightbulb.SlashCommand,
        name="undo",
        description="Undo a lasting heal action that was run by hand",
    ):
        action = lightbulb.string(
            "action", "Which action to undo", choices=_action_choices(lasting)
        )

        @lightbulb.invoke
        async def invoke(self, ctx: lightbulb.Context) -> None:
            await _by_hand(ctx, str(self.action), undo=True)

    commands: list[Any] = [Chat, Clear, Status, Health, Maintenance, heal]
    commands += build_fair_commands(services)
    prime_invoke_resolvers(commands)  # once per class, not per invocation (injection.py)
    return commands
