"""Slow operations: a watchdog thread that catches the event loop blocked, with the culprit.

The event-loop lag histogram (`Telemetry`) says *that* the loop was late; this says *what*
held it. A timer callback on the loop stamps the time every `threshold / 4`; a daemon thread
checks the stamp as often. When the next stamp is more than `threshold` overdue, the loop
thread has run one piece of code that long without yielding: the thread reads that thread's
current stack (`sys._current_frames()`), counts the block once (`on_block`,
`llmbot_event_loop_blocks_total`) and logs it with the stack, naming the innermost frame (the
blocking function). A stack that ends in asyncio's own `_run_once`/`select` means the process
was starved (CPU throttling, swap, a long GC pause), not that a call blocked.

Resolution: a block is caught once it is `threshold` overdue, so blocks longer than
`1.25 × threshold` are always seen, shorter ones above the threshold may be; none shorter
than the threshold is ever counted. Cost, measured on the shared 2-core test VM at 100 ms
(40 stamps and 40 checks a second): about 0.8 % of one core (0.04 % without the watchdog).

Logging is bounded: at most one stack per `log_interval_s` (blocks in between are counted and
mentioned in the next report), each stack cut to its innermost `max_frames` frames. The source
lines of the stack are read from the files each time and not through `linecache`: `traceback`'s
own formatting would load every file on the stack into `linecache` for the life of the process
(a soak run on a busy machine grew it by 4.4 MB, benchmarks/RESULTS.md section 8).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable

__all__ = ["LoopWatchdog", "stack_without_linecache"]

logger = logging.getLogger(__name__)


def _source_line(filename: str, lineno: int | None) -> str:
    """Line `lineno` of `filename`, read now ("" for a file that cannot be read)."""
    if not lineno or lineno < 1 or filename.startswith("<"):
        return ""
    try:
        with open(filename, encoding="utf-8", errors="replace") as source:
            return next(itertools.islice(source, lineno - 1, None), "").strip()
    except OSError:
        return ""


def stack_without_linecache(frame: types.FrameType, limit: int) -> traceback.StackSummary:
    """The innermost `limit` frames ending at `frame`, outermost first, with their source lines,
    read without touching `linecache` (see the module doc)."""
    summaries: list[traceback.FrameSummary] = []
    current: types.FrameType | None = frame
    while current is not None and len(summaries) < limit:
        code = current.f_code
        line = _source_line(code.co_filename, current.f_lineno)
        summaries.append(
            traceback.FrameSummary(
                code.co_filename, current.f_lineno, code.co_name, lookup_line=False, line=line
            )
        )
        current = current.f_back
    summaries.reverse()
    return traceback.StackSummary.from_list(summaries)


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
        self._interval_s = threshold_s / 4
        self._on_block = on_block
        self._log_interval_s = log_interval_s
        self._max_frames = max_frames
        self._last_tick = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.blocks = 0  # blocks seen
        self.ticks = 0  # times the loop ran the tick

    async def start(self) -> None:
        """Watch the running loop (idempotent)."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        self._stopping.clear()
        self._tick()
        self._thread = threading.Thread(target=self._watch, name="event-loop-watchdog", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop the thread and the tick."""
        thread, self._thread = self._thread, None
        handle, self._tick_handle = self._tick_handle, None
        self._stopping.set()
        if handle is not None:
            handle.cancel()
        if thread is not None:
            await asyncio.to_thread(thread.join)

    def _tick(self) -> None:
        # A plain timer callback, not a task: the cheapest thing the loop can run on time.
        self._last_tick = time.monotonic()
        self.ticks += 1
        if self._loop is not None and not self._stopping.is_set():
            self._tick_handle = self._loop.call_later(self._interval_s, self._tick)

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
        stack = stack_without_linecache(frame, self._max_frames)
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
