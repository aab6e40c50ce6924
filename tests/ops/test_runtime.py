"""Process figures: the heap estimate sees Python objects, the data disk, tasks, build info."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import pytest

from bot.ops.metrics import MetricSources
from bot.ops.runtime import (
    HEAP_REFRESH_S,
    Throttled,
    asyncio_task_count,
    data_disk_usage,
    detect_build_info,
    python_heap_bytes,
    throttled_heap_bytes,
)
from tests.fakes import FakeClock


@pytest.mark.skipif(sys.platform != "linux", reason="the estimate is documented for Linux")
def test_heap_estimate_grows_with_small_python_objects() -> None:
    before = python_heap_bytes()
    assert before > 0
    # Small objects live in pymalloc's arenas, which malloc statistics alone do not see.
    hoard = [{"n": i} for i in range(300_000)]
    grown = python_heap_bytes()
    assert grown - before > 30 * 1024 * 1024, (before, grown)
    del hoard


@pytest.mark.skipif(sys.platform != "linux", reason="the estimate is documented for Linux")
def test_exported_heap_estimate_is_read_again_only_after_the_refresh_interval() -> None:
    clock = FakeClock()
    heap = throttled_heap_bytes(clock=clock)
    before = heap()
    hoard = [{"n": i} for i in range(300_000)]
    clock.now += HEAP_REFRESH_S - 0.01
    assert heap() == before  # still the value read at the start
    clock.now += 0.01
    assert heap() - before > 30 * 1024 * 1024
    del hoard


def test_metric_sources_export_the_throttled_heap_estimate() -> None:
    heap = MetricSources().heap_bytes
    assert isinstance(heap, Throttled)
    assert heap.interval_s == HEAP_REFRESH_S


def test_throttled_reads_on_first_use_and_once_per_interval() -> None:
    clock = FakeClock(100.0)
    values = iter(range(1, 10))
    reads: list[float] = []

    def read() -> int:
        reads.append(clock.now)
        return next(values)

    throttled = Throttled(read, 5.0, clock=clock)
    assert reads == []  # nothing read before the first call
    assert throttled() == 1
    clock.now = 104.999
    assert throttled() == 1
    clock.now = 105.0
    assert throttled() == 2
    clock.now = 109.0
    assert throttled() == 2  # the interval counts from the latest read, not the first
    clock.now = 200.0
    assert throttled() == 3
    assert reads == [100.0, 105.0, 200.0]


def test_throttled_keeps_no_failed_read() -> None:
    clock = FakeClock()
    outcomes: list[int | Exception] = [OSError("gone"), 7, 8]

    def read() -> int:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    throttled = Throttled(read, 5.0, clock=clock)
    with pytest.raises(OSError, match="gone"):
        throttled()
    assert throttled() == 7  # read again at once: the failure was not kept
    assert throttled() == 7
    with pytest.raises(ValueError, match="negative"):
        Throttled(read, -1.0)


def test_data_disk_usage(tmp_path: Path) -> None:
    usage = data_disk_usage(tmp_path)
    assert 0 < usage.free_bytes <= usage.size_bytes
    # Before the store creates it, the data directory's parent file system is reported.
    assert data_disk_usage(tmp_path / "not" / "yet").size_bytes == usage.size_bytes
    assert data_disk_usage(None).size_bytes == 0


async def test_asyncio_task_count() -> None:
    async def idle() -> None:
        await asyncio.sleep(10)

    base = asyncio_task_count()
    assert base >= 1  # this test
    task = asyncio.create_task(idle())
    await asyncio.sleep(0)
    assert asyncio_task_count() == base + 1
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_task_count_outside_a_loop_is_zero() -> None:
    assert asyncio_task_count() == 0


def test_build_info_names_the_installed_versions() -> None:
    info = detect_build_info()
    assert info.version != "unknown"  # the project is installed (editable) in its venv
    assert info.python == ".".join(map(str, sys.version_info[:3]))
    assert info.hikari != "unknown"
    assert info.genai != "unknown"
