"""`python -m bot fleet`'s plan and supervisor (bot/fleet.py) with real child processes: a small
Python child stands in for `bot run` (the whole fleet runs in tests/e2e/test_fleet.py)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings, load_settings
from bot.fleet import FleetSupervisor, plan_fleet

# Records its settings, exits 1 at its first start ("a crash"), and at the second start waits for
# SIGTERM and records it. EXIT_CODE overrides the first exit code.
CHILD = """
import os, signal, sys, time
from pathlib import Path
data = Path(os.environ["DATA_DIR"])
starts = data / "starts"
n = int(starts.read_text()) + 1 if starts.exists() else 1
starts.write_text(str(n))
(data / "env.txt").write_text(
    os.environ["DISCORD_SHARD_IDS"] + " " + os.environ["DISCORD_SHARD_COUNT"] + " "
    + os.environ["OPS_PORT"]
)
if n == 1:
    sys.exit(int(os.environ.get("EXIT_CODE", "1")))
def stop(*_):
    (data / "terminated").write_text("yes")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
(data / "running").write_text("yes")
while True:
    time.sleep(1)
"""


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "_env_file": None,
        "redis_url": "redis://:pw@127.0.0.1:6379/0",
        "ops_port": 19464,
        "data_dir": tmp_path / "data",
    }
    values.update(overrides)
    return load_settings(**values)


def test_the_plan_splits_shards_ports_and_folders(tmp_path: Path) -> None:
    plan = plan_fleet(_settings(tmp_path), 3, 8, None)
    assert [p.shard_ids for p in plan.processes] == [(0, 1), (2, 3, 4), (5, 6, 7)]
    assert [p.shards_text for p in plan.processes] == ["0-1", "2-4", "5-7"]
    assert [p.ops_port for p in plan.processes] == [19464, 19465, 19466]
    assert [p.data_dir.name for p in plan.processes] == ["process-0", "process-1", "process-2"]
    assert plan.targets_file == tmp_path / "data" / "fleet-targets.json"
    # Without --shard-count: DISCORD_SHARD_COUNT, else one shard per process.
    assert plan_fleet(_settings(tmp_path, discord_shard_count=4), 2, None, None).shard_count == 4
    assert plan_fleet(_settings(tmp_path), 2, None, None).shard_count == 2


@pytest.mark.parametrize(
    ("overrides", "processes", "shards", "message"),
    [
        ({"redis_url": None}, 2, None, "python -m bot fleet needs REDIS_URL"),
        ({}, 3, 2, "--shard-count 2 is less than --processes 3"),
        ({}, 0, None, "--processes must be at least 1"),
        ({"ops_port": 0}, 2, None, "OPS_PORT = 0 cannot start 2 consecutive ops ports"),
    ],
)
def test_a_plan_that_cannot_work_is_one_line(
    tmp_path: Path, overrides: dict[str, object], processes: int, shards: int | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        plan_fleet(_settings(tmp_path, **overrides), processes, shards, None)
    assert "\n" not in str(caught.value) and "pw@" not in str(caught.value)


async def _until(check: object, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    assert callable(check)
    while not check():  # files written by other processes: nothing to wait on but them
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_children_are_restarted_and_stopped_with_sigterm(tmp_path: Path) -> None:
    plan = plan_fleet(_settings(tmp_path), 2, 4, None)
    supervisor = FleetSupervisor(plan, command=(sys.executable, "-c", CHILD), first_backoff_s=0.2)
    run = asyncio.create_task(supervisor.run(grace_s=10))
    folders = [p.data_dir for p in plan.processes]
    await _until(lambda: all((f / "running").exists() for f in folders), 20)
    # Each crashed once and was started again, with its own shards and port.
    assert [(f / "starts").read_text() for f in folders] == ["2", "2"]
    assert [(f / "env.txt").read_text() for f in folders] == ["0,1 4 19464", "2,3 4 19465"]
    assert [c.exit_codes for c in supervisor.children] == [[1], [1]]
    assert [c.restarts for c in supervisor.children] == [1, 1]
    targets = json.loads(plan.targets_file.read_text())
    assert targets == [
        {"targets": ["127.0.0.1:19464"], "labels": {"fleet_process": "0", "shards": "0-1"}},
        {"targets": ["127.0.0.1:19465"], "labels": {"fleet_process": "1", "shards": "2-3"}},
    ]
    supervisor.stop()
    assert await asyncio.wait_for(run, 15) == 0
    assert all((f / "terminated").exists() for f in folders)  # SIGTERM reached each child
    assert [c.exit_codes for c in supervisor.children] == [[1, 0], [1, 0]]


async def test_a_configuration_mistake_in_a_child_stops_the_fleet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXIT_CODE", "2")  # every child's first start: "invalid settings"
    plan = plan_fleet(_settings(tmp_path), 2, None, None)
    supervisor = FleetSupervisor(plan, command=(sys.executable, "-c", CHILD), first_backoff_s=0.2)
    assert await asyncio.wait_for(supervisor.run(grace_s=10), 20) == 2
    assert all(c.restarts == 0 for c in supervisor.children)
