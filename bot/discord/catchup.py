"""Restart catch-up: questions asked while the bot was away, answered late.

Discord does not replay the messages of a gap on a new gateway session (only a RESUME gets the
missed events). So the bot remembers, per channel it answers in (guild channels, threads, DMs),
the last message id it saw (`SeenChannels`: bounded, least recently active evicted, persisted in
the store's `catchup` namespace). At start and after every new (non-resumed) session,
`CatchUp.run` reads those channels' messages after that id over REST (oldest first, at most
`MAX_PAGES` pages of 100 per channel, never further back than the window) and hands the
questions the bot would have answered live, oldest first, to the same hand-off as a live
MESSAGE_CREATE (`DiscordGateway._hand_off`): access lists, cooldowns, quota and the queue apply,
and the reply opens with a line saying it is late.

A message already handed off in this process (`SeenChannels.handled`) is never handed off again:
a live message that arrives while a catch-up reads the same channel is answered once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

import hikari

from bot.chat.models import IncomingMessage, Source
from bot.store import Namespace, StoreError

__all__ = [
    "CATCHUP_OUTCOMES",
    "MAX_MESSAGES_PER_RUN",
    "MAX_PAGES",
    "CatchUp",
    "CatchupObserver",
    "CatchupStats",
    "ChannelMark",
    "SeenChannels",
]

log = logging.getLogger(__name__)

# What became of each message a catch-up read: handed to the pipeline, not addressed to the bot
# (or from a bot), handed off already (seen live), or beyond the per-run limit.
CATCHUP_OUTCOMES: Final = ("answered", "not_for_bot", "already_seen", "over_limit")
MAX_PAGES: Final = 5  # pages of 100 messages read per channel and run
MAX_MESSAGES_PER_RUN: Final = 200  # questions handed off per run, all channels together
RECENT_HANDLED: Final = 4096  # message ids remembered as handed off (this process)
FLUSH_INTERVAL_S: Final = 1.0


class CatchupObserver(Protocol):
    """Where catch-up reports (ops.Telemetry)."""

    def catchup_message(self, outcome: str) -> None: ...

    def catchup_channel_scanned(self) -> None: ...

    def catchup_finished(self, seconds: float) -> None: ...

    def catchup_tracked(self, channels: int) -> None: ...


@dataclass(slots=True)
class ChannelMark:
    """A channel the bot answers in: the last message seen there, and where it lives."""

    last_id: int
    guild_id: int | None  # None: a DM channel
    parent_id: int | None = None  # a thread's channel


@dataclass
class CatchupStats:
    """In-process figures of catch-up (the tests and /status read them)."""

    runs: int = 0
    channels_scanned: int = 0
    messages: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATCHUP_OUTCOMES, 0))
    last_run_seconds: float = 0.0


class SeenChannels:
    """Per channel the last message id seen, for at most `max_channels` channels (the least
    recently active is forgotten first); saved to `namespace` every second while it changes."""

    def __init__(
        self,
        namespace: Namespace | None,
        max_channels: int,
        observer: CatchupObserver,
        *,
        on_store_error: Callable[[], None] = lambda: None,
    ) -> None:
        if max_channels < 1:
            raise ValueError("max_channels must be at least 1")
        self._ns = namespace
        self._max = max_channels
        self._observer = observer
        self._on_store_error = on_store_error
        self._marks: OrderedDict[int, ChannelMark] = OrderedDict()
        self._dirty: set[int] = set()
        self._evicted: set[int] = set()
        self._changed = asyncio.Event()
        self._handled: set[int] = set()
        self._handled_order: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._marks)

    @property
    def max_channels(self) -> int:
        return self._max

    def get(self, channel_id: int) -> ChannelMark | None:
        return self._marks.get(channel_id)

    def marks(self) -> list[tuple[int, ChannelMark]]:
        """The tracked channels, most recently active last."""
        return list(self._marks.items())

    def saw(
        self,
        channel_id: int,
        message_id: int,
        *,
        guild_id: int | None = None,
        parent_id: int | None = None,
        track: bool = False,
    ) -> None:
        """A message in `channel_id`: moves its mark forward; `track` starts tracking a channel
        the bot was asked in (other channels are ignored: a dict lookup per message)."""
        mark = self._marks.get(channel_id)
        if mark is None:
            if not track:
                return
            self._marks[channel_id] = ChannelMark(message_id, guild_id, parent_id)
            self._evicted.discard(channel_id)
            while len(self._marks) > self._max:
                old, _ = self._marks.popitem(last=False)
                self._dirty.discard(old)
                self._evicted.add(old)
            self._observer.catchup_tracked(len(self._marks))
        elif message_id > mark.last_id:
            mark.last_id = message_id
            self._marks.move_to_end(channel_id)
        else:
            return
        self._dirty.add(channel_id)
        self._changed.set()

    def forget(self, channel_id: int) -> None:
        """Stop tracking a channel (deleted, or the bot may no longer read it)."""
        if self._marks.pop(channel_id, None) is not None:
            self._dirty.discard(channel_id)
            self._evicted.add(channel_id)
            self._changed.set()
            self._observer.catchup_tracked(len(self._marks))

    def handled(self, message_id: int) -> bool:
        """Whether this message was handed to the pipeline already (in this process)."""
        return message_id in self._handled

    def remember_handled(self, message_id: int) -> None:
        self._handled.add(message_id)
        self._handled_order.append(message_id)
        if len(self._handled_order) > RECENT_HANDLED:
            self._handled.discard(self._handled_order.popleft())

    # -- persistence ---------------------------------------------------------------------------

    async def load(self) -> int:
        """Read the saved marks (keeping the `max_channels` most recent); returns how many."""
        if self._ns is None:
            return 0
        try:
            items = await self._ns.items()
        except StoreError:
            log.warning("could not read the catch-up marks; catch-up starts from now")
            self._on_store_error()
            return 0
        loaded: list[tuple[int, ChannelMark]] = []
        for key, raw in items:
            try:
                data = _json_object(raw)
                mark = ChannelMark(
                    int(str(data["last"])),
                    _optional_int(data.get("guild")),
                    _optional_int(data.get("parent")),
                )
                loaded.append((int(key), mark))
            except (KeyError, TypeError, ValueError):
                log.warning("an unreadable catch-up mark was dropped")
                with contextlib.suppress(StoreError):
                    await self._ns.delete(key)
        loaded.sort(key=lambda item: item[1].last_id)
        for channel_id, _ in loaded[: max(0, len(loaded) - self._max)]:
            self._evicted.add(channel_id)
        for channel_id, mark in loaded[-self._max :]:
            self._marks[channel_id] = mark
        if self._evicted:
            self._changed.set()
        self._observer.catchup_tracked(len(self._marks))
        return len(self._marks)

    async def flush(self) -> None:
        """Write the changed marks and delete the forgotten ones."""
        if self._ns is None:
            self._dirty.clear()
            self._evicted.clear()
            return
        dirty, self._dirty = self._dirty, set()
        evicted, self._evicted = self._evicted, set()
        try:
            if dirty:
                await self._ns.set_many(
                    {str(c): _mark_bytes(self._marks[c]) for c in dirty if c in self._marks}
                )
            for channel_id in evicted:
                await self._ns.delete(str(channel_id))
        except StoreError:
            log.warning("could not save the catch-up marks; retrying", exc_info=True)
            self._on_store_error()
            self._dirty |= dirty
            self._evicted |= evicted

    async def run(self, interval_s: float = FLUSH_INTERVAL_S) -> None:
        """Save changes at most every `interval_s` (cancel to stop; `flush` once more after)."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            await self.flush()
            await asyncio.sleep(interval_s)


def _json_object(raw: bytes) -> dict[str, object]:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise TypeError("not an object")
    return data


def _mark_bytes(mark: ChannelMark) -> bytes:
    return json.dumps(
        {"last": mark.last_id, "guild": mark.guild_id, "parent": mark.parent_id},
        separators=(",", ":"),
    ).encode()


def _optional_int(value: object) -> int | None:
    return None if value is None else int(str(value))


FetchAfter = Callable[[int, int, int], Awaitable[list[hikari.Message]]]
SourceOf = Callable[[hikari.Message, ChannelMark], Source | None]
IncomingOf = Callable[[hikari.Message, ChannelMark, Source], Awaitable[IncomingMessage]]


class CatchUp:
    """Reads the tracked channels after their marks and hands the questions off, oldest first.

    One run at a time: a new session during a run asks for one more run after it.
    """

    def __init__(
        self,
        seen: SeenChannels,
        *,
        window_s: float,
        fetch_after: FetchAfter,
        source_of: SourceOf,
        incoming_of: IncomingOf,
        hand_off: Callable[[IncomingMessage], Awaitable[None]],
        accepting: Callable[[], bool],
        observer: CatchupObserver,
        clock: Callable[[], float] = time.time,
        max_pages: int = MAX_PAGES,
        max_messages: int = MAX_MESSAGES_PER_RUN,
    ) -> None:
        self.seen = seen
        self.window_s = window_s
        self._fetch_after = fetch_after
        self._source_of = source_of
        self._incoming_of = incoming_of
        self._hand_off = hand_off
        self._accepting = accepting
        self._observer = observer
        self._clock = clock
        self._max_pages = max_pages
        self._max_messages = max_messages
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.stats = CatchupStats()

    @property
    def enabled(self) -> bool:
        return self.window_s > 0

    def request(self) -> None:
        """A new session began: run (or run once more after the current run)."""
        if not self.enabled:
            return
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._loop(), name="catch-up")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            self._again = False
            try:
                await self.run_once()
            except Exception:
                log.exception("catch-up failed")
            if not self._again:
                return

    async def run_once(self) -> None:
        """Read every tracked channel once and hand off what the bot would have answered."""
        started = time.monotonic()
        now = self._clock()
        oldest = now - self.window_s
        floor = int(
            hikari.Snowflake.from_datetime(datetime.datetime.fromtimestamp(oldest, datetime.UTC))
        )
        found: list[tuple[hikari.Message, ChannelMark, Source]] = []
        scanned = 0
        for channel_id, mark in self.seen.marks():
            if not self._accepting():
                break
            try:
                messages = await self._fetch_after(
                    channel_id, max(mark.last_id, floor), self._max_pages * 100
                )
            except (hikari.NotFoundError, hikari.ForbiddenError):
                log.info("a tracked channel is gone or closed to the bot; it is no longer tracked")
                self.seen.forget(channel_id)
                continue
            except (hikari.HTTPError, OSError, TimeoutError) as exc:
                log.warning("catch-up could not read a channel: %s", type(exc).__name__)
                continue
            scanned += 1
            self.stats.channels_scanned += 1
            self._observer.catchup_channel_scanned()
            for message in messages:
                source = self._source_of(message, mark)
                if source is None or message.created_at.timestamp() < oldest:
                    self._count("not_for_bot")
                    self.seen.saw(channel_id, int(message.id))
                elif self.seen.handled(int(message.id)):
                    self._count("already_seen")
                else:
                    found.append((message, mark, source))
        found.sort(key=lambda item: int(item[0].id))
        for _ in found[self._max_messages :]:
            self._count("over_limit")
        answered = 0
        for message, mark, source in found[: self._max_messages]:
            if not self._accepting():
                break
            if self.seen.handled(int(message.id)):  # came in live meanwhile
                self._count("already_seen")
                continue
            incoming = await self._incoming_of(message, mark, source)
            self._count("answered")
            answered += 1
            await self._hand_off(incoming)
        elapsed = time.monotonic() - started
        self.stats.runs += 1
        self.stats.last_run_seconds = elapsed
        self._observer.catchup_finished(elapsed)
        log.info(
            "catch-up read %d channels and answered %d late questions in %.1f s",
            scanned,
            answered,
            elapsed,
        )

    def _count(self, outcome: str) -> None:
        self.stats.messages[outcome] += 1
        self._observer.catchup_message(outcome)
