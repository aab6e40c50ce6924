"""The idempotency record and in-flight journal: every incoming message id is answered once.

One record per incoming message id (a Discord message or interaction id), whatever delivered it
(the gateway, its replay after a RESUME, the queue, a restart's resume, a catch-up):

    accepted ──> queued ──> delivering ──> answered | notified
        └────────────────────┘  (straight to delivering when answered at once)

- `claim` makes the record `accepted` and journals the question (its payload) before any work;
  a second `claim` of a known id returns False: a duplicate delivery, which gets no reply.
- `claim_for_later` journals a question straight as `queued` for the next start (one that
  arrives while the bot stops): its user is promised an answer only when the store holds it.
- `queued`: the answer-later queue holds the question (the journal keeps the payload so a
  restart can tell whether the queue still has it).
- `begin_final` writes `delivering` with the exact reply (its chunks and kind) *before* it is
  sent; the reply goes out with a nonce derived from the message id (`Reply.nonce_key`;
  Discord deduplicates an enforced nonce for a few minutes), so a crash after Discord got it
  but before `finish` re-sends the same message under the same nonce and Discord answers the
  first one.
- `finish` makes it `answered` or `notified` (terminal: the payload and reply are dropped and
  the record expires after `ttl_s`).
- `streaming` records, on an open record, the ids of the messages a streamed answer posted (as
  soon as each is posted), so that a restart finishes those messages (edits them to the final
  text) instead of posting a second answer beside a half-edited one (`streamed`).

A record that is not terminal never expires: after a restart `unfinished()` lists them for
`bot.chat.resume`. Bounded: at most `max_records` records (terminal ones are evicted oldest
first when full; unfinished ones are bounded by what the bot accepts at once). Durable: every
change is written before the call returns; a failed write is logged and counted, and the
record is kept in memory so this process still answers the message once.

The `AnswerRecord` protocol is what the rest of the bot uses; `AnswerLedger` implements it on
any `Namespace` (SQLite today). A fleet sharing Redis uses `FleetAnswerLedger`
(`bot.store.redis_answered`): this journal, with its claim and final reply guarded in Redis.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, Protocol

from bot.store.base import Namespace, StoreError

__all__ = [
    "DUPLICATE_SOURCES",
    "OPEN_STATES",
    "RESUME_OUTCOMES",
    "AnswerLedger",
    "AnswerRecord",
    "ClaimedForLater",
    "LedgerStats",
    "Record",
    "State",
]

logger = logging.getLogger(__name__)

State = Literal["accepted", "queued", "delivering", "answered", "notified"]
ClaimedForLater = Literal["journalled", "duplicate", "unstored"]
OPEN_STATES: Final[tuple[State, ...]] = ("accepted", "queued", "delivering")
_TERMINAL: Final = frozenset({"answered", "notified"})
_STATES: Final = frozenset({*OPEN_STATES, *_TERMINAL})
# What delivered a duplicate (the `source` label of llmbot_duplicate_deliveries_total).
DUPLICATE_SOURCES: Final = ("gateway", "queue", "catchup")
# What a restart did with a journalled question (llmbot_resumed_questions_total{outcome}).
RESUME_OUTCOMES: Final = ("requeued", "resent", "found", "told", "failed")
_FORMAT_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Record:
    """One message's record; `payload` and `reply` only while it is not terminal."""

    message_id: int
    state: State
    at: float  # epoch seconds of the last change
    payload: dict[str, Any] | None = None  # the question (message_to_payload)
    reply: tuple[tuple[str, ...], str] | None = None  # (chunks, kind) while delivering
    streamed: tuple[int, ...] = ()  # the messages a streamed answer posted, in order

    @property
    def terminal(self) -> bool:
        return self.state in _TERMINAL


@dataclass(slots=True)
class LedgerStats:
    """Figures read at scrape time."""

    capacity: int
    size: int = 0
    open_by_state: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OPEN_STATES, 0))
    duplicates_total: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(DUPLICATE_SOURCES, 0)
    )
    resumed_total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESUME_OUTCOMES, 0))
    evicted_total: int = 0  # terminal records forgotten early because the record was full
    store_errors_total: int = 0
    redis_backlog: int = 0  # a fleet's record writes waiting for Redis (bot.store.redis_answered)


class AnswerRecord(Protocol):
    """What the pipeline, the queue worker, the resume and a catch-up use."""

    stats: LedgerStats

    def known(self, message_id: int) -> bool:
        """Has this id been claimed (and not yet expired)?"""
        ...

    def is_final(self, message_id: int) -> bool:
        """Has this id had its final reply (answered or notified)?"""
        ...

    async def claim(self, message_id: int, payload: dict[str, Any], source: str) -> bool:
        """Accept and journal a question; False for a duplicate (counted under `source`)."""
        ...

    async def claim_for_later(
        self, message_id: int, payload: dict[str, Any], source: str
    ) -> ClaimedForLater:
        """Journal a question for the next start (`queued`, not in the queue); "unstored" when
        the store did not take it, "duplicate" for a known id (counted under `source`)."""
        ...

    async def queued(self, message_id: int) -> None:
        """The queue holds the question now."""
        ...

    async def begin_final(
        self,
        message_id: int,
        chunks: tuple[str, ...],
        kind: str,
        payload: dict[str, Any] | None = None,
    ) -> bool:
        """Record the final reply before it is sent (with the question, when the record has
        none yet); False when it was (or is being) sent."""
        ...

    async def finish(self, message_id: int, state: State) -> None:
        """The final reply was delivered."""
        ...

    async def streaming(self, message_id: int, message_ids: tuple[int, ...]) -> None:
        """A streamed answer to `message_id` has posted these messages (all of them so far)."""
        ...

    def streamed(self, message_id: int) -> tuple[int, ...]:
        """The messages a streamed answer posted for an open record (empty: none)."""
        ...

    def abandon_final(self, message_id: int) -> None:
        """Sending the final reply failed: left `delivering` for a later re-send."""
        ...

    def count_duplicate(self, source: str) -> None:
        """Count a duplicate delivery noticed by the caller."""
        ...


class AnswerLedger:
    """`AnswerRecord` on a store namespace (one key per message id); see the module doc."""

    def __init__(
        self,
        store: Namespace | None,
        *,
        ttl_s: float = 3600.0,
        max_records: int = 50_000,
        clock: Callable[[], float] = time.time,
        on_store_error: Callable[[], None] | None = None,
    ) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        if not (math.isfinite(ttl_s) and ttl_s > 0):
            raise ValueError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
        self._store = store
        self._ttl_s = ttl_s
        self._clock = clock
        self._on_store_error = on_store_error
        self.stats = LedgerStats(capacity=max_records)
        self._open: dict[int, Record] = {}
        # Terminal records: id -> when it became terminal, oldest first.
        self._done: OrderedDict[int, float] = OrderedDict()
        self._finalizing: set[int] = set()  # final replies being sent by this process
        # Open records read by `load` (the last run's journal), until they are finished.
        self._last_run: set[int] = set()

    # -- reading ---------------------------------------------------------------------------

    def known(self, message_id: int) -> bool:
        self._expire()
        return message_id in self._open or message_id in self._done

    def is_final(self, message_id: int) -> bool:
        return message_id in self._done

    def get(self, message_id: int) -> Record | None:
        """The open record of `message_id`, or None (terminal or unknown)."""
        return self._open.get(message_id)

    @property
    def ttl_s(self) -> float:
        """How long answered ids are remembered (and undelivered replies are tried)."""
        return self._ttl_s

    def now(self) -> float:
        """The record's clock (epoch seconds; `Record.at` is on it)."""
        return self._clock()

    def undelivered(self) -> list[Record]:
        """Final replies recorded but not delivered (Discord refused them past the hold) and
        not being sent now, oldest first: to send again once Discord is back."""
        return [
            r
            for r in self.unfinished()
            if r.state == "delivering" and r.message_id not in self._finalizing
        ]

    def unfinished(self) -> list[Record]:
        """Records not yet terminal, oldest first: the journal a restart resumes."""
        return sorted(self._open.values(), key=lambda r: (r.at, r.message_id))

    def from_last_run(self, message_id: int) -> bool:
        """Was this open record read by `load` (journalled by the last run, not this one)? A
        restart's resume takes only those: a question this process claimed meanwhile (live, or
        by the catch-up) is being answered already."""
        return message_id in self._last_run

    # -- lifecycle -------------------------------------------------------------------------

    async def load(self) -> int:
        """Read the records back after a restart; returns how many are unfinished. Unreadable
        entries are logged, counted and skipped; a store that cannot be read raises."""
        if self._store is None:
            return 0
        done: list[tuple[float, int]] = []
        for key, raw in await self._store.items():
            try:
                record = _decode(key, raw)
            except ValueError as exc:
                logger.warning("skipping unreadable answer record %r: %s", key, exc)
                continue
            if record.terminal:
                done.append((record.at, record.message_id))
            else:
                self._put(record)
                self._last_run.add(record.message_id)
        for at, message_id in sorted(done):
            self._done[message_id] = at
        self._expire()
        while self._over() and self._done:
            self._done.popitem(last=False)
            self.stats.evicted_total += 1
        self._sync()
        return len(self._open)

    # -- changing --------------------------------------------------------------------------

    async def claim(self, message_id: int, payload: dict[str, Any], source: str) -> bool:
        if self.known(message_id):
            self.count_duplicate(source)
            return False
        record = Record(message_id, "accepted", self._clock(), payload)
        self._put(record)
        await self._make_room()
        self._sync()
        await self._write(record)
        return True

    async def claim_for_later(
        self, message_id: int, payload: dict[str, Any], source: str
    ) -> ClaimedForLater:
        if self.known(message_id):
            self.count_duplicate(source)
            return "duplicate"
        # `queued` at once: no notice of the shutdown (bot.app) tells it a second time, and the
        # next start's resume re-queues it as any queued question the queue no longer holds.
        record = Record(message_id, "queued", self._clock(), payload)
        self._put(record)
        await self._make_room()
        self._sync()
        return "journalled" if await self._write(record) else "unstored"

    async def queued(self, message_id: int) -> None:
        record = self._open.get(message_id)
        if record is None or record.state != "accepted":
            return
        updated = Record(message_id, "queued", self._clock(), record.payload, None, record.streamed)
        self._put(updated)
        self._sync()
        await self._write(updated)

    async def begin_final(
        self,
        message_id: int,
        chunks: tuple[str, ...],
        kind: str,
        payload: dict[str, Any] | None = None,
    ) -> bool:
        if message_id in self._done or message_id in self._finalizing:
            return False
        self._finalizing.add(message_id)
        record = self._open.get(message_id)
        if record is not None and record.payload is not None:
            payload = record.payload
        # A re-send keeps the time of the first try: how long a reply has been undelivered.
        at = record.at if record is not None and record.state == "delivering" else self._clock()
        streamed = record.streamed if record is not None else ()
        updated = Record(message_id, "delivering", at, payload, (chunks, kind), streamed)
        self._put(updated)
        self._sync()
        await self._write(updated)
        return True

    async def finish(self, message_id: int, state: State) -> None:
        if state not in _TERMINAL:
            raise ValueError(f"finish() takes answered or notified, not {state!r}")
        self._finalizing.discard(message_id)
        self._pop(message_id)
        now = self._clock()
        self._done[message_id] = now
        self._done.move_to_end(message_id)
        await self._make_room()
        self._sync()
        await self._write(Record(message_id, state, now), ttl_s=self._ttl_s)

    def abandon_final(self, message_id: int) -> None:
        self._finalizing.discard(message_id)

    async def streaming(self, message_id: int, message_ids: tuple[int, ...]) -> None:
        record = self._open.get(message_id)
        if record is None or record.streamed == message_ids:
            return
        updated = replace(record, streamed=message_ids)
        self._put(updated)
        await self._write(updated)

    def streamed(self, message_id: int) -> tuple[int, ...]:
        record = self._open.get(message_id)
        return () if record is None else record.streamed

    def count_duplicate(self, source: str) -> None:
        key = source if source in self.stats.duplicates_total else "gateway"
        self.stats.duplicates_total[key] += 1

    def count_resumed(self, outcome: str) -> None:
        self.stats.resumed_total[outcome] += 1

    # -- internals -------------------------------------------------------------------------

    def _over(self) -> bool:
        return len(self._open) + len(self._done) > self.stats.capacity

    def _expire(self) -> None:
        cutoff = self._clock() - self._ttl_s
        while self._done:
            message_id, at = next(iter(self._done.items()))
            if at > cutoff:
                break
            del self._done[message_id]  # the store's TTL removes its copy

    async def _make_room(self) -> None:
        self._expire()
        while self._over() and self._done:
            message_id, _ = self._done.popitem(last=False)
            self.stats.evicted_total += 1
            await self._delete(message_id)

    def _put(self, record: Record) -> None:
        """Set an open record, keeping the per-state counts (O(1): read at scrape time)."""
        old = self._open.get(record.message_id)
        if old is not None:
            self.stats.open_by_state[old.state] -= 1
        self._open[record.message_id] = record
        self.stats.open_by_state[record.state] += 1

    def _pop(self, message_id: int) -> None:
        self._last_run.discard(message_id)
        old = self._open.pop(message_id, None)
        if old is not None:
            self.stats.open_by_state[old.state] -= 1

    def _sync(self) -> None:
        self.stats.size = len(self._open) + len(self._done)

    async def _write(self, record: Record, ttl_s: float | None = None) -> bool:
        """Write one record; False when it was not stored (no store, or a store error)."""
        if self._store is None:
            return False
        try:
            await self._store.set_json(str(record.message_id), _encode(record), ttl_s)
        except StoreError as exc:
            self._failed()
            logger.warning("could not write the answer record of a message: %s", exc)
            return False
        return True

    async def _delete(self, message_id: int) -> None:
        if self._store is None:
            return
        try:
            await self._store.delete(str(message_id))
        except StoreError as exc:
            self._failed()
            logger.warning("could not delete an old answer record: %s", exc)

    def _failed(self) -> None:
        self.stats.store_errors_total += 1
        if self._on_store_error is not None:
            self._on_store_error()


def _encode(record: Record) -> dict[str, Any]:
    data: dict[str, Any] = {"v": _FORMAT_VERSION, "s": record.state, "t": record.at}
    if record.payload is not None:
        data["p"] = record.payload
    if record.reply is not None:
        data["r"] = {"chunks": list(record.reply[0]), "kind": record.reply[1]}
    if record.streamed:
        data["m"] = list(record.streamed)
    return data


def _decode(key: str, raw: bytes) -> Record:
    try:
        message_id = int(key)
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a message id and JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("v") != _FORMAT_VERSION:
        raise ValueError("not a version 1 record")
    state, at = data.get("s"), data.get("t")
    if state not in _STATES:
        raise ValueError(f"unknown state {state!r}")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise ValueError("t must be a finite number")
    payload = data.get("p")
    if payload is not None and not isinstance(payload, dict):
        raise ValueError("p must be an object")
    reply: tuple[tuple[str, ...], str] | None = None
    raw_reply = data.get("r")
    if raw_reply is not None:
        chunks = raw_reply.get("chunks") if isinstance(raw_reply, dict) else None
        kind = raw_reply.get("kind") if isinstance(raw_reply, dict) else None
        if not isinstance(chunks, list) or not all(isinstance(c, str) for c in chunks):
            raise ValueError("r.chunks must be a list of strings")
        if not isinstance(kind, str):
            raise ValueError("r.kind must be a string")
        reply = (tuple(chunks), kind)
    streamed = data.get("m", [])
    if not isinstance(streamed, list) or not all(
        isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in streamed
    ):
        raise ValueError("m must be a list of message ids")
    return Record(message_id, state, float(at), payload, reply, tuple(streamed))
