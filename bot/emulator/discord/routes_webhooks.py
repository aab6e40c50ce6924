"""Channel (incoming) webhooks: create one, then `POST /webhooks/{id}/{token}` posts into it.

This is how Alertmanager's `discord_configs` pages people: a channel webhook URL, no bot token.
Execute-webhook shares its path with the interaction webhook (`/webhooks/{application}/{token}`
of a slash command's follow-ups), so the one route serves both: the application's id goes to
the interaction routes, a channel webhook's id is answered here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from bot.emulator.discord.events import EventPublisher
from bot.emulator.discord.ids import make_bot_token
from bot.emulator.discord.messages import message_object
from bot.emulator.discord.records import Activity, WebhookMessage
from bot.emulator.discord.rest import Call, DiscordError, Handler, Reply, Route
from bot.emulator.discord.routes_channels import check_message_body
from bot.emulator.discord.state import DiscordState

__all__ = ["MAX_EMBED_TOTAL_CHARS", "ChannelWebhook", "WebhookRoutes"]

JSON = dict[str, Any]

# Discord's documented limit: every embed of a message together holds at most 6000 characters
# (titles, descriptions, field names and values, footers, author names).
MAX_EMBED_TOTAL_CHARS: Final = 6000
_INCOMING_WEBHOOK: Final = 1


@dataclass(frozen=True, slots=True)
class ChannelWebhook:
    """A channel webhook: its id, secret token, channel, and the name posts appear under."""

    id: int
    token: str
    channel_id: int
    guild_id: int
    name: str

    def payload(self, *, with_token: bool = True) -> JSON:
        """The webhook object as Discord returns it."""
        body: JSON = {
            "id": str(self.id),
            "type": _INCOMING_WEBHOOK,
            "guild_id": str(self.guild_id),
            "channel_id": str(self.channel_id),
            "name": self.name,
            "avatar": None,
            "application_id": None,
        }
        if with_token:
            body["token"] = self.token
        return body


def _embed_chars(embeds: Any) -> int:
    """The characters Discord counts against the 6000 limit of a message's embeds."""
    total = 0
    for embed in embeds if isinstance(embeds, list) else ():
        if not isinstance(embed, dict):
            continue
        parts: list[Any] = [embed.get("title"), embed.get("description")]
        parts.append((embed.get("footer") or {}).get("text"))
        parts.append((embed.get("author") or {}).get("name"))
        for item in embed.get("fields") or ():
            if isinstance(item, dict):
                parts.extend((item.get("name"), item.get("value")))
        total += sum(len(part) for part in parts if isinstance(part, str))
    return total


class WebhookRoutes:
    """`POST /webhooks/{id}/{token}`: channel webhooks here, interaction tokens elsewhere."""

    def __init__(
        self,
        state: DiscordState,
        activity: Activity,
        events: EventPublisher,
        *,
        application_id: int,
        interaction_follow_up: Handler,
        base_url: Callable[[], str],
    ) -> None:
        self._state = state
        self._activity = activity
        self._events = events
        self._application_id = application_id
        self._follow_up = interaction_follow_up
        self._base_url = base_url
        self._hooks: dict[int, ChannelWebhook] = {}

    def routes(self) -> list[Route]:
        """Return this module's routes."""
        return [
            Route(
                "POST",
                "/webhooks/{webhook_id}/{webhook_token}",
                self.execute,
                auth=False,
                # Per webhook (and per interaction token), outside the bot's global limit.
                major=("webhook_id", "webhook_token"),
                operation="webhook_execute",
            ),
        ]

    def create(self, channel_id: int, name: str) -> ChannelWebhook:
        """Create a webhook in a guild text channel (what "Integrations > New Webhook" does)."""
        guild_id = self._state.guild_id_of(channel_id)
        if guild_id is None:
            msg = f"channel {channel_id} is not a guild channel: webhooks live in guild channels"
            raise KeyError(msg)
        webhook_id = self._state.ids.next()
        # A random secret shaped like Discord's (68 URL-safe characters).
        token = make_bot_token(webhook_id).replace(".", "_")[:68]
        hook = ChannelWebhook(webhook_id, token, channel_id, guild_id, name)
        self._hooks[webhook_id] = hook
        return hook

    def url(self, hook: ChannelWebhook) -> str:
        """The URL to give a sender (Alertmanager's `webhook_url`)."""
        return f"{self._base_url()}/api/webhooks/{hook.id}/{hook.token}"

    async def execute(self, call: Call) -> Reply:
        """Post a message as the webhook; `?wait=true` answers with it, otherwise 204."""
        webhook_id = call.snowflake("webhook_id")
        hook = self._hooks.get(webhook_id)
        if hook is None:
            if webhook_id == self._application_id:
                return await self._follow_up(call)
            raise DiscordError(404, 10015, "Unknown Webhook")
        if call.params["webhook_token"] != hook.token:
            raise DiscordError(401, 50027, "Invalid Webhook Token")
        body = call.json_body()
        check_message_body(body, files=len(call.files), creating=True)
        embeds = body.get("embeds") or []
        if _embed_chars(embeds) > MAX_EMBED_TOTAL_CHARS:
            error = {
                "code": "MAX_EMBED_SIZE_EXCEEDED",
                "message": f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL_CHARS}",
            }
            raise DiscordError(
                400, 50035, "Invalid Form Body", errors={"embeds": {"_errors": [error]}}
            )
        channel_id = self._target_channel(call, hook)
        username = str(body.get("username") or hook.name)
        author = {
            "id": str(hook.id),
            "username": username,
            "avatar": None,
            "discriminator": "0000",
            "bot": True,
        }
        content = str(body.get("content") or "")
        message = message_object(
            message_id=self._state.ids.next(),
            channel_id=channel_id,
            author=author,
            content=content,
            embeds=embeds,
            flags=int(body.get("flags") or 0),
            tts=bool(body.get("tts")),
            extra={"webhook_id": str(hook.id)},
        )
        self._state.store_message(message)
        self._activity.record_webhook(
            WebhookMessage(
                id=int(message["id"]),
                webhook_id=hook.id,
                channel_id=channel_id,
                username=username,
                content=content,
                embeds=list(embeds),
                body=body,
            )
        )
        self._events.message("MESSAGE_CREATE", message)
        return Reply(message) if call.flag("wait") else Reply()

    def _target_channel(self, call: Call, hook: ChannelWebhook) -> int:
        raw = call.query.get("thread_id")
        if raw is None:
            return hook.channel_id
        thread = self._state.channel(int(raw)) if raw.isdigit() else None
        if thread is None or thread.get("parent_id") != str(hook.channel_id):
            raise DiscordError(400, 10003, "Unknown Channel")
        return int(raw)
