"""MessageQueue: order, bounds, retries, expiry, persistence and wake-ups, on a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.resilience.queue import DROP_REASONS, DroppedItem, MessageQueue, QueuedItem, QueueStats
from bot.store import MemoryStore, Namespace, SqliteStore
from tests.fakes import FakeClock


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    async with MemoryStore(cleanup_interval_s=3600) as opened:
        yield opened


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


def make(store: MemoryStore | SqliteStore | None, clock: FakeClock, **kwargs: Any) -> MessageQueue:
    namespace = store.namespace("queue") if store is not None else None
    return MessageQueue(namespace, clock=clock, **kwargs)


def texts(items: list[QueuedItem]) -> list[str]:
    return [item.payload["text"] for item in items]


def assert_conserved(stats: QueueStats) -> None:
    dropped = sum(stats.dropped_total.values())
    assert stats.pushed_total + stats.restored_total == stats.size + stats.answered_total + dropped


async def stored_ids(namespace: Namespace) -> set[str]:
    return {key.removeprefix("item:") for key in await namespace.keys("item:")}


# -- order and scheduling ----------------------------------------------------------------------


async def test_due_serves_higher_priority_first_then_fifo(
    store: MemoryStore, clock: FakeClock
) -> None:
    queue = make(store, clock, batch_size=10)
    for text, priority in [("a", 0), ("b", 1), ("c", 0), ("d", 2), ("e", 1)]:
        await queue.push({"text": text}, priority=priority, delay_s=0)
    assert texts(queue.due()) == ["d", "b", "e", "a", "c"]


async def test_items_wait_one_retry_interval_by_default(
    store: MemoryStore, clock: FakeClock
) -> None:
    queue = make(store, clock, retry_interval_s=30)
    result = await queue.push({"text": "later"}, reason="quota")
    assert result.item is not None
    assert result.item.not_before == clock.now + 30
    assert result.item.reason == "quota"
    assert queue.due() == []
    clock.now += 30
    assert texts(queue.due()) == ["later"]


async def test_due_leases_items_and_respects_the_limit(
    store: MemoryStore, clock: FakeClock
) -> None:
    queue = make(store, clock, batch_size=2)
    for n in range(3):
        await queue.push({"text": str(n)}, delay_s=0)
    assert texts(queue.due()) == ["0", "1"]
    # Leased items are in flight: never handed out twice.
    assert texts(queue.due()) == ["2"]
    assert queue.due() == []
    assert queue.size == 3


async def test_estimated_wait_follows_the_formula_and_grows_with_position(
    store: MemoryStore, clock: FakeClock
) -> None:
    queue = make(store, clock, retry_interval_s=30, batch_size=5)
    waits = []
    for n in range(12):
        result = await queue.push({"text": str(n)})
        assert result.position == n + 1
        waits.append(result.estimated_wait_s)
    # First attempt after one interval, one more interval per full batch ahead.
    assert waits == [30.0] * 5 + [60.0] * 5 + [90.0] * 2
    curve = [queue.estimated_wait_s(p) for p in range(1, 200)]
    assert curve == sorted(curve)
    assert queue.estimated_wait_s(1, not_before=clock.now) == 0.0
    with pytest.raises(ValueError, match="1-based"):
        queue.estimated_wait_s(0)


async def test_a_high_priority_push_gets_an_early_position(
    store: MemoryStore, clock: FakeClock
) -> None:
    queue = make(store, clock)
    for n in range(4):
        await queue.push({"text": str(n)})
    urgent = await queue.push({"text": "urgent"}, priority=5)
    assert urgent.position == 1


# -- overflow ----------------------------------------------------------------------------------


async def test_full_queue_refuses_a_newcomer_that_does_not_outrank(
    store: MemoryStore, clock: FakeClock
) -> None:
    queue = make(store, clock, max_size=2)
    await queue.push({"text": "a"}, priority=1)
    await queue.push({"text": "b"}, priority=1)
    assert not queue.would_accept(1)
    result = await queue.push({"text": "c"}, priority=1)
    assert (result.accepted, result.item, result.refused_reason) == (False, None, "overflow")
    assert texts(queue.items) == ["a", "b"]
    assert queue.stats.dropped_total["overflow"] == 1
    assert_conserved(queue.stats)


async def test_higher_priority_newcomer_evicts_the_item_served_last(
    store: MemoryStore, clock: FakeClock
) -> None:
    queue = make(store, clock, max_size=3)
    namespace = store.namespace("queue")
    await queue.push({"text": "old-low"}, priority=0)
    await queue.push({"text": "high"}, priority=2)
    last = await queue.push({"text": "new-low"}, priority=0)
    assert queue.would_accept(1)
    result = await queue.push({"text": "mid"}, priority=1)
    assert result.accepted
    assert result.evicted == last.item
    assert texts(queue.items) == ["high", "mid", "old-low"]
    assert last.item is not None
    assert last.item.id not in await stored_ids(namespace)
    assert queue.stats.dropped_total["overflow"] == 1
    assert queue.stats.pressure == 1.0
    assert_conserved(queue.stats)


async def test_leased_items_are_never_evicted(store: MemoryStore, clock: FakeClock) -> None:
    queue = make(store, clock, max_size=1)
    await queue.push({"text": "in flight"}, delay_s=0)
    queue.due()
    assert not queue.would_accept(9)
    result = await queue.push({"text": "vip"}, priority=9)
    assert not result.accepted
    assert texts(queue.items) == ["in flight"]


# -- outcomes ----------------------------------------------------------------------------------


async def test_answered_item_is_forgotten_and_its_wait_observed(
    store: MemoryStore, clock: FakeClock
) -> None:
    queue = make(store, clock)
    namespace = store.namespace("queue")
    await queue.push({"text": "q"}, delay_s=0)
    (item,) = queue.due()
    clock.now += 42
    await queue.mark_answered(item)
    assert queue.size == 0
    assert await stored_ids(namespace) == set()
    wait = queue.stats.wait
    assert (wait.count, wait.sum) == (1, 42.0)
    assert dict(wait.cumulative_buckets())[60.0] == 1
    assert dict(wait.cumulative_buckets())[30.0] == 0
    with pytest.raises(KeyError, match="not queued"):
        await queue.mark_answered(item)
    assert_conserved(queue.stats)


async def test_failed_attempts_reschedule_until_the_last_one(
    store: MemoryStore, clock: FakeClock
) -> None:
    queue = make(store, clock, max_attempts=3, retry_interval_s=30)
    await queue.push({"text": "q"}, delay_s=0)
    (item,) = queue.due()
    assert await queue.mark_failed(item)
    again = queue.get(item.id)
    assert again is not None
    assert (again.attempts, again.not_before) == (1, clock.now + 30)
    assert queue.due() == []  # not before the next retry time

    clock.now += 30
    (item,) = queue.due()
    # The provider's longer retry delay wins over the interval.
    assert await queue.mark_failed(item, retry_after_s=100)
    again = queue.get(item.id)
    assert again is not None
    assert (again.attempts, again.not_before) == (2, clock.now + 100)

    clock.now += 100
    (item,) = queue.due()
    assert not await queue.mark_failed(item)
    assert queue.size == 0
    assert queue.stats.dropped_total["failed"] == 1
    assert queue.stats.retried_total == 2
    assert await stored_ids(store.namespace("queue")) == set()
    assert_conserved(queue.stats)


async def test_defer_puts_an_item_back_without_spending_an_attempt(
    store: MemoryStore, clock: FakeClock
) -> None:
    queue = make(store, clock)
    await queue.push({"text": "q"}, delay_s=0)
    (item,) = queue.due()
    deferred = await queue.defer(item, 12)
    assert (deferred.attempts, deferred.not_before) == (0, clock.now + 12)
    clock.now += 12
    assert queue.due() == [deferred]
    assert queue.stats.deferred_total == 1


async def test_old_items_expire_but_items_in_flight_are_spared(
    store: MemoryStore, clock: FakeClock
) -> None:
    queue = make(store, clock, max_age_s=300)
    await queue.push({"text": "in flight"}, delay_s=0)
    await queue.push({"text": "waiting"}, delay_s=0)
    (leased,) = queue.due(limit=1)
    clock.now += 299
    assert await queue.expire() == []
    clock.now += 1
    # Expired items are not handed out by due() either: they await expire().
    assert queue.due() == []
    expired = await queue.expire()
    assert texts(expired) == ["waiting"]
    assert texts(queue.items) == ["in flight"]
    assert queue.stats.dropped_total["expired"] == 1
    await queue.mark_answered(leased)
    assert_conserved(queue.stats)


async def test_payload_must_be_a_json_object(store: MemoryStore, clock: FakeClock) -> None:
    queue = make(store, clock)
    with pytest.raises(TypeError):
        await queue.push({"when": object()})
    with pytest.raises(ValueError, match="JSON"):
        await queue.push({"x": float("nan")})
    with pytest.raises(TypeError, match="dict"):
        await queue.push(["not", "a", "dict"])  # type: ignore[arg-type]
    assert queue.stats.pushed_total == 0


async def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MessageQueue(None, max_size=0)
    with pytest.raises(ValueError, match="max_age_s"):
        MessageQueue(None, max_age_s=0)
    with pytest.raises(ValueError, match="retry_interval_s"):
        MessageQueue(None, retry_interval_s=float("inf"))


# -- persistence -------------------------------------------------------------------------------


async def test_every_mutation_is_persisted_one_key_per_item(
    store: MemoryStore, clock: FakeClock
) -> None:
    queue = make(store, clock)
    namespace = store.namespace("queue")
    first = await queue.push({"text": "a", "reply_to": [1, 2]}, priority=1, delay_s=0)
    second = await queue.push({"text": "b"})
    assert first.item is not None and second.item is not None
    assert await stored_ids(namespace) == {first.item.id, second.item.id}
    (item,) = queue.due(limit=1)
    await queue.mark_failed(item)
    stored = await namespace.get_json(f"item:{item.id}")
    assert stored is not None
    assert stored["attempts"] == 1
    assert stored["payload"] == {"text": "a", "reply_to": [1, 2]}


async def test_a_sqlite_queue_survives_reopening_with_the_same_items_and_order(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "bot.db"
    async with SqliteStore(path, cleanup_interval_s=3600) as store:
        queue = make(store, clock, batch_size=10)
        for text, priority in [("a", 0), ("b", 2), ("c", 0), ("d", 1), ("done", 3)]:
            await queue.push({"text": text}, priority=priority, delay_s=0)
        done, b, *_ = queue.due(limit=2)
        await queue.mark_answered(done)
        await queue.mark_failed(b, retry_after_s=45)
        before = queue.items
        assert await queue.close() == []  # everything is persisted: nothing dropped

    async with SqliteStore(path, cleanup_interval_s=3600) as store:
        reopened = make(store, clock, batch_size=10)
        assert await reopened.load() == []
        assert reopened.items == before
        assert texts(reopened.items) == ["b", "d", "a", "c"]
        assert reopened.stats.restored_total == 4
        # New pushes continue the FIFO order after the restored ones.
        await reopened.push({"text": "e"}, delay_s=0)
        clock.now += 45
        assert texts(reopened.due()) == ["b", "d", "a", "c", "e"]


async def test_a_push_is_served_only_once_its_write_is_done_and_leaves_no_ghost(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with SqliteStore(tmp_path / "bot.db", cleanup_interval_s=3600) as store:
        queue = make(store, clock)
        push = asyncio.create_task(queue.push({"text": "fast"}, delay_s=0))
        await asyncio.sleep(0)  # the push is now waiting for the store's thread
        assert queue.due() == []  # not queued (nor acknowledged) before it is stored
        assert (await push).accepted
        (item,) = queue.due()
        await queue.mark_answered(item)
        assert await stored_ids(store.namespace("queue")) == set()


async def test_load_drops_expired_items_and_returns_them(
    store: MemoryStore, clock: FakeClock
) -> None:
    queue = make(store, clock, max_age_s=300)
    await queue.push({"text": "old"})
    clock.now += 200
    await queue.push({"text": "young"})
    clock.now += 150

    reopened = make(store, clock, max_age_s=300)
    dropped = await reopened.load()
    assert [(d.item.payload["text"], d.reason) for d in dropped] == [("old", "expired")]
    assert texts(reopened.items) == ["young"]
    assert reopened.stats.dropped_total["expired"] == 1
    assert len(await stored_ids(store.namespace("queue"))) == 1
    assert_conserved(reopened.stats)


async def test_load_trims_to_a_smaller_max_size_as_overflow(
    store: MemoryStore, clock: FakeClock
) -> None:
    queue = make(store, clock)
    for text, priority in [("a", 0), ("b", 1), ("c", 0)]:
        await queue.push({"text": text}, priority=priority)
    reopened = make(store, clock, max_size=2)
    dropped = await reopened.load()
    assert [(d.item.payload["text"], d.reason) for d in dropped] == [("c", "overflow")]
    assert texts(reopened.items) == ["b", "a"]


async def test_corrupt_entries_are_skipped_counted_and_removed(
    store: MemoryStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    queue = make(store, clock)
    good = await queue.push({"text": "good"})
    assert good.item is not None
    namespace = store.namespace("queue")
    await namespace.set("item:garbage", b"\xff not json")
    await namespace.set_json("item:list", [1, 2])
    await namespace.set_json("item:mismatch", {"v": 1, "id": "other"})
    broken = {"v": 1, "id": "broken", "payload": {}, "reason": "", "priority": "high"}
    await namespace.set_json("item:broken", broken)
    future = {"v": 99, "id": "future"}
    await namespace.set_json("item:future", future)

    reopened = make(store, clock)
    assert await reopened.load() == []
    assert [item.id for item in reopened.items] == [good.item.id]
    assert reopened.stats.corrupt_total == 5
    assert await stored_ids(namespace) == {good.item.id}
    assert "unreadable queue entry" in caplog.text


async def test_without_a_store_close_drops_everything_as_shutdown(clock: FakeClock) -> None:
    queue = make(None, clock)
    assert await queue.load() == []
    await queue.push({"text": "a"})
    await queue.push({"text": "b"})
    assert await queue.flush() == 2
    lost = await queue.close()
    assert texts(lost) == ["a", "b"]
    assert queue.stats.dropped_total["shutdown"] == 2
    refused = await queue.push({"text": "late"})
    assert (refused.accepted, refused.refused_reason) == (False, "shutdown")
    assert not queue.would_accept(100)
    assert_conserved(queue.stats)


async def test_a_push_the_store_refused_is_not_acknowledged(clock: FakeClock) -> None:
    # Issue 16 item 9: the user was told "queued (position N)" for an item the store never
    # held, and a kill -9 lost it. Now nothing unstored is acknowledged.
    async with MemoryStore(max_keys=2, cleanup_interval_s=3600) as small:
        reported: list[None] = []
        queue = make(small, clock, on_store_error=lambda: reported.append(None))
        a = await queue.push({"text": "a"}, delay_s=0)
        await queue.push({"text": "b"})
        c = await queue.push({"text": "c"})
        assert (c.accepted, c.item, c.position, c.refused_reason) == (
            False,
            None,
            0,
            "store_error",
        )
        assert texts(queue.items) == ["a", "b"]
        assert queue.stats.dropped_total["store_error"] == 1
        assert queue.stats.persist_errors_total == 1
        # ... and the failure is reported (the app counts llmbot_errors_total{component="store"}).
        assert len(reported) == 1
        assert await queue.flush() == 0

        assert a.item is not None
        await queue.mark_answered(queue.due()[0])  # frees a key in the store
        d = await queue.push({"text": "d"})
        assert d.accepted and d.item is not None
        assert await stored_ids(small.namespace("queue")) == {i.id for i in queue.items}
        assert await queue.close() == []  # everything acknowledged is in the store
        assert texts(queue.items) == ["b", "d"]
        assert_conserved(queue.stats)


async def test_an_eviction_happens_only_once_the_newcomer_is_stored(clock: FakeClock) -> None:
    async with MemoryStore(max_keys=1, cleanup_interval_s=3600) as small:
        queue = make(small, clock, max_size=1)
        low = await queue.push({"text": "low"}, priority=0)
        high = await queue.push({"text": "high"}, priority=1)  # the store is full: refused
        assert (high.accepted, high.evicted, high.refused_reason) == (False, None, "store_error")
        assert low.item is not None and queue.items == [low.item]
        assert queue.stats.dropped_total["overflow"] == 0
        assert_conserved(queue.stats)


# -- waking ------------------------------------------------------------------------------------


async def test_wait_until_due_wakes_on_a_push_that_is_due() -> None:
    queue = MessageQueue(None)
    waiter = asyncio.create_task(queue.wait_until_due())
    await asyncio.sleep(0)
    assert not waiter.done()
    await queue.push({"text": "now"}, delay_s=0)
    assert await asyncio.wait_for(waiter, 5)


async def test_a_push_not_yet_due_rearms_the_timer_and_wake_rechecks(
    clock: FakeClock,
) -> None:
    queue = make(None, clock, retry_interval_s=30)
    waiter = asyncio.create_task(queue.wait_until_due())
    await queue.push({"text": "later"})
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiter.done()
    clock.now += 30
    queue.wake()
    assert await asyncio.wait_for(waiter, 5)


async def test_wait_until_due_wakes_for_expiry_work(clock: FakeClock) -> None:
    queue = make(None, clock, max_age_s=60, retry_interval_s=30)
    await queue.push({"text": "q"}, delay_s=0)
    (item,) = queue.due()
    await queue.defer(item, 1000)  # its next attempt comes after its max age
    clock.now += 60
    assert await queue.wait_until_due(timeout_s=5)
    assert queue.due() == []
    assert texts(await queue.expire()) == ["q"]


async def test_wait_until_due_times_out_and_stops_on_close(clock: FakeClock) -> None:
    queue = make(None, clock)
    assert not await queue.wait_until_due(timeout_s=0.01)
    waiter = asyncio.create_task(queue.wait_until_due())
    await asyncio.sleep(0)
    await queue.close()
    assert not await asyncio.wait_for(waiter, 5)


async def test_faster_retries_pull_waiting_items_in(clock: FakeClock) -> None:
    queue = make(None, clock, retry_interval_s=30)
    await queue.push({"text": "a"})
    await queue.push({"text": "soon"}, delay_s=5)
    waiter = asyncio.create_task(queue.wait_until_due())
    await asyncio.sleep(0)
    queue.set_retry_interval(10)
    assert queue.retry_interval_s == 10
    assert [item.not_before - clock.now for item in queue.items] == [10, 5]
    clock.now += 10
    queue.wake()
    assert await asyncio.wait_for(waiter, 5)
    with pytest.raises(ValueError, match="positive"):
        queue.set_retry_interval(0)


# -- nothing is lost ---------------------------------------------------------------------------

# Kinds repeated to weigh the mix towards traffic, so queues fill, overflow and drain.
_KINDS = (
    ["push"] * 4 + ["take"] * 3 + ["answer"] + ["fail"] * 3 + ["defer", "tick", "tick", "expire"]
)
_OPS = st.lists(
    st.tuples(
        st.sampled_from([*_KINDS, "restart"]),
        st.integers(0, 9),  # priority, batch limit or which leased item
        st.sampled_from([None, 0.0, 5.0, 50.0, 100.0]),  # delay or retry_after
        st.floats(0, 400),  # clock step
    ),
    min_size=10,
    max_size=80,
)


async def _scenario(ops: list[tuple[str, int, float | None, float]]) -> None:
    clock = FakeClock(1_000_000.0)
    # Fewer store keys than queue slots: some pushes cannot be persisted, so restarts drop them.
    async with MemoryStore(max_keys=4, cleanup_interval_s=3600) as store:

        def new_queue() -> MessageQueue:
            return make(store, clock, max_size=5, max_age_s=300, max_attempts=2)

        queue = new_queue()
        status: dict[str, str] = {}  # id -> queued | answered | dropped:<reason>
        leased: list[QueuedItem] = []

        def settle(item_id: str, outcome: str) -> None:
            # Every item leaves the queue once, and only from the queued state.
            assert status[item_id] == "queued", (item_id, status[item_id], outcome)
            status[item_id] = outcome

        def settle_dropped(dropped: list[DroppedItem]) -> None:
            for drop in dropped:
                settle(drop.item.id, f"dropped:{drop.reason}")

        for kind, number, delay, step in ops:
            if kind == "push":
                result = await queue.push({"n": len(status)}, priority=number % 4, delay_s=delay)
                if result.evicted is not None:
                    assert result.evicted.id not in {item.id for item in leased}
                    settle(result.evicted.id, "dropped:overflow")
                if result.item is not None:
                    status[result.item.id] = "queued"
            elif kind == "take":
                leased.extend(queue.due(limit=1 + number % 3))
            elif kind in ("answer", "fail", "defer") and leased:
                item = leased.pop(number % len(leased))
                if kind == "answer":
                    await queue.mark_answered(item)
                    settle(item.id, "answered")
                elif kind == "fail":
                    if not await queue.mark_failed(item, retry_after_s=delay):
                        settle(item.id, "dropped:failed")
                else:
                    await queue.defer(item, delay or 0.0)
            elif kind == "tick":
                clock.now += step
            elif kind == "expire":
                for item in await queue.expire():
                    # An item in flight may be answered any moment: it must not be notified.
                    assert item.id not in {taken.id for taken in leased}
                    settle(item.id, "dropped:expired")
            elif kind == "restart":
                # The worker stops mid-call: its leases vanish with the process.
                leased = []
                for item in await queue.close():
                    settle(item.id, "dropped:shutdown")
                assert_conserved(queue.stats)
                queue = new_queue()
                settle_dropped(await queue.load())

            assert queue.size <= queue.max_size
            assert_conserved(queue.stats)
            queued = {item_id for item_id, s in status.items() if s == "queued"}
            assert {item.id for item in queue.items} == queued
            assert set(queue.stats.dropped_total) == set(DROP_REASONS)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS)
def test_every_pushed_item_ends_in_exactly_one_place(
    ops: list[tuple[str, int, float | None, float]],
) -> None:
    asyncio.run(_scenario(ops))
