"""Slow operations: a watchdog thread that catches the event loop blocked, with the culprit.

The event-loop lag histogram (`Telemetry`) says *that* the loop was late; this says *what*
held it. A task on the loop stamps the time every `threshold / 5`; a daemon thread checks the
stamp as often. When the stamp is more than `threshold` overdue, the loop thread has run one
piece of code that long without yielding: the thread reads that thread's current stack
(`sys._current_frames()`), counts the block once (`on_block`, `llmbot_event_loop_blocks_total`)
and logs it with the stack, innermost frame (the blocking function) named first.

Resolution: a block is caught once it is `threshold` overdue, so blocks longer than
`1.2 × threshold` are always seen, shorter ones above the threshold may be. Cost: the tick and
the check run five times per threshold (50 times a second each at 100 ms).

Logging is bounded: at most one stack per `log_interval_s` (blocks in between are counted and
mentioned in the next report), each stack cut to its innermost `max_frames` frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable

__all__ = ["LoopWatchdog"]

logger = logging.getLogger(__name__)


class LoopWatchdog:
    """Watches the running loop from a thread; see the module doc."""

    def __init__(
        self,
        threshold_s: float,
        on_block: Callable[[], None],
        *,
        log_interval_s: float = 10.0,
        max_frames: int = 25,
    ) -> None:
        if threshold_s <= 0:
            raise ValueError("threshold_s must be positive")
        self.threshold_s = threshold_s
        self._interval_s = threshold_s / 5
        self._on_block = on_block
        self._log_interval_s = log_interval_s
        self._max_frames = max_frames
        self._last_tick = time.monotonic()
        self._loop_thread_id: int | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.blocks = 0  # blocks seen
        self.ticks = 0  # times the loop ran the tick

    async def start(self) -> None:
        """Watch the running loop (idempotent)."""
        if self._thread is not None:
            return
        self._loop_thread_id = threading.get_ident()
        self._last_tick = time.monotonic()
        self._stopping.clear()
        self._tick_task = asyncio.create_task(self._tick(), name="event-loop-watchdog tick")
        self._thread = threading.Thread(target=self._watch, name="event-loop-watchdog", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop the thread and the tick."""
        thread, self._thread = self._thread, None
        task, self._tick_task = self._tick_task, None
        self._stopping.set()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if thread is not None:
            await asyncio.to_thread(thread.join)

    async def _tick(self) -> None:
        while True:
            self._last_tick = time.monotonic()
            self.ticks += 1
            await asyncio.sleep(self._interval_s)

    def _watch(self) -> None:
        blocked_since: float | None = None  # the overdue tick's due time, while blocked
        reported = False
        last_report = -float("inf")
        unreported = 0
        while not self._stopping.wait(self._interval_s):
            last_tick = self._last_tick
            due = last_tick + self._interval_s
            now = time.monotonic()
            if now - due <= self.threshold_s:
                if blocked_since is not None and reported:
                    logger.warning(
                        "event loop ran again: the block held it %.0f ms past a due timer",
                        (last_tick - blocked_since) * 1000,
                    )
                blocked_since, reported = None, False
                continue
            if blocked_since is not None and blocked_since == due:
                continue  # the same block, already counted
            blocked_since = due
            self.blocks += 1
            try:
                self._on_block()
            except Exception:
                logger.exception("counting an event-loop block failed")
            if now - last_report < self._log_interval_s:
                unreported += 1
                continue
            reported = True
            last_report = now
            self._report((now - due) * 1000, unreported)
            unreported = 0

    def _report(self, overdue_ms: float, unreported: int) -> None:
        frame = sys._current_frames().get(self._loop_thread_id or -1)
        if frame is None:
            return
        stack = traceback.extract_stack(frame, limit=self._max_frames)
        innermost = stack[-1] if stack else None
        culprit = (
            f"{innermost.name} ({innermost.filename}:{innermost.lineno})"
            if innermost is not None
            else "unknown"
        )
        more = f"; {unreported} more block(s) since the last report" if unreported else ""
        logger.warning(
            "event loop blocked for over %.0f ms (%.0f ms so far) in %s%s; loop thread stack, "
            "innermost last (at most %d frames):\n%s",
            self.threshold_s * 1000,
            overdue_ms,
            culprit,
            more,
            self._max_frames,
            "".join(stack.format()).rstrip(),
        )
