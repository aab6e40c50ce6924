"""Slow operations: the watchdog thread counts event-loop blocks and logs the blocking stack.

Blocking the loop with `time.sleep` inside a coroutine is the fault under test here, not a
wait for a condition.
"""

from __future__ import annotations

import asyncio
import importlib.util
import linecache
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.ops.loop_watchdog import LoopWatchdog
from bot.ops.metrics import Telemetry

WATCHDOG = "bot.ops.loop_watchdog"


async def _eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5.0):
        while not condition():  # noqa: ASYNC110 - polling a figure another thread bumps
            await asyncio.sleep(0.01)


def _blocks(telemetry: Telemetry) -> float:
    value = telemetry.registry.get_sample_value("llmbot_event_loop_blocks_total")
    assert value is not None
    return value


def hold_the_loop_for(seconds: float) -> None:
    time.sleep(seconds)  # the blocking call a careless handler might make


async def careless_handler() -> None:
    hold_the_loop_for(0.25)


async def test_a_blocked_loop_is_counted_and_logged_with_the_blocking_function(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=WATCHDOG)
    telemetry = Telemetry(block_threshold_s=0.1)
    await telemetry.start()
    try:
        assert _blocks(telemetry) == 0
        await careless_handler()
        await _eventually(lambda: _blocks(telemetry) >= 1)
        await _eventually(lambda: any("ran again" in r.getMessage() for r in caplog.records))
    finally:
        await telemetry.stop()

    reports = [
        r.getMessage() for r in caplog.records if "blocked for over 100 ms" in r.getMessage()
    ]
    assert reports, [r.getMessage() for r in caplog.records]
    first_line, *stack = reports[0].splitlines()
    assert " in hold_the_loop_for (" in first_line  # the innermost Python frame
    assert any("careless_handler" in line for line in stack)
    assert any("time.sleep(seconds)" in line for line in stack)


async def test_a_busy_but_yielding_loop_is_not_flagged() -> None:
    # A threshold with room for a busy machine's scheduling hiccups; the work yields every 20 ms.
    telemetry = Telemetry(block_threshold_s=0.2)
    await telemetry.start()
    try:
        for _ in range(20):  # 20 ms of work, then a yield: 0.4 s of a busy, healthy loop
            hold_the_loop_for(0.02)
            await asyncio.sleep(0)
    finally:
        await telemetry.stop()

    assert _blocks(telemetry) == 0


async def test_stacks_are_logged_at_most_once_per_interval_and_every_block_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=WATCHDOG)
    counted: list[None] = []
    watchdog = LoopWatchdog(0.1, lambda: counted.append(None), log_interval_s=60, max_frames=3)
    await watchdog.start()
    try:
        for n in range(1, 4):
            ticks = watchdog.ticks
            hold_the_loop_for(0.25)
            await _eventually(lambda n=n: len(counted) >= n)
            # The loop ran again (the tick), so that the next block is a new one.
            await _eventually(lambda ticks=ticks: watchdog.ticks > ticks)
    finally:
        await watchdog.stop()

    assert len(counted) == watchdog.blocks >= 3
    reports = [r.getMessage() for r in caplog.records if "blocked for over" in r.getMessage()]
    assert len(reports) == 1
    assert len([line for line in reports[0].splitlines() if line.startswith("  File")]) <= 3


def test_a_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="threshold"):
        LoopWatchdog(0, lambda: None)


async def test_a_reported_stack_shows_source_lines_without_keeping_the_files_in_linecache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A module that no traceback has read yet: the report must show its line, and linecache
    # (kept for the life of the process) must not hold the file afterwards.
    source = tmp_path / "slow_plugin.py"
    source.write_text(
        "import time\n\n\nasync def slow_plugin_handler():\n"
        "    time.sleep(0.25)  # the plugin's blocking call\n"
    )
    spec = importlib.util.spec_from_file_location("slow_plugin", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    caplog.set_level(logging.WARNING, logger=WATCHDOG)
    cached_before = set(linecache.cache)
    watchdog = LoopWatchdog(0.1, lambda: None, log_interval_s=60)
    await watchdog.start()
    try:
        await module.slow_plugin_handler()
        await _eventually(lambda: any("ran again" in r.getMessage() for r in caplog.records))
    finally:
        await watchdog.stop()

    reports = [r.getMessage() for r in caplog.records if "blocked for over" in r.getMessage()]
    assert reports
    assert "time.sleep(0.25)  # the plugin's blocking call" in reports[0]
    assert f'File "{source}", line 5, in slow_plugin_handler' in reports[0]
    assert str(source) not in linecache.cache
    on_stack = set(re.findall(r'File "([^"]+)"', reports[0]))
    assert str(source) in on_stack
    assert not (on_stack - cached_before) & set(linecache.cache)  # no file on it was kept
