"""A smoke run of the `fleet` benchmark scenario (3 + 2 + 3 bot processes, redis-servers of its
own), so it cannot rot; the real run is by hand: `python -m benchmarks --only fleet`.
Correctness only: every figure is computed and consistent; none is judged. About 40 s."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from benchmarks.fleet import fleet

pytestmark = pytest.mark.timeout(240)


def test_fleet_scenario_measures_every_part(tmp_path: Path) -> None:
    result = asyncio.run(fleet("smoke", tmp_path))
    quota, cost, ingest = (result.data[k] for k in ("quota", "cost", "ingest"))
    assert quota["rate_limited"] == 0
    assert quota["requests_total"] > 0 and len(quota["answered_by_process"]) == 3
    # Every answer of the Redis side asked Redis for its quota slot and its REST turns.
    assert cost["round_trips_by_op"]["quota"] >= 1.0
    assert cost["round_trips_by_op"]["rest"] >= 1.0
    assert cost["commands_per_answer"] >= cost["round_trips_per_answer"]
    assert math.isfinite(cost["sqlite_us"]) and math.isfinite(cost["redis_us"])
    for name in ("1 process", "2 processes"):
        assert ingest[name]["events_per_s"] > 0
    assert len(result.data["load_average_1m"]) == 4
    assert [row.verdict for row in result.rows[:2]] == ["info", "met"]
