"""The intake: a bounded number admitted, a bounded line in arrival order, the rest shed."""

from __future__ import annotations

import asyncio

import pytest

from bot.chat.intake import Intake
from tests.fakes import FakeClock


async def _settled() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_admits_up_to_the_limit_then_queues_then_sheds() -> None:
    intake = Intake(2, 1)
    assert await intake.admit() == "admitted"
    assert await intake.admit() == "admitted"
    third = asyncio.create_task(intake.admit())
    await _settled()
    assert not third.done()
    assert (intake.stats.in_flight, intake.stats.waiting) == (2, 1)

    assert await intake.admit() == "full"  # the line is full: shed at once
    assert intake.stats.shed_total == {"full": 1, "shutdown": 0}

    intake.release()  # the slot goes to the waiting one, in_flight stays at 2
    assert await third == "admitted"
    assert (intake.stats.in_flight, intake.stats.waiting) == (2, 0)
    intake.release()
    intake.release()
    assert intake.stats.in_flight == 0
    assert intake.stats.admitted_total == 3


async def test_waiters_are_served_in_arrival_order_and_their_wait_is_measured() -> None:
    clock = FakeClock()
    intake = Intake(1, 10, clock=clock)
    assert await intake.admit() == "admitted"
    order: list[int] = []

    async def wait(n: int) -> None:
        assert await intake.admit() == "admitted"
        order.append(n)

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await _settled()
    clock.advance(2.0)
    for _ in range(3):
        intake.release()
        await _settled()
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]
    # One admitted at once (0 s) and three after 2 s: the histogram's sum says so.
    assert intake.stats.wait.count == 4
    assert intake.stats.wait.sum == pytest.approx(6.0)


async def test_close_sheds_the_waiting_and_every_later_message() -> None:
    intake = Intake(1, 5)
    assert await intake.admit() == "admitted"
    waiting = [asyncio.create_task(intake.admit()) for _ in range(3)]
    await _settled()
    assert intake.close() == 3
    assert [await w for w in waiting] == ["shutdown"] * 3
    assert await intake.admit() == "shutdown"
    assert intake.stats.shed_total == {"full": 0, "shutdown": 4}
    assert intake.stats.waiting == 0


async def test_a_cancelled_waiter_leaves_the_line_and_keeps_no_slot() -> None:
    intake = Intake(1, 5)
    assert await intake.admit() == "admitted"
    waiter = asyncio.create_task(intake.admit())
    await _settled()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert intake.stats.waiting == 0
    intake.release()
    assert intake.stats.in_flight == 0
    assert await intake.admit() == "admitted"


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        Intake(0, 1)
    with pytest.raises(ValueError, match="max_waiting"):
        Intake(1, -1)
