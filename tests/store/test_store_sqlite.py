"""What only the SQLite backend promises: compression, transactions, pragmas, its thread."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import SqliteStore, StoreError
from bot.store.sqlite import _prefix_upper_bound


def raw(path: Path) -> sqlite3.Connection:
    """A second connection, the way an operator's sqlite3 shell would look at the file."""
    return sqlite3.connect(path, isolation_level=None)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "data" / "store.db", cleanup_interval_s=3600) as opened:
        yield opened


async def test_large_values_are_compressed_when_it_pays(store: SqliteStore) -> None:
    compressible = b"conversation " * 1000  # 13 kB
    incompressible = random.Random(1).randbytes(20_000)
    small = b"x" * 10_240  # at the threshold: not above it
    await store.set_many({"big": compressible, "noise": incompressible, "small": small})

    with raw(store.path) as conn:
        rows = dict(conn.execute("SELECT key, compressed FROM kv").fetchall())
        stored = conn.execute("SELECT length(value) FROM kv WHERE key = 'big'").fetchone()[0]
    assert rows == {"big": 1, "noise": 0, "small": 0}
    assert stored < len(compressible) // 10
    assert await store.get("big") == compressible
    assert await store.get("noise") == incompressible
    assert store.stats.store("other").bytes_written == len(compressible) + 20_000 + 10_240


async def test_compression_can_be_switched_off(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "s.db", compress_threshold_bytes=None) as store:
        await store.set("big", b"a" * 50_000)
    with raw(tmp_path / "s.db") as conn:
        assert conn.execute("SELECT compressed FROM kv").fetchone() == (0,)


async def test_data_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SqliteStore(path) as store:
        await store.namespace("history").set_json("snap", [1, 2, 3], ttl_s=3600)
    async with SqliteStore(path) as store:
        assert await store.namespace("history").get_json("snap") == [1, 2, 3]
        assert store.stats.recovered_from_corruption == 0


async def test_wal_mode_and_synchronous_setting(tmp_path: Path) -> None:
    for setting, expected in (("NORMAL", 1), ("FULL", 2)):
        path = tmp_path / f"{setting}.db"
        async with SqliteStore(path, synchronous=setting) as store:  # type: ignore[arg-type]
            conn = store._conn
            assert conn is not None

            def read_level(c: sqlite3.Connection = conn) -> tuple[int]:
                # On the store's own thread and connection: the setting is per connection.
                row: tuple[int] = c.execute("PRAGMA synchronous").fetchone()
                return row

            assert await store._call(read_level) == (expected,)
        with raw(path) as check:
            assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStore(tmp_path / "x.db", synchronous="OFF")  # type: ignore[arg-type]


async def test_set_many_is_all_or_nothing(store: SqliteStore) -> None:
    await store.set("a", b"old")
    with raw(store.path) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON kv WHEN NEW.key = 'boom' "
            "BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
        )
    with pytest.raises(StoreError, match="refused by test"):
        await store.set_many({"a": b"new", "b": b"2", "boom": b"3"})
    figures = store.stats.store("other")
    assert figures.ops["save"].error == 1
    assert not figures.healthy
    assert figures.last_error is not None and "refused by test" in figures.last_error

    assert await store.items() == [("a", b"old")]
    assert figures.healthy  # the latest operation succeeded
    await store.set("c", b"ok")  # the connection is usable, not stuck in a transaction


async def test_cleanup_deletes_rows_from_the_file(tmp_path: Path) -> None:
    now = [1000.0]
    async with SqliteStore(tmp_path / "s.db", clock=lambda: now[0]) as store:
        await store.set_many({f"k{i}": b"v" for i in range(10)}, ttl_s=5)
        await store.set("keep", b"v")
        now[0] += 5
        with raw(store.path) as conn:
            assert conn.execute("SELECT count(*) FROM kv").fetchone() == (11,)
        assert await store.cleanup_expired() == 10
        with raw(store.path) as conn:
            assert conn.execute("SELECT count(*) FROM kv").fetchone() == (1,)


async def test_cancelled_write_leaves_the_store_usable(store: SqliteStore) -> None:
    writes = [asyncio.create_task(store.set(f"k{i}", b"v" * 5000)) for i in range(50)]
    await asyncio.sleep(0)
    for task in writes[::2]:
        task.cancel()
    await asyncio.gather(*writes, return_exceptions=True)
    await store.set("after", b"ok")
    assert await store.get("after") == b"ok"
    with raw(store.path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_unopenable_path_raises_a_clear_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = SqliteStore(blocker / "store.db")
    with pytest.raises(StoreError, match="cannot open the store database"):
        await store.open()
    assert not store.is_open
    assert not store.stats.healthy


async def test_health_check_fails_when_the_database_refuses_writes(store: SqliteStore) -> None:
    assert await store.health_check() is True
    with raw(store.path) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON store_meta "
            "BEGIN SELECT RAISE(ABORT, 'read only'); END"
        )
    assert await store.health_check() is False
    assert not store.stats.healthy
    assert not store.stats.store("queue").healthy


@pytest.mark.parametrize(
    ("prefix", "upper"),
    [
        ("", None),
        ("ab", "ac"),
        ("a\U0010ffff", "b"),
        ("\U0010ffff\U0010ffff", None),
        ("x\ud7ff", "x\ue000"),
    ],
)
def test_prefix_upper_bound(prefix: str, upper: str | None) -> None:
    assert _prefix_upper_bound(prefix) == upper
