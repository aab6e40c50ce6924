"""The answer-later queue of a fleet (REDIS_URL set): a `MessageQueue` whose items live in Redis.

Design. The Redis stream (`bot.store.redis_stream`) is the fleet's shared, durable inbox; this
process's `MessageQueue` is its *working set*: the items it holds (bounded by QUEUE_MAX_SIZE,
like the stream itself, fleet-wide). The pipeline and the `QueueWorker` use the same interface
as in one process, so nothing above this layer knows about the fleet. Implementing the queue on
Redis directly was the alternative; it was not chosen because the worker's leases, priorities,
`not_before` schedule and waiting (`wait_until_due`) would all have to become Redis round trips
on every pass, and a process without Redis must still queue (the local store below).

- `push`: the item is added to the stream and, in the same atomic script, put in this process's
  pending list (one round trip): the process that queued a question (its shard's) answers it. A
  full stream refuses it (`overflow`; no eviction across processes). The local store is not
  written. Redis unreachable: the item goes to the local store (SQLite), as in one process, and
  is handed to Redis by the next pass once it is back; nothing acknowledged is lost.
- Every pass (`run`, every CLAIM_IDLE/3 s): failed acks retried; the held items touched
  (XCLAIM JUSTID resets their idle time) so no live process loses them; items handed over;
  items idle for FLEET_QUEUE_CLAIM_IDLE_SECONDS (their holder died: kill -9, a lost machine)
  reclaimed with XAUTOCLAIM into this working set, as far as it has room; at start, this
  consumer's own pending items (from before a restart) read back.
- `close` (a clean stop): held items are marked idle in Redis, so the other processes take
  them at their next pass; a process restarting under the same name reads back what is left.
- An item ends as in one process (`mark_answered`, the last `mark_failed`, `expire`): then its
  entry is acknowledged and deleted (XACK + XDEL), after the answer or notice was recorded
  (`bot.store.redis_answered`), so a crash in between yields a reclaim that finds the record
  final and answers nothing.
- A held item found in another consumer's pending list was reclaimed while this process was
  stalled: it is let go silently (`taken_over_total`); the idempotency record guarantees one
  reply whoever answers. An entry whose epoch is gone (Redis restarted without persistence) is
  handed over again from memory.

Delivery is at-least-once between processes; the idempotency record makes answers exactly-once.
A reschedule (`mark_failed`) is not written to Redis: a reclaimed item starts its attempts again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Final

from bot.resilience.queue import (
    DroppedItem,
    MessageQueue,
    PushResult,
    QueuedItem,
    _decode,
    _encode,
    _service_key,
)
from bot.store.base import Namespace
from bot.store.redis_link import RedisUnavailable
from bot.store.redis_stream import RedisQueueStream, StreamEntry

__all__ = ["FleetQueue"]

log = logging.getLogger(__name__)

MIN_PASS_S: Final = 0.2
# Acks that failed while Redis was away are retried; past this many the oldest are forgotten
# (their entries would be reclaimed and found final by the idempotency record).
MAX_UNACKED: Final = 10_000


class FleetQueue(MessageQueue):
    """`MessageQueue` over the fleet's Redis stream; see the module doc."""

    def __init__(
        self,
        store: Namespace | None,
        stream: RedisQueueStream,
        *,
        claim_idle_s: float = 60.0,
        is_done: Callable[[dict[str, Any]], Awaitable[bool]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(store, **kwargs)
        if not claim_idle_s > 0:
            raise ValueError(f"claim_idle_s must be positive, got {claim_idle_s!r}")
        self._stream = stream
        self.claim_idle_s = claim_idle_s
        # Told of every reclaimed item before it is adopted: True when it was answered already.
        self._is_done = is_done
        # item id -> (stream entry id, epoch it was added in)
        self._entry: dict[str, tuple[str, str]] = {}
        self._unacked: dict[str, None] = {}  # entry ids, oldest first
        self.redis_ok = True

    @property
    def pass_interval_s(self) -> float:
        """Seconds between passes: three touches per idle timeout."""
        return max(MIN_PASS_S, self.claim_idle_s / 3)

    def held_in_redis(self) -> int:
        """Items of the working set that the stream holds (the rest wait for a hand-over)."""
        return len(self._entry)

    # -- lifecycle -------------------------------------------------------------------------

    async def load(self) -> list[DroppedItem]:
        """The local leftovers (kept while Redis was away), then this consumer's own entries."""
        dropped = await super().load()
        await self.sync(first=True)
        return dropped

    async def run(self) -> None:
        """Pass after pass until cancelled."""
        while True:
            await asyncio.sleep(self.pass_interval_s)
            await self.sync()

    async def close(self) -> list[QueuedItem]:
        """As `MessageQueue.close`; items held in Redis are not lost (reclaimed or read back).
        A second call does nothing."""
        if self._closed:
            return []
        await self.flush()
        self._closed = True
        lost = [i for i in self._order if i.id not in self._stored and i.id not in self._entry]
        for item in lost:
            self._remove(item.id)
            self.stats.dropped_total["shutdown"] += 1
        self._sync_size()
        self._notify()
        try:
            await self._ack_pending()
            # The others answer what this process held, at their next pass.
            held = [entry_id for entry_id, _ in self._entry.values()]
            await self._stream.let_go(held, int(self.claim_idle_s * 1000))
        except RedisUnavailable as exc:
            log.warning("the fleet's queue could not reach Redis at shutdown: %s", exc)
        return lost

    # -- producing -------------------------------------------------------------------------

    async def push(
        self,
        payload: dict[str, Any],
        *,
        priority: int = 0,
        reason: str = "",
        delay_s: float | None = None,
    ) -> PushResult:
        if not isinstance(payload, dict):
            raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
        json.dumps(payload, allow_nan=False)
        if self._closed or not self.redis_ok:
            # Closed: refused as in one process. Redis away: kept in the local store.
            return await self._push_locally(payload, priority, reason, delay_s)
        if self.is_full:
            self.stats.pushed_total += 1
            self.stats.dropped_total["overflow"] += 1
            return PushResult(False, None, 0, 0.0, refused_reason="overflow")
        item = self._new_item(payload, priority, reason, delay_s)
        try:
            added = await self._stream.add(_to_bytes(item), max_size=self.max_size)
        except RedisUnavailable as exc:
            self._lost_redis(exc)
            return await self._push_locally(payload, priority, reason, delay_s)
        self.stats.pushed_total += 1
        if added.accepted and self.is_full:  # filled by other pushes while the script ran
            self._unacked[added.entry_id] = None  # acked by the next pass
        elif added.accepted:
            self._entry[item.id] = (added.entry_id, added.epoch)
        if not added.accepted or item.id not in self._entry:
            self.stats.dropped_total["overflow"] += 1
            return PushResult(False, None, 0, 0.0, refused_reason="overflow")
        self._insert(item)
        await self._adopt([e for e in added.entries if e.id != added.entry_id], added.epoch)
        position = 1 + sum(
            1
            for other in self._order
            if other.id not in self._leased and _service_key(other) < _service_key(item)
        )
        self._sync_size()
        self._notify()
        return PushResult(
            True, item, position, self.estimated_wait_s(position, not_before=item.not_before)
        )

    async def _push_locally(
        self, payload: dict[str, Any], priority: int, reason: str, delay_s: float | None
    ) -> PushResult:
        pushed = await super().push(payload, priority=priority, reason=reason, delay_s=delay_s)
        if pushed.evicted is not None:  # its user is told: its entry must not be reclaimed
            await self._release([pushed.evicted.id])
        return pushed

    # -- ending items ----------------------------------------------------------------------

    async def mark_answered(self, item: QueuedItem) -> None:
        await super().mark_answered(item)
        await self._release([item.id])

    async def mark_failed(self, item: QueuedItem, retry_after_s: float | None = None) -> bool:
        kept = await super().mark_failed(item, retry_after_s)
        if not kept:
            await self._release([item.id])
        return kept

    async def expire(self, now: float | None = None) -> list[QueuedItem]:
        gone = await super().expire(now)
        await self._release([item.id for item in gone])
        return gone

    # -- the pass --------------------------------------------------------------------------

    async def sync(self, *, first: bool = False) -> bool:
        """One pass (see the module doc); False when Redis could not be reached."""
        try:
            await self._sync(first)
        except RedisUnavailable as exc:
            self._lost_redis(exc)
            return False
        if not self.redis_ok:
            log.info("the fleet's queue reached Redis again")
        self.redis_ok = True
        return True

    async def _sync(self, first: bool) -> None:
        await self._ack_pending()
        await self._touch()
        await self._hand_over()
        room = self.max_size - self.size
        if room > 0:
            epoch, entries, _ = await self._stream.reclaim(
                min_idle_ms=int(self.claim_idle_s * 1000), count=room, own=first
            )
            await self._adopt(list(entries), epoch, reclaimed=not first)
            await self._ack_pending()  # what the adoption found deleted, unreadable or done
        self.stats.fleet_size = await self._stream.length()

    async def _touch(self) -> None:
        if not self._entry:
            return
        held = dict(self._entry)
        touched = await self._stream.touch([entry_id for entry_id, _ in held.values()])
        for item_id, (entry_id, epoch) in held.items():
            if self._entry.get(item_id) != (entry_id, epoch):
                continue  # ended meanwhile
            if epoch != touched.epoch:
                # Redis lost its data since the item was added: hand it over again.
                del self._entry[item_id]
                continue
            if entry_id in touched.kept or item_id in self._leased:
                continue  # still ours; or in flight now, and its end acks it
            del self._entry[item_id]
            self._remove(item_id)
            self.stats.taken_over_total += 1
            log.info("a queued question was taken over by another process")
        self._sync_size()

    async def _hand_over(self) -> None:
        """Items kept here without Redis (or lost by it): added to the stream, then forgotten
        by the local store. Forced past the fleet's bound: they were promised already."""
        for item in list(self._order):
            if item.id in self._entry or item.id not in self._by_id:
                continue
            added = await self._stream.add(_to_bytes(item), max_size=self.max_size, force=True)
            if item.id not in self._by_id:  # answered while the script ran
                await self._stream.ack([added.entry_id])
                continue
            self._entry[item.id] = (added.entry_id, added.epoch)
            self.stats.handed_over_total += 1
            if item.id in self._stored:
                await self._unpersist(item.id)
            await self._adopt([e for e in added.entries if e.id != added.entry_id], added.epoch)

    async def _adopt(
        self, entries: list[StreamEntry], epoch: str, *, reclaimed: bool = True
    ) -> None:
        """Entries now in this consumer's pending list join the working set."""
        held = {entry_id for entry_id, _ in self._entry.values()}
        for entry in entries:
            if entry.id in held:
                continue
            item = _from_entry(entry)
            if item is None or item.id in self._by_id:
                if item is None and entry.data is not None:
                    self.stats.corrupt_total += 1
                    log.warning("dropping an unreadable entry of the fleet's queue")
                self._unacked[entry.id] = None  # deleted, unreadable, or a second copy
                continue
            if self._is_done is not None and await self._is_done(item.payload):
                self._unacked[entry.id] = None  # answered before its holder acked it
                continue
            self._insert(_with_seq(item, self._next_seq))
            self._next_seq += 1
            self._entry[item.id] = (entry.id, epoch)
            if reclaimed:
                self.stats.reclaimed_total += 1
            else:
                self.stats.restored_total += 1
        if entries:
            self._sync_size()
            self._notify()

    # -- internals -------------------------------------------------------------------------

    async def _persist(self, item: QueuedItem) -> None:
        if item.id in self._entry:  # the stream holds it: no local copy
            self._dirty.discard(item.id)
            return
        await super()._persist(item)

    async def _release(self, item_ids: list[str]) -> None:
        entry_ids = [self._entry.pop(i)[0] for i in item_ids if i in self._entry]
        if not entry_ids:
            return
        for entry_id in entry_ids:
            self._unacked[entry_id] = None
        while len(self._unacked) > MAX_UNACKED:
            del self._unacked[next(iter(self._unacked))]
        try:
            await self._ack_pending()
        except RedisUnavailable as exc:
            self._lost_redis(exc)

    async def _ack_pending(self) -> None:
        self.stats.unacked = len(self._unacked)
        if self._unacked:
            ids = list(self._unacked)
            await self._stream.ack(ids)
            for entry_id in ids:
                self._unacked.pop(entry_id, None)
            self.stats.unacked = len(self._unacked)

    def _lost_redis(self, exc: RedisUnavailable) -> None:
        if self.redis_ok:
            log.warning("the fleet's queue cannot reach Redis, queueing locally: %s", exc)
        self.redis_ok = False


def _to_bytes(item: QueuedItem) -> bytes:
    return json.dumps(_encode(item), separators=(",", ":")).encode()


def _from_entry(entry: StreamEntry) -> QueuedItem | None:
    if entry.data is None:
        return None
    try:
        data = json.loads(entry.data)
        item_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(item_id, str):
            return None
        return _decode(item_id, entry.data)
    except (ValueError, UnicodeDecodeError):
        return None


def _with_seq(item: QueuedItem, seq: int) -> QueuedItem:
    return replace(item, seq=seq)
