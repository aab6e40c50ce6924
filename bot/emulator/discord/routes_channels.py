"""REST routes for channels: messages (create, fetch, edit, delete), typing, reactions, DMs."""

from __future__ import annotations

import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from bot.emulator.discord import payloads
from bot.emulator.discord.events import EventPublisher
from bot.emulator.discord.messages import (
    MAX_CONTENT_LENGTH,
    allowed_mention_ids,
    apply_edit,
    has_message_body,
    message_object,
    reply_reference,
)
from bot.emulator.discord.ratelimit import MESSAGE_CREATE_BUCKET, MESSAGE_EDIT_BUCKET
from bot.emulator.discord.records import Activity, SentMessage
from bot.emulator.discord.rest import Call, DiscordError, Reply, Route
from bot.emulator.discord.state import DiscordState

__all__ = ["ChannelRoutes", "check_message_body", "edit_body", "store_uploads"]

JSON = dict[str, Any]

# Discord checks an enforced nonce against the author's messages of "the past few minutes".
NONCE_WINDOW_S = 300.0
_MAX_NONCES = 10_000


def check_message_body(body: JSON, *, files: int, creating: bool) -> None:
    """Refuse what Discord refuses whatever the schema says: long or empty messages."""
    content = body.get("content")
    if isinstance(content, str) and len(content) > MAX_CONTENT_LENGTH:
        error = {
            "code": "BASE_TYPE_MAX_LENGTH",
            "message": f"Must be {MAX_CONTENT_LENGTH} or fewer in length.",
        }
        raise DiscordError(
            400,
            50035,
            "Invalid Form Body",
            errors={"content": {"_errors": [error]}},
            violation=True,
        )
    if creating and not has_message_body(body, files):
        raise DiscordError(400, 50006, "Cannot send an empty message", violation=True)


def store_uploads(
    state: DiscordState, call: Call, channel_id: int, base_url: str
) -> tuple[list[JSON], dict[str, bytes]]:
    """Turn multipart ``files[n]`` parts into served attachments; return objects and bytes."""
    described = {
        str(item.get("id")): item
        for item in call.json_body().get("attachments") or []
        if isinstance(item, dict)
    }
    objects: list[JSON] = []
    files: dict[str, bytes] = {}
    for part_name, upload in call.files.items():
        index = part_name.removeprefix("files[").removesuffix("]")
        filename = str(described.get(index, {}).get("filename") or upload.filename)
        attachment_id = state.ids.next()
        url = f"{base_url}/attachments/{channel_id}/{attachment_id}/{urllib.parse.quote(filename)}"
        payload = payloads.attachment(
            attachment_id,
            url=url,
            filename=filename,
            size=len(upload.data),
            content_type=upload.content_type,
        )
        state.store_attachment(payload, upload.data)
        objects.append(payload)
        files[filename] = upload.data
    return objects, files


def edit_body(state: DiscordState, call: Call, existing: JSON, base_url: str) -> JSON:
    """Return an edit body whose ``attachments`` are full objects: the kept ones plus uploads."""
    body = {k: v for k, v in call.json_body().items() if k != "attachments"}
    channel_id = int(existing["channel_id"])
    new, _ = store_uploads(state, call, channel_id, base_url)
    requested = call.json_body().get("attachments")
    if requested is None and not new:
        return body
    kept = existing["attachments"]
    if requested is not None:
        # The request lists the attachments to keep by id; anything else is removed.
        keep_ids = {str(a.get("id")) for a in requested if isinstance(a, dict)}
        kept = [a for a in kept if a["id"] in keep_ids]
    return {**body, "attachments": [*kept, *new]}


class ChannelRoutes:
    """Handlers for ``/channels/...`` and ``/users/@me/channels``."""

    def __init__(
        self,
        state: DiscordState,
        activity: Activity,
        events: EventPublisher,
        base_url: Callable[[], str],
    ) -> None:
        self._state = state
        self._activity = activity
        self._events = events
        self._base_url = base_url
        # nonce -> (message id, when), the bot's recent messages sent with enforce_nonce.
        self._nonces: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def routes(self) -> list[Route]:
        """Return this module's routes."""
        channel = ("channel_id",)
        return [
            Route("GET", "/channels/{channel_id}", self.get_channel, major=channel),
            Route(
                "POST",
                "/channels/{channel_id}/messages",
                self.create_message,
                bucket=MESSAGE_CREATE_BUCKET,
                major=channel,
                operation="message_create",
            ),
            Route("GET", "/channels/{channel_id}/messages", self.list_messages, major=channel),
            Route(
                "GET",
                "/channels/{channel_id}/messages/{message_id}",
                self.get_message,
                major=channel,
            ),
            Route(
                "PATCH",
                "/channels/{channel_id}/messages/{message_id}",
                self.edit_message,
                bucket=MESSAGE_EDIT_BUCKET,
                major=channel,
                operation="message_edit",
            ),
            Route(
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}",
                self.delete_message,
                major=channel,
            ),
            Route("POST", "/channels/{channel_id}/typing", self.typing, major=channel),
            Route(
                "PUT",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self.react,
                major=channel,
            ),
            Route(
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self.unreact,
                major=channel,
            ),
            Route("POST", "/users/@me/channels", self.create_dm, operation="dm_create"),
        ]

    def _channel(self, call: Call) -> tuple[int, JSON]:
        channel_id = call.snowflake("channel_id")
        found = self._state.channel(channel_id)
        if found is None:
            raise DiscordError(404, 10003, "Unknown Channel")
        return channel_id, found

    def _message(self, call: Call, channel_id: int) -> JSON:
        message = self._state.messages.get(call.snowflake("message_id"))
        if message is None or int(message["channel_id"]) != channel_id:
            raise DiscordError(404, 10008, "Unknown Message")
        return message

    def _mentions(
        self, content: str, allowed: JSON | None, replied_author: int | None
    ) -> list[JSON]:
        ids = allowed_mention_ids(content, allowed, replied_author)
        return [self._state.users[u] for u in ids if u in self._state.users]

    async def get_channel(self, call: Call) -> Reply:
        """GET /channels/{id}."""
        return Reply(self._channel(call)[1])

    async def create_message(self, call: Call) -> Reply:
        """POST /channels/{id}/messages: store, record and echo the bot's message."""
        channel_id, _ = self._channel(call)
        body = call.json_body()
        check_message_body(body, files=len(call.files), creating=True)
        enforced = self._enforced_nonce(body)
        if enforced is not None and (earlier := self._earlier_message(enforced)) is not None:
            return Reply(earlier)  # the same request again: Discord answers the first message
        guild_id = self._state.guild_id_of(channel_id)
        reference, referenced = self._reference(body.get("message_reference"), channel_id, guild_id)
        replied_author = int(referenced["author"]["id"]) if referenced else None
        attachments, files = store_uploads(self._state, call, channel_id, self._base_url())
        content = str(body.get("content") or "")
        allowed = body.get("allowed_mentions")
        message = message_object(
            message_id=self._state.ids.next(),
            channel_id=channel_id,
            author=self._state.bot_user,
            content=content,
            mentions=self._mentions(content, allowed, replied_author),
            attachments=attachments,
            embeds=body.get("embeds") or [],
            components=body.get("components") or [],
            reference=reference,
            referenced=referenced,
            flags=int(body.get("flags") or 0),
            tts=bool(body.get("tts")),
            nonce=body.get("nonce"),
        )
        self._state.store_message(message)
        if enforced is not None:
            self._remember_nonce(enforced, int(message["id"]))
        self._activity.record_sent(
            SentMessage(
                id=int(message["id"]),
                channel_id=channel_id,
                content=content,
                body=body,
                message=message,
                reply_to=int(reference["message_id"]) if reference else None,
                allowed_mentions=allowed,
                files=files,
            )
        )
        self._events.message("MESSAGE_CREATE", message)
        return Reply(message)

    @staticmethod
    def _enforced_nonce(body: JSON) -> str | None:
        nonce = body.get("nonce")
        if not body.get("enforce_nonce") or nonce is None:
            return None
        return str(nonce)

    def _earlier_message(self, nonce: str) -> JSON | None:
        seen = self._nonces.get(nonce)
        if seen is None or time.monotonic() - seen[1] > NONCE_WINDOW_S:
            return None
        return self._state.messages.get(seen[0])

    def _remember_nonce(self, nonce: str, message_id: int) -> None:
        now = time.monotonic()
        self._nonces[nonce] = (message_id, now)
        self._nonces.move_to_end(nonce)
        while self._nonces and (
            len(self._nonces) > _MAX_NONCES
            or now - next(iter(self._nonces.values()))[1] > NONCE_WINDOW_S
        ):
            self._nonces.popitem(last=False)

    def _reference(
        self, raw: Any, channel_id: int, guild_id: int | None
    ) -> tuple[JSON | None, JSON | None]:
        if not isinstance(raw, dict) or raw.get("message_id") is None:
            return None, None
        referenced = self._state.messages.get(int(raw["message_id"]))
        if referenced is None:
            if raw.get("fail_if_not_exists", True):
                error = {"code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "message": "Unknown message"}
                raise DiscordError(
                    400,
                    50035,
                    "Invalid Form Body",
                    errors={"message_reference": {"_errors": [error]}},
                )
            return None, None
        fail = bool(raw.get("fail_if_not_exists", True))
        return reply_reference(referenced, guild_id, fail_if_not_exists=fail), referenced

    async def list_messages(self, call: Call) -> Reply:
        """GET /channels/{id}/messages: newest first, with limit/before/after."""
        channel_id, _ = self._channel(call)
        limit = max(1, min(int(call.query.get("limit", "50")), 100))
        history = self._state.history(channel_id)
        if (before := call.query.get("before")) is not None:
            history = [m for m in history if int(m["id"]) < int(before)]
        if (after := call.query.get("after")) is not None:
            newer = [m for m in history if int(m["id"]) > int(after)]
            return Reply(list(reversed(newer[:limit])))
        return Reply(list(reversed(history[-limit:])))

    async def get_message(self, call: Call) -> Reply:
        """GET /channels/{id}/messages/{id}."""
        channel_id, _ = self._channel(call)
        return Reply(self._message(call, channel_id))

    async def edit_message(self, call: Call) -> Reply:
        """PATCH /channels/{id}/messages/{id}: edit one of the bot's messages."""
        channel_id, _ = self._channel(call)
        message = self._message(call, channel_id)
        if int(message["author"]["id"]) != self._state.bot_id:
            raise DiscordError(
                403, 50005, "Cannot edit a message authored by another user", violation=True
            )
        check_message_body(call.json_body(), files=len(call.files), creating=False)
        body = edit_body(self._state, call, message, self._base_url())
        mentions = None
        if "content" in body:
            referenced = message.get("referenced_message")
            replied = int(referenced["author"]["id"]) if referenced else None
            allowed = body.get("allowed_mentions")
            mentions = self._mentions(str(body.get("content") or ""), allowed, replied)
        apply_edit(message, body, mentions)
        if (sent := self._activity.sent(int(message["id"]))) is not None:
            sent.content = str(message["content"])
            sent.edits.append(call.json_body())
            sent.edited_at.append(time.monotonic())
            self._activity.notifier.notify()
        self._events.message("MESSAGE_UPDATE", message)
        return Reply(message)

    async def delete_message(self, call: Call) -> Reply:
        """DELETE /channels/{id}/messages/{id}."""
        channel_id, _ = self._channel(call)
        message = self._message(call, channel_id)
        del self._state.messages[int(message["id"])]
        self._events.message_delete(channel_id, int(message["id"]))
        self._activity.notifier.notify()
        return Reply()

    async def typing(self, call: Call) -> Reply:
        """POST /channels/{id}/typing: count it."""
        channel_id, _ = self._channel(call)
        self._activity.count_typing(channel_id)
        return Reply()

    async def react(self, call: Call) -> Reply:
        """PUT .../reactions/{emoji}/@me: record the bot's reaction."""
        channel_id, _ = self._channel(call)
        message = self._message(call, channel_id)
        emoji = urllib.parse.unquote(call.params["emoji"])
        self._activity.record_reaction(channel_id, int(message["id"]), emoji, added=True)
        return Reply()

    async def unreact(self, call: Call) -> Reply:
        """DELETE .../reactions/{emoji}/@me: record the removal."""
        channel_id, _ = self._channel(call)
        message = self._message(call, channel_id)
        emoji = urllib.parse.unquote(call.params["emoji"])
        self._activity.record_reaction(channel_id, int(message["id"]), emoji, added=False)
        return Reply()

    async def create_dm(self, call: Call) -> Reply:
        """POST /users/@me/channels: open (or return) the DM with a user."""
        recipient = int(call.json_body().get("recipient_id") or 0)
        user = self._state.users.get(recipient)
        if user is None:
            raise DiscordError(400, 50033, "Invalid Recipient(s)")
        return Reply(self._state.create_dm(user))
