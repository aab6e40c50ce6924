"""A damaged database file is moved aside at open(), logged once, and replaced by a fresh one."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.store import SqliteStore


async def make_database(path: Path, entries: int = 2000) -> None:
    rng = random.Random(7)
    async with SqliteStore(path) as store:
        await store.set_many({f"k{i}": rng.randbytes(300) for i in range(entries)})


def moved_copies(directory: Path) -> list[Path]:
    """The moved-aside databases; their -wal/-shm side files travel with them."""
    return sorted(
        path
        for path in directory.glob("store.db.corrupt-*")
        if not path.name.endswith(("-wal", "-shm"))
    )


def overwrite_with_garbage(path: Path) -> None:
    path.write_bytes(random.Random(1).randbytes(path.stat().st_size))


def truncate_to_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def truncate_inside_header(path: Path) -> None:
    os.truncate(path, 50)


def scribble_over_pages(path: Path) -> None:
    # The header stays valid, so only the integrity check can notice.
    with path.open("r+b") as file:
        file.seek(4096 * 3)
        file.write(random.Random(2).randbytes(4096 * 4))


def integrity(path: Path) -> list[tuple[str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchall()


@pytest.mark.parametrize(
    "damage",
    [overwrite_with_garbage, truncate_to_half, truncate_inside_header, scribble_over_pages],
)
async def test_damaged_file_is_moved_aside_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[Path], None]
) -> None:
    path = tmp_path / "store.db"
    await make_database(path)
    damage(path)
    damaged_bytes = path.read_bytes()

    caplog.set_level(logging.WARNING, logger="bot.store")
    async with SqliteStore(path) as store:
        assert store.stats.recovered_from_corruption == 1
        assert store.stats.healthy
        assert await store.get("k1") is None  # a fresh, empty database
        await store.set("k1", b"new")
        assert await store.get("k1") == b"new"
        assert await store.health_check() is True

    (moved,) = moved_copies(tmp_path)
    assert moved.name.endswith("Z")  # <name>.corrupt-<UTC timestamp>
    assert moved.read_bytes() == damaged_bytes
    assert store.stats.last_corrupt_path == str(moved)

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "damaged" in message and str(path) in message and str(moved) in message
    assert "\n" not in message
    assert integrity(path) == [("ok",)]


async def test_side_files_move_with_the_database(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"this is not sqlite" * 100)
    (tmp_path / "store.db-wal").write_bytes(b"old wal")
    (tmp_path / "store.db-shm").write_bytes(b"old shm")
    async with SqliteStore(path) as store:
        await store.set("k", b"v")
    (moved,) = moved_copies(tmp_path)
    # The WAL may hold the newest data: it must arrive untouched. The -shm is only an index
    # SQLite rebuilds, so its content does not matter.
    assert moved.with_name(moved.name + "-wal").read_bytes() == b"old wal"
    assert moved.with_name(moved.name + "-shm").exists()


async def test_repeated_damage_never_overwrites_an_earlier_copy(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    for attempt in range(3):
        path.write_bytes(b"garbage %d" % attempt * 500)
        async with SqliteStore(path):
            pass
    assert len(moved_copies(tmp_path)) == 3


async def test_an_empty_file_is_a_valid_new_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "store.db"
    path.touch()
    async with SqliteStore(path) as store:
        await store.set("k", b"v")
        assert store.stats.recovered_from_corruption == 0
    assert moved_copies(tmp_path) == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def replace_with_another_database(path: Path) -> None:
    other = path.with_name("other.db")
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    os.replace(other, path)


def remove_file(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize(
    "damage", [overwrite_with_garbage, replace_with_another_database, remove_file]
)
async def test_damage_under_a_running_store_fails_the_next_health_probe(
    tmp_path: Path, damage: Callable[[Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue #16 item 12: SQLite itself would not notice for minutes (WAL + page cache)."""
    path = tmp_path / "store.db"
    async with SqliteStore(path) as store:
        await store.set_many({f"k{i}": b"v" * 100 for i in range(50)})
        assert await store.health_check()
        assert store.stats.healthy

        damage(path)

        with caplog.at_level(logging.WARNING, logger="bot.store"):
            assert not await store.health_check()
        assert not store.stats.healthy
        assert any("restart the bot" in r.getMessage() for r in caplog.records)


async def test_the_health_probe_keeps_sqlites_locks(tmp_path: Path) -> None:
    """Closing any descriptor of a file drops this process's POSIX locks on it: a probe that
    opened and closed bot.db let another connection think it was the last one and delete the
    WAL the bot was still writing into."""
    path = tmp_path / "store.db"
    async with SqliteStore(path) as store:
        await store.set_many({"a": b"1"})
        assert await store.health_check()
        # Another process (the sqlite3 shell, a backup tool) reads the database and closes.
        reader = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        reader += "c.execute('SELECT count(*) FROM kv').fetchall(); c.close()"
        child = await asyncio.create_subprocess_exec(sys.executable, "-c", reader, str(path))
        assert await asyncio.wait_for(child.wait(), timeout=30) == 0
        assert (tmp_path / "store.db-wal").exists(), "the other process deleted our WAL"
        await store.set_many({"b": b"2"})
    async with SqliteStore(path) as again:
        assert await again.get("b") == b"2"
