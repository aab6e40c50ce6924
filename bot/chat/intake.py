"""Backpressure for new messages: a bounded number handled at once, a bounded line behind them,
and the rest shed (each with a notice, sent by the Discord side) instead of piling up.

Without it every message of a burst became a handler of its own: 20,000 messages in 40 s gave
18,690 concurrent handlers, a saturated event loop, Gemini timeouts and 1 GB that never came
back. With it at most `max_in_flight` messages are being answered (MAX_CONCURRENT_MESSAGES),
at most `max_waiting` wait for a slot in arrival order (INTAKE_MAX_WAITING), and a message that
finds the line full is shed at once: `admit` says so and the caller tells its author.

Only new messages from the gateway pass here; the queue worker and slash commands have bounds
of their own (QUEUE_BATCH_SIZE, Discord's interaction flow).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from bot.store.stats import LatencyHistogram

__all__ = ["INTAKE_WAIT_BUCKETS_S", "SHED_REASONS", "Admission", "Intake", "IntakeStats"]

Admission = Literal["admitted", "full", "shutdown"]
ShedReason = Literal["full", "shutdown"]
# full: the line was full when it arrived; shutdown: it was waiting (or arrived) as the bot
# stopped taking messages (the gateway then journals it for the restart when it can).
SHED_REASONS: Final[tuple[ShedReason, ...]] = ("full", "shutdown")
INTAKE_WAIT_BUCKETS_S: Final = (0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _wait_histogram() -> LatencyHistogram:
    return LatencyHistogram(buckets=INTAKE_WAIT_BUCKETS_S)


@dataclass
class IntakeStats:
    """What `/metrics` reads of the intake (and of the shed notices the Discord side sends)."""

    max_in_flight: int
    max_waiting: int
    in_flight: int = 0
    waiting: int = 0
    admitted_total: int = 0
    shed_total: dict[ShedReason, int] = field(
        default_factory=lambda: dict.fromkeys(SHED_REASONS, 0)
    )
    # Time from arrival to a handler slot, for every admitted message (0 when one was free).
    wait: LatencyHistogram = field(default_factory=_wait_histogram)
    # Filled in by whoever tells shed users (bot.discord.shed): notices sent, and shed messages
    # whose author could not be told (no room to remember the channel, or the send failed).
    shed_notices_total: int = 0
    shed_untold_total: int = 0


class Intake:
    """At most `max_in_flight` admitted at once; up to `max_waiting` more wait in arrival
    order; beyond that `admit` returns "full" at once. `release` after each admitted message."""

    def __init__(
        self,
        max_in_flight: int,
        max_waiting: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if max_waiting < 0:
            raise ValueError("max_waiting must not be negative")
        self.stats = IntakeStats(max_in_flight=max_in_flight, max_waiting=max_waiting)
        self._clock = clock
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._closed = False

    async def admit(self) -> Admission:
        """Wait for a handler slot: "admitted" (call `release` when done), or why not."""
        stats = self.stats
        if self._closed:
            return self._shed("shutdown")
        if stats.in_flight < stats.max_in_flight and not self._waiters:
            stats.in_flight += 1
            stats.admitted_total += 1
            stats.wait.observe(0.0)
            return "admitted"
        if stats.waiting >= stats.max_waiting:
            return self._shed("full")
        slot: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(slot)
        stats.waiting += 1
        started = self._clock()
        try:
            admitted = await slot
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled() and slot.result():
                self.release()  # the slot was handed over just as we were cancelled
            else:
                self._forget(slot)
            raise
        finally:
            stats.waiting -= 1
        if not admitted:
            return self._shed("shutdown")
        stats.admitted_total += 1
        stats.wait.observe(self._clock() - started)
        return "admitted"

    def release(self) -> None:
        """An admitted message is done: hand its slot to the longest waiting one."""
        while self._waiters:
            slot = self._waiters.popleft()
            if not slot.done():
                slot.set_result(True)  # in_flight stays: the slot changes hands
                return
        self.stats.in_flight -= 1

    def close(self) -> int:
        """Stop admitting: every waiting message is shed ("shutdown"); returns how many."""
        self._closed = True
        released = 0
        while self._waiters:
            slot = self._waiters.popleft()
            if not slot.done():
                slot.set_result(False)
                released += 1
        return released

    def _shed(self, reason: ShedReason) -> Admission:
        self.stats.shed_total[reason] += 1
        return reason

    def _forget(self, slot: asyncio.Future[bool]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(slot)
