"""Health history: a snapshot every 30 s for a day, hourly averages for a week, kept in the store.

Shape: snapshots younger than `raw_window_s` (24 h) are kept as taken; once a whole clock hour
is older than that, its snapshots become one hourly point (the mean of each figure, with the
number of snapshots behind it); hourly points older than `retention_s` (7 days) are dropped.
In memory that is at most ~25 h of snapshots plus ~7 × 24 hourly points.

Persistence, through the `history` namespace of the key-value store, one small write each:

* `raw:<epoch ms>`: one key per snapshot (~200 bytes), written as it is taken;
* `hour:<epoch s of the hour>`: one key per hourly point, written when the hour rolls up,
  after which the hour's snapshot keys are deleted (~120 deletes once an hour).

Every key also carries a TTL ending at the retention limit, as a safety net for a delete that
failed. So the store holds what memory holds and nothing ever rewrites a large value.
`load()` rebuilds memory after a restart and rolls up what aged meanwhile; snapshots of an
hour that already has its hourly point are ignored (and deleted), so a stop between the two
writes cannot count an hour twice. The history is best effort: a store failure is logged and
counted, never raised to the caller of `record()`, and memory stays the source of truth.
"""

from __future__ import annotations

import asyncio
import bisect
import csv
import io
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from bot.ops.health import HealthSnapshot
from bot.store.base import Namespace, StoreError

__all__ = [
    "CSV_COLUMNS",
    "ExportFormat",
    "HealthHistory",
    "HistoryPoint",
    "HistoryStats",
    "parse_time",
]

logger = logging.getLogger(__name__)

ExportFormat = Literal["json", "csv"]

HOUR_S: Final = 3600
_MIB: Final = 1024 * 1024
_RAW_PREFIX: Final = "raw:"
_HOUR_PREFIX: Final = "hour:"
_FORMAT_VERSION: Final = 1

# Columns of the export, in order (JSON rows use the same keys).
CSV_COLUMNS: Final = (
    "timestamp",
    "time",
    "rss_mb",
    "heap_mb",
    "active_conversations",
    "error_rate",
    "p50_ms",
    "p95_ms",
    "cache_hit_rate",
    "servers",
    "quota_minute_remaining",
    "quota_day_remaining",
    "samples",
)


def parse_time(value: str, *, end_of_day: bool = False) -> float:
    """An export bound as epoch seconds: epoch seconds or ISO 8601 (naive means UTC).

    A bare date means its midnight, or with `end_of_day` (an upper bound) the last instant of
    that day, so `--to 2025-01-31` includes the 31st. ValueError says what is accepted.
    """
    text = value.strip()
    try:
        epoch = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(epoch):
            raise ValueError(f"expected a finite number of epoch seconds, got {value!r}")
        return epoch
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"expected epoch seconds or an ISO 8601 date/time, got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if end_of_day and len(text) == 10:  # YYYY-MM-DD: no time given
        parsed += timedelta(days=1, microseconds=-1)
    return parsed.timestamp()


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One snapshot, or the mean of an hour's snapshots (`samples` > 1)."""

    timestamp: float  # when taken; for an hourly point, the start of the hour
    rss_bytes: float
    heap_bytes: float
    active_conversations: float
    error_rate: float
    response_p50_s: float
    response_p95_s: float
    cache_hit_rate: float
    guilds: float
    quota_minute_remaining: float
    quota_day_remaining: float
    samples: int = 1

    @classmethod
    def from_snapshot(cls, s: HealthSnapshot) -> HistoryPoint:
        """The figures of a health snapshot that the history keeps.

        As floats, like the points read back from the store, so a point exports the same text
        (`3.0`, not `3`) from memory (`/status/history`) and from the store (`bot export`).
        """
        return cls(
            timestamp=float(s.timestamp),
            rss_bytes=float(s.rss_bytes),
            heap_bytes=float(s.heap_bytes),
            active_conversations=float(s.active_conversations),
            error_rate=float(s.error_rate),
            response_p50_s=float(s.response_p50_s),
            response_p95_s=float(s.response_p95_s),
            cache_hit_rate=float(s.cache_hit_rate),
            guilds=float(s.guilds),
            quota_minute_remaining=float(s.quota_minute_remaining),
            quota_day_remaining=float(s.quota_day_remaining),
        )

    @property
    def hour(self) -> int:
        """Epoch seconds of the start of the clock hour holding this point."""
        return math.floor(self.timestamp / HOUR_S) * HOUR_S

    def encode(self) -> dict[str, Any]:
        """The stored form: a version and the values in field order (compact JSON)."""
        return {"v": _FORMAT_VERSION, "p": list(astuple(self))}

    @classmethod
    def decode(cls, raw: bytes) -> HistoryPoint:
        """Parse a stored point; ValueError when it is not one."""
        try:
            obj = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(obj, dict) or obj.get("v") != _FORMAT_VERSION:
            raise ValueError("unknown history format")
        values = obj.get("p")
        names = [f.name for f in fields(cls)]
        if not isinstance(values, list) or len(values) != len(names):
            raise ValueError("wrong number of values")
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        ):
            raise ValueError("values must be finite numbers")
        if int(values[-1]) < 1:
            raise ValueError("samples must be at least 1")
        return cls.from_values([float(v) for v in values[:-1]], int(values[-1]))

    @classmethod
    def from_values(cls, values: Sequence[float], samples: int) -> HistoryPoint:
        """A point from its timestamp and figures in field order."""
        ts, rss, heap, conversations, errors, p50, p95, hits, guilds, minute, day = values
        return cls(
            ts, rss, heap, conversations, errors, p50, p95, hits, guilds, minute, day, samples
        )

    def row(self) -> dict[str, float | int | str]:
        """The export row (CSV_COLUMNS), in the units a person reads: MB, ms, ratios.

        Counts read as integers unless they are an hour's fractional mean; measurements are
        always floats. The same whether the point came from memory or back from the store.
        """
        return {
            "timestamp": round(self.timestamp, 3),
            "time": datetime.fromtimestamp(self.timestamp, UTC)
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z"),
            "rss_mb": round(self.rss_bytes / _MIB, 2),
            "heap_mb": round(self.heap_bytes / _MIB, 2),
            "active_conversations": _count(self.active_conversations),
            "error_rate": round(float(self.error_rate), 4),
            "p50_ms": round(self.response_p50_s * 1000.0, 1),
            "p95_ms": round(self.response_p95_s * 1000.0, 1),
            "cache_hit_rate": round(float(self.cache_hit_rate), 4),
            "servers": _count(self.guilds),
            "quota_minute_remaining": _count(self.quota_minute_remaining),
            "quota_day_remaining": _count(self.quota_day_remaining),
            "samples": self.samples,
        }


def _count(value: float) -> float | int:
    """A count for the export: an integer, or the mean of an hour to two decimals."""
    rounded = round(float(value), 2)
    return int(rounded) if rounded.is_integer() else rounded


_VALUE_FIELDS: Final = tuple(f.name for f in fields(HistoryPoint))[1:-1]


def _average(points: Iterable[HistoryPoint], timestamp: float) -> HistoryPoint:
    """The sample-weighted mean of `points`, stamped `timestamp` (points must not be empty)."""
    items = list(points)
    total = sum(p.samples for p in items)
    means = [sum(getattr(p, name) * p.samples for p in items) / total for name in _VALUE_FIELDS]
    return HistoryPoint.from_values([timestamp, *means], total)


@dataclass(slots=True)
class HistoryStats:
    """Counters for logs and tests; the held size is `len(history)`."""

    recorded_total: int = 0
    aggregated_hours_total: int = 0
    dropped_total: int = 0  # snapshots over the in-memory bound, or trimmed
    persist_errors_total: int = 0
    corrupt_total: int = 0  # unreadable stored entries skipped by load()


def _raw_key(timestamp: float) -> str:
    return f"{_RAW_PREFIX}{round(timestamp * 1000):015d}"


def _hour_key(hour: int) -> str:
    return f"{_HOUR_PREFIX}{hour:010d}"


def _key_end(key: str) -> float:
    """Epoch seconds at which the period of a stored key ends (+inf for a foreign key)."""
    prefix, _, stamp = key.partition(":")
    if not stamp.isdigit():
        return math.inf
    if prefix + ":" == _RAW_PREFIX:
        return int(stamp) / 1000
    if prefix + ":" == _HOUR_PREFIX:
        return int(stamp) + HOUR_S
    return math.inf


class HealthHistory:
    """Bounded health history with hourly roll-up, persisted in a store namespace."""

    def __init__(
        self,
        snapshot: Callable[[], HealthSnapshot] | None = None,
        *,
        store: Namespace | None = None,
        interval_s: float = 30.0,
        retention_s: float = 7 * 86_400.0,
        raw_window_s: float = 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (interval_s > 0 and raw_window_s > 0 and retention_s >= raw_window_s):
            raise ValueError("need interval_s > 0, raw_window_s > 0 and retention_s >= raw_window")
        self.interval_s = interval_s
        self.retention_s = retention_s
        self.raw_window_s = raw_window_s
        self.stats = HistoryStats()
        self._snapshot = snapshot
        self._store = store
        self._clock = clock
        # A raw point lives until its whole hour is older than the raw window: up to an hour
        # more than the window. The slack absorbs a clock that ticks a little fast.
        self.max_raw = math.ceil((raw_window_s + HOUR_S) / interval_s) + 16
        self.max_hours = math.ceil(retention_s / HOUR_S) + 1
        self._raw: list[HistoryPoint] = []  # sorted by timestamp
        self._hours: dict[int, HistoryPoint] = {}
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self._failing = False

    def __len__(self) -> int:
        return len(self._raw) + len(self._hours)

    # -- reading -------------------------------------------------------------------------------

    def points(
        self, from_ts: float | None = None, to_ts: float | None = None
    ) -> list[HistoryPoint]:
        """Hourly and raw points with from_ts <= timestamp <= to_ts, oldest first."""
        low = -math.inf if from_ts is None else from_ts
        high = math.inf if to_ts is None else to_ts
        chosen = [p for p in (*self._hours.values(), *self._raw) if low <= p.timestamp <= high]
        chosen.sort(key=lambda p: p.timestamp)
        return chosen

    def export(
        self, from_ts: float | None = None, to_ts: float | None = None, fmt: str = "json"
    ) -> str:
        """The points in [from_ts, to_ts] as JSON (`{"points": [...]}`) or CSV (CSV_COLUMNS)."""
        if from_ts is not None and to_ts is not None and from_ts > to_ts:
            raise ValueError("from must not be after to")
        rows = [p.row() for p in self.points(from_ts, to_ts)]
        if fmt == "json":
            return json.dumps({"columns": list(CSV_COLUMNS), "points": rows})
        if fmt == "csv":
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            return out.getvalue()
        raise ValueError(f"unknown format {fmt!r}: use json or csv")

    # -- writing -------------------------------------------------------------------------------

    async def record(self, snapshot: HealthSnapshot | None = None) -> HistoryPoint:
        """Add a snapshot (taken now from the snapshot source if not given) and roll up."""
        if snapshot is None:
            if self._snapshot is None:
                raise RuntimeError("HealthHistory has no snapshot source: pass a snapshot")
            snapshot = self._snapshot()
        point = HistoryPoint.from_snapshot(snapshot)
        bisect.insort(self._raw, point, key=lambda p: p.timestamp)
        self.stats.recorded_total += 1
        await self._write(_raw_key(point.timestamp), point, self.retention_s)
        if len(self._raw) > self.max_raw:
            # Recorded faster than the interval: keep the bound, lose the oldest.
            dropped = self._raw.pop(0)
            self.stats.dropped_total += 1
            await self._delete([_raw_key(dropped.timestamp)])
        await self._persist(self._roll_up(self._clock()))
        return point

    async def load(self) -> int:
        """Rebuild the history from the store; returns the number of points restored."""
        if self._store is None:
            return 0
        try:
            hour_items = await self._store.items(_HOUR_PREFIX)
            raw_items = await self._store.items(_RAW_PREFIX)
        except StoreError as exc:
            logger.warning("health history not restored: %s", exc)
            return 0
        for key, value in hour_items:
            point = self._decode(key, value)
            if point is not None:
                self._hours[point.hour] = point
        restored = len(self._hours)
        leftovers: list[str] = []
        for key, value in raw_items:
            point = self._decode(key, value)
            if point is None:
                continue
            if point.hour in self._hours:
                # Left behind by a stop between writing an hour and deleting its snapshots:
                # the hour already holds them, counting them again would weigh it twice.
                leftovers.append(key)
            else:
                bisect.insort(self._raw, point, key=lambda p: p.timestamp)
                restored += 1
        excess = self._raw[: max(0, len(self._raw) - self.max_raw)]
        del self._raw[: len(excess)]
        self._hours = dict(sorted(self._hours.items()))
        await self._delete(leftovers + [_raw_key(p.timestamp) for p in excess])
        await self._persist(self._roll_up(self._clock()))
        if restored:
            logger.info("restored %d health history points", restored)
        return restored - len(excess)

    async def trim(self, max_age_s: float) -> int:
        """Drop points older than `max_age_s` from memory and the store (the disk heal action);
        returns how many store entries (or memory points, without a store) were removed."""
        cutoff = self._clock() - max_age_s
        # The same test as the store scan below: a period that ended by the cutoff goes.
        old_raw = sum(1 for p in self._raw if p.timestamp <= cutoff)
        old_hours = [hour for hour in self._hours if hour + HOUR_S <= cutoff]
        self._raw = [p for p in self._raw if p.timestamp > cutoff]
        for hour in old_hours:
            del self._hours[hour]
        self.stats.dropped_total += old_raw + len(old_hours)
        if self._store is None:
            return old_raw + len(old_hours)
        # Scan the store rather than trust memory: entries of an older run count too.
        try:
            keys = await self._store.keys()
        except StoreError as exc:
            self.stats.persist_errors_total += 1
            logger.warning("health history not trimmed in the store: %s", exc)
            return 0
        doomed = [key for key in keys if _key_end(key) <= cutoff]
        await self._delete(doomed)
        return len(doomed)

    # -- the periodic task ---------------------------------------------------------------------

    async def run(self, interval_s: float | None = None) -> None:
        """Record a snapshot now and every `interval_s` (default: the constructor's) until stop."""
        interval = self.interval_s if interval_s is None else interval_s
        if interval <= 0:
            raise ValueError("interval_s must be positive")
        self._task = asyncio.current_task()
        while not self._stopping.is_set():
            try:
                await self.record()
            except Exception:
                logger.exception("taking a health history snapshot failed")
            try:
                async with asyncio.timeout(interval):
                    await self._stopping.wait()
            except TimeoutError:
                pass

    async def stop(self) -> None:
        """End `run()` and wait for it to return (the current write is allowed to finish)."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return  # not running (yet): the flag stays set, so a run started later returns
        if task is not asyncio.current_task():
            await asyncio.gather(task, return_exceptions=True)
        self._stopping = asyncio.Event()  # ready for another run()

    # -- internals -----------------------------------------------------------------------------

    def _roll_up(self, now: float) -> list[tuple[HistoryPoint, list[HistoryPoint]]]:
        """Turn whole hours older than the raw window into hourly points; prune past retention.

        Returns each hourly point created or changed, with the snapshots it absorbed.
        """
        # Points before the start of the hour holding the cutoff are in hours that ended
        # before the cutoff: complete, and all older than the raw window.
        boundary = math.floor((now - self.raw_window_s) / HOUR_S) * HOUR_S
        split = bisect.bisect_left(self._raw, float(boundary), key=lambda p: p.timestamp)
        aged, self._raw = self._raw[:split], self._raw[split:]
        by_hour: dict[int, list[HistoryPoint]] = {}
        for point in aged:
            by_hour.setdefault(point.hour, []).append(point)
        changed: list[tuple[HistoryPoint, list[HistoryPoint]]] = []
        for hour, points in by_hour.items():
            existing = self._hours.get(hour)
            # A late snapshot for an hour already rolled up (the clock stepped back) is merged.
            merged = _average([*points, *([existing] if existing else [])], float(hour))
            self._hours[hour] = merged
            changed.append((merged, points))
            self.stats.aggregated_hours_total += existing is None
        if by_hour:
            self._hours = dict(sorted(self._hours.items()))
        oldest_kept = now - self.retention_s
        for hour in [h for h in self._hours if h + HOUR_S <= oldest_kept]:
            del self._hours[hour]
        while len(self._hours) > self.max_hours:
            del self._hours[next(iter(self._hours))]
        return changed

    async def _persist(self, changes: list[tuple[HistoryPoint, list[HistoryPoint]]]) -> None:
        """Write each new hourly point, then delete the snapshots it replaced."""
        for hour_point, absorbed in changes:
            hour = int(hour_point.timestamp)
            ttl = hour + HOUR_S + self.retention_s - self._clock()
            kept = ttl > 0 and hour in self._hours  # else already past retention
            if kept and not await self._write(_hour_key(hour), hour_point, ttl):
                continue  # keep the snapshots: load() rebuilds the hour from them
            await self._delete([_raw_key(p.timestamp) for p in absorbed])

    async def _delete(self, keys: list[str]) -> None:
        if self._store is None:
            return
        for key in keys:
            try:
                await self._store.delete(key)
            except StoreError as exc:
                # The TTL removes it in the end; load() ignores snapshots of stored hours.
                self.stats.persist_errors_total += 1
                logger.debug("could not delete health history key %s: %s", key, exc)

    async def _write(self, key: str, point: HistoryPoint, ttl_s: float) -> bool:
        if self._store is None:
            return True
        try:
            await self._store.set_json(key, point.encode(), ttl_s=ttl_s)
        except StoreError as exc:
            self.stats.persist_errors_total += 1
            if not self._failing:
                logger.warning("health history not saved (kept in memory): %s", exc)
            self._failing = True
            return False
        if self._failing:
            logger.info("health history saving again")
        self._failing = False
        return True

    def _decode(self, key: str, value: bytes) -> HistoryPoint | None:
        try:
            return HistoryPoint.decode(value)
        except ValueError as exc:
            self.stats.corrupt_total += 1
            logger.warning("skipping unreadable health history entry %r: %s", key, exc)
            return None
