"""linecache (source lines read by every formatted traceback) is kept under a bound."""

from __future__ import annotations

import asyncio
import linecache
import traceback
from pathlib import Path

import pytest

import bot.ops.metrics.telemetry as telemetry_module
from bot.ops.linecache_bound import linecache_bytes, trim_linecache
from bot.ops.metrics import Telemetry


def a_source_file(folder: Path, name: str, lines: int) -> Path:
    path = folder / f"{name}.py"
    path.write_text("".join(f"x_{i} = {i}  # a line of source\n" for i in range(lines)))
    return path


def read_through_a_traceback(path: Path) -> None:
    """What a logged exception does: format a stack whose frames are in `path`."""
    code = compile(path.read_text() + "raise ValueError('boom')\n", str(path), "exec")
    try:
        exec(code, {})
    except ValueError as exc:
        text = "".join(traceback.format_exception(exc))
    assert str(path) in text


def test_within_the_bound_nothing_is_dropped(tmp_path: Path) -> None:
    path = a_source_file(tmp_path, "small", 10)
    read_through_a_traceback(path)
    assert str(path) in linecache.cache

    assert trim_linecache(max_bytes=linecache_bytes() + 1) == 0
    assert str(path) in linecache.cache


def test_over_the_bound_the_cache_is_emptied(tmp_path: Path) -> None:
    path = a_source_file(tmp_path, "big", 5_000)
    read_through_a_traceback(path)
    held = linecache_bytes()
    assert held >= path.stat().st_size

    assert trim_linecache(max_bytes=path.stat().st_size // 2) == held
    assert str(path) not in linecache.cache
    assert linecache_bytes() == 0
    # The next traceback reads the file again.
    read_through_a_traceback(path)
    assert str(path) in linecache.cache


async def test_the_lag_monitor_keeps_linecache_within_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry_module, "LINECACHE_CHECK_S", 0.05)
    path = a_source_file(tmp_path, "grown", 5_000)
    telemetry = Telemetry(lag_interval_s=0.01, linecache_max_bytes=path.stat().st_size // 2)
    await telemetry.start()
    try:
        read_through_a_traceback(path)
        async with asyncio.timeout(5.0):
            while str(path) in linecache.cache:  # noqa: ASYNC110 - the monitor trims it
                await asyncio.sleep(0.01)
    finally:
        await telemetry.stop()
    assert linecache_bytes() <= path.stat().st_size // 2
