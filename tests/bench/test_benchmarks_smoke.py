"""Smoke runs of every benchmark scenario and of `python -m bot loadtest`, so the harness
cannot rot. Correctness only: the figures are computed and consistent, never timed.

The scenarios run once, concurrently, in a module fixture (each starts its own emulators and
bot processes on random ports); the tests then check one result each.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.harness import Result
from benchmarks.report import ANALYSIS_MARKER, existing_analysis, render
from benchmarks.scenarios import SCENARIOS, Options
from bot.loadtest import parse_latency
from bot.ops.percentile import percentile

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Result | BaseException]:
    scratch = tmp_path_factory.mktemp("bench")
    options = Options(mode="smoke", scratch=scratch, instrumentation=True)

    async def run_all() -> list[Result | BaseException]:
        return await asyncio.gather(
            *(scenario(options) for scenario in SCENARIOS.values()), return_exceptions=True
        )

    return dict(zip(SCENARIOS, asyncio.run(run_all()), strict=True))


def _result(results: dict[str, Result | BaseException], name: str) -> Result:
    found = results[name]
    if isinstance(found, BaseException):
        raise found
    assert found.rows, f"{name} produced no rows"
    return found


def test_ingest_measures_both_bots(results: dict[str, Result | BaseException]) -> None:
    data = _result(results, "ingest").data

    # Smoke runs are too short for the 10 ms CPU clock: the figures exist, their size is noise.
    assert data["events"] > 0
    assert math.isfinite(data["bot_us"]) and math.isfinite(data["bare_us"])
    assert set(data["cpu_s"]) == {"bot", "bare hikari"}


def test_answer_path_measures_bot_bare_and_instrumentation(
    results: dict[str, Result | BaseException],
) -> None:
    result = _result(results, "answer")

    assert result.data["bot_us"] > 0, "answering costs the bot no CPU at all?"
    assert result.data["bare_us"] >= 0 and result.data["instr_on_us"] > 0
    assert result.data["spans_received"] > 0, "tracing on exported nothing to the receiver"
    assert result.data["metrics_served"]


def test_added_latency_matches_every_message(results: dict[str, Result | BaseException]) -> None:
    data = _result(results, "latency").data

    assert data["messages"] == 20
    for key in ("added_ms", "before_gemini_ms", "after_gemini_ms"):
        assert all(math.isfinite(v) for v in data[key].values()), key


def test_scrape_series_do_not_depend_on_guilds_or_users(
    results: dict[str, Result | BaseException],
) -> None:
    data = _result(results, "scrape").data

    assert data["pending"] is None, data["pending"]
    small, big = data["worlds"].values()
    assert small["series"] > 0 and small["body_bytes"] > 0
    assert small["series"] == big["series"]


def test_memory_counts_conversations(results: dict[str, Result | BaseException]) -> None:
    data = _result(results, "memory").data

    assert data["answered"] == data["conversations"] * data["turns"] // 2
    assert data["idle_rss"] > 0 and data["loaded_rss"] > 0
    assert data["in_process"]["overhead_bytes_per_conversation"] > 0


def test_quota_is_used_without_429s(results: dict[str, Result | BaseException]) -> None:
    data = _result(results, "quota").data
    rpm = 5

    for run in (data["margin_1.0"], data["margin_0.9"]):
        assert 0 < run["used"] <= run["capacity"]
        assert all(count <= rpm for count in run["windows"].values())
    assert data["margin_0.9"]["rate_limited"] == 0


def test_burst_answers_or_tells_every_message(results: dict[str, Result | BaseException]) -> None:
    data = _result(results, "burst").data

    for run in (data["typing"], data["no_typing"]):
        assert run["untold"] == 0 and not run["timed_out"]
        assert run["answered"] + run["noticed"] == run["messages"] == 50
        assert run["replies_per_s"] > 0 and run["peak_rss"] > 0
        assert run["status_probes"] > 0
        assert sum(run["answers_per_5s"]) == run["answered"]
    assert data["no_typing"]["typing_calls"] == 0


def test_report_keeps_the_hand_written_analysis(
    results: dict[str, Result | BaseException], tmp_path: Path
) -> None:
    path = tmp_path / "RESULTS.md"
    done = [r for r in results.values() if isinstance(r, Result)]
    path.write_text(render(done, {"cores": "2"}, "\n## Analysis\n\nhand-written\n"))

    again = render(done, {"cores": "2"}, existing_analysis(path))

    assert again.count(ANALYSIS_MARKER) == 1
    assert "hand-written" in again
    assert "## 1. Ingest" in again


def test_loadtest_command_prints_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "GEMINI_"))}
    args = ["--concurrency", "2", "--duration", "1", "--rate", "5", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "bot", "loadtest", *args, "--gemini-latency", "uniform:0,0.05"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "p50" in done.stdout and "bot CPU" in done.stdout
    report = json.loads(out.read_text())
    assert report["answered"] > 0 and report["bot_cpu_s"] > 0
    assert report["bot_peak_rss_bytes"] > 0


def test_latency_specs() -> None:
    assert parse_latency("fixed:0.2") == 0.2
    assert parse_latency("0.1") == 0.1
    uniform = parse_latency("uniform:0.1,0.5")
    assert callable(uniform) and all(0.1 <= uniform() <= 0.5 for _ in range(100))
    lognormal = parse_latency("lognormal:0.3,0.5")
    assert callable(lognormal)
    assert 0.2 < sum(lognormal() for _ in range(4000)) / 4000 < 0.4
    with pytest.raises(ValueError, match=r"fixed:0\.2"):
        parse_latency("gaussian:1")


def test_percentile() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))


def test_streaming_measures_first_visible_text_edits_and_429s(
    results: dict[str, Result | BaseException],
) -> None:
    data = _result(results, "streaming").data

    assert data["answers"] == 20
    streamed, whole = data["first_visible_ms"]["streamed"], data["first_visible_ms"]["whole"]
    # Streamed answers show their first words before the 4 s stream ends; whole ones after it.
    assert 0 < streamed["p50"] < whole["p50"]
    assert whole["p50"] >= 4000
    assert data["edits_per_answer"]["streamed"] >= 1
    assert data["edits_per_answer"]["whole"] == 0
    assert data["rate_limited"] == {"streamed": 0, "whole": 0, "whole over SSE": 0}
    assert set(data["cpu_us"]) == {"streamed", "whole", "whole over SSE"}
