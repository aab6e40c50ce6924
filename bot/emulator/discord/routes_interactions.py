"""REST routes for interaction callbacks and the interaction webhook (follow-ups, @original)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bot.emulator.discord.messages import apply_edit, message_object
from bot.emulator.discord.records import Activity, InteractionRecord
from bot.emulator.discord.rest import Call, DiscordError, Reply, Route
from bot.emulator.discord.routes_channels import check_message_body, edit_body, store_uploads
from bot.emulator.discord.state import DiscordState

__all__ = ["InteractionRoutes"]

JSON = dict[str, Any]
_PONG, _MESSAGE, _DEFERRED_MESSAGE, _DEFERRED_UPDATE, _UPDATE = 1, 4, 5, 6, 7
_EPHEMERAL, _LOADING = 1 << 6, 1 << 7
_COMMAND_MESSAGE_TYPE = 20


class InteractionRoutes:
    """Handlers for ``/interactions/{id}/{token}/callback`` and ``/webhooks/{app}/{token}``."""

    def __init__(
        self,
        state: DiscordState,
        activity: Activity,
        base_url: Callable[[], str],
        *,
        application_id: int,
        deadline: float | None,
    ) -> None:
        self._state = state
        self._activity = activity
        self._base_url = base_url
        self._application_id = application_id
        self._deadline = deadline

    def routes(self) -> list[Route]:
        """Return this module's routes (``@original`` before ``{message_id}``); the follow-up
        ``POST /webhooks/{app}/{token}`` is reached through `WebhookRoutes`, which shares it."""
        hook = ("webhook_id", "webhook_token")
        original = "/webhooks/{webhook_id}/{webhook_token}/messages/@original"
        by_id = "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"
        return [
            # Interaction callbacks are outside Discord's rate limits and need no bot token.
            Route(
                "POST",
                "/interactions/{interaction_id}/{interaction_token}/callback",
                self.callback,
                auth=False,
                bucket=None,
                operation="interaction_callback",
            ),
            Route("GET", original, self.get_message, auth=False, major=hook),
            Route(
                "PATCH",
                original,
                self.edit_message,
                auth=False,
                major=hook,
                operation="webhook_message_edit",
            ),
            Route("DELETE", original, self.delete_message, auth=False, major=hook),
            Route("GET", by_id, self.get_message, auth=False, major=hook),
            Route(
                "PATCH",
                by_id,
                self.edit_message,
                auth=False,
                major=hook,
                operation="webhook_message_edit",
            ),
            Route("DELETE", by_id, self.delete_message, auth=False, major=hook),
        ]

    # Initial response

    async def callback(self, call: Call) -> Reply:
        """POST /interactions/{id}/{token}/callback: the initial response."""
        record = self._activity.interactions.get(call.snowflake("interaction_id"))
        if record is None or record.token != call.params["interaction_token"]:
            raise DiscordError(404, 10062, "Unknown interaction", violation=True)
        if self._deadline is not None and time.monotonic() - record.created_at > self._deadline:
            raise DiscordError(
                404,
                10062,
                f"Unknown interaction (answered after {self._deadline}s)",
                violation=True,
            )
        if record.acknowledged:
            raise DiscordError(
                400, 40060, "Interaction has already been acknowledged.", violation=True
            )
        body = call.json_body()
        kind = int(body.get("type", 0))
        data = body.get("data") or {}
        if kind in (_MESSAGE, _UPDATE):
            check_message_body(data, files=len(call.files), creating=kind == _MESSAGE)
        flags = int(data.get("flags") or 0)
        if kind == _MESSAGE:
            record.original = self._message(record, call, data, flags)
            record.final_content = str(record.original["content"])
            record.ephemeral = bool(flags & _EPHEMERAL)
        elif kind == _DEFERRED_MESSAGE:
            record.deferred = True
            record.ephemeral = bool(flags & _EPHEMERAL)
            record.original = self._message(record, call, {}, (flags & _EPHEMERAL) | _LOADING)
        elif kind == _DEFERRED_UPDATE:
            record.deferred = True
        elif kind == _UPDATE and "content" in data:
            record.final_content = str(data.get("content") or "")
        record.callback_types.append(kind)
        record.responses.append(body)
        self._activity.notifier.notify()
        if not call.flag("with_response") or kind == _PONG:
            return Reply()
        return Reply(self._callback_response(record, kind))

    def _callback_response(self, record: InteractionRecord, kind: int) -> JSON:
        interaction: JSON = {"id": str(record.id), "type": 2}
        resource: JSON = {"type": kind}
        if record.original is not None and kind in (_MESSAGE, _DEFERRED_MESSAGE):
            interaction.update(
                response_message_id=record.original["id"],
                response_message_loading=kind == _DEFERRED_MESSAGE,
                response_message_ephemeral=record.ephemeral,
            )
            resource["message"] = record.original
        return {"interaction": interaction, "resource": resource}

    def _message(self, record: InteractionRecord, call: Call, data: JSON, flags: int) -> JSON:
        attachments, _ = store_uploads(self._state, call, record.channel_id, self._base_url())
        message = message_object(
            message_id=self._state.ids.next(),
            channel_id=record.channel_id,
            author=self._state.bot_user,
            content=str(data.get("content") or ""),
            attachments=attachments,
            embeds=data.get("embeds") or [],
            components=data.get("components") or [],
            flags=flags,
            tts=bool(data.get("tts")),
            extra={
                "type": _COMMAND_MESSAGE_TYPE,
                "webhook_id": str(self._application_id),
                "application_id": str(self._application_id),
            },
        )
        self._state.store_message(message)
        return message

    # The interaction webhook

    def _record(self, call: Call) -> InteractionRecord:
        record = self._activity.interaction_by_token(call.params["webhook_token"])
        if record is None or call.snowflake("webhook_id") != self._application_id:
            raise DiscordError(404, 10015, "Unknown Webhook", violation=True)
        if not record.acknowledged:
            # Discord only creates the webhook once the interaction has been answered.
            raise DiscordError(
                404, 10015, "Unknown Webhook (interaction not acknowledged yet)", violation=True
            )
        return record

    def _target(self, call: Call, record: InteractionRecord) -> JSON:
        raw = call.params.get("message_id", "@original")
        if raw == "@original":
            target = record.original
        else:
            wanted = call.snowflake("message_id")
            candidates = [record.original, *record.followup_messages]
            target = next((m for m in candidates if m is not None and int(m["id"]) == wanted), None)
        if target is None:
            raise DiscordError(404, 10008, "Unknown Message")
        return target

    async def follow_up(self, call: Call) -> Reply:
        """POST /webhooks/{app}/{token}: a follow-up (the first after a defer fills @original)."""
        record = self._record(call)
        body = call.json_body()
        check_message_body(body, files=len(call.files), creating=True)
        flags = int(body.get("flags") or 0)
        original = record.original
        if record.deferred and original is not None and record.final_content is None:
            # Discord turns the "thinking..." message into the first follow-up.
            attachments, _ = store_uploads(self._state, call, record.channel_id, self._base_url())
            apply_edit(original, {**body, "attachments": attachments}, None)
            original["flags"] = int(original["flags"]) & ~_LOADING
            message = original
            record.final_content = str(original["content"])
        else:
            message = self._message(record, call, body, flags)
            record.followup_messages.append(message)
        record.followups.append(body)
        record.responses.append(body)
        self._activity.notifier.notify()
        return Reply(message) if call.flag("wait") else Reply()

    async def get_message(self, call: Call) -> Reply:
        """GET .../messages/@original or /{id}."""
        return Reply(self._target(call, self._record(call)))

    async def edit_message(self, call: Call) -> Reply:
        """PATCH .../messages/@original or /{id}; an @original edit with content is final."""
        record = self._record(call)
        target = self._target(call, record)
        check_message_body(call.json_body(), files=len(call.files), creating=False)
        body = edit_body(self._state, call, target, self._base_url())
        apply_edit(target, body, None)
        if target is record.original:
            target["flags"] = int(target["flags"]) & ~_LOADING
            if "content" in body:
                record.final_content = str(target["content"])
        record.responses.append(call.json_body())
        self._activity.notifier.notify()
        return Reply(target)

    async def delete_message(self, call: Call) -> Reply:
        """DELETE .../messages/@original or /{id}."""
        record = self._record(call)
        target = self._target(call, record)
        self._state.messages.pop(int(target["id"]), None)
        if target is record.original:
            record.original = None
        else:
            record.followup_messages.remove(target)
        self._activity.notifier.notify()
        return Reply()
