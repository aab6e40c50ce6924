"""The store contract: every backend (memory, sqlite) must pass this same suite."""

from __future__ import annotations

import asyncio
import math
import random
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.store import (
    LATENCY_BUCKETS_S,
    STORE_NAMES,
    KeyValueStore,
    MemoryStore,
    SqliteStore,
    StoreClosedError,
    StoreError,
)
from tests.fakes import FakeClock

KINDS = ("memory", "sqlite")


def make_store(
    kind: str, directory: Path, clock: FakeClock, cleanup_interval_s: float = 3600.0
) -> KeyValueStore:
    if kind == "memory":
        return MemoryStore(clock=clock, cleanup_interval_s=cleanup_interval_s)
    return SqliteStore(directory / "store.db", clock=clock, cleanup_interval_s=cleanup_interval_s)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=KINDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[KeyValueStore]:
    async with make_store(request.param, tmp_path, clock) as opened:
        yield opened


def run_with_store(kind: str, body: Callable[[KeyValueStore, FakeClock], Awaitable[None]]) -> None:
    """Run one hypothesis example against a fresh store of `kind`."""

    async def main() -> None:
        with tempfile.TemporaryDirectory() as directory:
            clock = FakeClock()
            async with make_store(kind, Path(directory), clock) as opened:
                await body(opened, clock)

    asyncio.run(main())


# -- property tests ---------------------------------------------------------------------------

# Few characters, so generated keys collide and share prefixes; includes the namespace
# separator, NUL, non-ASCII and the largest code point (the edge of the prefix range scan).
_TIGHT_KEYS = st.text(alphabet="ab:%_*[é\x00\U0010ffff", max_size=4)
KEYS = st.one_of(_TIGHT_KEYS, st.text(max_size=24))
VALUES = st.one_of(
    st.binary(max_size=64),
    # Compressible and above the 10 KiB threshold.
    st.builds(lambda chunk, n: chunk * n, st.binary(min_size=1, max_size=4), st.integers(2, 6000)),
    # Incompressible and above the threshold: stored uncompressed.
    st.integers(0, 2**32).map(lambda seed: random.Random(seed).randbytes(10_300)),
)
TTLS = st.one_of(st.none(), st.floats(min_value=0.001, max_value=100.0))

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, VALUES, TTLS),
        st.tuples(st.just("set_many"), st.dictionaries(KEYS, VALUES, max_size=4), TTLS),
        st.tuples(st.just("delete"), KEYS),
        st.tuples(st.just("advance"), st.floats(min_value=0.0, max_value=60.0)),
        st.tuples(st.just("cleanup")),
    ),
    max_size=12,
)

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(key=KEYS, value=VALUES)
def test_round_trip_any_key_and_value(kind: str, key: str, value: bytes) -> None:
    async def body(store: KeyValueStore, clock: FakeClock) -> None:
        await store.set(key, value)
        assert await store.get(key) == value
        assert await store.keys(key) == [key]
        assert await store.items(key) == [(key, value)]

    run_with_store(kind, body)


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(operations=OPERATIONS, prefix=_TIGHT_KEYS)
def test_behaves_like_a_dict_with_expiry(
    kind: str, operations: list[tuple[Any, ...]], prefix: str
) -> None:
    """Any sequence of operations leaves the store agreeing with a plain model."""

    async def body(store: KeyValueStore, clock: FakeClock) -> None:
        model: dict[str, tuple[bytes, float]] = {}

        def live() -> dict[str, bytes]:
            return {k: v for k, (v, expires) in model.items() if expires > clock.now}

        for operation in operations:
            touched: set[str] = set()
            match operation:
                case ("set", key, value, ttl):
                    await store.set(key, value, ttl)
                    model[key] = (value, math.inf if ttl is None else clock.now + ttl)
                    touched = {key}
                case ("set_many", pairs, ttl):
                    await store.set_many(pairs, ttl)
                    for key, value in pairs.items():
                        model[key] = (value, math.inf if ttl is None else clock.now + ttl)
                    touched = set(pairs)
                case ("delete", key):
                    assert await store.delete(key) == (key in live())
                    model.pop(key, None)
                    touched = {key}
                case ("advance", seconds):
                    clock.advance(seconds)
                case ("cleanup",):
                    expired = len(model) - len(live())
                    assert await store.cleanup_expired() == expired
                    model = {k: e for k, e in model.items() if e[1] > clock.now}
            expected = live()
            for key in touched:
                assert await store.get(key) == expected.get(key)
        expected = live()
        assert await store.keys() == sorted(expected)
        assert await store.items(prefix) == sorted(
            (k, v) for k, v in expected.items() if k.startswith(prefix)
        )

    run_with_store(kind, body)


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(
    obj=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    )
)
def test_json_round_trip(kind: str, obj: Any) -> None:
    async def body(store: KeyValueStore, clock: FakeClock) -> None:
        await store.set_json("cache:k", obj)
        assert await store.get_json("cache:k") == obj

    run_with_store(kind, body)


# -- examples ---------------------------------------------------------------------------------


async def test_missing_key_reads_as_none(store: KeyValueStore) -> None:
    assert await store.get("nope") is None
    assert await store.get_json("nope") is None
    assert await store.delete("nope") is False
    assert await store.keys() == []


async def test_set_overwrites_value_and_ttl(store: KeyValueStore, clock: FakeClock) -> None:
    await store.set("k", b"one", ttl_s=5)
    await store.set("k", b"two")  # no TTL: lives for ever
    clock.advance(10)
    assert await store.get("k") == b"two"
    await store.set("k", b"three", ttl_s=1)
    clock.advance(1)
    assert await store.get("k") is None


async def test_expired_keys_are_invisible_before_cleanup(
    store: KeyValueStore, clock: FakeClock
) -> None:
    await store.set("quota:gone", b"x", ttl_s=10)
    await store.set("quota:kept", b"y")
    clock.advance(9.999)
    assert await store.get("quota:gone") == b"x"
    clock.advance(0.001)  # exactly at expires_at: expired
    assert await store.get("quota:gone") is None
    assert await store.keys("quota:") == ["quota:kept"]
    assert await store.items("quota:") == [("quota:kept", b"y")]
    assert await store.delete("quota:gone") is False
    assert store.stats.expired_removed == 0


async def test_cleanup_expired_counts_and_removes(store: KeyValueStore, clock: FakeClock) -> None:
    await store.set_many({"a": b"1", "b": b"2"}, ttl_s=1)
    await store.set("c", b"3", ttl_s=100)
    await store.set("d", b"4")
    assert await store.cleanup_expired() == 0
    clock.advance(50)
    assert await store.cleanup_expired() == 2
    assert await store.cleanup_expired() == 0
    assert await store.keys() == ["c", "d"]
    assert store.stats.cleanup_runs == 3
    assert store.stats.expired_removed == 2
    assert store.stats.last_cleanup_at == clock.now


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf])
async def test_ttl_must_be_positive_and_finite(store: KeyValueStore, bad: float) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        await store.set("k", b"v", ttl_s=bad)
    with pytest.raises(TypeError, match="ttl_s"):
        await store.set("k", b"v", ttl_s=True)
    assert await store.get("k") is None


async def test_values_must_be_bytes(store: KeyValueStore) -> None:
    with pytest.raises(TypeError, match="set_json"):
        await store.set("k", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys are str"):
        await store.get(1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unicode"):
        await store.set("\ud800", b"v")
    buffer = bytearray(b"abc")
    await store.set("k", buffer)  # type: ignore[arg-type]
    buffer[0] = ord("z")
    assert await store.get("k") == b"abc"


async def test_json_refuses_what_is_not_json(store: KeyValueStore) -> None:
    with pytest.raises(TypeError):
        await store.set_json("k", object())
    with pytest.raises(ValueError, match="JSON"):
        await store.set_json("k", math.nan)
    await store.set("k", b"{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        await store.get_json("k")


async def test_set_many_empty_is_a_no_op(store: KeyValueStore) -> None:
    await store.set_many({})
    assert store.stats.store("other").ops["save"].ok == 0


async def test_namespaces_isolate_keys(store: KeyValueStore) -> None:
    quota, cache = store.namespace("quota"), store.namespace("cache")
    await quota.set("user", b"q")
    await cache.set("user", b"c")
    await cache.set_many({"a": b"1", "b": b"2"})
    await cache.set_json("j", {"x": 1})
    assert await quota.get("user") == b"q"
    assert await cache.get("user") == b"c"
    assert await cache.get_json("j") == {"x": 1}
    assert await store.get("quota:user") == b"q"
    assert await quota.keys() == ["user"]
    assert await cache.keys() == ["a", "b", "j", "user"]
    assert await cache.items("a") == [("a", b"1")]
    assert await quota.delete("a") is False
    assert await cache.delete("a") is True
    assert await store.keys() == ["cache:b", "cache:j", "cache:user", "quota:user"]
    assert quota.name == "quota"
    assert quota.store is store


async def test_unknown_namespace_is_refused(store: KeyValueStore) -> None:
    with pytest.raises(ValueError, match="STORE_NAMES"):
        store.namespace("users")


async def test_stats_count_operations_and_bytes(store: KeyValueStore) -> None:
    quota = store.namespace("quota")
    await quota.set("a", b"12345")
    await quota.set_many({"b": b"12", "c": b"3"})
    assert await quota.get("a") == b"12345"
    assert await quota.get("missing") is None
    assert await quota.items() == [("a", b"12345"), ("b", b"12"), ("c", b"3")]
    assert await quota.delete("a") is True
    await store.set("loose", b"xyz")

    figures = store.stats.store("quota")
    assert (figures.ops["save"].ok, figures.ops["save"].error) == (2, 0)
    assert (figures.ops["load"].ok, figures.ops["load"].error) == (3, 0)
    assert figures.ops["delete"].ok == 1
    assert figures.bytes_written == 8
    assert figures.bytes_read == 5 + 8
    assert figures.healthy
    histogram = figures.ops["load"].latency
    assert histogram.count == 3
    assert histogram.buckets == LATENCY_BUCKETS_S
    assert histogram.cumulative_buckets()[-1] == (math.inf, 3)
    assert figures.ops["load"].latency_seconds_total == histogram.sum > 0
    assert store.stats.store("other").bytes_written == 3
    for name in STORE_NAMES:
        if name != "quota":
            assert store.stats.stores[name].ops["save"].ok == 0


async def test_stats_count_errors_and_health(store: KeyValueStore) -> None:
    conversations = store.namespace("conversations")
    await conversations.set("a", b"1")
    assert await store.health_check() is True
    assert store.stats.healthy
    await store.close()
    assert not store.stats.healthy
    with pytest.raises(StoreClosedError, match="open"):
        await conversations.get("a")
    with pytest.raises(StoreClosedError):
        await conversations.set("a", b"2")
    figures = store.stats.store("conversations")
    assert figures.ops["load"].error == 1
    assert figures.ops["save"].error == 1
    assert figures.ops["save"].latency.count == 2
    assert not figures.healthy
    assert figures.last_error is not None
    assert await store.health_check() is False
    with pytest.raises(StoreClosedError):
        await store.cleanup_expired()
    with pytest.raises(StoreClosedError):
        await store.compact()

    await store.open()  # reopening finds the data again
    assert await conversations.get("a") == b"1"
    assert figures.healthy
    assert figures.ops["load"].ok == 1


async def test_compact_keeps_data(store: KeyValueStore) -> None:
    await store.set_many({f"k{i}": bytes(1000) for i in range(200)})
    for i in range(150):
        await store.delete(f"k{i}")
    await store.compact()
    assert len(await store.keys()) == 50
    assert await store.get("k199") == bytes(1000)
    assert store.stats.compactions == 1


async def test_open_and_close_are_idempotent(store: KeyValueStore) -> None:
    await store.open()
    await store.set("k", b"v")
    await store.close()
    await store.close()
    assert not store.is_open


@pytest.mark.parametrize("kind", KINDS)
async def test_cleanup_timer_runs_between_open_and_close(kind: str, tmp_path: Path) -> None:
    clock = FakeClock()
    store = make_store(kind, tmp_path, clock, cleanup_interval_s=0.01)
    cleaned = asyncio.Event()
    cleanup = store.cleanup_expired

    async def observed_cleanup() -> int:
        removed = await cleanup()
        cleaned.set()
        return removed

    store.cleanup_expired = observed_cleanup  # type: ignore[method-assign]
    async with store:
        await store.set("k", b"v", ttl_s=1)
        clock.advance(2)
        async with asyncio.timeout(5):
            await cleaned.wait()
        assert store.stats.expired_removed == 1
    runs = store.stats.cleanup_runs
    await asyncio.sleep(0.05)
    assert store.stats.cleanup_runs == runs  # the timer stopped with close()
