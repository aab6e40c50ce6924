"""A durable, bounded priority queue of messages to answer later, when the model can be used.

Every accepted message ends in exactly one of: answered (`mark_answered`), or dropped with a
reason the caller turns into a notice to the user: `overflow` (refused or evicted by `push`),
`expired` (`expire`, `load`), `failed` (`mark_failed` after the last attempt) or `shutdown`
(`close`, only for items the store never held). A normal shutdown keeps the queue: the items
are in the store and `load()` brings them back after a restart.

Persistence: one store key per item (`item:<id>` in the `queue` namespace), written before the
mutating call returns, so a kill -9 loses nothing that was acknowledged. `push` writes first
and refuses (`store_error`) what the store could not take: nothing unstored is acknowledged.
Memory is the source of truth while running; a failed later write (a reschedule) or delete is
logged, counted and retried by `flush()`.

The worker contract: take items with `due()` (they are then leased: not handed out again, not
expired, not evicted) and end each one with `mark_answered`, `mark_failed` or `defer`, in a
`finally`. Leases are not persisted: after a crash mid-answer the item is retried, so delivery
is at-least-once here; the idempotency record (`bot.store.answered`) makes the answer
exactly-once. Stop the worker before `close()`.

A fleet (REDIS_URL) uses `FleetQueue` (`bot.resilience.fleet_queue`): this queue as the working
set of a Redis stream shared by every process.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from bot.store.base import Namespace, StoreError
from bot.store.stats import LatencyHistogram

__all__ = [
    "DROP_REASONS",
    "QUEUE_WAIT_BUCKETS_S",
    "DropReason",
    "DroppedItem",
    "MessageQueue",
    "PushResult",
    "QueueStats",
    "QueuedItem",
]

logger = logging.getLogger(__name__)

# `overflow`, `expired` and `shutdown` are the catalogue's `llmbot_queue_dropped_total` reasons;
# `failed` (attempts spent) is a loss the user is told about too, so it is counted beside them.
# `store_error`: refused by `push` because the store could not keep it (nothing was promised).
DropReason = Literal["overflow", "expired", "shutdown", "failed", "store_error"]
DROP_REASONS: Final[tuple[DropReason, ...]] = (
    "overflow",
    "expired",
    "shutdown",
    "failed",
    "store_error",
)

# Upper bounds of `llmbot_queue_wait_seconds`: from "answered at the first retry" to max age
# and beyond (an item answered just before expiring after a deferral).
QUEUE_WAIT_BUCKETS_S: Final = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)

_KEY_PREFIX: Final = "item:"
_FORMAT_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class QueuedItem:
    """One queued message; `payload` is the caller's JSON object (treat it as read-only)."""

    id: str
    payload: dict[str, Any]
    priority: int  # higher is served first
    enqueued_at: float  # epoch seconds
    attempts: int  # failed attempts so far
    not_before: float  # epoch seconds of the next attempt
    reason: str  # why it was queued, for logs and notices
    # FIFO order within a priority, kept across restarts: wall-clock times can tie or step back.
    seq: int = 0

    def age_s(self, now: float) -> float:
        """Seconds since the item was queued."""
        return now - self.enqueued_at


@dataclass(frozen=True, slots=True)
class PushResult:
    """The outcome of `push`; when not accepted, the caller notifies the user."""

    accepted: bool
    item: QueuedItem | None
    position: int  # 1-based place in the service order; 0 when refused
    estimated_wait_s: float
    # Pushed out to make room: the caller sends that user an overflow notice.
    evicted: QueuedItem | None = None
    # "overflow" (full), "shutdown" (closed) or "store_error" (the store could not keep it)
    refused_reason: DropReason | None = None


@dataclass(frozen=True, slots=True)
class DroppedItem:
    """An item that left the queue unanswered, and why."""

    item: QueuedItem
    reason: DropReason


def _wait_histogram() -> LatencyHistogram:
    return LatencyHistogram(buckets=QUEUE_WAIT_BUCKETS_S)


@dataclass(slots=True)
class QueueStats:
    """Figures read at scrape time; `dropped_total` has every reason from the start.

    Conservation: pushed_total + restored_total + reclaimed_total == size + answered_total +
    sum(dropped_total) + taken_over_total.
    """

    capacity: int
    size: int = 0
    pushed_total: int = 0  # every push() call, accepted or refused
    restored_total: int = 0  # valid items read back by load()
    answered_total: int = 0
    retried_total: int = 0  # mark_failed() that rescheduled
    deferred_total: int = 0
    dropped_total: dict[DropReason, int] = field(
        default_factory=lambda: dict.fromkeys(DROP_REASONS, 0)
    )
    persist_errors_total: int = 0
    corrupt_total: int = 0  # unreadable stored entries skipped by load()
    # A fleet's queue (bot.resilience.fleet_queue); zero in one process. Reclaimed items count
    # on the "in" side, items another process took over on the "out" side of conservation.
    reclaimed_total: int = 0  # taken over from a process that stopped touching them
    taken_over_total: int = 0  # held here, reclaimed by another process: let go silently
    handed_over_total: int = 0  # kept locally while Redis was away, then handed to Redis
    fleet_size: int | None = None  # entries in the fleet's stream at the last look
    unacked: int = 0  # acks of finished entries waiting for Redis
    wait: LatencyHistogram = field(default_factory=_wait_histogram)

    @property
    def pressure(self) -> float:
        """How full the queue is, 0..1."""
        return self.size / self.capacity


class MessageQueue:
    """Bounded priority queue (higher priority first, then FIFO) persisted item by item."""

    def __init__(
        self,
        store: Namespace | None,
        *,
        max_size: int = 100,
        max_age_s: float = 300.0,
        max_attempts: int = 3,
        retry_interval_s: float = 30.0,
        batch_size: int = 5,
        clock: Callable[[], float] = time.time,
        on_store_error: Callable[[], None] | None = None,
    ) -> None:
        if max_size < 1 or max_attempts < 1 or batch_size < 1:
            raise ValueError("max_size, max_attempts and batch_size must be at least 1")
        if not max_age_s > 0:
            raise ValueError(f"max_age_s must be positive, got {max_age_s!r}")
        _check_interval(retry_interval_s)
        self.max_size = max_size
        self.max_age_s = max_age_s
        self.max_attempts = max_attempts
        self.batch_size = batch_size
        self._retry_interval_s = retry_interval_s
        self._store = store
        self._clock = clock
        # Told of every failed store write or delete (the app counts them as store errors).
        self._on_store_error = on_store_error
        self.stats = QueueStats(capacity=max_size)
        # Service order: (-priority, seq). n <= max_size, so a sorted list beats a heap here:
        # removal by id and "the last one" (eviction) are both simple.
        self._order: list[QueuedItem] = []
        self._by_id: dict[str, QueuedItem] = {}
        self._leased: set[str] = set()
        self._stored: set[str] = set()  # ids with some version in the store
        self._dirty: set[str] = set()  # ids whose current version is not in the store
        self._ghosts: set[str] = set()  # ids gone from memory whose store delete failed
        self._next_seq = 0
        self._closed = False
        # Replaced on every change: a waiter holds the event of the moment it looked, so a
        # change between its check and its wait cannot be missed.
        self._changed = asyncio.Event()

    # -- reading ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Items held, leased ones included."""
        return len(self._order)

    @property
    def is_full(self) -> bool:
        """True when a push must evict or be refused."""
        return len(self._order) >= self.max_size

    @property
    def closed(self) -> bool:
        """True after `close()`: pushes are refused."""
        return self._closed

    @property
    def retry_interval_s(self) -> float:
        """Seconds between attempts of one item."""
        return self._retry_interval_s

    @property
    def items(self) -> list[QueuedItem]:
        """A snapshot of the queue in service order."""
        return list(self._order)

    def get(self, item_id: str) -> QueuedItem | None:
        """The current version of an item, or None when it is no longer queued."""
        return self._by_id.get(item_id)

    def would_accept(self, priority: int = 0) -> bool:
        """Would `push` with this priority be accepted now (possibly by evicting)?"""
        if self._closed:
            return False
        return not self.is_full or self._eviction_candidate(priority) is not None

    def estimated_wait_s(self, position: int, *, not_before: float | None = None) -> float:
        """Seconds until the item at `position` (1-based) is likely tried.

        wait = max(0, not_before - now) + (ceil(position / batch_size) - 1) * retry_interval_s:
        the delay to its own first attempt, plus one retry interval per full batch ahead of it.
        It assumes one batch per interval, so it errs long when the worker keeps up.
        """
        if position < 1:
            raise ValueError(f"position is 1-based, got {position!r}")
        now = self._clock()
        start = now + self._retry_interval_s if not_before is None else not_before
        batches_ahead = math.ceil(position / self.batch_size) - 1
        return max(0.0, start - now) + batches_ahead * self._retry_interval_s

    # -- lifecycle -------------------------------------------------------------------------

    async def load(self) -> list[DroppedItem]:
        """Restore the persisted queue; returns items dropped on the way (expired, or overflow
        when max_size shrank) so the caller can notify their users.

        Unreadable entries are logged, counted and deleted, never raised; a store that cannot
        be read at all raises StoreError. Call once, before the first push.
        """
        if self._store is None:
            return []
        restored: list[QueuedItem] = []
        for key, raw in await self._store.items(_KEY_PREFIX):
            try:
                item = _decode(key.removeprefix(_KEY_PREFIX), raw)
            except ValueError as exc:
                self.stats.corrupt_total += 1
                logger.warning("skipping unreadable queue entry %r: %s", key, exc)
                await self._delete_key(key)
                continue
            if item.id not in self._by_id:
                restored.append(item)
        now = self._clock()
        dropped: list[DroppedItem] = []
        restored.sort(key=_service_key)
        for item in restored:
            self.stats.restored_total += 1
            self._stored.add(item.id)
            self._next_seq = max(self._next_seq, item.seq + 1)
            if self._expired(item, now):
                dropped.append(DroppedItem(item, "expired"))
            elif self.is_full:
                dropped.append(DroppedItem(item, "overflow"))
            else:
                self._insert(item)
        for drop in dropped:
            self.stats.dropped_total[drop.reason] += 1
            await self._unpersist(drop.item.id)
        self._sync_size()
        self._notify()
        if restored:
            logger.info(
                "restored %d queued messages (%d dropped on load)", len(restored), len(dropped)
            )
        return dropped

    async def flush(self) -> int:
        """Retry store writes and deletes that failed; returns how many are still pending."""
        if self._store is None:
            return len(self._order)
        for item_id in sorted(self._dirty):
            item = self._by_id.get(item_id)
            if item is None:
                self._dirty.discard(item_id)
            else:
                await self._persist(item)
        for item_id in sorted(self._ghosts):
            await self._unpersist(item_id)
        return len(self._dirty) + len(self._ghosts)

    async def close(self) -> list[QueuedItem]:
        """Flush and refuse further pushes; returns the items dropped as `shutdown` because
        the store never held them (all of them without a store). The rest stay persisted."""
        await self.flush()
        self._closed = True
        lost = [item for item in self._order if item.id not in self._stored]
        for item in lost:
            self._remove(item.id)
            self.stats.dropped_total["shutdown"] += 1
        if lost:
            logger.warning("dropping %d queued messages that could not be persisted", len(lost))
        self._sync_size()
        self._notify()
        return lost

    # -- producing -------------------------------------------------------------------------

    def _new_item(
        self, payload: dict[str, Any], priority: int, reason: str, delay_s: float | None
    ) -> QueuedItem:
        """A fresh entry, due after `delay_s` (the retry interval when None)."""
        now = self._clock()
        delay = self._retry_interval_s if delay_s is None else max(0.0, delay_s)
        item = QueuedItem(
            id=uuid.uuid4().hex,
            payload=payload,
            priority=priority,
            enqueued_at=now,
            attempts=0,
            not_before=now + delay,
            reason=reason,
            seq=self._next_seq,
        )
        self._next_seq += 1
        return item

    async def push(
        self,
        payload: dict[str, Any],
        *,
        priority: int = 0,
        reason: str = "",
        delay_s: float | None = None,
    ) -> PushResult:
        """Queue `payload` for an attempt after `delay_s` (default: one retry interval).

        When full, the item that would be served last loses: the newest of the lowest priority,
        or the newcomer itself unless it outranks that one. Raises TypeError/ValueError when
        `payload` is not a JSON object.
        """
        if not isinstance(payload, dict):
            raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
        # Fail the caller now rather than a store write later: a queued payload must persist.
        json.dumps(payload, allow_nan=False)
        self.stats.pushed_total += 1
        if self._closed:
            self.stats.dropped_total["shutdown"] += 1
            return PushResult(False, None, 0, 0.0, refused_reason="shutdown")
        if self.is_full and self._eviction_candidate(priority) is None:
            self.stats.dropped_total["overflow"] += 1
            return PushResult(False, None, 0, 0.0, refused_reason="overflow")
        item = self._new_item(payload, priority, reason, delay_s)
        # Written before it is queued or acknowledged: a promise ("queued, position N") is only
        # made for what a kill -9 cannot lose. A failed write refuses the push (`store_error`).
        if not await self._store_new(item):
            self.stats.dropped_total["store_error"] += 1
            return PushResult(False, None, 0, 0.0, refused_reason="store_error")
        evicted: QueuedItem | None = None
        if self.is_full:  # looked at again: the queue may have filled during the write
            evicted = self._eviction_candidate(priority)
            if evicted is None:
                self.stats.dropped_total["overflow"] += 1
                await self._unpersist(item.id)
                return PushResult(False, None, 0, 0.0, refused_reason="overflow")
            self._remove(evicted.id)
            self.stats.dropped_total["overflow"] += 1
        self._insert(item)
        position = 1 + sum(
            1
            for other in self._order
            if other.id not in self._leased and _service_key(other) < _service_key(item)
        )
        self._sync_size()
        self._notify()
        if evicted is not None:
            await self._unpersist(evicted.id)
        return PushResult(
            True,
            item,
            position,
            self.estimated_wait_s(position, not_before=item.not_before),
            evicted=evicted,
        )

    # -- consuming -------------------------------------------------------------------------

    def due(self, now: float | None = None, limit: int | None = None) -> list[QueuedItem]:
        """Lease and return up to `limit` (default batch_size) items ready for an attempt,
        highest priority first, then FIFO; expired items are left for `expire()`."""
        now = self._clock() if now is None else now
        limit = self.batch_size if limit is None else limit
        ready: list[QueuedItem] = []
        for item in self._order:
            if len(ready) >= limit:
                break
            if item.id in self._leased or item.not_before > now or self._expired(item, now):
                continue
            ready.append(item)
        self._leased.update(item.id for item in ready)
        return ready

    async def mark_answered(self, item: QueuedItem) -> None:
        """The user got the answer: forget the item and observe its wait."""
        current = self._take(item)
        self.stats.answered_total += 1
        self.stats.wait.observe(max(0.0, self._clock() - current.enqueued_at))
        self._sync_size()
        await self._unpersist(current.id)

    async def mark_failed(self, item: QueuedItem, retry_after_s: float | None = None) -> bool:
        """Count a failed attempt; True if rescheduled (after max(retry interval, retry_after)),
        False if that was the last attempt and the item was dropped as `failed`."""
        current = self._take(item)
        attempts = current.attempts + 1
        if attempts >= self.max_attempts:
            self.stats.dropped_total["failed"] += 1
            self._sync_size()
            await self._unpersist(current.id)
            return False
        delay = max(self._retry_interval_s, retry_after_s or 0.0)
        updated = replace(current, attempts=attempts, not_before=self._clock() + delay)
        self._insert(updated)
        self.stats.retried_total += 1
        self._notify()
        await self._persist(updated)
        return True

    async def defer(self, item: QueuedItem, delay_s: float) -> QueuedItem:
        """Put a leased item back for `delay_s` without counting an attempt: for when the
        quota or breaker refuses before any call was made. Returns the new version."""
        current = self._take(item)
        updated = replace(current, not_before=self._clock() + max(0.0, delay_s))
        self._insert(updated)
        self.stats.deferred_total += 1
        self._notify()
        await self._persist(updated)
        return updated

    async def expire(self, now: float | None = None) -> list[QueuedItem]:
        """Drop and return items that reached max age (leased ones are in flight: spared)."""
        now = self._clock() if now is None else now
        gone = [
            item for item in self._order if item.id not in self._leased and self._expired(item, now)
        ]
        for item in gone:
            self._remove(item.id)
            self.stats.dropped_total["expired"] += 1
        self._sync_size()
        for item in gone:
            await self._unpersist(item.id)
        return gone

    # -- pacing ----------------------------------------------------------------------------

    def now(self) -> float:
        """The queue's clock (wall time unless a test injected another)."""
        return self._clock()

    async def wait_until_due(self, timeout_s: float | None = None) -> bool:
        """Wait until `due()` or `expire()` has work; False on timeout or when closed.

        Event-driven: it sleeps until the earliest not_before/expiry or a change (push,
        reschedule, `wake()`), whichever comes first. A push of an item not yet due re-arms
        the timer rather than returning.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while not self._closed:
            now = self._clock()
            work_at = self._next_work_at()
            if work_at is not None and work_at <= now:
                return True
            changed = self._changed
            delay = None if work_at is None else work_at - now
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                delay = remaining if delay is None else min(delay, remaining)
            try:
                async with asyncio.timeout(delay):
                    await changed.wait()
            except TimeoutError:
                pass
        return False

    def wake(self) -> None:
        """Make waiters look again (after the clock jumped, or the breaker closed)."""
        self._notify()

    def set_retry_interval(self, seconds: float) -> None:
        """Change the retry cadence (self-healing raises the processing rate); waiting items
        scheduled later than one new interval from now are pulled in."""
        _check_interval(seconds)
        self._retry_interval_s = seconds
        latest = self._clock() + seconds
        for index, item in enumerate(self._order):
            if item.id not in self._leased and item.not_before > latest:
                self._order[index] = self._by_id[item.id] = replace(item, not_before=latest)
                # Not written now (this call is sync): a later not_before in the store only
                # delays the item after a restart; flush() or the next change writes it.
                self._dirty.add(item.id)
        self._notify()

    # -- internals -------------------------------------------------------------------------

    def _expired(self, item: QueuedItem, now: float) -> bool:
        return item.age_s(now) >= self.max_age_s

    def _next_work_at(self) -> float | None:
        times = [
            min(item.not_before, item.enqueued_at + self.max_age_s)
            for item in self._order
            if item.id not in self._leased
        ]
        return min(times, default=None)

    def _eviction_candidate(self, priority: int) -> QueuedItem | None:
        # The item served last loses; a newcomer sorts after its equals, so it must outrank.
        for item in reversed(self._order):
            if item.id not in self._leased:
                return item if item.priority < priority else None
        return None

    def _insert(self, item: QueuedItem) -> None:
        bisect.insort(self._order, item, key=_service_key)
        self._by_id[item.id] = item

    def _remove(self, item_id: str) -> QueuedItem:
        item = self._by_id.pop(item_id)
        # Bisect finds the slot by key; the scan covers equal keys (none: seq is unique).
        index = bisect.bisect_left(self._order, _service_key(item), key=_service_key)
        while self._order[index].id != item_id:
            index += 1
        del self._order[index]
        self._leased.discard(item_id)
        return item

    def _take(self, item: QueuedItem) -> QueuedItem:
        if item.id not in self._by_id:
            raise KeyError(
                f"queue item {item.id!r} is not queued: it was already answered, failed for "
                "good or dropped"
            )
        return self._remove(item.id)

    def _sync_size(self) -> None:
        self.stats.size = len(self._order)

    def _store_failed(self) -> None:
        self.stats.persist_errors_total += 1
        if self._on_store_error is not None:
            self._on_store_error()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _store_new(self, item: QueuedItem) -> bool:
        """Write a new item before it is queued; False (logged, counted) when the write failed."""
        if self._store is None:
            return True
        self._stored.add(item.id)
        try:
            await self._store.set_json(_KEY_PREFIX + item.id, _encode(item))
        except StoreError as exc:
            self._stored.discard(item.id)
            self._store_failed()
            logger.warning("could not store a message to queue, so it is not queued: %s", exc)
            return False
        return True

    async def _persist(self, item: QueuedItem) -> None:
        if self._store is None:
            return
        self._dirty.add(item.id)
        was_stored = item.id in self._stored
        # Counted as stored before the write: a delete issued while it is in flight (answered
        # meanwhile) must reach the store, which runs the two in order.
        self._stored.add(item.id)
        try:
            await self._store.set_json(_KEY_PREFIX + item.id, _encode(item))
        except StoreError as exc:
            if not was_stored:
                self._stored.discard(item.id)
            self._store_failed()
            logger.warning("could not persist queued message %s: %s", item.id, exc)
            return
        # The item may have changed or left while the write was in flight.
        if self._by_id.get(item.id) == item:
            self._dirty.discard(item.id)

    async def _unpersist(self, item_id: str) -> None:
        self._dirty.discard(item_id)
        if self._store is None or item_id not in self._stored:
            return
        self._ghosts.add(item_id)
        if await self._delete_key(_KEY_PREFIX + item_id):
            self._ghosts.discard(item_id)
            self._stored.discard(item_id)

    async def _delete_key(self, key: str) -> bool:
        assert self._store is not None
        try:
            await self._store.delete(key)
        except StoreError as exc:
            self._store_failed()
            # Left behind, it would come back after a restart and be answered or notified twice.
            logger.error("could not delete queue entry %r: %s", key, exc)
            return False
        return True


def _service_key(item: QueuedItem) -> tuple[int, int]:
    return (-item.priority, item.seq)


def _check_interval(seconds: float) -> None:
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"retry_interval_s must be a positive number of seconds, got {seconds!r}")


def _encode(item: QueuedItem) -> dict[str, Any]:
    return {
        "v": _FORMAT_VERSION,
        "id": item.id,
        "payload": item.payload,
        "priority": item.priority,
        "enqueued_at": item.enqueued_at,
        "attempts": item.attempts,
        "not_before": item.not_before,
        "reason": item.reason,
        "seq": item.seq,
    }


def _decode(key_id: str, raw: bytes) -> QueuedItem:
    """Parse one stored entry; ValueError with the first problem found."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("v") != _FORMAT_VERSION:
        raise ValueError(f"unknown format version {data.get('v')!r}")
    if data.get("id") != key_id:
        raise ValueError(f"id {data.get('id')!r} does not match its key")
    payload, reason = data.get("payload"), data.get("reason")
    if not isinstance(payload, dict) or not isinstance(reason, str):
        raise ValueError("payload must be an object and reason a string")
    numbers: dict[str, float] = {}
    for name in ("enqueued_at", "not_before"):
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite")
        numbers[name] = float(value)
    integers: dict[str, int] = {}
    for name in ("priority", "attempts", "seq"):
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer")
        integers[name] = value
    if integers["attempts"] < 0 or integers["seq"] < 0:
        raise ValueError("attempts and seq must not be negative")
    return QueuedItem(
        id=key_id,
        payload=payload,
        priority=integers["priority"],
        enqueued_at=numbers["enqueued_at"],
        attempts=integers["attempts"],
        not_before=numbers["not_before"],
        reason=reason,
        seq=integers["seq"],
    )
