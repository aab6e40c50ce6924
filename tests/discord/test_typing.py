"""The typing scheduler: one loop per channel, and triggers only with spare REST budget."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bot.discord.typing import TypingScheduler


class Budget:
    def __init__(self) -> None:
        self.spare = True
        self.triggers: list[int] = []

    async def trigger(self, channel_id: int) -> None:
        self.triggers.append(channel_id)


async def wait_for(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5.0):
        while not condition():  # noqa: ASYNC110 - polling what the typing loops do
            await asyncio.sleep(0.005)


async def test_one_loop_per_channel_however_many_messages() -> None:
    budget = Budget()
    typing = TypingScheduler(budget.trigger, lambda: budget.spare, refresh_s=60.0)
    release = asyncio.Event()

    async def handle(channel_id: int) -> None:
        async with typing.typing(channel_id):
            await release.wait()

    handlers = [asyncio.create_task(handle(7)) for _ in range(20)]
    handlers.append(asyncio.create_task(handle(8)))
    await wait_for(lambda: len(budget.triggers) == 2)
    assert sorted(budget.triggers) == [7, 8]
    assert typing.stats.loops == 2
    release.set()
    await asyncio.gather(*handlers)
    assert typing.stats.loops == 0
    assert typing.stats.sent == 2


async def test_no_trigger_while_the_budget_is_not_spare() -> None:
    budget = Budget()
    budget.spare = False
    typing = TypingScheduler(budget.trigger, lambda: budget.spare, retry_s=0.01)
    async with typing.typing(7):
        await wait_for(lambda: typing.stats.skipped >= 3)
        assert budget.triggers == []
        budget.spare = True
        await wait_for(lambda: budget.triggers == [7])
    await typing.close()


async def test_the_loop_stops_with_the_last_message_of_the_channel() -> None:
    budget = Budget()
    typing = TypingScheduler(budget.trigger, lambda: budget.spare, delay_s=30.0)
    async with typing.typing(7):
        assert typing.stats.loops == 1
    assert typing.stats.loops == 0
    assert budget.triggers == []  # answered before the delay: no indicator at all


async def test_a_trigger_that_found_no_free_turn_is_a_skip_not_a_send() -> None:
    # In a fleet the spare check is this process's view; the shared pace may still refuse
    # the turn (another process's reply waits for it): the trigger says False and tries later.
    answers = [False, False, True]
    calls: list[int] = []

    async def trigger(channel_id: int) -> bool:
        calls.append(channel_id)
        return answers[len(calls) - 1]

    typing = TypingScheduler(trigger, lambda: True, retry_s=0.01, refresh_s=60.0)
    async with typing.typing(7):
        await wait_for(lambda: typing.stats.sent == 1)
    assert calls == [7, 7, 7]
    assert typing.stats.skipped == 2
    await typing.close()
