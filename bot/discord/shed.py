"""Telling users their message was shed (the intake was full, or the bot was stopping), cheaply.

A notice is a REST call under the same ~45/s budget as the answers, so one per shed message would
make a flood worse. Instead the shed messages of a channel are gathered and told together: one
notice per channel at most every `interval_s` (INTAKE_SHED_NOTICE_INTERVAL_SECONDS), replying to
the first of them and mentioning each author (up to `MAX_MENTIONS`; the rest are counted in the
text). A flood in one channel therefore costs one notice per interval, and a burst over many
channels one per channel. Notices wait at most `interval_s` plus a second of gathering.

Bounded: at most `max_channels` channels wait for a notice; a message shed in yet another channel
is counted in `shed_untold_total` (and so is a notice Discord refused) rather than held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bot.chat.intake import IntakeStats, ShedReason
from bot.chat.models import IncomingMessage

__all__ = ["MAX_MENTIONS", "SHED_TEXTS", "ShedNotices", "shed_text"]

log = logging.getLogger(__name__)

MAX_MENTIONS = 50  # 50 mentions of ~22 characters keep a notice far below 2,000 characters
DEFAULT_MAX_CHANNELS = 1_000
GATHER_S = 1.0  # a burst's first sheds in a channel wait this long to share one notice
CONCURRENT_SENDS = 8

SHED_TEXTS: dict[ShedReason, str] = {
    "full": "Sorry {who}: too many questions are arriving at once, so I couldn't take {yours}. "
    "Please ask again in a minute.",
    "shutdown": "Sorry {who}: I'm restarting right now, so I couldn't take {yours}. "
    "Please ask again in a minute.",
}

Send = Callable[[int, int, str, Sequence[int]], Awaitable[object]]


def shed_text(reason: ShedReason, user_ids: Sequence[int], more: int) -> str:
    """The notice for shed messages of `user_ids` (and `more` unnamed ones) in one channel."""
    who = ", ".join(f"<@{user_id}>" for user_id in user_ids)
    if more:
        who += f" (and {more} more question{'s' if more > 1 else ''} here)"
    many = len(user_ids) > 1 or more > 0
    return SHED_TEXTS[reason].format(who=who, yours="your questions" if many else "yours")


@dataclass
class _Batch:
    reply_to: int  # the first shed message of the channel since its last notice
    reason: ShedReason
    users: list[int] = field(default_factory=list)
    more: int = 0  # shed messages whose authors are not named (past MAX_MENTIONS)
    messages: int = 0


class ShedNotices:
    """Gathers shed messages per channel and sends one notice per channel per interval."""

    def __init__(
        self,
        send: Send,
        stats: IntakeStats,
        *,
        interval_s: float,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        gather_s: float = GATHER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._stats = stats
        self._interval_s = interval_s
        self._max_channels = max_channels
        self._gather_s = gather_s
        self._clock = clock
        self._pending: dict[int, _Batch] = {}
        # channel -> when its last notice went out; only those within the interval are kept
        # (at most a notice per REST call: ~45/s x interval entries).
        self._last: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._gate = asyncio.Semaphore(CONCURRENT_SENDS)

    @property
    def pending_channels(self) -> int:
        return len(self._pending)

    def shed(self, msg: IncomingMessage, reason: ShedReason) -> None:
        """Remember to tell `msg`'s author that it was shed (sent within an interval)."""
        batch = self._pending.get(msg.channel_id)
        if batch is None:
            if len(self._pending) >= self._max_channels:
                self._stats.shed_untold_total += 1
                return
            batch = self._pending[msg.channel_id] = _Batch(msg.message_id, reason)
            self._wake.set()
        batch.messages += 1
        if msg.author_id in batch.users:
            return
        if len(batch.users) < MAX_MENTIONS:
            batch.users.append(msg.author_id)
        else:
            batch.more += 1

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="shed notices")

    async def stop(self, timeout_s: float) -> None:
        """Send what is pending now (whatever the interval), within `timeout_s`, then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if not self._pending:
            return
        due = list(self._pending)
        try:
            async with asyncio.timeout(timeout_s):
                await self._send_due(due)
        except TimeoutError:
            log.warning("%d shed notices could not be sent before stopping", len(self._pending))
        for batch in self._pending.values():
            self._stats.shed_untold_total += batch.messages
        self._pending.clear()

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                await asyncio.sleep(self._gather_s)
            now = self._clock()
            self._last = {ch: at for ch, at in self._last.items() if at + self._interval_s > now}
            due = [ch for ch in self._pending if ch not in self._last]
            if due:
                await self._send_due(due)
            else:
                next_due = min(self._last[ch] for ch in self._pending) + self._interval_s
                await asyncio.sleep(max(next_due - now, self._gather_s))

    async def _send_due(self, channels: list[int]) -> None:
        await asyncio.gather(*(self._send_one(channel) for channel in channels))

    async def _send_one(self, channel_id: int) -> None:
        async with self._gate:
            batch = self._pending.pop(channel_id, None)
            if batch is None:
                return
            self._last[channel_id] = self._clock()
            text = shed_text(batch.reason, batch.users, batch.more)
            try:
                await self._send(channel_id, batch.reply_to, text, batch.users)
            except asyncio.CancelledError:
                self._stats.shed_untold_total += batch.messages
                raise
            except Exception as exc:  # a notice must never break the intake
                self._stats.shed_untold_total += batch.messages
                log.warning("a shed notice could not be sent: %s", type(exc).__name__)
                return
            self._stats.shed_notices_total += 1
