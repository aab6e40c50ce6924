"""Plain-number figures kept by a key-value store, read by the metrics layer at scrape time.

Nothing here imports prometheus: `bot.ops.metrics` turns these into metric families. Every dict
is filled in full at construction and never changes shape afterwards, so a scrape running on
another thread can iterate it while the event loop increments the numbers.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "LATENCY_BUCKETS_S",
    "OPS",
    "OTHER_STORE",
    "STORE_NAMES",
    "LatencyHistogram",
    "LogicalStoreStats",
    "Op",
    "OperationStats",
    "StoreStats",
]

# The logical stores: the `store` label values. A fixed list keeps label cardinality bounded;
# add a name here when a new part of the bot needs its own namespace.
STORE_NAMES: Final = (
    "conversations",
    "quota",
    "cache",
    "queue",
    "history",
    "heal_audit",
    "budgets",
    "channels",
    "budget_audit",
    "answered",
    "catchup",
)
# Figures for keys used outside any namespace (admin tools, tests) land here instead of
# creating label values on the fly.
OTHER_STORE: Final = "other"

Op = Literal["save", "load", "delete"]
OPS: Final[tuple[Op, ...]] = ("save", "load", "delete")

# Upper bounds in seconds. A local SQLite write is ~0.1-2 ms; the top buckets catch fsync
# stalls, VACUUM contention and a remote backend later.
LATENCY_BUCKETS_S: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass
class LatencyHistogram:
    """Fixed-bucket latency histogram: per-bucket counts, their sum and count."""

    buckets: tuple[float, ...] = LATENCY_BUCKETS_S
    # Non-cumulative; one slot per bound plus a last slot for values above the largest bound.
    bucket_counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.bucket_counts:
            self.bucket_counts = [0] * (len(self.buckets) + 1)

    def observe(self, seconds: float) -> None:
        """Count one observation."""
        # bisect_left puts a value equal to a bound into that bound's bucket (le semantics).
        self.bucket_counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative_buckets(self) -> list[tuple[float, int]]:
        """(upper bound, cumulative count) pairs ending with +Inf, as Prometheus expects."""
        running = 0
        result: list[tuple[float, int]] = []
        for bound, n in zip((*self.buckets, math.inf), self.bucket_counts, strict=True):
            running += n
            result.append((bound, running))
        return result


@dataclass
class OperationStats:
    """Counts by outcome and the latency of one operation kind on one logical store."""

    ok: int = 0
    error: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    @property
    def latency_seconds_total(self) -> float:
        """Cumulative time spent in this operation, errors included."""
        return self.latency.sum


@dataclass
class LogicalStoreStats:
    """Figures of one logical store (one namespace such as `quota`)."""

    name: str
    ops: dict[Op, OperationStats] = field(
        default_factory=lambda: {op: OperationStats() for op in OPS}
    )
    bytes_written: int = 0
    bytes_read: int = 0
    # Outcome of the latest event touching this store: an operation or a health check
    # (False until the backend has opened).
    healthy: bool = False
    last_error: str | None = None

    def record(
        self, op: Op, *, ok: bool, seconds: float, bytes_written: int = 0, bytes_read: int = 0
    ) -> None:
        """Count one finished operation."""
        figures = self.ops[op]
        figures.latency.observe(seconds)
        if ok:
            figures.ok += 1
            self.bytes_written += bytes_written
            self.bytes_read += bytes_read
        else:
            figures.error += 1
        self.healthy = ok


@dataclass
class StoreStats:
    """All figures of one store backend: per logical store, plus backend-wide upkeep."""

    backend: str
    stores: dict[str, LogicalStoreStats] = field(
        default_factory=lambda: {
            name: LogicalStoreStats(name) for name in (*STORE_NAMES, OTHER_STORE)
        }
    )
    healthy: bool = False
    last_health_check_at: float | None = None
    # Damage recovery at open(): how often the file was moved aside, and where it went last.
    recovered_from_corruption: int = 0
    last_corrupt_path: str | None = None
    cleanup_runs: int = 0
    cleanup_errors: int = 0
    expired_removed: int = 0
    last_cleanup_at: float | None = None
    compactions: int = 0

    def store(self, name: str) -> LogicalStoreStats:
        """Figures of a logical store; unknown names count under `other`."""
        return self.stores.get(name, self.stores[OTHER_STORE])

    def mark_health(self, healthy: bool, at: float) -> None:
        """Record a health check result for the backend and every logical store."""
        self.healthy = healthy
        self.last_health_check_at = at
        for figures in self.stores.values():
            figures.healthy = healthy
