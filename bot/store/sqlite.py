"""The default store: one SQLite file in WAL mode, worked on by one dedicated thread.

Durability: every set/set_many is one transaction, and it has been committed before the
awaiting caller resumes. With journal_mode=WAL and synchronous=NORMAL a commit is appended to
the -wal file with write(2) but not fsync'd; the SQLite docs (pragma.html#pragma_synchronous)
state that "transactions are durable across application crashes regardless of the synchronous
setting or journal mode", and that WAL+NORMAL "is always consistent" but "might roll back
following a power loss or system crash". So NORMAL keeps every acknowledged write through
kill -9 or an OOM kill (the data sits in the OS page cache, which outlives the process) and
only an OS crash/power cut can lose the last commits, never corrupt the file. That fits what
we keep (conversation memory, quota counters, cache, queue, history): FULL would add one fsync
per write for a failure the host rarely has. Pass synchronous="FULL" to cover power loss too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal, ParamSpec, TypeVar

from bot.store.base import KeyValueStore, StoreError

__all__ = ["SqliteStore"]

logger = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Bumped when the schema changes, so a later version can migrate an old file.
SCHEMA_VERSION: Final = 1

_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS kv (
        key        TEXT PRIMARY KEY NOT NULL,
        value      BLOB NOT NULL,
        compressed INTEGER NOT NULL DEFAULT 0,  -- 1: value is zlib-compressed
        expires_at REAL                         -- absolute epoch seconds; NULL: never
    )
    """,
    # Partial index: most keys never expire, and cleanup only asks for those that do.
    "CREATE INDEX IF NOT EXISTS kv_expires_at ON kv (expires_at) WHERE expires_at IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS store_meta (name TEXT PRIMARY KEY NOT NULL, value)",
)

# Result codes (low byte of the extended code) meaning the file itself is damaged.
_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26

_SIDE_FILES: Final = ("-wal", "-shm", "-journal")
_SQLITE_HEADER: Final = b"SQLite format 3\x00"

# "Not expired at the bound time": expired rows stay invisible even before cleanup runs.
_LIVE: Final = "(expires_at IS NULL OR expires_at > ?)"

Synchronous = Literal["NORMAL", "FULL"]


class _DamagedDatabase(Exception):
    """The database file failed its integrity check or is not a database at all."""


class SqliteStore(KeyValueStore):
    """A key-value store in one SQLite file; safe across process kills (see module docs)."""

    def __init__(
        self,
        path: Path,
        *,
        compress_threshold_bytes: int | None = 10_240,
        cleanup_interval_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        synchronous: Synchronous = "NORMAL",
        health_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(
            backend="sqlite",
            clock=clock,
            cleanup_interval_s=cleanup_interval_s,
            health_timeout_s=health_timeout_s,
        )
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        self._path = Path(path)
        self._compress_threshold = compress_threshold_bytes
        self._synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        # A descriptor of the file opened at connect, kept until after the connection closes:
        # closing any descriptor of a file drops every POSIX lock this process holds on it,
        # SQLite's included, so the health probe reads through this one and never opens the
        # file again ("How To Corrupt An SQLite Database File", section 2.2).
        self._file_fd: int | None = None

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    # -- lifecycle -------------------------------------------------------------------------

    async def _open(self) -> None:
        # One thread owns the one connection: statements are serialized without locks, a
        # transaction is never interleaved with another caller's statements, and a cancelled
        # caller cannot leave a transaction half done (the thread finishes it regardless).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        try:
            moved = await self._call(self._open_sync)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        if moved is not None:
            target, reason = moved
            self.stats.recovered_from_corruption += 1
            self.stats.last_corrupt_path = str(target)
            logger.warning(
                "store database %s was damaged (%s): moved it aside to %s and started a fresh, "
                "empty database; the old file is kept for inspection",
                self._path,
                reason,
                target,
            )

    async def _close(self) -> None:
        executor = self._executor
        if executor is None:
            return
        try:
            # Queued behind every operation already submitted, so those finish first. Closing
            # the last connection also checkpoints the WAL into the main file.
            await self._call(self._close_sync)
        finally:
            executor.shutdown(wait=False)
            self._executor = None

    def _open_sync(self) -> tuple[Path, str] | None:
        """Connect, check and prepare the file; move a damaged one aside first."""
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            damage = self._find_damage()
            if damage is None:
                try:
                    self._conn = self._connect()
                    return None
                except _DamagedDatabase as exc:
                    damage = str(exc)
            target = _move_aside(self._path)
            self._conn = self._connect()
            return target, damage
        except (sqlite3.Error, OSError, _DamagedDatabase) as exc:
            raise StoreError(
                f"cannot open the store database {self._path}: {type(exc).__name__}: {exc}; "
                "check that its directory exists and is writable"
            ) from exc

    def _find_damage(self) -> str | None:
        """Why the existing file is unusable, or None if it looks sound (or does not exist)."""
        if not self._path.exists() or self._path.stat().st_size == 0:
            return None  # SQLite turns a missing or empty file into a new database
        # Read-only on purpose: closing a writable connection checkpoints and deletes the
        # -wal/-shm files, and the WAL of a damaged file may hold the newest data worth saving.
        uri = self._path.resolve().as_uri() + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return None  # cannot even look: let the writable open report the real problem
        try:
            # quick_check is O(file size) without the index cross-checks of integrity_check:
            # enough to catch a truncated or overwritten file at startup.
            problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            return str(exc) if _is_damage(exc) else None
        finally:
            conn.close()
        if problems == ["ok"]:
            return None
        return "quick_check: " + "; ".join(problems[:3]).replace("\n", " ")

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; we issue BEGIN/COMMIT ourselves.
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if str(mode).lower() != "wal":
                logger.warning(
                    "store database %s could not use WAL mode (got %s); writes will be slower",
                    self._path,
                    mode,
                )
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            with _transaction(conn):
                for statement in _SCHEMA:
                    conn.execute(statement)
                if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if _is_damage(exc):
                # Damage quick_check did not see (rare): recover the same way.
                raise _DamagedDatabase(str(exc)) from exc
            raise
        except BaseException:
            conn.close()
            raise
        if self._file_fd is None:
            self._file_fd = os.open(self._path, os.O_RDONLY)
        return conn

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._file_fd is not None:  # only after the connection: see _file_fd
            os.close(self._file_fd)
            self._file_fd = None

    # -- primitives (the *_sync methods run on the store thread) ---------------------------

    async def _get(self, key: str, now: float) -> bytes | None:
        return await self._call(self._get_sync, key, now)

    async def _set_many(self, pairs: list[tuple[str, bytes]], expires_at: float | None) -> None:
        await self._call(self._set_many_sync, pairs, expires_at)

    async def _delete(self, key: str, now: float) -> bool:
        return await self._call(self._delete_sync, key, now)

    async def _keys(self, prefix: str, now: float) -> list[str]:
        return [key for key, _ in await self._call(self._scan_sync, prefix, now, False)]

    async def _items(self, prefix: str, now: float) -> list[tuple[str, bytes]]:
        return await self._call(self._scan_sync, prefix, now, True)

    async def _cleanup_expired(self, now: float) -> int:
        return await self._call(self._cleanup_sync, now)

    async def _compact(self) -> None:
        await self._call(self._compact_sync)

    async def _health_check(self) -> None:
        await self._call(self._health_sync)

    def _get_sync(self, key: str, now: float) -> bytes | None:
        row = self._connection.execute(
            f"SELECT value, compressed FROM kv WHERE key = ? AND {_LIVE}", (key, now)
        ).fetchone()
        return None if row is None else _decode(row[0], row[1])

    def _set_many_sync(self, pairs: list[tuple[str, bytes]], expires_at: float | None) -> None:
        # Compress before the transaction so the write lock is held as briefly as possible.
        rows = [(key, *self._encode(value), expires_at) for key, value in pairs]
        conn = self._connection
        with _transaction(conn):
            conn.executemany(
                "INSERT OR REPLACE INTO kv (key, value, compressed, expires_at)"
                " VALUES (?, ?, ?, ?)",
                rows,
            )

    def _delete_sync(self, key: str, now: float) -> bool:
        conn = self._connection
        with _transaction(conn):
            live = conn.execute(f"DELETE FROM kv WHERE key = ? AND {_LIVE}", (key, now)).rowcount
            if not live:
                # An expired row may still be there: remove it too, but report "absent".
                conn.execute("DELETE FROM kv WHERE key = ?", (key,))
        return live > 0

    def _scan_sync(self, prefix: str, now: float, with_values: bool) -> list[tuple[str, bytes]]:
        columns = "key, value, compressed" if with_values else "key, NULL, 0"
        upper = _prefix_upper_bound(prefix)
        # A key range instead of LIKE/GLOB: it uses the primary-key index and needs no escaping.
        if upper is None:
            sql = f"SELECT {columns} FROM kv WHERE key >= ? AND {_LIVE} ORDER BY key"
            params: tuple[object, ...] = (prefix, now)
        else:
            sql = f"SELECT {columns} FROM kv WHERE key >= ? AND key < ? AND {_LIVE} ORDER BY key"
            params = (prefix, upper, now)
        return [
            (key, _decode(value, compressed) if with_values else b"")
            for key, value, compressed in self._connection.execute(sql, params)
            if key.startswith(prefix)
        ]

    def _cleanup_sync(self, now: float) -> int:
        conn = self._connection
        with _transaction(conn):
            return conn.execute("DELETE FROM kv WHERE expires_at <= ?", (now,)).rowcount

    def _compact_sync(self) -> None:
        conn = self._connection
        conn.execute("VACUUM")
        # VACUUM in WAL mode writes the new file through the WAL; fold it back and truncate it.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def _health_sync(self) -> None:
        damage = self._file_damage()
        if damage is not None:
            raise StoreError(
                f"the store database {self._path} {damage} while the bot was running; restart "
                "the bot: it moves a damaged file aside and starts a fresh one"
            )
        # A write, not just SELECT 1: it also catches a read-only or vanished file system.
        conn = self._connection
        with _transaction(conn):
            conn.execute(
                "INSERT OR REPLACE INTO store_meta (name, value) VALUES ('health_probe', ?)",
                (time.time(),),
            )

    def _file_damage(self) -> str | None:
        """Has the file under the open connection been replaced, removed or overwritten?

        SQLite does not notice: in WAL mode writes go to the -wal file and reads are served from
        its page cache, so a clobbered main file surfaces only at the next checkpoint or cold
        read, minutes later. Two cheap checks (a stat and 16 bytes) catch it at the next probe.
        The header is read through the descriptor kept since connect, never a new one.
        """
        fd = self._file_fd
        if fd is None:
            return None
        try:
            current = self._path.stat()
        except FileNotFoundError:
            return "was removed"
        except OSError as exc:
            return f"cannot be read ({exc.strerror})"
        opened = os.fstat(fd)
        if (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
            return "was replaced by another file"
        if os.pread(fd, len(_SQLITE_HEADER), 0) != _SQLITE_HEADER:
            return "was overwritten (it no longer starts with the SQLite header)"
        return None

    # -- helpers ---------------------------------------------------------------------------

    @property
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the sqlite store is not open: call open() first")
        return self._conn

    def _encode(self, value: bytes) -> tuple[bytes, int]:
        threshold = self._compress_threshold
        if threshold is not None and len(value) > threshold:
            packed = zlib.compress(value)
            # Already-compressed data (images, archives) can grow: keep whichever is smaller.
            if len(packed) < len(value):
                return packed, 1
        return value, 0

    async def _call(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._executor is None:
            raise StoreError("the sqlite store is not open: call open() first")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any error."""
    # IMMEDIATE takes the write lock up front, so the commit cannot fail with SQLITE_BUSY
    # half way (matters only if another process opens the file, e.g. an admin shell).
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _decode(value: bytes, compressed: int) -> bytes:
    return zlib.decompress(value) if compressed else bytes(value)


def _prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix` (None: no bound).

    SQLite's default BINARY collation compares UTF-8 bytes, which orders like code points.
    """
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:
        return None
    last = ord(stripped[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:
        # Surrogates cannot occur in stored keys, so the next possible character is U+E000.
        last = 0xE000
    return stripped[:-1] + chr(last)


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    # The low byte of an extended result code is its primary code.
    return exc.sqlite_errorcode & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def _move_aside(path: Path) -> Path:
    """Rename a damaged database (and its side files) to `<name>.corrupt-<UTC time>`."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    attempt = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}.{attempt}")
        attempt += 1
    os.replace(path, target)
    for suffix in _SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            # Same suffixes as SQLite expects, so the moved copy opens with its WAL intact.
            os.replace(side, target.with_name(target.name + suffix))
    return target
