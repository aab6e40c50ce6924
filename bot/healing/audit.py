"""The heal audit: every decision of the webhook and every job result, bounded and persisted.

One `HealEvent` per decision (ignored, duplicate, cooldown, escalated, rejected, disabled,
dry_run, queued) and per job result (ok, failed, reverted), with the time, the alert's name,
fingerprint and status, the action, what it did (`detail`, `figures` such as bytes freed or
settings changed), who ran it by hand and the trace id. `HealAudit` keeps the newest
`capacity` in memory and, given a store namespace, the same ones on disk: one small key per
entry, written in batches by a background task (the webhook never waits for the disk), the
keys of entries that fell out deleted in the same pass. `load()` restores them after a restart.

Values that come from a webhook payload (fingerprint, alert name) are escaped and cut by
`safe_text` before they are stored, logged or shown: a payload cannot forge a log line or a
Discord message, nor grow an entry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from bot.store.base import Namespace, StoreError

__all__ = [
    "DEFAULT_CAPACITY",
    "AuditStats",
    "HealAudit",
    "HealEvent",
    "bounded_figures",
    "safe_text",
]

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY: Final = 1000
_FORMAT_VERSION: Final = 1
_KEY_DIGITS: Final = 12
# Cuts for text that may come from a payload, and for an action's own report.
FINGERPRINT_CHARS: Final = 80
NAME_CHARS: Final = 120
DETAIL_CHARS: Final = 500
_MAX_FIGURES: Final = 20


def safe_text(value: str, limit: int) -> str:
    """`value` with control characters escaped (a newline becomes `\\n`) and cut to `limit`
    characters (the last one then "…"): safe for one log line, a JSON field or a message."""
    escaped = "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in value
    )
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"


def _iso(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


@dataclass(frozen=True, slots=True)
class HealEvent:
    """One audit entry: a decision or a job result (`outcome`), for `/heal status` and
    `GET /heal/audit`. Text fields hold already escaped, bounded text."""

    time: float
    action: str | None
    outcome: str
    fingerprint: str
    detail: str
    alertname: str = ""
    status: str = ""  # the alert's: firing or resolved
    kind: str = ""  # apply or revert for a job's entries; "" for a decision that ran nothing
    figures: Mapping[str, float] = field(default_factory=dict)
    by: str = ""  # who ran it by hand; "" for an alert's
    trace_id: str = ""  # hex, "" when no trace was recorded
    seq: int = 0  # order of recording, kept across restarts

    def to_json(self) -> dict[str, Any]:
        """The entry as `GET /heal/audit` shows it and the store keeps it."""
        moment = round(self.time, 3)  # as stored: the same JSON before and after a restart
        return {
            "seq": self.seq,
            "time": moment,
            "at": _iso(moment),
            "alertname": self.alertname,
            "fingerprint": self.fingerprint,
            "status": self.status,
            "action": self.action,
            "kind": self.kind,
            "outcome": self.outcome,
            "detail": self.detail,
            "figures": dict(self.figures),
            "by": self.by,
            "trace_id": self.trace_id,
        }

    @classmethod
    def from_json(cls, obj: Any) -> HealEvent:
        """An entry read back from the store; ValueError when it is not one."""
        if not isinstance(obj, dict) or obj.get("v") != _FORMAT_VERSION:
            raise ValueError("unknown audit entry format")
        text = {
            name: obj.get(name, "")
            for name in ("alertname", "fingerprint", "status", "kind", "outcome", "detail", "by")
        }
        text["trace_id"] = obj.get("trace_id", "")
        if not all(isinstance(value, str) for value in text.values()):
            raise ValueError("text fields must be strings")
        action, seq, moment = obj.get("action"), obj.get("seq"), obj.get("time")
        figures = obj.get("figures", {})
        if action is not None and not isinstance(action, str):
            raise ValueError("action must be a string or null")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError("seq must be a non-negative integer")
        if not isinstance(moment, int | float) or not math.isfinite(moment):
            raise ValueError("time must be a number")
        if not isinstance(figures, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) for k, v in figures.items()
        ):
            raise ValueError("figures must map names to numbers")
        return cls(
            time=float(moment),
            action=action,
            outcome=text["outcome"],
            fingerprint=text["fingerprint"],
            detail=text["detail"],
            alertname=text["alertname"],
            status=text["status"],
            kind=text["kind"],
            figures={k: float(v) for k, v in figures.items()},
            by=text["by"],
            trace_id=text["trace_id"],
            seq=seq,
        )

    def stored(self) -> bytes:
        """The store's form: the JSON of `to_json()` with a format version, without `at`."""
        body = self.to_json()
        del body["at"]
        body["v"] = _FORMAT_VERSION
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def bounded_figures(figures: Mapping[str, float]) -> dict[str, float]:
    """An action's measurements as an entry keeps them: finite numbers, at most 20."""
    kept: dict[str, float] = {}
    for name, value in list(figures.items())[:_MAX_FIGURES]:
        number = float(value)
        kept[safe_text(name, 60)] = number if math.isfinite(number) else 0.0
    return kept


@dataclass(slots=True)
class AuditStats:
    """Figures for the metrics and tests."""

    entries: int = 0
    capacity: int = 0
    recorded_total: int = 0
    persist_errors_total: int = 0
    corrupt_total: int = 0  # unreadable stored entries skipped (and deleted) by load()


def _key(seq: int) -> str:
    return f"{seq:0{_KEY_DIGITS}d}"


class HealAudit:
    """The newest `capacity` heal entries, in memory and (with a store) on disk."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        *,
        store: Namespace | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.entries: deque[HealEvent] = deque(maxlen=capacity)
        self._store = store
        self._clock = clock
        self._next_seq = 1
        self._pending: deque[HealEvent] = deque(maxlen=capacity)
        self._stored: deque[int] = deque()  # seqs on disk, oldest first
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._stopping = False
        self._failing = False
        self._recorded = 0
        self._persist_errors = 0
        self._corrupt = 0

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def stats(self) -> AuditStats:
        """Entries held, the cap, and the counters."""
        return AuditStats(
            entries=len(self.entries),
            capacity=self.capacity,
            recorded_total=self._recorded,
            persist_errors_total=self._persist_errors,
            corrupt_total=self._corrupt,
        )

    # -- writing ---------------------------------------------------------------------------

    def record(self, event: HealEvent) -> HealEvent:
        """Keep an entry (numbered in order) and have it saved soon; never waits."""
        numbered = HealEvent(
            time=event.time,
            action=event.action,
            outcome=event.outcome,
            fingerprint=event.fingerprint,
            detail=event.detail,
            alertname=event.alertname,
            status=event.status,
            kind=event.kind,
            figures=event.figures,
            by=event.by,
            trace_id=event.trace_id,
            seq=self._next_seq,
        )
        self._next_seq += 1
        self._recorded += 1
        self.entries.append(numbered)
        if self._store is not None:
            self._pending.append(numbered)
            self._wake.set()
        return numbered

    async def flush(self) -> None:
        """Write the entries not yet saved and delete the keys of those that fell out."""
        if self._store is None:
            return
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        store = self._store
        assert store is not None  # checked by flush()
        oldest_kept = self._next_seq - self.capacity
        # Taken before the write: entries recorded while it runs wait for the next pass.
        batch = [event for event in self._pending if event.seq >= oldest_kept]
        self._pending.clear()
        if batch:
            try:
                await store.set_many({_key(event.seq): event.stored() for event in batch})
            except StoreError as exc:
                # Back in front of the newer ones; the bound drops the oldest if it must.
                self._pending = deque([*batch, *self._pending], maxlen=self.capacity)
                self._persist_errors += 1
                if not self._failing:
                    logger.warning("heal audit not saved (kept in memory): %s", exc)
                self._failing = True
                return
            if self._failing:
                logger.info("heal audit saving again")
            self._failing = False
            self._stored.extend(event.seq for event in batch)
        oldest_kept = self._next_seq - self.capacity
        while self._stored and self._stored[0] < oldest_kept:
            await self._delete(_key(self._stored.popleft()))

    async def _delete(self, key: str) -> None:
        assert self._store is not None
        try:
            await self._store.delete(key)
        except StoreError as exc:
            # load() drops it later: it is older than the newest `capacity`.
            self._persist_errors += 1
            logger.debug("could not delete heal audit key %s: %s", key, exc)

    # -- the background writer -------------------------------------------------------------

    async def run(self) -> None:
        """Save recorded entries as they come until `stop()` (which saves the rest)."""
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def stop(self) -> None:
        """End `run()` and save what is still pending."""
        self._stopping = True
        self._wake.set()
        await self.flush()

    # -- reading ---------------------------------------------------------------------------

    async def load(self) -> int:
        """Restore the newest `capacity` entries from the store; returns how many."""
        if self._store is None:
            return 0
        try:
            items = await self._store.items()
        except StoreError as exc:
            logger.warning("heal audit not restored: %s", exc)
            return 0
        restored: list[HealEvent] = []
        doomed: list[str] = []
        for key, value in items:
            try:
                event = HealEvent.from_json(json.loads(value))
            except (ValueError, UnicodeDecodeError) as exc:
                self._corrupt += 1
                logger.warning("skipping unreadable heal audit entry %r: %s", key, exc)
                doomed.append(key)
                continue
            restored.append(event)
        restored.sort(key=lambda event: event.seq)
        excess = restored[: max(0, len(restored) - self.capacity)]
        kept = restored[len(excess) :]
        doomed.extend(_key(event.seq) for event in excess)
        newer = list(self.entries)  # recorded before load(), if any
        self.entries.clear()
        self.entries.extend(kept)
        self._stored.extend(event.seq for event in kept)
        if kept:
            self._next_seq = max(self._next_seq, kept[-1].seq + 1)
        for event in newer:
            self.record(event)
        for key in doomed:
            await self._delete(key)
        if kept:
            logger.info("restored %d heal audit entries", len(kept))
        return len(kept)

    def query(self, *, limit: int | None = None, since: float | None = None) -> list[HealEvent]:
        """The newest entries first: those after `since` (epoch seconds), at most `limit`."""
        chosen: Iterable[HealEvent] = reversed(self.entries)
        if since is not None:
            chosen = (event for event in chosen if event.time > since)
        found = list(chosen)
        return found if limit is None else found[:limit]
