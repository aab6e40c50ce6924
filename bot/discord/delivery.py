"""Sending replies, reading reply chains and downloading attachments over Discord's REST API."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import aiohttp
import hikari
from aiolimiter import AsyncLimiter
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from bot.chat.models import (
    Attachment,
    InteractionTarget,
    MessageTarget,
    QuotedMessage,
    Reply,
    ReplyTarget,
)
from bot.discord.convert import to_quoted
from bot.discord.downloads import AttachmentFetcher
from bot.resilience.breaker import CircuitBreaker
from bot.resilience.hold import BreakerHold

__all__ = ["DiscordDelivery", "DiscordObserver", "is_outage"]

TYPING_REFRESH_S = 8.0

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)
T = TypeVar("T")


class DiscordObserver(Protocol):
    """Where gateway events and REST outcomes are counted (ops.Telemetry)."""

    def gateway_event(self, event_type: str) -> None: ...

    def discord_rest(self, status: int | None) -> None: ...


def is_outage(exc: BaseException) -> bool:
    """Is this failure Discord being down (a 5xx, a timeout, a lost connection), which the
    breaker counts and the hold retries? Client errors (4xx) are answers; a 429 that hikari
    would not wait out is the rate limiter's business, not an outage."""
    if isinstance(exc, hikari.RateLimitTooLongError):
        return False
    if isinstance(exc, hikari.HTTPResponseError):
        return int(exc.status) >= 500
    return isinstance(exc, hikari.HTTPError | aiohttp.ClientError | OSError | TimeoutError)


class DiscordDelivery:
    """The `DiscordPort` the chat pipeline talks to.

    Replies go out through the "discord" circuit breaker (`hold`): while Discord's REST API
    fails, a reply waits (bounded) and is sent once it is back; see `bot.resilience.hold`.
    Each channel message carries a nonce that Discord enforces (hikari sends
    `enforce_nonce: true` with it), so a retry of a send that Discord carried out but whose
    answer was lost returns the first message instead of posting a second one.
    """

    def __init__(
        self,
        rest: hikari.api.RESTClient,
        bot_id: int,
        max_rps: float,
        telemetry: DiscordObserver,
        *,
        fetcher: AttachmentFetcher | None = None,
        breaker: CircuitBreaker | None = None,
        hold_max_replies: int = 100,
        hold_max_seconds: float = 120.0,
    ) -> None:
        self.hold = BreakerHold(
            breaker or CircuitBreaker("discord"),
            max_held=hold_max_replies,
            max_wait_s=hold_max_seconds,
            is_outage=is_outage,
        )
        self._telemetry = telemetry
        self._rest = rest
        self._bot_id = bot_id
        self._fetcher = fetcher or AttachmentFetcher()
        # Discord allows 50 requests/s per bot across all routes, and hikari only reacts to the
        # 429s: pacing our own calls keeps a burst of answers (a queue draining, many DMs at
        # once) under the limit instead of into a storm of retries.
        # Capacity 1: evenly spaced calls, so no 1-second window ever sees more than max_rps.
        self.pace = AsyncLimiter(1, 1.0 / max_rps)
        # Typing indicators by the message they answer, so a streamed answer can end its own
        # as soon as its first words show (one per message being answered: bounded by them).
        self._typing: dict[int, asyncio.Task[None]] = {}
        # User message created -> answer visible (seconds, "whole" or "streamed"); set by app.
        self.on_first_visible: Callable[[float, str], None] | None = None

    async def aclose(self) -> None:
        self.hold.close()
        await self._fetcher.aclose()

    async def _rest_call(self, name: str, call: Awaitable[T]) -> T:
        """One paced REST call, in a span, counted by status class."""
        await self.pace.acquire()
        # A leaf span (nothing below it is traced): not made current, which costs less.
        with _tracer.start_span(f"discord {name}", kind=SpanKind.CLIENT) as span:
            try:
                result = await call
            except hikari.HTTPResponseError as exc:
                self._telemetry.discord_rest(int(exc.status))
                span.set_attribute("http.response.status_code", int(exc.status))
                raise
            except (hikari.HTTPError, aiohttp.ClientError, OSError):
                self._telemetry.discord_rest(None)
                raise
            self._telemetry.discord_rest(200)
            return result

    async def _send(self, name: str, make: Callable[[], Awaitable[T]]) -> T:
        """A REST call that creates or edits a message: through the breaker, held while
        Discord is down; `make` builds the request anew for each try."""
        return await self.hold.call(lambda: self._rest_call(name, make()))

    def track_typing(self, message_id: int, task: asyncio.Task[None] | None) -> None:
        """Remember (or, with None, forget) the typing indicator shown for `message_id`."""
        if task is None:
            self._typing.pop(message_id, None)
        else:
            self._typing[message_id] = task

    def stop_typing(self, message_id: int) -> None:
        """End the typing indicator for `message_id`: its answer is showing."""
        task = self._typing.pop(message_id, None)
        if task is not None:
            task.cancel()

    async def deliver(self, target: ReplyTarget, reply: Reply) -> list[int]:
        if isinstance(target, InteractionTarget):
            return await self._deliver_interaction(target, reply)
        ids = await self._deliver_messages(target, reply)
        if self.on_first_visible is not None and reply.kind in ("answer", "cached") and ids:
            created = hikari.Snowflake(target.message_id).created_at.timestamp()
            self.on_first_visible(time.time() - created, "whole")
        return ids

    async def _deliver_messages(self, target: MessageTarget, reply: Reply) -> list[int]:
        ids: list[int] = []
        for index, chunk in enumerate(reply.chunks):
            # Discord allows 25 characters; a retry sends the same nonce.
            nonce = secrets.token_hex(12)
            message = await self._send(
                "create_message",
                functools.partial(
                    self._rest.create_message,
                    target.channel_id,
                    chunk,
                    nonce=nonce,
                    # The first chunk answers the user's message; the rest follow it in order.
                    reply=target.message_id if index == 0 else hikari.UNDEFINED,
                    reply_must_exist=False,
                    # A model's output must never ping anyone: no @everyone/@here, role or user
                    # pings. The only one allowed is the reply's own notification to the author.
                    mentions_reply=index == 0,
                    mentions_everyone=False,
                    user_mentions=False,
                    role_mentions=False,
                ),
            )
            ids.append(int(message.id))
        return ids

    async def _deliver_interaction(self, target: InteractionTarget, reply: Reply) -> list[int]:
        ids: list[int] = []
        first, *rest = reply.chunks
        # Editing the deferred response is idempotent; a follow-up (execute webhook) has no
        # nonce in Discord's API, so one whose answer was lost may appear twice.
        message = await self._send(
            "edit_interaction_response",
            functools.partial(
                self._rest.edit_interaction_response,
                target.application_id,
                target.token,
                first,
                mentions_everyone=False,
                user_mentions=False,
                role_mentions=False,
            ),
        )
        ids.append(int(message.id))
        flags = hikari.MessageFlag.EPHEMERAL if target.ephemeral else hikari.UNDEFINED
        for chunk in rest:
            message = await self._send(
                "execute_webhook",
                functools.partial(
                    self._rest.execute_webhook,
                    target.application_id,
                    target.token,
                    chunk,
                    flags=flags,
                    mentions_everyone=False,
                    user_mentions=False,
                    role_mentions=False,
                ),
            )
            ids.append(int(message.id))
        return ids

    async def fetch_quoted(self, channel_id: int, message_id: int) -> QuotedMessage | None:
        try:
            message = await self._rest_call(
                "fetch_message", self._rest.fetch_message(channel_id, message_id)
            )
        except (hikari.NotFoundError, hikari.ForbiddenError):
            return None
        return to_quoted(message, self._bot_id)

    async def keep_typing(self, channel_id: int, *, delay_s: float = 0.0) -> None:
        """Show "Bot is typing…" after `delay_s` until cancelled (10 s per trigger)."""
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        while True:
            if self.hold.state == "open":  # cosmetic: no calls to a Discord that is down
                await asyncio.sleep(TYPING_REFRESH_S)
                continue
            try:
                await self._rest_call("trigger_typing", self._rest.trigger_typing(channel_id))
            except hikari.HTTPError as exc:  # cosmetic: never let it fail the answer
                log.debug("typing indicator failed: %s", exc)
                return
            await asyncio.sleep(TYPING_REFRESH_S)

    async def download(self, attachment: Attachment, max_bytes: int) -> bytes:
        return await self._fetcher.fetch(attachment.url, max_bytes)
