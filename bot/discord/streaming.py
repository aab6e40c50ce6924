"""Streamed replies: the answer appears in a message that is edited as the model's text arrives.

One `_Stream` per answer. Its writer task posts the first message (a reply pinging nobody, with a
Stop button) once `first_post_s` has passed since the first words and a first sentence is
complete (or `FIRST_POST_GRACE_S` later with whatever arrived); an answer that is whole before
then is posted at once like a non-streamed one. After that the messages are edited at most once
per `edit_interval_s`, and rolled over past 2,000 characters with the splitter's rules
(`bot.chat.stream_split`). `finish` makes the messages exactly the chunks of the final reply.
A `/chat` streams the same way: its first message is the interaction's deferred response
(edited through the interaction token) and rolled-over ones are follow-ups. Each new message's
id goes to `on_posted` (the pipeline journals them, so a restart edits them instead of
posting the answer a second time).

Pacing: hikari reads each answer's `X-RateLimit-Remaining` / `X-RateLimit-Reset-After` headers
into its bucket for the edit route (per channel) and holds the next request on that bucket until
Discord allows it, so an exhausted bucket slows edits down instead of drawing 429s. On top of
that every stream waits `edit_interval_s` between its edits, and the streams of one channel take
turns (a FIFO lock per channel), so several answers in one channel share its budget fairly; an
edit that waits for its turn sends the newest text, so waiting never piles up edits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Final, Protocol, TypeVar

import hikari

from bot.chat.models import InteractionTarget, MessageTarget, Reply, ReplyTarget
from bot.chat.ports import StreamStopped
from bot.chat.stream_split import Change, StreamLayout
from bot.discord.delivery import DiscordDelivery

__all__ = ["STOP_PREFIX", "StreamObserver", "StreamingReplies"]

log = logging.getLogger(__name__)
T = TypeVar("T")

STOP_PREFIX: Final = "llmbot-stop:"
STOP_LABEL: Final = "Stop"
# With no sentence end by then, the first message goes out with whatever has arrived.
FIRST_POST_GRACE_S: Final = 0.75
# Answers streaming at once; more are answered whole (a bound for the maps below).
MAX_ACTIVE_STREAMS: Final = 500
NOT_YOURS_TEXT: Final = (
    "Only the person who asked (or someone who can manage messages) can stop this answer."
)
FINISHED_TEXT: Final = "This answer has already finished."
_SENTENCE_END = re.compile(r"[.!?…:][\"')\]*_]*(?:\s|$)|\n")


class StreamObserver(Protocol):
    """Where streaming figures go (ops.Telemetry)."""

    def first_visible(self, seconds: float, mode: str) -> None: ...

    def stream_edit(self, outcome: str) -> None: ...

    def streams_active(self, count: int) -> None: ...


def _created_at(snowflake: int) -> float:
    return hikari.Snowflake(snowflake).created_at.timestamp()


class StreamingReplies:
    """The `StreamingPort` of the chat pipeline, and the Stop button's handler."""

    def __init__(
        self,
        delivery: DiscordDelivery,
        observer: StreamObserver,
        *,
        edit_interval_s: float = 1.0,
        first_post_s: float = 0.03,
        max_active: int = MAX_ACTIVE_STREAMS,
    ) -> None:
        self.delivery = delivery
        self.observer = observer
        self.edit_interval_s = edit_interval_s
        self.first_post_s = first_post_s
        self.max_active = max_active
        self._streams: dict[str, _Stream] = {}  # by Stop button custom id
        self._turns: dict[int, tuple[asyncio.Lock, int]] = {}  # channel -> (lock, users)

    @property
    def active(self) -> int:
        return len(self._streams)

    def open_stream(
        self,
        target: ReplyTarget,
        asker_id: int,
        on_posted: Callable[[tuple[int, ...]], Awaitable[None]] | None = None,
        *,
        question_id: int = 0,
    ) -> _Stream | None:
        if len(self._streams) >= self.max_active:
            return None  # answered whole: still correct, only not streamed
        if isinstance(target, MessageTarget):
            question_id = target.message_id
        stream = _Stream(self, target, asker_id, on_posted, question_id)
        self._streams[stream.custom_id] = stream
        self.observer.streams_active(len(self._streams))
        return stream

    def _forget(self, stream: _Stream) -> None:
        if self._streams.pop(stream.custom_id, None) is not None:
            self.observer.streams_active(len(self._streams))

    @contextlib.asynccontextmanager
    async def turn(self, channel_id: int) -> AsyncIterator[None]:
        """One stream's turn to edit in a channel (FIFO: streams of a channel alternate)."""
        lock, users = self._turns.get(channel_id) or (asyncio.Lock(), 0)
        self._turns[channel_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._turns[channel_id]
            if users <= 1:
                del self._turns[channel_id]
            else:
                self._turns[channel_id] = (lock, users - 1)

    async def on_interaction(self, event: hikari.InteractionCreateEvent) -> None:
        """A Stop press: only the asker, or a member who may manage messages, stops it."""
        interaction = event.interaction
        if not isinstance(interaction, hikari.ComponentInteraction):
            return
        if not interaction.custom_id.startswith(STOP_PREFIX):
            return
        stream = self._streams.get(interaction.custom_id)
        if stream is None:
            await self._tell(interaction, FINISHED_TEXT)
            return
        member = interaction.member
        moderator = member is not None and bool(
            member.permissions & hikari.Permissions.MANAGE_MESSAGES
        )
        if int(interaction.user.id) != stream.asker_id and not moderator:
            await self._tell(interaction, NOT_YOURS_TEXT)
            return
        stream.stop()
        try:
            await interaction.create_initial_response(hikari.ResponseType.DEFERRED_MESSAGE_UPDATE)
        except hikari.HTTPError as exc:
            log.debug("acknowledging a Stop press failed: %s", exc)

    async def _tell(self, interaction: hikari.ComponentInteraction, text: str) -> None:
        try:
            await interaction.create_initial_response(
                hikari.ResponseType.MESSAGE_CREATE, text, flags=hikari.MessageFlag.EPHEMERAL
            )
        except hikari.HTTPError as exc:
            log.debug("answering a Stop press failed: %s", exc)


class _Stream:
    """One answer streaming into Discord (`bot.chat.ports.ReplyStream`)."""

    def __init__(
        self,
        hub: StreamingReplies,
        target: ReplyTarget,
        asker_id: int,
        on_posted: Callable[[tuple[int, ...]], Awaitable[None]] | None = None,
        question_id: int = 0,
    ) -> None:
        self._hub = hub
        self._question_id = question_id  # the message or interaction answered (its snowflake)
        self._on_posted = on_posted  # journals the posted ids (a restart finishes them)
        self._target = target
        self.asker_id = asker_id
        self.custom_id = STOP_PREFIX + secrets.token_hex(8)
        self._text = ""
        self._layout = StreamLayout()
        self._ids: list[int] = []
        self._button_at: int | None = None  # the message carrying the Stop button
        self._buttons: set[int] = set()  # the messages showing it (two while it moves)
        self._changed = asyncio.Event()
        self._ended = asyncio.Event()  # `finish` or `close`: the writer's interval wait ends
        self._stopped = asyncio.Event()
        self._done = False
        self._posting = False
        self._writer: asyncio.Task[None] | None = None
        self._last_edit = 0.0
        self.edits = 0

    # -- what the pipeline and the LLM service see -------------------------------------------

    @property
    def text(self) -> str:
        return self._text

    def partial(self, text: str) -> None:
        self._text = text
        if text and self._writer is None and not self._done:
            self._writer = asyncio.create_task(self._write(time.monotonic()))
        self._changed.set()

    def shown(self) -> bool:
        return self._posting

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait((task, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.done() and not task.cancelled():
            return task.result()
        raise StreamStopped

    def stop(self) -> None:
        self._stopped.set()

    def close(self) -> None:
        self._done = True
        self._changed.set()
        self._ended.set()
        self._hub._forget(self)

    async def finish(self, reply: Reply) -> list[int]:
        self._done = True
        self._changed.set()
        self._ended.set()
        try:
            if self._writer is not None:
                await self._writer
            if not self._posting:
                return await self._hub.delivery.deliver(self._target, reply)
            await self._wait_interval(writer=False)
            async with self._hub.turn(self._target.channel_id):
                await self._apply(self._layout.final_changes(reply.chunks), final=True)
            return list(self._ids)
        finally:
            self._hub._forget(self)

    # -- the writer ------------------------------------------------------------------------

    async def _write(self, first_at: float) -> None:
        try:
            await self._wait_first_post(first_at)
            async with self._hub.turn(self._target.channel_id):
                if self._done:
                    return  # the whole answer came first: `finish` posts it at once
                self._posting = True
                await self._apply(self._layout.changes(self._text), final=False)
            self._hub.delivery.stop_typing(self._question_id)
            while not self._done:
                await self._changed.wait()
                self._changed.clear()
                await self._wait_interval(writer=True)
                if self._done:
                    return
                async with self._hub.turn(self._target.channel_id):
                    if not self._done:
                        await self._apply(self._layout.changes(self._text), final=False)
        except Exception as exc:  # cosmetic until `finish`, which sets the final text
            log.warning("streaming an answer into Discord failed: %s", type(exc).__name__)

    async def _wait_first_post(self, first_at: float) -> None:
        earliest = first_at + self._hub.first_post_s
        latest = earliest + FIRST_POST_GRACE_S
        while not self._done:
            now = time.monotonic()
            if not self._text:  # a retry starts again: nothing to show until it brings text
                await self._wait_change(None)
                continue
            if now >= latest or (now >= earliest and _SENTENCE_END.search(self._text)):
                return
            await self._wait_change(max((earliest if now < earliest else latest) - now, 0.0))

    async def _wait_change(self, timeout_s: float | None) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._changed.wait()

    async def _wait_interval(self, *, writer: bool) -> None:
        """At most one round of edits per interval; `finish` ends the writer's wait (new text
        does not wake it: the edit at the interval's end shows whatever arrived by then)."""
        while (wait := self._last_edit + self._hub.edit_interval_s - time.monotonic()) > 0:
            if not writer:
                await asyncio.sleep(wait)
            elif self._done:
                return  # the writer stops; `finish` waits the interval itself
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._ended.wait()

    # -- REST calls ------------------------------------------------------------------------

    async def _apply(self, changes: list[Change], *, final: bool) -> None:
        """Carry out `changes`; the Stop button sits on the last message until `final`."""
        last = len(self._layout.shown) - 1 + sum(c.kind == "post" for c in changes)
        last -= sum(c.kind == "delete" for c in changes)
        want_button = None if final else last
        edited = {c.index for c in changes if c.kind == "edit"}
        index = self._button_at
        if index is not None and index != want_button and index not in edited and index <= last:
            # Only the button goes: the content stays what it is.
            changes = [*changes, Change("edit", index, self._layout.shown[index])]
        # New messages first: while an answer streams, some message always carries its button.
        changes.sort(key=lambda c: c.kind != "post")
        for change in changes:
            button = change.index == want_button
            if change.kind == "post":
                self._ids.append(await self._post(change, button=button, final=final))
            elif change.kind == "edit":
                await self._edit(change.index, change.content, button, final=final)
            else:
                await self._delete(self._ids.pop(change.index), final=final)
            self._layout.applied(change)
            if button and change.kind != "delete":
                self._buttons.add(change.index)
            else:
                self._buttons.discard(change.index)
            if change.index == self._button_at and not button:
                self._button_at = None
            if button:
                self._button_at = change.index
        if changes:
            self._last_edit = time.monotonic()
        if self._on_posted is not None and not final and any(c.kind == "post" for c in changes):
            await self._on_posted(tuple(self._ids))

    def _components(self, button: bool) -> list[hikari.api.ComponentBuilder]:
        if not button:
            return []
        row = self._hub.delivery._rest.build_message_action_row()
        row.add_interactive_button(hikari.ButtonStyle.SECONDARY, self.custom_id, label=STOP_LABEL)
        return [row]

    async def _post(self, change: Change, *, button: bool, final: bool) -> int:
        delivery = self._hub.delivery
        first = change.index == 0
        target = self._target
        name = "create_message"
        make: Callable[[], Awaitable[hikari.Message]]
        if isinstance(target, InteractionTarget):
            # /chat: the first "post" fills the deferred response, the rest are follow-ups.
            name = "edit_interaction_response" if first else "execute_webhook"
            make = functools.partial(
                delivery._rest.edit_interaction_response
                if first
                else functools.partial(
                    delivery._rest.execute_webhook,
                    flags=hikari.MessageFlag.EPHEMERAL if target.ephemeral else hikari.UNDEFINED,
                ),
                target.application_id,
                target.token,
                change.content,
                components=self._components(button),
                mentions_everyone=False,
                user_mentions=False,
                role_mentions=False,
            )
        else:
            make = functools.partial(
                delivery._rest.create_message,
                target.channel_id,
                change.content,
                nonce=secrets.token_hex(12),
                reply=target.message_id if first else hikari.UNDEFINED,
                reply_must_exist=False,
                components=self._components(button),
                # Pinging nobody: not even the reply's notification to the asker.
                mentions_reply=False,
                mentions_everyone=False,
                user_mentions=False,
                role_mentions=False,
            )
        if final:
            message = await delivery._send(name, make)
        else:
            message = await delivery._rest_call(name, make())
        if first:
            seconds = time.time() - _created_at(self._question_id)
            self._hub.observer.first_visible(seconds, "streamed")
        return int(message.id)

    async def _edit(self, index: int, content: str, button: bool, *, final: bool) -> None:
        delivery = self._hub.delivery
        target = self._target
        name = "edit_message"
        make: Callable[[], Awaitable[hikari.Message]]
        mentions: dict[str, Any] = {
            "mentions_everyone": False,
            "user_mentions": False,
            "role_mentions": False,
        }
        # Discord keeps a message's components when an edit leaves them out: the Stop button is
        # sent only when it comes or goes, not with every edit of the text.
        components: hikari.UndefinedOr[list[hikari.api.ComponentBuilder]] = hikari.UNDEFINED
        if button != (index in self._buttons):
            components = self._components(button)
        if isinstance(target, InteractionTarget) and index == 0:
            name = "edit_interaction_response"
            make = functools.partial(
                delivery._rest.edit_interaction_response,
                target.application_id,
                target.token,
                content,
                components=components,
                **mentions,
            )
        elif isinstance(target, InteractionTarget):
            name = "edit_webhook_message"
            make = functools.partial(
                delivery._rest.edit_webhook_message,
                target.application_id,
                target.token,
                self._ids[index],
                content,
                components=components,
                **mentions,
            )
        else:
            make = functools.partial(
                delivery._rest.edit_message,
                target.channel_id,
                self._ids[index],
                content,
                components=components,
                **mentions,
            )
        try:
            if final:
                await delivery._send(name, make)
            else:
                await delivery._rest_call(name, make())
        except hikari.RateLimitTooLongError:
            self._hub.observer.stream_edit("rate_limited")
            raise
        except hikari.HTTPResponseError as exc:
            self._hub.observer.stream_edit("rate_limited" if exc.status == 429 else "failed")
            raise
        except Exception:
            self._hub.observer.stream_edit("failed")
            raise
        self.edits += 1
        self._hub.observer.stream_edit("ok")

    async def _delete(self, message_id: int, *, final: bool) -> None:
        delivery = self._hub.delivery
        target = self._target
        make: Callable[[], Awaitable[None]]
        if isinstance(target, InteractionTarget):  # never the first: a rolled-over follow-up
            make = functools.partial(
                delivery._rest.delete_webhook_message,
                target.application_id,
                target.token,
                message_id,
            )
        else:
            make = functools.partial(delivery._rest.delete_message, target.channel_id, message_id)
        if final:
            await delivery._send("delete_message", make)
        else:
            await delivery._rest_call("delete_message", make())
