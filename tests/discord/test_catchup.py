"""`SeenChannels`: the bounded, persisted per-channel marks behind the restart catch-up."""

from __future__ import annotations

from bot.discord.catchup import CATCHUP_OUTCOMES, RECENT_HANDLED, SeenChannels
from bot.ops.metrics.catalogue import CATCHUP_OUTCOMES as CATALOGUE_OUTCOMES
from bot.store import MemoryStore


class _Observer:
    def __init__(self) -> None:
        self.tracked: list[int] = []

    def catchup_message(self, outcome: str) -> None: ...

    def catchup_channel_scanned(self) -> None: ...

    def catchup_finished(self, seconds: float) -> None: ...

    def catchup_tracked(self, channels: int) -> None:
        self.tracked.append(channels)


def test_the_catalogue_lists_the_outcomes_catch_up_counts() -> None:
    assert CATALOGUE_OUTCOMES == CATCHUP_OUTCOMES


def test_only_channels_the_bot_was_asked_in_are_tracked_and_marks_only_move_forward() -> None:
    seen = SeenChannels(None, 10, _Observer())
    seen.saw(1, 100)  # a channel nobody asked the bot in
    assert len(seen) == 0
    seen.saw(1, 100, guild_id=7, track=True)
    seen.saw(1, 90)
    seen.saw(1, 120)
    mark = seen.get(1)
    assert mark is not None and mark.last_id == 120 and mark.guild_id == 7


def test_the_least_recently_active_channel_is_evicted_at_the_limit() -> None:
    observer = _Observer()
    seen = SeenChannels(None, 2, observer)
    seen.saw(1, 10, track=True)
    seen.saw(2, 11, track=True)
    seen.saw(1, 12)  # channel 1 is active again
    seen.saw(3, 13, track=True)
    assert [c for c, _ in seen.marks()] == [1, 3]
    assert observer.tracked[-1] == 2


def test_handled_ids_are_bounded() -> None:
    seen = SeenChannels(None, 2, _Observer())
    for message_id in range(RECENT_HANDLED + 5):
        seen.remember_handled(message_id)
    assert not seen.handled(0) and seen.handled(RECENT_HANDLED + 4)


async def test_marks_survive_a_restart_and_evictions_are_deleted() -> None:
    async with MemoryStore() as store:
        ns = store.namespace("catchup")
        seen = SeenChannels(ns, 2, _Observer())
        seen.saw(1, 10, guild_id=5, parent_id=6, track=True)
        seen.saw(2, 11, track=True)
        await seen.flush()
        seen.saw(3, 12, track=True)  # evicts channel 1
        await seen.flush()
        assert sorted(await ns.keys()) == ["2", "3"]

        again = SeenChannels(ns, 1, _Observer())  # a smaller limit keeps the most recent
        assert await again.load() == 1
        assert [c for c, _ in again.marks()] == [3]
        await again.flush()
        assert await ns.keys() == ["3"]
        await ns.set("junk", b"not json")
        third = SeenChannels(ns, 5, _Observer())
        assert await third.load() == 1
        assert await ns.keys() == ["3"]  # the unreadable entry is gone
