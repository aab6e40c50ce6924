"""Process figures: the heap estimate sees Python objects, the data disk, tasks, build info."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import pytest

from bot.ops.runtime import (
    asyncio_task_count,
    data_disk_usage,
    detect_build_info,
    python_heap_bytes,
)


@pytest.mark.skipif(sys.platform != "linux", reason="the estimate is documented for Linux")
def test_heap_estimate_grows_with_small_python_objects() -> None:
    before = python_heap_bytes()
    assert before > 0
    # Small objects live in pymalloc's arenas, which malloc statistics alone do not see.
    hoard = [{"n": i} for i in range(300_000)]
    grown = python_heap_bytes()
    assert grown - before > 30 * 1024 * 1024, (before, grown)
    del hoard


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
