"""`python -m bot export`: the health history the bot keeps under DATA_DIR, as JSON or CSV.

Reads the same store the bot writes (`DATA_DIR/bot.db`, namespace `history`), so it works
while the bot runs or after it stopped; the rows and columns are those of
`GET /status/history` (`bot.ops.history.CSV_COLUMNS`). Loading rolls up snapshots that aged
past the raw window into hourly points, exactly as the bot does at its next start.

    python -m bot export --format csv --output health.csv            # the last 24 h
    python -m bot export --from 2025-01-01 --to 2025-01-07 --format json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

from bot.config import Settings
from bot.ops.history import HealthHistory, parse_time
from bot.store import SqliteStore

__all__ = ["DEFAULT_SPAN_S", "NoHistory", "add_arguments", "export_history", "main"]

DEFAULT_SPAN_S: Final = 86_400.0
EXIT_OK: Final = 0
EXIT_NO_HISTORY: Final = 1
EXIT_USAGE: Final = 2


class NoHistory(Exception):
    """There is no store file under DATA_DIR (the bot never ran with this DATA_DIR)."""


def _lower_bound(value: str) -> float:
    try:
        return parse_time(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _upper_bound(value: str) -> float:
    try:
        return parse_time(value, end_of_day=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The export subcommand's options."""
    parser.add_argument(
        "--from",
        dest="from_ts",
        type=_lower_bound,
        default=None,
        metavar="TIME",
        help="start: ISO 8601 date/time (UTC unless it says otherwise) or epoch seconds "
        "(default: 24 h before --to)",
    )
    parser.add_argument(
        "--to",
        dest="to_ts",
        type=_upper_bound,
        default=None,
        metavar="TIME",
        help="end, inclusive; a bare date means the end of that day (default: now)",
    )
    parser.add_argument("--format", choices=("json", "csv"), default="json")
    parser.add_argument(
        "--output", type=Path, default=None, metavar="FILE", help="write here (default: stdout)"
    )


async def export_history(
    settings: Settings, from_ts: float, to_ts: float, fmt: str = "json"
) -> tuple[str, int]:
    """The history in [from_ts, to_ts] as text in `fmt`, and the number of points in it."""
    path = settings.data_dir / "bot.db"
    if not path.is_file():
        raise NoHistory(f"no history yet under DATA_DIR={settings.data_dir}: run the bot first")
    with tempfile.TemporaryDirectory(prefix="llmbot-export-") as scratch:
        copy = Path(scratch) / "bot.db"
        await asyncio.to_thread(_snapshot, path, copy)
        return await _export_from(copy, settings, from_ts, to_ts, fmt)


def _snapshot(source: Path, target: Path) -> None:
    """A consistent copy of the bot's database (its WAL included) into `target`, leaving DATA_DIR
    exactly as it was: loading the history rolls it up and prunes it, which must happen on the
    copy, and a damaged file must stay where the bot will find (and move aside) it.

    * No -wal beside it (the bot is stopped and checkpointed): read it as `immutable`, which
      takes no lock and creates no -wal or -shm file.
    * A -wal and its -shm (the bot is running): a read-only connection uses them as they are,
      creating nothing, and reads a consistent snapshot while the bot writes.
    * A -wal without -shm (a crash): the read-only connection would have to create the -shm, so
      the files are copied first and the copy is read.
    """
    wal, shm = Path(f"{source}-wal"), Path(f"{source}-shm")
    if not wal.exists():
        uri = source.resolve().as_uri() + "?immutable=1"
    elif shm.exists():
        uri = source.resolve().as_uri() + "?mode=ro"
    else:
        staged = target.with_name("staged.db")
        shutil.copyfile(source, staged)
        shutil.copyfile(wal, Path(f"{staged}-wal"))
        uri = staged.as_uri()
    try:
        with (
            contextlib.closing(sqlite3.connect(uri, uri=True)) as src,
            contextlib.closing(sqlite3.connect(target)) as dst,
        ):
            src.backup(dst)
    except sqlite3.DatabaseError as exc:
        raise NoHistory(
            f"the database {source} cannot be read ({exc}); the bot moves a damaged file aside "
            "at its next start"
        ) from None


async def _export_from(
    path: Path, settings: Settings, from_ts: float, to_ts: float, fmt: str
) -> tuple[str, int]:
    store = SqliteStore(path, cleanup_interval_s=settings.store_cleanup_interval_seconds)
    await store.open()
    try:
        # The bot's own retention and interval, so loading rolls up and prunes as it would.
        history = HealthHistory(
            store=store.namespace("history"),
            interval_s=settings.health_snapshot_interval_seconds,
            retention_s=settings.health_history_retention_days * 86_400,
        )
        await history.load()
        return history.export(from_ts, to_ts, fmt), len(history.points(from_ts, to_ts))
    finally:
        await store.close()


def main(settings: Settings, args: argparse.Namespace) -> int:
    """Run the export from parsed arguments; returns the exit code."""
    to_ts: float = args.to_ts if args.to_ts is not None else time.time()
    from_ts: float = args.from_ts if args.from_ts is not None else to_ts - DEFAULT_SPAN_S
    if from_ts > to_ts:
        print("error: --from must not be after --to", file=sys.stderr)
        return EXIT_USAGE
    output: Path | None = args.output
    if output is not None and (output.is_dir() or not output.parent.is_dir()):
        problem = "is a folder" if output.is_dir() else "is in a folder that does not exist"
        print(f"error: --output {output} {problem}: give a file path", file=sys.stderr)
        return EXIT_USAGE
    try:
        text, count = asyncio.run(export_history(settings, from_ts, to_ts, args.format))
    except NoHistory as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_HISTORY
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return EXIT_OK
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot write --output {output}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {count} health history points to {output}", file=sys.stderr)
    return EXIT_OK
