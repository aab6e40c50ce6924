"""Health history: hourly roll-up with correct means, bounds, persistence through the store,
export, trim and the periodic task."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import time
from collections.abc import AsyncIterator

import pytest

from bot.ops.history import CSV_COLUMNS, HOUR_S, HealthHistory, HistoryPoint
from bot.store import MemoryStore, Namespace
from tests.fakes import FakeClock
from tests.ops.fakes import make_snapshot

DAY_S = 86_400
# An hour boundary, so that "the hour of" a time is easy to reason about.
T0 = 1_700_006_400.0
assert T0 % HOUR_S == 0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def store(clock: FakeClock) -> AsyncIterator[MemoryStore]:
    store = MemoryStore(clock=clock)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
def namespace(store: MemoryStore) -> Namespace:
    return store.namespace("history")


async def fill(history: HealthHistory, clock: FakeClock, seconds: float, step: float) -> int:
    """Record a snapshot every `step` s for `seconds`, the clock following; the i-th snapshot
    has active_conversations = i and error_rate alternating 0 / 1."""
    count = 0
    end = clock.now + seconds
    while clock.now < end:
        await history.record(
            make_snapshot(clock.now, active_conversations=count, error_rate=float(count % 2))
        )
        count += 1
        clock.now += step
    return count


async def test_snapshots_older_than_a_day_become_hourly_means(clock: FakeClock) -> None:
    history = HealthHistory(clock=clock, interval_s=30)
    # The last snapshot is taken at T0 + 26 h exactly.
    recorded = await fill(history, clock, 26 * HOUR_S + 1, 30)
    assert recorded == 26 * 120 + 1
    points = history.points()
    hourly = [p for p in points if p.samples > 1]
    raw = [p for p in points if p.samples == 1]
    # Now is T0 + 26 h: hours [T0, T0+1h) and [T0+1h, T0+2h) ended more than 24 h ago.
    assert [p.timestamp for p in hourly] == [T0, T0 + HOUR_S]
    assert all(p.samples == 120 for p in hourly)
    # Hour 0 holds snapshots 0..119, hour 1 holds 120..239: the mean of each run.
    assert hourly[0].active_conversations == pytest.approx(59.5)
    assert hourly[1].active_conversations == pytest.approx(179.5)
    assert hourly[0].error_rate == pytest.approx(0.5)
    assert hourly[0].rss_bytes == pytest.approx(100 * 1024 * 1024)
    assert len(raw) == 24 * 120 + 1
    assert raw[0].timestamp == T0 + 2 * HOUR_S
    assert history.stats.aggregated_hours_total == 2
    assert len(history) == 2 + 24 * 120 + 1


async def test_memory_stays_bounded_over_a_week(clock: FakeClock, store: MemoryStore) -> None:
    history = HealthHistory(clock=clock, store=store.namespace("history"), interval_s=300)
    await fill(history, clock, 9 * DAY_S, 300)
    points = history.points()
    hourly = [p for p in points if p.samples > 1]
    assert len(hourly) <= 7 * 24
    assert min(p.timestamp for p in points) >= clock.now - 7 * DAY_S - HOUR_S
    assert len(points) <= history.max_raw + history.max_hours
    clock.now -= 300  # the time of the last snapshot, when memory was last pruned
    await store.cleanup_expired()
    keys, _ = store.size
    # The store holds what memory holds: rolled-up snapshots are deleted, old hours expire.
    assert keys == len(points)


async def test_recording_faster_than_the_interval_keeps_the_bound(clock: FakeClock) -> None:
    history = HealthHistory(clock=clock, interval_s=3600, raw_window_s=7200, retention_s=7200)
    for i in range(history.max_raw + 10):
        await history.record(make_snapshot(clock.now + i * 0.001))
    assert len(history) == history.max_raw
    assert history.stats.dropped_total == 10


async def test_persistence_round_trip(
    clock: FakeClock, namespace: Namespace, store: MemoryStore
) -> None:
    history = HealthHistory(clock=clock, store=namespace, interval_s=60)
    await fill(history, clock, 27 * HOUR_S, 60)
    before = history.points()
    assert any(p.samples > 1 for p in before)

    clock.now -= 60  # back to the time of the last snapshot, so nothing more has aged
    restored = HealthHistory(clock=clock, store=namespace, interval_s=60)
    assert await restored.load() == len(before)
    assert restored.points() == before

    # A snapshot record is small: one key per snapshot, a few hundred bytes.
    items = await namespace.items("raw:")
    assert max(len(value) for _, value in items) < 400
    assert all(key.startswith(("raw:", "hour:")) for key in await namespace.keys())


async def test_load_does_not_count_an_hour_twice(clock: FakeClock, namespace: Namespace) -> None:
    history = HealthHistory(clock=clock, store=namespace, interval_s=600)
    await fill(history, clock, 26 * HOUR_S, 600)
    first_hour = history.points()[0]
    assert first_hour.samples == 6
    # Rolling up deleted the hour's snapshot keys ...
    assert not [
        key for key in await namespace.keys("raw:") if key < f"raw:{int(T0 + HOUR_S) * 1000:015d}"
    ]
    # ... but a stop between the two writes would leave one behind: it must not count again.
    leftover = HistoryPoint.from_snapshot(make_snapshot(T0 + 30, active_conversations=10_000))
    await namespace.set_json(f"raw:{int((T0 + 30) * 1000):015d}", leftover.encode())
    restored = HealthHistory(clock=clock, store=namespace, interval_s=600)
    await restored.load()
    assert restored.points()[0] == first_hour
    assert f"raw:{int((T0 + 30) * 1000):015d}" not in await namespace.keys()


async def test_load_rolls_up_what_aged_while_stopped(
    clock: FakeClock, namespace: Namespace
) -> None:
    history = HealthHistory(clock=clock, store=namespace, interval_s=600)
    await fill(history, clock, 3 * HOUR_S, 600)
    assert all(p.samples == 1 for p in history.points())
    clock.now += DAY_S  # down for a day
    restored = HealthHistory(clock=clock, store=namespace, interval_s=600)
    await restored.load()
    assert [p.samples for p in restored.points()] == [6, 6, 6]
    # ... and wrote those hourly points, so a second restart finds them.
    again = HealthHistory(clock=clock, store=namespace, interval_s=600)
    await again.load()
    assert again.points() == restored.points()


async def test_unreadable_entries_are_skipped(clock: FakeClock, namespace: Namespace) -> None:
    history = HealthHistory(clock=clock, store=namespace)
    await history.record(make_snapshot(clock.now))
    await namespace.set("raw:000000000000001", b"not json")
    await namespace.set_json("raw:000000000000002", {"v": 1, "p": [1, 2]})
    await namespace.set_json("hour:0000000001", {"v": 99, "p": []})
    restored = HealthHistory(clock=clock, store=namespace)
    assert await restored.load() == 1
    assert restored.stats.corrupt_total == 3


async def test_a_failing_store_keeps_the_history_in_memory(
    clock: FakeClock, store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    history = HealthHistory(clock=clock, store=store.namespace("history"))
    await store.close()
    await history.record(make_snapshot(clock.now))
    await history.record(make_snapshot(clock.now + 30))
    assert len(history) == 2
    assert history.stats.persist_errors_total == 2
    assert caplog.text.count("health history not saved") == 1  # once per failing streak
    assert await HealthHistory(clock=clock, store=store.namespace("history")).load() == 0


async def test_export_csv_rows_are_ordered_and_typed(clock: FakeClock) -> None:
    history = HealthHistory(clock=clock, interval_s=600)
    # Recorded out of order: the export still comes out oldest first.
    for offset in (1200, 0, 600):
        await history.record(make_snapshot(T0 + offset, response_p95_s=offset / 1000))
    text = history.export(fmt="csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [float(r["timestamp"]) for r in rows] == [T0, T0 + 600, T0 + 1200]
    assert [r["p95_ms"] for r in rows] == ["0.0", "600.0", "1200.0"]
    assert rows[0]["time"] == "2023-11-15T00:00:00Z"
    assert rows[0]["rss_mb"] == "100.0"
    assert rows[0]["heap_mb"] == "50.0"
    assert rows[0]["servers"] == "4"
    assert rows[0]["quota_day_remaining"] == "400"
    assert rows[0]["samples"] == "1"
    # Bounds are inclusive; JSON has the same rows.
    points = json.loads(history.export(T0 + 600, T0 + 1200, "json"))["points"]
    assert [p["timestamp"] for p in points] == [T0 + 600, T0 + 1200]
    with pytest.raises(ValueError, match="unknown format"):
        history.export(fmt="xml")
    with pytest.raises(ValueError, match="from must not be after to"):
        history.export(T0 + 1, T0)


async def test_trim_drops_old_points_from_memory_and_store(
    clock: FakeClock, namespace: Namespace
) -> None:
    history = HealthHistory(clock=clock, store=namespace, interval_s=600)
    await fill(history, clock, 30 * HOUR_S, 600)
    keys_before = len(await namespace.keys())
    removed = await history.trim(12 * HOUR_S)
    assert removed > 0
    assert min(p.timestamp for p in history.points()) >= clock.now - 12 * HOUR_S
    assert len(await namespace.keys()) == keys_before - removed
    restored = HealthHistory(clock=clock, store=namespace, interval_s=600)
    await restored.load()
    assert restored.points() == history.points()


async def test_run_records_every_interval_until_stopped() -> None:
    taken = 0

    def snapshot() -> object:
        nonlocal taken
        taken += 1
        return make_snapshot(time.time())

    history = HealthHistory(snapshot, interval_s=0.01)  # type: ignore[arg-type]
    task = asyncio.create_task(history.run())
    while taken < 3:  # noqa: ASYNC110 - polling a counter the task bumps
        await asyncio.sleep(0.01)
    await history.stop()
    assert task.done()
    assert len(history) == taken
    # A stop before the run starts makes the run return at once.
    early = HealthHistory(snapshot, interval_s=0.01)  # type: ignore[arg-type]
    await early.stop()
    await asyncio.wait_for(early.run(), 1)


def test_points_decode_only_their_own_format() -> None:
    point = HistoryPoint.from_snapshot(make_snapshot())
    encoded = json.dumps(point.encode()).encode()
    assert HistoryPoint.decode(encoded) == point
    for bad in (b"[]", b'{"v": 1, "p": [1, true]}', b'{"v": 2}', b"\xff"):
        with pytest.raises(ValueError, match=r"format|values|JSON"):
            HistoryPoint.decode(bad)
    nan = point.encode()
    nan["p"][1] = math.inf
    with pytest.raises(ValueError, match="finite"):
        HistoryPoint.decode(json.dumps(nan).encode())


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        HealthHistory(interval_s=0)
    with pytest.raises(ValueError, match="retention_s"):
        HealthHistory(retention_s=60, raw_window_s=3600)
