"""The plain-number figures the metrics layer reads."""

from __future__ import annotations

import math

from bot.store import LATENCY_BUCKETS_S, OPS, OTHER_STORE, STORE_NAMES, StoreStats
from bot.store.stats import LatencyHistogram, LogicalStoreStats


def test_histogram_buckets_use_less_or_equal() -> None:
    histogram = LatencyHistogram()
    for seconds in (0.0001, 0.0005, 0.0006, 1.0, 2.5):
        histogram.observe(seconds)
    assert histogram.bucket_counts[0] == 2  # 0.0001 and exactly 0.0005
    assert histogram.bucket_counts[1] == 1
    assert histogram.bucket_counts[len(LATENCY_BUCKETS_S) - 1] == 1  # exactly 1.0
    assert histogram.bucket_counts[-1] == 1  # above every bound
    cumulative = histogram.cumulative_buckets()
    assert [bound for bound, _ in cumulative] == [*LATENCY_BUCKETS_S, math.inf]
    assert [count for _, count in cumulative] == [2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 5]
    assert histogram.count == 5
    assert math.isclose(histogram.sum, 0.0001 + 0.0005 + 0.0006 + 1.0 + 2.5)


def test_every_label_exists_from_the_start() -> None:
    stats = StoreStats(backend="sqlite")
    assert set(stats.stores) == {*STORE_NAMES, OTHER_STORE}
    for figures in stats.stores.values():
        assert set(figures.ops) == set(OPS)
        assert all(op.ok == op.error == op.latency.count == 0 for op in figures.ops.values())
    assert stats.store("no-such-store") is stats.stores[OTHER_STORE]


def test_errors_count_latency_but_not_bytes() -> None:
    figures = LogicalStoreStats("cache")
    figures.record("save", ok=True, seconds=0.001, bytes_written=10)
    figures.record("save", ok=False, seconds=0.002, bytes_written=99)
    assert (figures.ops["save"].ok, figures.ops["save"].error) == (1, 1)
    assert figures.ops["save"].latency.count == 2
    assert figures.bytes_written == 10
    assert not figures.healthy


def test_health_result_reaches_every_store() -> None:
    stats = StoreStats(backend="memory")
    stats.mark_health(True, at=5.0)
    assert stats.healthy and all(f.healthy for f in stats.stores.values())
    stats.mark_health(False, at=6.0)
    assert not stats.healthy and not any(f.healthy for f in stats.stores.values())
    assert stats.last_health_check_at == 6.0
