"""The key-value store interface: TTL, namespaces, figures, lifecycle.

`KeyValueStore` does the shared work (validation, expiry arithmetic, JSON, figures, the cleanup
timer); a backend (SQLite, memory, Redis later) implements only the few `_primitive` methods.
Callers hold a `Namespace` per logical store and never learn which backend is behind it.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Final, Self, TypeVar

from bot.store.stats import OTHER_STORE, STORE_NAMES, Op, StoreStats

__all__ = [
    "NAMESPACE_SEPARATOR",
    "KeyValueStore",
    "Namespace",
    "StoreClosedError",
    "StoreError",
    "StoreFullError",
]

logger = logging.getLogger(__name__)

NAMESPACE_SEPARATOR: Final = ":"

_T = TypeVar("_T")


class StoreError(Exception):
    """A store operation failed; every backend raises this (or a subclass), never its own."""


class StoreClosedError(StoreError):
    """The store is not open: call open() first (or it was closed during shutdown)."""


class StoreFullError(StoreError):
    """A bounded store refused a write because it would exceed its limits."""


class KeyValueStore(abc.ABC):
    """A durable async key-value store of bytes with optional per-key TTL.

    Keys are any str; values are bytes. `set` replaces both the value and the TTL. Expired keys
    are invisible at once; `cleanup_expired` (run on a timer between open() and close())
    only reclaims their space. `keys`/`items` return entries sorted by key.
    """

    def __init__(
        self,
        *,
        backend: str,
        clock: Callable[[], float] = time.time,
        cleanup_interval_s: float = 300.0,
        health_timeout_s: float = 5.0,
    ) -> None:
        if not cleanup_interval_s > 0:
            raise ValueError(f"cleanup_interval_s must be positive, got {cleanup_interval_s!r}")
        self._clock = clock
        self._cleanup_interval_s = cleanup_interval_s
        self._health_timeout_s = health_timeout_s
        self._stats = StoreStats(backend=backend)
        self._is_open = False
        self._cleanup_task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def stats(self) -> StoreStats:
        """Live figures for the metrics layer (read at scrape time, never copied)."""
        return self._stats

    @property
    def is_open(self) -> bool:
        """True between a successful open() and close()."""
        return self._is_open

    async def open(self) -> None:
        """Open the backend and start the expiry cleanup timer; a second call does nothing."""
        if self._is_open:
            return
        try:
            await self._open()
        except BaseException:
            self._stats.mark_health(False, self._clock())
            raise
        self._is_open = True
        self._stats.mark_health(True, self._clock())
        self._cleanup_task = asyncio.create_task(
            self._cleanup_loop(), name=f"{self._stats.backend}-store-cleanup"
        )

    async def close(self) -> None:
        """Stop the timer and close the backend; operations already started finish first."""
        if not self._is_open:
            return
        # Refuse new operations before the backend goes away.
        self._is_open = False
        if self._cleanup_task is not None:
            self._cleanup_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleanup_task
            self._cleanup_task = None
        try:
            await self._close()
        finally:
            self._stats.mark_health(False, self._clock())

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def namespace(self, name: str) -> Namespace:
        """A view of one logical store; `name` must be one of `stats.STORE_NAMES`."""
        if name not in STORE_NAMES:
            raise ValueError(
                f"unknown store namespace {name!r}: use one of {', '.join(STORE_NAMES)} "
                "or add it to STORE_NAMES in bot/store/stats.py"
            )
        return Namespace(self, name)

    # -- data ------------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        """The value under `key`, or None when absent or expired."""
        _check_key(key)
        return await self._run(
            _store_of(key),
            "load",
            lambda: self._get(key, self._clock()),
            read=lambda value: 0 if value is None else len(value),
        )

    async def get_json(self, key: str) -> Any | None:
        """The JSON value under `key`, or None when absent or expired."""
        raw = await self.get(key)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise StoreError(f"value under key {key!r} is not valid JSON: {exc}") from exc

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        """Store `value` under `key`, expiring after `ttl_s` seconds (None: never)."""
        await self.set_many({key: value}, ttl_s)

    async def set_json(self, key: str, obj: Any, ttl_s: float | None = None) -> None:
        """Store `obj` as compact UTF-8 JSON; raises ValueError/TypeError if it is not JSON."""
        await self.set(key, _dump_json(obj), ttl_s)

    async def set_many(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        """Store every pair in one transaction: all are written or none."""
        pairs = [(_check_key(key), _check_value(value)) for key, value in items.items()]
        if not pairs:
            return
        expires_at = self._expiry(ttl_s)
        stores = {_store_of(key) for key, _ in pairs}
        await self._run(
            stores.pop() if len(stores) == 1 else OTHER_STORE,
            "save",
            lambda: self._set_many(pairs, expires_at),
            written=sum(len(value) for _, value in pairs),
        )

    async def delete(self, key: str) -> bool:
        """Remove `key`; True if a live (unexpired) value was there."""
        _check_key(key)
        return await self._run(_store_of(key), "delete", lambda: self._delete(key, self._clock()))

    async def keys(self, prefix: str = "") -> list[str]:
        """Live keys starting with `prefix`, sorted."""
        _check_key(prefix)
        return await self._run(_store_of(prefix), "load", lambda: self._keys(prefix, self._clock()))

    async def items(self, prefix: str = "") -> list[tuple[str, bytes]]:
        """Live (key, value) pairs whose key starts with `prefix`, sorted by key."""
        _check_key(prefix)
        return await self._run(
            _store_of(prefix),
            "load",
            lambda: self._items(prefix, self._clock()),
            read=lambda pairs: sum(len(value) for _, value in pairs),
        )

    # -- upkeep ----------------------------------------------------------------------------

    async def cleanup_expired(self) -> int:
        """Delete expired entries now; returns how many were removed."""
        self._ensure_open()
        now = self._clock()
        try:
            removed = await _wrap_errors(self._cleanup_expired(now), "cleanup of expired keys")
        except StoreError:
            self._stats.cleanup_errors += 1
            raise
        self._stats.cleanup_runs += 1
        self._stats.expired_removed += removed
        self._stats.last_cleanup_at = now
        return removed

    async def compact(self) -> None:
        """Give free space back to the file system; may hold up other operations meanwhile."""
        self._ensure_open()
        await _wrap_errors(self._compact(), "compaction")
        self._stats.compactions += 1

    async def health_check(self) -> bool:
        """Probe the backend (a small write where it has one); records and returns the result."""
        healthy = False
        if self._is_open:
            try:
                await asyncio.wait_for(self._health_check(), self._health_timeout_s)
                healthy = True
            except Exception as exc:
                logger.warning("%s store health check failed: %r", self._stats.backend, exc)
        self._stats.mark_health(healthy, self._clock())
        return healthy

    # -- backend primitives ----------------------------------------------------------------

    @abc.abstractmethod
    async def _open(self) -> None:
        """Make the backend ready; raise StoreError with a clear message if it cannot be."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Release the backend after the operations already started have finished."""

    @abc.abstractmethod
    async def _get(self, key: str, now: float) -> bytes | None:
        """The value under `key` unless absent or expired at `now`."""

    @abc.abstractmethod
    async def _set_many(self, pairs: list[tuple[str, bytes]], expires_at: float | None) -> None:
        """Write all pairs atomically with one absolute expiry (None: never)."""

    @abc.abstractmethod
    async def _delete(self, key: str, now: float) -> bool:
        """Remove `key`; True if it held a value live at `now`."""

    @abc.abstractmethod
    async def _keys(self, prefix: str, now: float) -> list[str]:
        """Keys live at `now` starting with `prefix`, sorted."""

    @abc.abstractmethod
    async def _items(self, prefix: str, now: float) -> list[tuple[str, bytes]]:
        """Pairs live at `now` whose key starts with `prefix`, sorted by key."""

    @abc.abstractmethod
    async def _cleanup_expired(self, now: float) -> int:
        """Delete entries expired at `now`; return how many."""

    @abc.abstractmethod
    async def _compact(self) -> None:
        """Reclaim space."""

    @abc.abstractmethod
    async def _health_check(self) -> None:
        """Raise if the backend cannot serve reads and writes."""

    # -- helpers ---------------------------------------------------------------------------

    def _ensure_open(self) -> None:
        if not self._is_open:
            raise StoreClosedError(
                f"the {self._stats.backend} store is not open: call open() first"
            )

    def _expiry(self, ttl_s: float | None) -> float | None:
        if ttl_s is None:
            return None
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
            raise TypeError(f"ttl_s must be a number of seconds or None, got {ttl_s!r}")
        if not (math.isfinite(ttl_s) and ttl_s > 0):
            raise ValueError(f"ttl_s must be a positive, finite number of seconds, got {ttl_s!r}")
        return self._clock() + ttl_s

    async def _run(
        self,
        store: str,
        op: Op,
        action: Callable[[], Awaitable[_T]],
        *,
        written: int = 0,
        read: Callable[[_T], int] | None = None,
    ) -> _T:
        """Run one data operation, counting it under `store`/`op` whatever the outcome."""
        figures = self._stats.store(store)
        started = time.perf_counter()
        try:
            self._ensure_open()
            result = await _wrap_errors(action(), f"{op} on store {store!r}")
        except StoreError as exc:
            # Cancellation is a BaseException and lands elsewhere: a cancelled caller is not
            # a store failure.
            figures.record(op, ok=False, seconds=time.perf_counter() - started)
            figures.last_error = str(exc)
            raise
        figures.record(
            op,
            ok=True,
            seconds=time.perf_counter() - started,
            bytes_written=written,
            bytes_read=read(result) if read is not None else 0,
        )
        return result

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self._cleanup_interval_s)
            try:
                await self.cleanup_expired()
            except StoreError as exc:
                # Keep the timer alive: a transient failure (disk busy) should not end cleanup.
                logger.warning("%s store cleanup failed: %s", self._stats.backend, exc)


class Namespace:
    """One logical store inside a backend: keys get a `<name>:` prefix and figures count
    under `name`."""

    def __init__(self, store: KeyValueStore, name: str) -> None:
        self._store = store
        self._name = name
        self._prefix = name + NAMESPACE_SEPARATOR

    def __repr__(self) -> str:
        return f"Namespace({self._name!r}, {type(self._store).__name__})"

    @property
    def name(self) -> str:
        """The logical store name, as used in the `store` metric label."""
        return self._name

    @property
    def store(self) -> KeyValueStore:
        """The backend holding this namespace."""
        return self._store

    def _full(self, key: str) -> str:
        return self._prefix + _check_key(key)

    async def get(self, key: str) -> bytes | None:
        """The value under `key`, or None when absent or expired."""
        return await self._store.get(self._full(key))

    async def get_json(self, key: str) -> Any | None:
        """The JSON value under `key`, or None when absent or expired."""
        return await self._store.get_json(self._full(key))

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        """Store `value` under `key`, expiring after `ttl_s` seconds (None: never)."""
        await self._store.set(self._full(key), value, ttl_s)

    async def set_json(self, key: str, obj: Any, ttl_s: float | None = None) -> None:
        """Store `obj` as compact UTF-8 JSON."""
        await self._store.set_json(self._full(key), obj, ttl_s)

    async def set_many(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        """Store every pair in one transaction."""
        await self._store.set_many({self._full(k): v for k, v in items.items()}, ttl_s)

    async def delete(self, key: str) -> bool:
        """Remove `key`; True if a live value was there."""
        return await self._store.delete(self._full(key))

    async def keys(self, prefix: str = "") -> list[str]:
        """Live keys of this namespace starting with `prefix`, without the namespace prefix."""
        cut = len(self._prefix)
        return [key[cut:] for key in await self._store.keys(self._full(prefix))]

    async def items(self, prefix: str = "") -> list[tuple[str, bytes]]:
        """Live pairs of this namespace whose key starts with `prefix`, sorted by key."""
        cut = len(self._prefix)
        return [(key[cut:], value) for key, value in await self._store.items(self._full(prefix))]


def _store_of(key: str) -> str:
    """The logical store a full key belongs to, for the figures."""
    name, separator, _ = key.partition(NAMESPACE_SEPARATOR)
    return name if separator and name in STORE_NAMES else OTHER_STORE


def _check_key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"store keys are str, got {type(key).__name__}")
    try:
        key.encode()
    except UnicodeEncodeError:
        # Lone surrogates cannot be stored as UTF-8 text by any backend.
        raise ValueError(f"store key {key!r} is not valid Unicode text") from None
    return key


def _check_value(value: bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        # Copy: the caller may mutate its buffer after set() returns.
        return bytes(value)
    raise TypeError(f"store values are bytes, got {type(value).__name__}: use set_json for objects")


def _dump_json(obj: Any) -> bytes:
    # allow_nan=False: NaN/Infinity are not JSON and other readers would reject them.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


async def _wrap_errors(operation: Awaitable[_T], what: str) -> _T:
    """Await `operation`, turning backend exceptions into StoreError so callers catch one type."""
    try:
        return await operation
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
