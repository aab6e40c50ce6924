"""The bot's own REST pace: a small burst for answers that start at once, never Discord's 50/s."""

from __future__ import annotations

from typing import cast

import hikari
import pytest

from bot.discord.delivery import DiscordDelivery, DiscordObserver
from bot.resilience.rest_pace import DISCORD_GLOBAL_RPS, LocalPace


class _Quiet:
    def gateway_event(self, event_type: str) -> None: ...

    def discord_rest(self, status: int | None) -> None: ...


def _delivery(max_rps: float) -> DiscordDelivery:
    rest = cast(hikari.api.RESTClient, object())  # never called: only the pace is used
    return DiscordDelivery(rest, 1, max_rps, cast(DiscordObserver, _Quiet()))


@pytest.mark.parametrize(("max_rps", "burst"), [(45, 4), (4, 1), (30, 3), (49, 1), (50, 1)])
async def test_the_burst_is_a_tenth_of_a_second_and_stays_under_discords_limit(
    max_rps: float, burst: int
) -> None:
    delivery = _delivery(max_rps)
    assert isinstance(delivery.pace, LocalPace) and delivery.pace.burst == burst
    assert burst == 1 or burst + max_rps < DISCORD_GLOBAL_RPS
    for _ in range(burst):
        assert delivery.pace.has_capacity()
        await delivery.pace.acquire()  # at once: no waiting within the burst
    assert not delivery.pace.has_capacity()  # the next call waits for the refill
