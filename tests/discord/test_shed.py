"""Shed notices: one per channel per interval, naming everyone shed there, bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import pytest

from bot.chat.intake import IntakeStats
from bot.chat.models import IncomingMessage, MessageTarget
from bot.discord.shed import MAX_MENTIONS, ShedNotices


@dataclass(frozen=True)
class Notice:
    channel_id: int
    reply_to: int
    text: str
    user_ids: tuple[int, ...]
    at: float


class Channel:
    """Records the notices sent; `fail` makes the next ones raise."""

    def __init__(self) -> None:
        self.notices: list[Notice] = []
        self.fail = False

    async def send(self, channel_id: int, reply_to: int, text: str, users: Sequence[int]) -> None:
        if self.fail:
            raise RuntimeError("Discord said no")
        self.notices.append(Notice(channel_id, reply_to, text, tuple(users), time.monotonic()))


def message(message_id: int, channel_id: int, author_id: int) -> IncomingMessage:
    return IncomingMessage(
        message_id=message_id,
        channel_id=channel_id,
        guild_id=1,
        author_id=author_id,
        author_name=f"user{author_id}",
        text="hello?",
        target=MessageTarget(channel_id, message_id),
    )


async def wait_for(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5.0):
        while not condition():  # noqa: ASYNC110 - polling what the notice task does
            await asyncio.sleep(0.005)


@pytest.fixture
def sink() -> Channel:
    return Channel()


@pytest.fixture
async def notices(sink: Channel) -> AsyncIterator[ShedNotices]:
    shed = ShedNotices(sink.send, IntakeStats(1, 1), interval_s=0.3, gather_s=0.05)
    shed.start()
    yield shed
    await shed.stop(1.0)


async def test_a_channel_gets_one_notice_naming_each_shed_author_once(
    notices: ShedNotices, sink: Channel
) -> None:
    notices.shed(message(11, 100, 1), "full")
    notices.shed(message(12, 100, 2), "full")
    notices.shed(message(13, 100, 1), "full")
    notices.shed(message(21, 200, 3), "full")
    await wait_for(lambda: len(sink.notices) == 2)

    by_channel = {n.channel_id: n for n in sink.notices}
    assert by_channel[100].reply_to == 11  # answers the first shed message of the channel
    assert by_channel[100].user_ids == (1, 2)
    assert "<@1>, <@2>" in by_channel[100].text and "your questions" in by_channel[100].text
    assert by_channel[200].user_ids == (3,)
    assert "too many questions" in by_channel[200].text
    assert notices._stats.shed_notices_total == 2


async def test_a_channel_gets_at_most_one_notice_per_interval(
    notices: ShedNotices, sink: Channel
) -> None:
    notices.shed(message(11, 100, 1), "full")
    await wait_for(lambda: len(sink.notices) == 1)
    notices.shed(message(12, 100, 2), "full")
    notices.shed(message(13, 100, 3), "full")
    await wait_for(lambda: len(sink.notices) == 2)
    first, second = sink.notices
    assert second.at - first.at >= 0.3
    assert second.user_ids == (2, 3)


async def test_past_the_mention_limit_the_rest_are_counted_in_the_text(
    notices: ShedNotices, sink: Channel
) -> None:
    for n in range(MAX_MENTIONS + 3):
        notices.shed(message(1000 + n, 100, n + 1), "shutdown")
    await wait_for(lambda: len(sink.notices) == 1)
    (notice,) = sink.notices
    assert len(notice.user_ids) == MAX_MENTIONS
    assert "(and 3 more questions here)" in notice.text
    assert "restarting" in notice.text
    assert len(notice.text) < 2000


async def test_channels_beyond_the_bound_and_failed_sends_are_counted_untold(
    sink: Channel,
) -> None:
    stats = IntakeStats(1, 1)
    shed = ShedNotices(sink.send, stats, interval_s=0.3, max_channels=1, gather_s=0.05)
    shed.shed(message(11, 100, 1), "full")
    shed.shed(message(21, 200, 2), "full")  # no room to remember a second channel
    assert stats.shed_untold_total == 1
    sink.fail = True
    shed.start()
    await wait_for(lambda: stats.shed_untold_total == 2)
    assert stats.shed_notices_total == 0
    await shed.stop(1.0)


async def test_stop_sends_what_is_pending_at_once(sink: Channel) -> None:
    stats = IntakeStats(1, 1)
    shed = ShedNotices(sink.send, stats, interval_s=60.0, gather_s=0.05)
    shed.start()
    shed.shed(message(11, 100, 1), "full")
    await wait_for(lambda: len(sink.notices) == 1)
    shed.shed(message(12, 100, 2), "shutdown")  # within the interval: would wait a minute
    await shed.stop(1.0)
    assert [n.user_ids for n in sink.notices] == [(1,), (2,)]
    assert stats.shed_notices_total == 2
    assert stats.shed_untold_total == 0
