"""A few seconds of the `soak` scenario, so it cannot rot (the real run is 20 minutes, by hand:
`python -m benchmarks --only soak`). Correctness only: samples are taken and every message gets a
final reply; no figure is judged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from benchmarks.soak import SoakSample, fault_plan, slope_per_minute, soak

pytestmark = pytest.mark.timeout(120)


def test_fault_plan_spreads_short_outages_over_the_run() -> None:
    plan = fault_plan(1200)
    assert [p.start_s for p in plan] == [120, 360, 600, 840, 1080]
    assert {p.duration_s for p in plan} == {20}
    assert all(p.kind == "errors" for p in plan)


def test_slope_is_per_minute() -> None:
    samples = [SoakSample(60.0 * i, 100 + 3 * i, 10, 10, 0) for i in range(5)]
    assert slope_per_minute(samples, "rss_bytes") == pytest.approx(3.0)
    assert slope_per_minute(samples, "tasks") == 0


def test_a_short_soak_samples_the_bot_and_every_message_gets_a_final_reply(
    tmp_path: Path,
) -> None:
    result = asyncio.run(soak(8.0, tmp_path))

    data = result.data
    assert len(data["samples"]) >= 3
    for sample in data["samples"]:
        assert sample["rss_bytes"] > 0 and sample["fds"] > 0 and sample["tasks"] > 0
        assert sample["store_bytes"] > 0 and sample["heap_bytes"] > 0
    finals = data["final_replies"]
    assert sum(finals.values()) > 0
    assert finals.get("none", 0) == 0 and finals.get("queued", 0) == 0
    assert data["faults"], "no Gemini fault was injected"
    assert [row.figure for row in result.rows][-1] == "messages with a final reply"
