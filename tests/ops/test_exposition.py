"""Each `/metrics` body is written from the values of that scrape: the counts are read anew
every time, the heap estimate at most every `HEAP_REFRESH_S`."""

from __future__ import annotations

import dataclasses

from bot.ops.metrics import Telemetry
from bot.ops.runtime import HEAP_REFRESH_S, Throttled
from tests.fakes import FakeClock
from tests.ops.fakes import MODEL, World, scrape, value


def test_each_scrape_reads_the_counts_anew_and_the_heap_estimate_per_interval() -> None:
    world = World()
    clock = FakeClock()
    heap_reads = iter(range(1_000, 10_000, 1_000))
    sources = dataclasses.replace(
        world.sources(), heap_bytes=Throttled(lambda: next(heap_reads), HEAP_REFRESH_S, clock=clock)
    )
    telemetry = Telemetry(models=[MODEL], sources=sources)

    first = scrape(telemetry)
    world.chat.outcomes["answered"] += 2
    telemetry.gateway_event("READY")
    clock.now += HEAP_REFRESH_S / 2
    second = scrape(telemetry)
    assert value(second, "llmbot_messages_total", outcome="answered") == 2
    assert value(second, "llmbot_discord_gateway_events_total", type="READY") == 1
    assert value(first, "llmbot_python_heap_bytes") == 1_000
    assert value(second, "llmbot_python_heap_bytes") == 1_000
    clock.now += HEAP_REFRESH_S / 2
    assert value(scrape(telemetry), "llmbot_python_heap_bytes") == 2_000
