"""What only the in-memory backend promises: its bounds, and refusing rather than evicting."""

from __future__ import annotations

import pytest

from bot.store import MemoryStore, StoreFullError


async def test_refuses_new_keys_when_full_and_keeps_what_it_has() -> None:
    async with MemoryStore(max_keys=3) as store:
        await store.set_many({"a": b"1", "b": b"2", "c": b"3"})
        with pytest.raises(StoreFullError, match="max_keys=3"):
            await store.set("d", b"4")
        await store.set("a", b"replaced")  # overwriting needs no room
        assert await store.keys() == ["a", "b", "c"]
        assert await store.get("a") == b"replaced"
        figures = store.stats.store("other")
        assert figures.ops["save"].error == 1
        assert figures.healthy  # the latest write succeeded


async def test_a_batch_that_does_not_fit_writes_nothing() -> None:
    async with MemoryStore(max_keys=3) as store:
        await store.set("a", b"1")
        with pytest.raises(StoreFullError):
            await store.set_many({"b": b"2", "c": b"3", "d": b"4"})
        assert await store.keys() == ["a"]


async def test_expired_entries_make_room() -> None:
    now = [0.0]
    async with MemoryStore(max_keys=2, clock=lambda: now[0]) as store:
        await store.set_many({"a": b"1", "b": b"2"}, ttl_s=1)
        now[0] = 1.0
        await store.set_many({"c": b"3", "d": b"4"})
        assert await store.keys() == ["c", "d"]
        assert store.size == (2, 2)


async def test_byte_limit() -> None:
    async with MemoryStore(max_bytes=10) as store:
        await store.set("a", b"x" * 6)
        with pytest.raises(StoreFullError, match="max_bytes=10"):
            await store.set("b", b"x" * 5)
        await store.set("a", b"x" * 10)
        assert await store.delete("a") is True
        assert store.size == (0, 0)


def test_limits_must_make_sense() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        MemoryStore(max_keys=0)
    with pytest.raises(ValueError, match="cleanup_interval_s"):
        MemoryStore(cleanup_interval_s=0)
