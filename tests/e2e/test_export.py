"""The health history as an operator takes it out: `python -m bot export` reading the store
the bot wrote under DATA_DIR, `GET /status/history` on a running bot, and the hourly
averages that snapshots older than a day become."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

import aiohttp

from bot.app import BotApp
from bot.emulator.discord import DiscordEmulator
from bot.ops.history import CSV_COLUMNS, HOUR_S, HealthHistory, HistoryPoint
from bot.store import SqliteStore
from tests.ops.fakes import make_snapshot

SETTING_PREFIXES: Final = (
    "DISCORD_",
    "GEMINI_",
    "GOOGLE_",
    "OTEL_",
    "OPS_",
    "LOG_",
    "DATA_DIR",
    "HEALTH_",
)
SNAPSHOT_INTERVAL_S: Final = 0.2


async def run_export(cwd: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m bot export ARGS` with DATA_DIR set, without blocking the emulators' loop."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    env["DATA_DIR"] = str(data_dir)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "export",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


def csv_rows(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == list(CSV_COLUMNS)
    return list(reader)


def iso(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def assert_rows_match(rows: list[dict[str, str]], points: list[HistoryPoint]) -> None:
    """CSV rows are the points, in time order, in the documented columns and units."""
    assert len(rows) == len(points)
    stamps = [float(row["timestamp"]) for row in rows]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    for row, point in zip(rows, points, strict=True):
        assert float(row["timestamp"]) == round(point.timestamp, 3)
        assert row["time"] == iso(point.timestamp)
        assert float(row["rss_mb"]) == round(point.rss_bytes / 1024 / 1024, 2)
        assert float(row["active_conversations"]) == round(point.active_conversations, 2)
        assert float(row["servers"]) == round(point.guilds, 2)
        assert int(row["samples"]) == point.samples


async def dm_answered(discord: DiscordEmulator, app: BotApp) -> None:
    """One user asks in a DM and is answered, so the figures move."""
    user = discord.create_user("ann")
    dm = discord.create_dm(user)
    msg = await discord.send_message(dm, author=user, content="hello")
    await discord.wait_for_reply(int(msg["id"]))
    await discord.wait_for(lambda: bool(app.memory.history(dm)), what="the turn remembered")


async def test_export_reads_what_the_bot_recorded_after_it_stopped(
    tmp_path: Path, start_bot: Callable[..., Any], discord: DiscordEmulator
) -> None:
    app: BotApp = await start_bot(health_snapshot_interval_seconds=SNAPSHOT_INTERVAL_S)
    await dm_answered(discord, app)
    await discord.wait_for(
        lambda: len(app.history) >= 4 and app.history.points()[-1].active_conversations == 1,
        what="snapshots after the answer",
    )
    await app.stop()
    points = app.history.points()
    data_dir = app.settings.data_dir

    # Independent reads of the same store: run side by side.
    since = datetime.fromtimestamp(points[0].timestamp - 60, timezone(timedelta(hours=5.5)))
    today = datetime.now(UTC).date().isoformat()
    written, as_json, bounded, by_date = await asyncio.gather(
        run_export(tmp_path, data_dir, "--format", "csv", "--output", "h.csv"),
        run_export(tmp_path, data_dir),  # JSON to stdout, the last 24 h
        run_export(
            tmp_path,
            data_dir,
            "--format=csv",
            f"--from={points[1].timestamp!r}",
            f"--to={points[3].timestamp!r}",
        ),
        run_export(tmp_path, data_dir, "--format=csv", "--from", since.isoformat(), "--to", today),
    )

    assert written.returncode == 0, written.stderr
    assert f"wrote {len(points)} health history points" in written.stderr
    rows = csv_rows((tmp_path / "h.csv").read_text(encoding="utf-8"))
    assert_rows_match(rows, points)
    assert rows[0]["active_conversations"] == "0"
    assert rows[-1]["active_conversations"] == "1"
    assert all(float(row["rss_mb"]) > 0 for row in rows)

    # JSON: the same points under the same column names.
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["columns"] == list(CSV_COLUMNS)
    assert [list(p) for p in document["points"]] == [list(CSV_COLUMNS)] * len(points)
    assert [str(p["timestamp"]) for p in document["points"]] == [r["timestamp"] for r in rows]

    # Epoch bounds select exactly the points between them, both included; an ISO time with
    # an offset is understood; a bare --to date means the end of that day.
    assert_rows_match(csv_rows(bounded.stdout), points[1:4])
    assert_rows_match(csv_rows(by_date.stdout), points)


async def test_history_endpoint_and_export_agree_on_a_running_bot(
    tmp_path: Path, start_bot: Callable[..., Any], discord: DiscordEmulator
) -> None:
    app: BotApp = await start_bot(health_snapshot_interval_seconds=SNAPSHOT_INTERVAL_S)
    await dm_answered(discord, app)
    await discord.wait_for(lambda: len(app.history) >= 3, what="three snapshots")

    # The CLI reads the running bot's store; the endpoint, taken after, holds at least as much.
    from_store = await run_export(tmp_path, app.settings.data_dir, "--format=csv")
    assert from_store.returncode == 0, from_store.stderr
    exported = csv_rows(from_store.stdout)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{app.ops.url}/status/history?format=csv") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
            served = csv_rows(await response.text())
        points = app.history.points()
        assert len(exported) >= 3
        assert served[: len(exported)] == exported
        assert_rows_match(served, points[: len(served)])

        window = f"from={points[0].timestamp!r}&to={points[1].timestamp!r}"
        async with http.get(f"{app.ops.url}/status/history?format=csv&{window}") as response:
            assert_rows_match(csv_rows(await response.text()), points[:2])


async def test_snapshots_older_than_a_day_are_exported_as_hourly_averages(
    tmp_path: Path,
) -> None:
    now = time.time()
    start = float(math.floor(now / HOUR_S) * HOUR_S - 30 * HOUR_S)  # an hour boundary 30 h ago
    clock: list[float] = [start]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    store = SqliteStore(data_dir / "bot.db")
    await store.open()
    history = HealthHistory(
        store=store.namespace("history"), interval_s=600, clock=lambda: clock[0]
    )
    # Two hours of snapshots every 10 min, taken back then: the i-th has i conversations.
    for i in range(12):
        clock[0] = start + i * 600
        await history.record(
            make_snapshot(clock[0], active_conversations=i, error_rate=i / 100, guilds=2)
        )
    assert [p.samples for p in history.points()] == [1] * 12

    # Now: the next snapshot finds both hours older than a day and rolls each into its mean.
    clock[0] = now
    await history.record(make_snapshot(now, active_conversations=99, guilds=2))
    rows = json.loads(history.export(start, now))["points"]
    assert [(r["time"], r["samples"]) for r in rows] == [
        (iso(start), 6),
        (iso(start + HOUR_S), 6),
        (iso(now), 1),
    ]
    assert [r["active_conversations"] for r in rows] == [2.5, 8.5, 99]  # means of 0..5, 6..11
    assert [r["error_rate"] for r in rows] == [0.025, 0.085, 0.1]
    assert [r["servers"] for r in rows] == [2, 2, 2]
    await store.close()

    # The stored form exports the same rows through the CLI (which rolls up nothing more).
    since = datetime.fromtimestamp(start, UTC).isoformat()
    cli = await run_export(tmp_path, data_dir, "--from", since, "--to", repr(now))
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["points"] == rows
    # The default window is the last 24 h: only the fresh snapshot.
    recent = json.loads((await run_export(tmp_path, data_dir)).stdout)["points"]
    assert recent == rows[-1:]


async def test_export_without_a_store_says_to_run_the_bot_first(tmp_path: Path) -> None:
    data_dir = tmp_path / "never-ran"

    result, backwards = await asyncio.gather(
        run_export(tmp_path, data_dir, "--format=csv"),
        run_export(tmp_path, data_dir, "--from=2025-01-02", "--to=2025-01-01"),
    )

    assert result.returncode == 1
    assert result.stderr == f"error: no history yet under DATA_DIR={data_dir}: run the bot first\n"
    assert result.stdout == ""
    assert not data_dir.exists()  # nothing created on the way
    assert backwards.returncode == 2
    assert "--from must not be after --to" in backwards.stderr
