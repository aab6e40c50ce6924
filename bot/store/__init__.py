"""Key-value store with TTL: SQLite by default, in memory for tests, Redis later."""

from bot.store.base import (
    NAMESPACE_SEPARATOR,
    KeyValueStore,
    Namespace,
    StoreClosedError,
    StoreError,
    StoreFullError,
)
from bot.store.memory import MemoryStore
from bot.store.sqlite import SqliteStore
from bot.store.stats import (
    LATENCY_BUCKETS_S,
    OPS,
    OTHER_STORE,
    STORE_NAMES,
    LatencyHistogram,
    LogicalStoreStats,
    OperationStats,
    StoreStats,
)

__all__ = [
    "LATENCY_BUCKETS_S",
    "NAMESPACE_SEPARATOR",
    "OPS",
    "OTHER_STORE",
    "STORE_NAMES",
    "KeyValueStore",
    "LatencyHistogram",
    "LogicalStoreStats",
    "MemoryStore",
    "Namespace",
    "OperationStats",
    "SqliteStore",
    "StoreClosedError",
    "StoreError",
    "StoreFullError",
    "StoreStats",
]
