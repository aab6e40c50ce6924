"""AnswerLedger: one record per message id, durable, bounded, expiring, resumable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import MemoryStore, SqliteStore
from bot.store.answered import AnswerLedger
from tests.fakes import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "bot.db", cleanup_interval_s=3600) as opened:
        yield opened


def ledger(store: SqliteStore | MemoryStore | None, clock: FakeClock, **kw: object) -> AnswerLedger:
    namespace = store.namespace("answered") if store is not None else None
    return AnswerLedger(namespace, clock=clock, **kw)  # type: ignore[arg-type]


async def test_a_second_claim_of_the_same_id_is_a_counted_duplicate(clock: FakeClock) -> None:
    answers = ledger(None, clock)
    assert await answers.claim(7, {"message_id": 7}, "gateway")
    assert not await answers.claim(7, {"message_id": 7}, "gateway")
    assert not await answers.claim(7, {"message_id": 7}, "catchup")
    assert answers.stats.duplicates_total == {"gateway": 1, "queue": 0, "catchup": 1}
    assert answers.stats.open_by_state["accepted"] == 1


async def test_the_final_reply_is_begun_once_and_then_is_final(clock: FakeClock) -> None:
    answers = ledger(None, clock)
    await answers.claim(7, {}, "gateway")
    assert await answers.begin_final(7, ("hi",), "answer")
    assert not await answers.begin_final(7, ("hi",), "answer")  # being sent by someone else
    await answers.finish(7, "answered")
    assert answers.is_final(7)
    assert not await answers.begin_final(7, ("again",), "answer")
    assert answers.stats.open_by_state == {"accepted": 0, "queued": 0, "delivering": 0}
    assert answers.stats.size == 1


async def test_an_abandoned_final_reply_can_be_begun_again(clock: FakeClock) -> None:
    answers = ledger(None, clock)
    await answers.claim(7, {}, "gateway")
    assert await answers.begin_final(7, ("hi",), "answer")
    answers.abandon_final(7)
    assert await answers.begin_final(7, ("hi",), "answer")


async def test_records_survive_a_restart_and_the_unfinished_are_the_journal(
    store: SqliteStore, clock: FakeClock
) -> None:
    first = ledger(store, clock)
    await first.claim(1, {"message_id": 1, "text": "answered"}, "gateway")
    await first.begin_final(1, ("an answer",), "answer")
    await first.finish(1, "answered")
    await first.claim(2, {"message_id": 2, "text": "thinking"}, "gateway")
    await first.claim(3, {"message_id": 3, "text": "queued"}, "gateway")
    await first.queued(3)
    await first.claim(4, {"message_id": 4, "text": "sending"}, "gateway")
    await first.begin_final(4, ("part 1", "part 2"), "answer")

    second = ledger(store, clock)
    assert await second.load() == 3
    assert second.is_final(1)
    assert not await second.claim(1, {}, "gateway")  # a replay after the restart
    states = {r.message_id: (r.state, r.payload, r.reply) for r in second.unfinished()}
    assert states == {
        2: ("accepted", {"message_id": 2, "text": "thinking"}, None),
        3: ("queued", {"message_id": 3, "text": "queued"}, None),
        4: ("delivering", {"message_id": 4, "text": "sending"}, (("part 1", "part 2"), "answer")),
    }
    assert second.stats.open_by_state == {"accepted": 1, "queued": 1, "delivering": 1}


async def test_answered_ids_expire_after_the_ttl_but_unfinished_ones_never(
    store: SqliteStore, clock: FakeClock
) -> None:
    answers = ledger(store, clock, ttl_s=600)
    await answers.claim(1, {}, "gateway")
    await answers.finish(1, "answered")
    await answers.claim(2, {"message_id": 2}, "gateway")
    clock.advance(601)
    assert not answers.known(1)
    assert answers.known(2)
    reloaded = ledger(store, clock, ttl_s=600)
    await reloaded.load()
    assert not reloaded.known(1) and reloaded.known(2)


async def test_the_record_is_bounded_by_forgetting_the_oldest_answered(
    store: SqliteStore, clock: FakeClock
) -> None:
    answers = ledger(store, clock, max_records=3)
    await answers.claim(100, {"message_id": 100}, "gateway")  # unfinished: never evicted
    for message_id in (1, 2, 3, 4):
        await answers.claim(message_id, {}, "gateway")
        await answers.finish(message_id, "answered")
        clock.advance(1)
    assert answers.stats.size == 3
    assert answers.known(100) and not answers.known(1) and not answers.known(2)
    assert answers.stats.evicted_total == 2
    assert len(await store.namespace("answered").keys()) == 3  # the store is bounded too


async def test_a_failed_write_is_counted_and_the_message_still_answered_once(
    clock: FakeClock,
) -> None:
    async with MemoryStore(max_keys=1, cleanup_interval_s=3600) as small:
        errors: list[None] = []
        answers = AnswerLedger(
            small.namespace("answered"), clock=clock, on_store_error=lambda: errors.append(None)
        )
        assert await answers.claim(1, {}, "gateway")
        assert await answers.claim(2, {}, "gateway")  # the store is full: kept in memory
        assert errors and answers.stats.store_errors_total == len(errors)
        assert not await answers.claim(2, {}, "gateway")


async def test_unreadable_entries_are_skipped(store: SqliteStore, clock: FakeClock) -> None:
    namespace = store.namespace("answered")
    await namespace.set("not-an-id", b"{}")
    await namespace.set("5", b"not json")
    await namespace.set_json("6", {"v": 1, "s": "bogus", "t": 1.0})
    await namespace.set_json("7", {"v": 1, "s": "accepted", "t": 1.0, "p": {"message_id": 7}})
    answers = ledger(store, clock)
    assert await answers.load() == 1
    assert [r.message_id for r in answers.unfinished()] == [7]


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="max_records"):
        AnswerLedger(None, max_records=0)
    with pytest.raises(ValueError, match="ttl_s"):
        AnswerLedger(None, ttl_s=0)


async def test_a_final_reply_without_a_claim_keeps_the_question_and_its_first_try(
    clock: FakeClock,
) -> None:
    # A queue entry written before the record existed: the journal still gets its question.
    answers = ledger(None, clock)
    assert await answers.begin_final(9, ("hi",), "answer", {"message_id": 9})
    answers.abandon_final(9)
    first_try = clock.now
    clock.advance(30)
    assert await answers.begin_final(9, ("hi",), "answer", {"message_id": 9})
    (record,) = answers.unfinished()
    assert (record.payload, record.at) == ({"message_id": 9}, first_try)


async def test_a_question_kept_for_the_next_start_is_queued_in_the_journal_only_when_stored(
    store: SqliteStore, clock: FakeClock
) -> None:
    first = ledger(store, clock)
    assert await first.claim_for_later(5, {"message_id": 5}, "gateway") == "journalled"
    assert await first.claim_for_later(5, {"message_id": 5}, "gateway") == "duplicate"
    assert first.stats.duplicates_total["gateway"] == 1
    assert [(r.message_id, r.state) for r in first.unfinished()] == [(5, "queued")]
    second = ledger(store, clock)
    await second.load()
    assert [(r.message_id, r.state, r.payload) for r in second.unfinished()] == [
        (5, "queued", {"message_id": 5})
    ]
    assert not await second.claim(5, {}, "catchup")  # a catch-up's copy: refused and counted
    assert second.stats.duplicates_total["catchup"] == 1
    # Without a store, or when the store refuses the write, nothing may be promised.
    assert await ledger(None, clock).claim_for_later(6, {}, "gateway") == "unstored"
    async with MemoryStore(max_keys=1, cleanup_interval_s=3600) as small:
        full = AnswerLedger(small.namespace("answered"), clock=clock)
        assert await full.claim_for_later(7, {}, "gateway") == "journalled"
        assert await full.claim_for_later(8, {}, "gateway") == "unstored"
        assert full.stats.store_errors_total == 1


async def test_only_the_last_runs_open_records_are_from_the_last_run(
    store: SqliteStore, clock: FakeClock
) -> None:
    first = ledger(store, clock)
    await first.claim(1, {"message_id": 1}, "gateway")
    await first.claim(2, {"message_id": 2}, "gateway")
    assert not first.from_last_run(1)  # this run's own
    second = ledger(store, clock)
    await second.load()
    await second.claim(3, {"message_id": 3}, "catchup")  # claimed before the resume runs
    assert [r.message_id for r in second.unfinished()] == [1, 2, 3]
    assert [second.from_last_run(i) for i in (1, 2, 3)] == [True, True, False]
    await second.begin_final(1, ("hi",), "answer")
    await second.finish(1, "answered")
    assert not second.from_last_run(1)  # finished: forgotten (the set is bounded by the load)


async def test_streamed_message_ids_survive_a_restart_until_the_answer_is_final(
    store: SqliteStore, clock: FakeClock
) -> None:
    answers = ledger(store, clock)
    await answers.claim(7, {"message_id": 7}, "gateway")
    await answers.streaming(7, (70,))
    await answers.streaming(7, (70, 71))  # rolled over into a second message
    await answers.claim(8, {"message_id": 8}, "gateway")

    again = ledger(store, clock)
    assert await again.load() == 2
    assert again.streamed(7) == (70, 71)
    assert again.streamed(8) == ()
    assert again.from_last_run(7) and again.from_last_run(8)
    await again.claim(9, {"message_id": 9}, "gateway")
    assert not again.from_last_run(9)  # claimed by this process: answered now, not resumed
    await again.queued(7)
    assert await again.begin_final(7, ("whole answer",), "answer")
    assert again.streamed(7) == (70, 71)  # kept while the final reply is being delivered
    await again.finish(7, "answered")
    assert again.streamed(7) == () and not again.from_last_run(7)
    await again.streaming(7, (72,))  # a late call on a finished record changes nothing
    assert again.streamed(7) == ()


async def test_a_record_with_bad_streamed_ids_is_unreadable(
    store: SqliteStore, clock: FakeClock
) -> None:
    namespace = store.namespace("answered")
    await namespace.set_json("5", {"v": 1, "s": "accepted", "t": 1.0, "m": ["70"]})
    await namespace.set_json("6", {"v": 1, "s": "accepted", "t": 1.0, "m": [70]})
    answers = ledger(store, clock)
    assert await answers.load() == 1
    assert answers.streamed(6) == (70,)
