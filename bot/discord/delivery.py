"""Sending replies, reading reply chains and downloading attachments over Discord's REST API."""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import aiohttp
import hikari
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
from bot.resilience.rest_pace import LocalPace, RestPace

__all__ = ["DiscordDelivery", "DiscordObserver", "is_outage"]

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
        pace: RestPace | None = None,
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
        # A fleet passes the pace it shares through Redis (`bot.app.rest_pace`); alone, a small
        # burst for answers that start at once (`LocalPace`).
        self.pace: RestPace = pace or LocalPace(max_rps)
        self._pace_waiters = 0  # calls waiting for their turn at the pace right now
        # Typing indicators by the message they answer, so a streamed answer can end its own
        # as soon as its first words show (one per message being answered: bounded by them).
        self._typing: dict[int, Callable[[], None]] = {}
        # User message created -> answer visible (seconds, "whole" or "streamed"); set by app.
        self.on_first_visible: Callable[[float, str], None] | None = None

    async def aclose(self) -> None:
        self.hold.close()
        await self._fetcher.aclose()
        await self.pace.aclose()

    async def _rest_call(self, name: str, call: Awaitable[T]) -> T:
        """One paced REST call, in a span, counted by status class."""
        self._pace_waiters += 1
        try:
            await self.pace.acquire()
        finally:
            self._pace_waiters -= 1
        return await self._unpaced_call(name, call)

    async def _unpaced_call(self, name: str, call: Awaitable[T]) -> T:
        """The call itself (its turn at the pace taken), in a span, counted by status class."""
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

    def track_typing(self, message_id: int, stop: Callable[[], None] | None) -> None:
        """Remember (or, with None, forget) how to end the typing shown for `message_id`."""
        if stop is None:
            self._typing.pop(message_id, None)
        else:
            self._typing[message_id] = stop

    def stop_typing(self, message_id: int) -> None:
        """End the typing indicator for `message_id`: its answer is showing."""
        stop = self._typing.pop(message_id, None)
        if stop is not None:
            stop()

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
            # Discord allows 25 characters; a retry sends the same nonce, and so does a re-send
            # after a restart (the key is derived from the question's id).
            nonce = f"{reply.nonce_key}{index}" if reply.nonce_key else secrets.token_hex(12)
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

    async def replace_messages(
        self, target: MessageTarget, message_ids: Sequence[int], reply: Reply
    ) -> list[int]:
        """A streamed answer a restart cut short: its messages become the reply's chunks (edited
        in place, the Stop button removed; missing ones posted under the reply's nonces, extra
        ones deleted), so the channel holds one answer, not a half one beside a whole one. A
        message deleted meanwhile is posted again."""
        ids: list[int] = []
        for index, chunk in enumerate(reply.chunks):
            if index < len(message_ids):
                try:
                    await self._send(
                        "edit_message",
                        functools.partial(
                            self._rest.edit_message,
                            target.channel_id,
                            message_ids[index],
                            chunk,
                            components=[],
                            mentions_everyone=False,
                            user_mentions=False,
                            role_mentions=False,
                        ),
                    )
                    ids.append(message_ids[index])
                    continue
                except hikari.NotFoundError:
                    pass  # deleted meanwhile: posted again below
            nonce = f"{reply.nonce_key}{index}" if reply.nonce_key else secrets.token_hex(12)
            message = await self._send(
                "create_message",
                functools.partial(
                    self._rest.create_message,
                    target.channel_id,
                    chunk,
                    nonce=nonce,
                    reply=target.message_id if not ids else hikari.UNDEFINED,
                    reply_must_exist=False,
                    mentions_reply=False,
                    mentions_everyone=False,
                    user_mentions=False,
                    role_mentions=False,
                ),
            )
            ids.append(int(message.id))
        for message_id in message_ids[len(reply.chunks) :]:
            with contextlib.suppress(hikari.NotFoundError):
                await self._send(
                    "delete_message",
                    functools.partial(self._rest.delete_message, target.channel_id, message_id),
                )
        return ids

    async def find_reply(self, channel_id: int, message_id: int) -> int | None:
        # One page: a reply lands soon after its question; older history is not searched.
        page = self._rest.fetch_messages(channel_id, after=message_id).limit(100)
        messages = await self._rest_call("fetch_messages", _collect(page))
        for message in messages:
            ref = message.message_reference
            if (
                int(message.author.id) == self._bot_id
                and ref is not None
                and ref.id is not None
                and int(ref.id) == message_id
            ):
                return int(message.id)
        return None

    async def fetch_quoted(self, channel_id: int, message_id: int) -> QuotedMessage | None:
        try:
            message = await self._rest_call(
                "fetch_message", self._rest.fetch_message(channel_id, message_id)
            )
        except (hikari.NotFoundError, hikari.ForbiddenError):
            return None
        return to_quoted(message, self._bot_id)

    def rest_budget_spare(self) -> bool:
        """Is there REST budget no reply needs: no call waiting for the pace, room in it now,
        and Discord's breaker not open? Cosmetic calls (typing) go only then."""
        return self._pace_waiters == 0 and self.hold.state != "open" and self.pace.has_capacity()

    async def trigger_typing(self, channel_id: int) -> bool:
        """One "Bot is typing…" trigger (shows for 10 s), only in a turn of the pace that is
        free now (in a fleet, free in the shared schedule); False when none was: see
        `bot.discord.typing`."""
        if not await self.pace.try_acquire():
            return False
        await self._unpaced_call("trigger_typing", self._rest.trigger_typing(channel_id))
        return True

    async def notify(
        self, channel_id: int, reply_to: int, text: str, user_ids: Sequence[int]
    ) -> None:
        """A short notice answering `reply_to`, pinging exactly `user_ids` (shed messages)."""
        await self._send(
            "create_message",
            functools.partial(
                self._rest.create_message,
                channel_id,
                text,
                nonce=secrets.token_hex(12),
                reply=reply_to,
                reply_must_exist=False,
                mentions_reply=False,
                mentions_everyone=False,
                user_mentions=list(user_ids) or False,
                role_mentions=False,
            ),
        )

    async def messages_after(
        self, channel_id: int, after_id: int, max_messages: int
    ) -> list[hikari.Message]:
        """Up to `max_messages` of a channel's messages after `after_id`, oldest first (pages of
        100, each paced like any other call; hikari also waits out Discord's rate limits)."""
        found: list[hikari.Message] = []
        pages = 0
        with _tracer.start_as_current_span("discord fetch_messages", kind=SpanKind.CLIENT):
            iterator = self._rest.fetch_messages(channel_id, after=hikari.Snowflake(after_id))
            try:
                await self.pace.acquire()
                pages += 1
                async for message in iterator:  # hikari reads 100 per request, oldest first
                    found.append(message)
                    if len(found) >= max_messages:
                        break
                    if len(found) % 100 == 0:  # the next message needs the next page
                        await self.pace.acquire()
                        pages += 1
            except hikari.HTTPResponseError as exc:
                self._telemetry.discord_rest(int(exc.status))
                raise
            except (hikari.HTTPError, aiohttp.ClientError, OSError):
                self._telemetry.discord_rest(None)
                raise
        for _ in range(pages):
            self._telemetry.discord_rest(200)
        return found

    async def member(self, guild_id: int, user_id: int) -> hikari.Member | None:
        """A guild member (for the roles the access lists check), None when not a member."""
        try:
            return await self._rest_call("fetch_member", self._rest.fetch_member(guild_id, user_id))
        except (hikari.NotFoundError, hikari.ForbiddenError):
            return None

    async def download(self, attachment: Attachment, max_bytes: int) -> bytes:
        return await self._fetcher.fetch(attachment.url, max_bytes)

    async def react(self, channel_id: int, message_id: int, emoji: str) -> None:
        await self._rest_call(
            "add_reaction", self._rest.add_reaction(channel_id, message_id, emoji)
        )


async def _collect(page: hikari.iterators.LazyIterator[hikari.Message]) -> list[hikari.Message]:
    return list(await page)
