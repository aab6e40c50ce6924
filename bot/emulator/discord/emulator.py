"""DiscordEmulator: a local Discord (REST + gateway) that the real hikari client talks to."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from aiohttp import web

from bot.emulator.discord import payloads
from bot.emulator.discord.commands import CommandRegistry, component_payload, interaction_payload
from bot.emulator.discord.events import EventPublisher
from bot.emulator.discord.faults import Fault, FaultInjector
from bot.emulator.discord.gateway import GatewayServer
from bot.emulator.discord.ids import SnowflakeFactory, make_bot_token
from bot.emulator.discord.messages import mentioned_ids, message_object, reply_reference
from bot.emulator.discord.payloads import ChannelType
from bot.emulator.discord.ratelimit import RateLimiter
from bot.emulator.discord.records import (
    Activity,
    InteractionRecord,
    Notifier,
    SentMessage,
    WebhookMessage,
)
from bot.emulator.discord.rest import RestAPI, not_found
from bot.emulator.discord.routes_app import AppRoutes
from bot.emulator.discord.routes_channels import ChannelRoutes
from bot.emulator.discord.routes_interactions import InteractionRoutes
from bot.emulator.discord.routes_webhooks import WebhookRoutes
from bot.emulator.discord.state import DiscordState
from bot.emulator.local_server import LocalServer

__all__ = ["DiscordEmulator"]

JSON = dict[str, Any]
_MAX_UPLOAD_BYTES = 64 * 1024 * 1024


class DiscordEmulator(LocalServer):
    """A protocol-level Discord on 127.0.0.1: REST under ``/api/v{N}`` and a gateway."""

    _name = "the Discord emulator"

    def __init__(
        self,
        bot_user_id: int | None = None,
        application_id: int | None = None,
        shards: int = 1,
        enforce_limits: bool = True,
        validate: bool = True,
        *,
        bot_name: str = "emulator-bot",
        history_limit: int = 10_000,
        interaction_deadline: float | None = 3.0,
        max_concurrency: int | None = None,
        identify_interval_s: float | None = None,
    ) -> None:
        """``max_concurrency`` is what ``GET /gateway/bot`` reports (default: ``shards``, so
        start-up never waits). With ``identify_interval_s`` set (Discord: 5.0) the gateway
        enforces the identify buckets: one IDENTIFY per bucket (``shard_id % max_concurrency``)
        per interval; one too early gets INVALID_SESSION, as on Discord. Off by default, so
        tests that re-identify at once (after a forced close) stay fast."""
        if shards < 1:
            msg = f"shards must be at least 1, not {shards}"
            raise ValueError(msg)
        if max_concurrency is not None and max_concurrency < 1:
            msg = f"max_concurrency must be at least 1, not {max_concurrency}"
            raise ValueError(msg)
        self.max_concurrency = max_concurrency or shards
        self._ids = SnowflakeFactory()
        self.bot_user_id = bot_user_id if bot_user_id is not None else self._ids.next()
        self.application_id = application_id if application_id is not None else self.bot_user_id
        self.shards = shards
        self.token = make_bot_token(self.bot_user_id)
        self.bot_user = payloads.user(self.bot_user_id, bot_name, bot=True)
        super().__init__()

        self._notifier = Notifier()
        self._activity = Activity(self._notifier, history_limit)
        self._state = DiscordState(self._ids, self.bot_user, history_limit=history_limit)
        self._commands = CommandRegistry(self._ids, self.application_id)
        self._faults = FaultInjector()
        # Attachment ids in the order their bytes were served (bounded like the history).
        self.attachment_downloads: deque[int] = deque(maxlen=history_limit)
        self._gateway = GatewayServer(
            self._state,
            self._notifier,
            token=self.token,
            application_id=self.application_id,
            url=lambda: self.gateway_url,
            max_concurrency=self.max_concurrency,
            identify_interval_s=identify_interval_s,
        )
        self._events = EventPublisher(self._state, self._gateway)
        base_url = lambda: self.base_url  # noqa: E731 - resolved once the port is known
        interactions = InteractionRoutes(
            self._state,
            self._activity,
            base_url,
            application_id=self.application_id,
            deadline=interaction_deadline,
        )
        self._webhooks = WebhookRoutes(
            self._state,
            self._activity,
            self._events,
            application_id=self.application_id,
            interaction_follow_up=interactions.follow_up,
            base_url=base_url,
        )
        routes = [
            *AppRoutes(
                self._state,
                self._commands,
                self._gateway,
                application_id=self.application_id,
                shards=shards,
                max_concurrency=self.max_concurrency,
                gateway_url=lambda: self.gateway_url,
            ).routes(),
            *ChannelRoutes(self._state, self._activity, self._events, base_url).routes(),
            *self._webhooks.routes(),
            *interactions.routes(),
        ]
        self._rest = RestAPI(
            token=self.token,
            routes=routes,
            activity=self._activity,
            faults=self._faults,
            limiter=RateLimiter() if enforce_limits else None,
            validate=validate,
        )

    # Lifecycle

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_UPLOAD_BYTES)
        app.router.add_get("/gateway", self._gateway.handle)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._attachment)
        app.router.add_route("*", "/api/{tail:.*}", self._rest.handle)
        app.router.add_route("*", "/{tail:.*}", not_found)
        return app

    async def _before_stop(self) -> None:
        await self._gateway.close_all()

    @property
    def rest_url(self) -> str:
        """The URL to pass as ``hikari.GatewayBot(rest_url=...)``."""
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """The websocket URL that ``GET /gateway/bot`` hands out."""
        return self.base_url.replace("http://", "ws://", 1) + "/gateway"

    # The world

    def create_guild(self, name: str = "Guild 1") -> int:
        """Create a guild with a #general text channel; connected clients get GUILD_CREATE."""
        guild = self._state.create_guild(name)
        self._events.guild_create(guild.id)
        return guild.id

    def create_channel(
        self, guild_id: int, name: str = "chat", type: int = 0, parent_id: int | None = None
    ) -> int:
        """Create a channel (``type=11`` is a public thread under text channel ``parent_id``)."""
        channel = self._state.create_channel(guild_id, name, ChannelType(type), parent_id)
        self._events.channel_create(channel)
        return int(channel["id"])

    def guild_text_channel(self, guild_id: int) -> int:
        """Return the id of a guild's #general channel."""
        return self._state.guild(guild_id).general_channel_id

    def create_user(self, name: str, bot: bool = False) -> JSON:
        """Create a user and return its Discord user object."""
        return self._state.create_user(name, bot=bot)

    def create_role(self, guild_id: int, name: str, permissions: int = 0) -> int:
        """Create a role and return its id."""
        return int(self._state.create_role(guild_id, name, permissions)["id"])

    def add_member(
        self, guild_id: int, user: JSON, roles: Iterable[int] = (), permissions: int = 0
    ) -> None:
        """Make a user a member of a guild with roles and extra permission bits."""
        is_new = int(user["id"]) not in self._state.guild(guild_id).members
        self._state.add_member(guild_id, user, list(roles), permissions)
        if is_new:
            self._events.member_add(guild_id, int(user["id"]))

    def create_dm(self, user: JSON) -> int:
        """Return the id of the DM channel between the bot and a user."""
        return int(self._state.create_dm(user)["id"])

    def add_attachment(
        self, data: bytes, filename: str, content_type: str, channel_id: int | None = None
    ) -> JSON:
        """Register bytes served at an attachment URL; return the attachment object."""
        attachment_id = self._ids.next()
        path = f"/attachments/{channel_id or 0}/{attachment_id}/{urllib.parse.quote(filename)}"
        url = self.base_url + path
        attachment = payloads.attachment(
            attachment_id, url=url, filename=filename, size=len(data), content_type=content_type
        )
        self._state.store_attachment(attachment, data)
        return attachment

    def create_webhook(self, channel_id: int, name: str = "Alertmanager") -> str:
        """Create a webhook in a guild text channel and return its execute URL (the secret a
        sender such as Alertmanager's Discord receiver is given)."""
        return self._webhooks.url(self._webhooks.create(channel_id, name))

    def message(self, message_id: int) -> JSON | None:
        """Return a stored message (a user's or the bot's) by id."""
        return self._state.messages.get(message_id)

    # Users acting

    async def wait_until_ready(
        self,
        timeout: float = 10.0,  # noqa: ASYNC109 - callers pass timeouts (the agreed test API)
    ) -> None:
        """Wait until every shard has identified and received READY and its GUILD_CREATEs."""
        await self._notifier.wait_for(
            lambda: self._gateway.is_ready(self.shards),
            timeout,
            f"READY on all {self.shards} shard(s)",
        )

    async def send_message(
        self,
        channel_id: int,
        author: JSON,
        content: str = "",
        *,
        mention_bot: bool = False,
        reply_to: int | None = None,
        attachments: Iterable[JSON] = (),
        mention_replied_user: bool = True,
    ) -> JSON:
        """Post a message as ``author`` and dispatch MESSAGE_CREATE; return the message."""
        if self._state.channel(channel_id) is None:
            msg = f"unknown channel {channel_id}: create it with create_channel() or create_dm()"
            raise KeyError(msg)
        guild_id = self._state.guild_id_of(channel_id)
        self._require_gateway()
        self._state.users.setdefault(int(author["id"]), author)
        if guild_id is not None:
            self._state.member_payload(guild_id, int(author["id"]))  # joins the guild if needed
        if mention_bot:
            content = f"<@{self.bot_user_id}> {content}"
        reference, referenced = self._reference(reply_to)
        mention = mentioned_ids(content)
        if referenced is not None and mention_replied_user:
            mention.append(int(referenced["author"]["id"]))
        users = self._state.users
        message = message_object(
            message_id=self._ids.next(),
            channel_id=channel_id,
            author=author,
            content=content,
            mentions=[
                users[u] for u in dict.fromkeys(mention) if u in users and u != int(author["id"])
            ],
            attachments=attachments,
            reference=reference,
            referenced=referenced,
        )
        self._state.store_message(message)
        await asyncio.gather(*self._events.message("MESSAGE_CREATE", message))
        return message

    def _reference(self, reply_to: int | None) -> tuple[JSON | None, JSON | None]:
        if reply_to is None:
            return None, None
        referenced = self._state.messages.get(reply_to)
        if referenced is None:
            msg = f"cannot reply to unknown message {reply_to}"
            raise KeyError(msg)
        guild_id = self._state.guild_id_of(int(referenced["channel_id"]))
        return reply_reference(referenced, guild_id), referenced

    async def redeliver_message(self, message_id: int) -> None:
        """Dispatch MESSAGE_CREATE again for a stored message, as Discord's at-least-once
        gateway may (an event re-sent after a RESUME): a bot must not answer it twice."""
        message = self._state.messages.get(message_id)
        if message is None:
            msg = f"unknown message {message_id}: send it with send_message() first"
            raise KeyError(msg)
        self._require_gateway()
        await asyncio.gather(*self._events.message("MESSAGE_CREATE", message))

    async def delete_message(self, channel_id: int, message_id: int) -> None:
        """Delete a stored message and dispatch MESSAGE_DELETE."""
        self._state.messages.pop(message_id, None)
        await asyncio.gather(*self._events.message_delete(channel_id, message_id))

    async def send_interaction(
        self,
        name: str,
        user: JSON,
        channel_id: int,
        options: Mapping[str, Any] | None = None,
        permissions: int = 0,
    ) -> InteractionRecord:
        """Invoke the registered slash command ``/name`` as ``user`` (INTERACTION_CREATE)."""
        channel = self._state.channel(channel_id)
        if channel is None:
            msg = f"unknown channel {channel_id}"
            raise KeyError(msg)
        guild_id = self._state.guild_id_of(channel_id)
        self._require_gateway()
        command = self._commands.find(name, guild_id)
        if command is None:
            registered = sorted(c["name"] for c in self._commands.all())
            msg = (
                f"no slash command /{name} is registered (registered: {registered}); "
                "start the lightbulb client and wait for its PUT .../commands"
            )
            raise LookupError(msg)
        self._state.users.setdefault(int(user["id"]), user)
        payload = interaction_payload(
            self._state,
            application_id=self.application_id,
            command=command,
            options=options or {},
            user=user,
            channel=channel,
            extra_permissions=permissions,
        )
        record = InteractionRecord(
            id=int(payload["id"]),
            token=str(payload["token"]),
            name=name,
            channel_id=channel_id,
            guild_id=guild_id,
            user=user,
            payload=payload,
            notifier=self._notifier,
            created_at=time.monotonic(),
        )
        self._activity.add_interaction(record)
        await asyncio.gather(*self._events.interaction_create(payload))
        return record

    async def press_button(
        self, message_id: int, custom_id: str, user: JSON, permissions: int = 0
    ) -> InteractionRecord:
        """``user`` presses the button ``custom_id`` on the bot's message (a MESSAGE_COMPONENT
        INTERACTION_CREATE); ``permissions`` are added to the user's own in the channel."""
        message = self._state.messages.get(message_id)
        if message is None:
            msg = f"unknown message {message_id}"
            raise KeyError(msg)
        ids = {
            str(c.get("custom_id"))
            for row in message.get("components") or []
            for c in row.get("components") or []
        }
        if custom_id not in ids:
            msg = f"message {message_id} has no button {custom_id!r} (it has {sorted(ids)})"
            raise LookupError(msg)
        channel_id = int(message["channel_id"])
        channel = self._state.channel(channel_id)
        assert channel is not None
        self._require_gateway()
        self._state.users.setdefault(int(user["id"]), user)
        payload = component_payload(
            self._state,
            application_id=self.application_id,
            message=message,
            custom_id=custom_id,
            user=user,
            channel=channel,
            extra_permissions=permissions,
        )
        record = InteractionRecord(
            id=int(payload["id"]),
            token=str(payload["token"]),
            name=f"button:{custom_id}",
            channel_id=channel_id,
            guild_id=self._state.guild_id_of(channel_id),
            user=user,
            payload=payload,
            notifier=self._notifier,
            created_at=time.monotonic(),
        )
        self._activity.add_interaction(record)
        await asyncio.gather(*self._events.interaction_create(payload))
        return record

    def _require_gateway(self) -> None:
        if not self._gateway.has_identified():
            msg = (
                "no gateway client has identified yet: "
                "start the bot and await emu.wait_until_ready() first"
            )
            raise RuntimeError(msg)

    # What the bot did

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - callers pass timeouts (the agreed test API)
        what: str = "condition",
    ) -> None:
        """Wait until ``predicate()`` holds; re-checked on every recorded event and every 20 ms."""
        await self._notifier.wait_for(predicate, timeout, what)

    async def wait_for_reply(
        self,
        message_id: int,
        timeout: float = 10.0,  # noqa: ASYNC109 - callers pass timeouts (the agreed test API)
    ) -> SentMessage:
        """Wait for the first bot message whose message_reference points to ``message_id``,
        and, when the answer streams, until it is complete: no bot message in its channel
        still carries a button (a streaming answer's Stop button goes when it ends)."""
        await self._notifier.wait_for(
            lambda: (
                (reply := self._activity.first_reply(message_id)) is not None
                and not self.streaming_in(reply.channel_id)
            ),
            timeout,
            f"a complete reply to message {message_id}",
        )
        reply = self._activity.first_reply(message_id)
        assert reply is not None
        return reply

    def streaming_in(self, channel_id: int) -> bool:
        """Does a bot message in the channel still carry components (a Stop button)?"""
        return any(
            (message := self._state.messages.get(sent.id)) is not None
            and bool(message.get("components"))
            for sent in self._activity.messages_in(channel_id)
        )

    def messages_in(self, channel_id: int) -> list[SentMessage]:
        """Messages the bot created in a channel, oldest first."""
        return self._activity.messages_in(channel_id)

    def typing_count(self, channel_id: int) -> int:
        """How many typing indicators the bot triggered in a channel."""
        return self._activity.typing[channel_id]

    @property
    def sent_messages(self) -> list[SentMessage]:
        """Every message the bot created with ``POST /channels/{id}/messages``, oldest first."""
        return self._activity.sent_messages

    @property
    def webhook_messages(self) -> list[WebhookMessage]:
        """Messages posted through channel webhooks (``create_webhook``), oldest first."""
        return self._activity.webhook_messages

    @property
    def spec_violations(self) -> list[str]:
        """Requests Discord would have refused because the bot broke the API contract."""
        return self._activity.spec_violations

    @property
    def requests(self) -> deque[tuple[str, str, int]]:
        """The latest REST requests as (method, path, status)."""
        return self._activity.requests

    @property
    def reactions(self) -> deque[tuple[int, int, str, bool]]:
        """Reactions the bot added or removed: (channel, message, emoji, added)."""
        return self._activity.reactions

    @property
    def interactions(self) -> list[InteractionRecord]:
        """Interactions sent to the bot, oldest first."""
        return list(self._activity.interactions.values())

    @property
    def rate_limited_count(self) -> int:
        """How many 429 answers the emulator sent (rate limits and injected 429s)."""
        return self._rest.rate_limited

    @property
    def registered_commands(self) -> list[JSON]:
        """Global and guild commands as the bot registered them (guild ones carry guild_id)."""
        return self._commands.all()

    # Faults

    def inject_rest_fault(
        self,
        status: int = 500,
        count: int | None = 1,
        route_contains: str | None = None,
        retry_after: float = 0.05,
    ) -> None:
        """Make the next ``count`` REST requests (whose path contains ``route_contains``) fail;
        ``count=None``: every one until ``clear_rest_faults()``."""
        self._faults.add(Fault(status, count, route_contains, retry_after))

    def inject_rest_lost_answer(
        self,
        kind: Literal["slow", "drop"],
        count: int | None = 1,
        route_contains: str | None = None,
        delay_s: float = 5.0,
    ) -> None:
        """Carry out the next ``count`` matching REST requests but lose the answer: ``slow``
        answers after ``delay_s`` (past the client's timeout), ``drop`` closes the connection."""
        self._faults.add(Fault(0, count, route_contains, kind=kind, delay_s=delay_s))

    @property
    def rest_faults_injected(self) -> int:
        """REST requests answered with an injected fault so far."""
        return self._faults.injected

    def clear_rest_faults(self) -> None:
        """Drop every pending REST fault (ends an outage injected with ``count=None``)."""
        self._faults.clear()

    async def disconnect_gateway(self, shard: int = 0, code: int | None = 4000) -> None:
        """Close a shard's connection (``code=None`` drops TCP); the client should RESUME."""
        if not await self._gateway.disconnect(shard, code):
            msg = f"no gateway connection on shard {shard}"
            raise RuntimeError(msg)
        self._notifier.notify()

    async def end_gateway_session(self, shard: int = 0) -> None:
        """End a shard's session for good and close its connection: the client cannot RESUME
        (INVALID_SESSION), identifies again and starts a new session with READY; messages sent
        in between are never dispatched to it (only REST history has them)."""
        if not await self._gateway.end_sessions(shard):
            msg = f"no gateway session on shard {shard}"
            raise RuntimeError(msg)
        self._notifier.notify()

    def disallow_intents(self, bits: int) -> None:
        """Refuse IDENTIFYs asking for these intent bits with close code 4014, as Discord does
        when a privileged intent is not switched on for the application."""
        self._gateway.disallowed_intents = bits

    def request_reconnect(self, shard: int = 0) -> None:
        """Send RECONNECT (op 7) to a shard; the client should RESUME."""
        if not self._gateway.request_reconnect(shard):
            msg = f"no gateway connection on shard {shard}"
            raise RuntimeError(msg)

    @property
    def identify_count(self) -> int:
        """IDENTIFYs received, all shards together (see ``identifies`` per shard)."""
        return sum(self._gateway.identifies.values())

    @property
    def resume_count(self) -> int:
        """Successful RESUMEs, all shards together (see ``resumes`` per shard)."""
        return sum(self._gateway.resumes.values())

    @property
    def identifies(self) -> Mapping[int, int]:
        """IDENTIFYs received per shard id."""
        return self._gateway.identifies

    @property
    def identify_rate_limited(self) -> Mapping[int, int]:
        """IDENTIFYs refused per shard id for coming too early in their bucket."""
        return self._gateway.identify_rate_limited

    @property
    def resumes(self) -> Mapping[int, int]:
        """Successful RESUMEs per shard id."""
        return self._gateway.resumes

    @property
    def gateway_compressions(self) -> list[str]:
        """The ``compress`` mode of each gateway connection so far ("none" for plain JSON)."""
        return list(self._gateway.compression_log)

    @property
    def invalid_session_count(self) -> int:
        """RESUMEs refused with INVALID_SESSION."""
        return self._gateway.invalid_sessions

    def dispatch_count(self, event: str, shard: int | None = None) -> int:
        """How many dispatches of an event type went to live sessions (optionally one shard)."""
        return sum(
            s.dispatched[event]
            for s in self._gateway.sessions
            if shard is None or s.shard_id == shard
        )

    # Attachments

    async def _attachment(self, request: web.Request) -> web.Response:
        raw_id = request.match_info["attachment_id"]
        stored = self._state.attachments.get(int(raw_id)) if raw_id.isdigit() else None
        if stored is None or stored.payload["filename"] != request.match_info["filename"]:
            return web.json_response({"message": "404: Not Found", "code": 0}, status=404)
        self.attachment_downloads.append(int(raw_id))
        return web.Response(body=stored.data, content_type=str(stored.payload["content_type"]))
