"""`llmbot_fleet_fallback{part}`: which fleet-wide parts run on their local stand-in (zeros, and
every part, without REDIS_URL)."""

from __future__ import annotations

import dataclasses

from bot.ops.metrics import Telemetry
from bot.resilience.fleet_fallback import FleetFallback
from tests.fakes import FakeClock
from tests.ops.fakes import MODEL, World, scrape, value


def test_a_part_on_its_stand_in_reads_1_until_redis_answers() -> None:
    world = World()
    clock = FakeClock()
    cache = FleetFallback("response cache", clock=clock)
    cooldowns = FleetFallback("cooldowns", clock=clock)
    parts = {"cache": cache.stats, "cooldowns": cooldowns.stats}
    sources = dataclasses.replace(world.sources(), fleet_parts=lambda: parts)
    telemetry = Telemetry(models=[MODEL], sources=sources)
    cache.failed(ConnectionError("refused"))
    cache.failed(ConnectionError("refused"))  # still the same fallback
    series = scrape(telemetry)
    assert value(series, "llmbot_fleet_fallback", part="cache") == 1
    assert value(series, "llmbot_fleet_fallbacks_total", part="cache") == 1
    assert value(series, "llmbot_fleet_fallback", part="cooldowns") == 0
    assert value(series, "llmbot_fleet_fallback", part="video") == 0  # not wired: zero
    assert not cache.try_redis()  # not before the retry time
    clock.advance(cache.retry_s)
    assert cache.try_redis() and cache.succeeded()
    series = scrape(telemetry)
    assert value(series, "llmbot_fleet_fallback", part="cache") == 0
    assert value(series, "llmbot_fleet_fallbacks_total", part="cache") == 1


def test_a_single_process_exports_zeros_for_every_part() -> None:
    series = scrape(World().telemetry())
    for part in ("cache", "cooldowns", "video"):
        assert value(series, "llmbot_fleet_fallback", part=part) == 0
        assert value(series, "llmbot_fleet_fallbacks_total", part=part) == 0
