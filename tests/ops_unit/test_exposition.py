"""`/metrics` bodies are written by the bot's own memoizing writer: byte for byte what
prometheus_client's `generate_latest` (text 0.0.4 and OpenMetrics 1.0) writes for the same
families, on the first scrape and on later ones whose values moved."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, exposition
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
    SummaryMetricFamily,
    UnknownMetricFamily,
)
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.registry import Collector
from prometheus_client.samples import BucketSpan, Exemplar, NativeHistogram, Timestamp
from prometheus_client.utils import floatToGoString

from bot.ops.metrics import Telemetry
from bot.ops.metrics import exposition as exposition_module
from bot.ops.metrics.exposition import _Exposition, _go_float
from bot.ops.runtime import HEAP_REFRESH_S, Throttled
from tests.ops_unit.fakes import MODEL, FakeClock, World, scrape, value

ODD_VALUES = (0, 0.0, -0.0, 1, -1, 7, 0.1, -2.5, 1e-9, 999_999.0, 1e6, 1_234_567.0, 1e7, 2**53)
ODD_VALUES += (1e16, 1.5e300, -1e20, math.inf, -math.inf, math.nan, True, 10**7, 123_456_789)


class Frozen(Collector):
    """Families collected once, so both writers see the same values."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self.metrics


def registry_of(*metrics: Metric) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Frozen(metrics))
    return registry


def assert_same_as_the_library(
    writer: _Exposition, registry: CollectorRegistry, *, fast: bool = True
) -> None:
    """Both formats equal the library's; `fast`: written without handing over to it (else:
    handed over)."""
    text = exposition.generate_latest(registry)
    openmetrics = openmetrics_exposition.generate_latest(registry)  # type: ignore[no-untyped-call]
    handed_over: list[int] = []

    def fallback(metrics: list[Metric]) -> Collector:
        handed_over.append(len(metrics))
        return Frozen(metrics)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exposition_module, "_Collected", fallback)
        assert writer.text(registry) == text
        assert writer.openmetrics(registry) == openmetrics
    assert bool(handed_over) is not fast, handed_over


def odd_families(offset: float) -> list[Metric]:
    """Every family type, escapes, timestamps and values the writer has a rule for."""
    counter = CounterMetricFamily("odd_events", 'a "quoted" \\ help\nline', labels=["kind", "b"])
    counter.add_metric(["plain", "1"], 3 + offset)
    counter.add_metric(['quote " back \\ newline \n', ""], offset, created=1_700_000_000.5)
    counter.add_metric(["exemplar", "2"], 5, exemplar=Exemplar({"trace_id": "abc"}, 0.25))
    counter.add_metric(["ts", "3"], 1, timestamp=1_700_000_000.123)
    counter.add_metric(
        ["ts-exemplar", "4"],
        2,
        timestamp=Timestamp(1_700_000_000, 5),
        exemplar=Exemplar({"b": 'x"y', "a": "z"}, 1.5, 1_700_000_000.25),
    )
    gauge = GaugeMetricFamily("odd_values", "every odd float", labels=["n"])
    for i, number in enumerate(ODD_VALUES):
        gauge.add_metric([str(i)], number)
    unit = GaugeMetricFamily("odd_size_bytes", "with a unit", value=offset, unit="bytes")
    histogram = HistogramMetricFamily("odd_latency_seconds", "histogram", labels=["op"])
    histogram.add_metric(
        ["save"],
        [("0.5", 1 + offset), ("1.0", 2 + offset, Exemplar({"trace_id": "t"}, 0.7)), ("+Inf", 3)],
        4.2 + offset,
    )
    negative = HistogramMetricFamily(
        "odd_signed", "negative buckets: no sum", buckets=[("-1.0", 1), ("+Inf", 2)], sum_value=0
    )
    gauge_histogram = GaugeHistogramMetricFamily(
        "odd_queue", "gauge histogram", buckets=[("1.0", 4), ("+Inf", 5)], gsum_value=9.5
    )
    summary = SummaryMetricFamily("odd_summary", "summary", count_value=3, sum_value=1.5)
    info = InfoMetricFamily("odd_build", "info", value={"version": "1.2.3", "commit": "abc"})
    stateset = StateSetMetricFamily("odd_state", "stateset", value={"a": True, "b": False})
    unknown = UnknownMetricFamily("odd_unknown", "unknown", value=offset)
    empty = GaugeMetricFamily("odd_empty", "")
    families: list[Metric] = [counter, gauge, unit, histogram, negative, gauge_histogram]
    return [*families, summary, info, stateset, unknown, empty]


def test_the_float_format_is_the_library_one() -> None:
    values = [*ODD_VALUES, 5e-324, -5e-324, 0.1 + 0.2, 1e6 - 0.5, 9_999_999.5, -1_234_567.0]
    values += [10.0**exponent for exponent in range(-20, 25)]
    values += [1.0 / 3 * 10.0**exponent for exponent in range(-10, 20)]
    for number in values:
        assert _go_float(number) == floatToGoString(number), number


def test_the_bots_families_render_as_the_library_renders_them(tmp_path: Path) -> None:
    world = World(tmp_path)
    telemetry = world.telemetry()
    tracer = TracerProvider().get_tracer("test")
    writer = _Exposition()
    for round_ in range(3):
        # Values move between scrapes; the kept name/label text must not hold old values.
        with tracer.start_as_current_span("message"):
            telemetry.observe_response(0.3 + round_)
            telemetry.observe_llm_call(MODEL, "ok", 0.2 * round_)
        telemetry.observe_llm_call("unknown-model", "timeout", 61.0)
        telemetry.gateway_event("MESSAGE_CREATE")
        world.chat.outcomes["answered"] += round_
        world.store.store("quota").record("save", ok=True, seconds=0.003 * round_)
        world.queue.wait.observe(0.5 * round_)
        world.shards = {0: world.shards[0], round_ + 1: world.shards[0]}  # a new series
        assert_same_as_the_library(writer, registry_of(*telemetry.registry.collect()))


@pytest.mark.parametrize("offset", [0.0, 1.5])
def test_every_family_type_and_escape_renders_as_the_library(offset: float) -> None:
    writer = _Exposition()
    assert_same_as_the_library(writer, registry_of(*odd_families(0.0)))
    # The second scrape comes from the kept text: new values, same output as the library.
    assert_same_as_the_library(writer, registry_of(*odd_families(offset)))


def test_names_the_fast_path_leaves_to_the_library_still_render_the_same() -> None:
    colon = GaugeMetricFamily("job:odd_ratio:rate5m", "a recording-rule style name", value=0.5)
    plain = GaugeMetricFamily("odd_plain", "plain", labels=["__reserved"])
    plain.add_metric(["x"], 1)
    native = HistogramMetricFamily("odd_native", "native histogram")
    native.add_sample(
        "odd_native",
        {},
        0,
        native_histogram=NativeHistogram(
            count_value=2,
            sum_value=1.5,
            schema=3,
            zero_threshold=0.001,
            zero_count=0,
            pos_spans=(BucketSpan(0, 1),),
            pos_deltas=(2,),
        ),
    )
    writer = _Exposition()
    assert_same_as_the_library(writer, registry_of(colon, plain), fast=False)
    assert_same_as_the_library(writer, registry_of(plain, native), fast=False)
    assert_same_as_the_library(writer, registry_of(plain))  # handing over once is not sticky


def test_a_sample_the_library_refuses_is_refused_alike() -> None:
    gauge = GaugeMetricFamily("odd_gauge", "exemplars belong on counters and buckets")
    gauge.add_sample("odd_gauge", {}, 1.0, exemplar=Exemplar({"trace_id": "t"}, 1.0))
    registry = registry_of(gauge)
    with pytest.raises(ValueError, match="exemplars"):
        openmetrics_exposition.generate_latest(registry)  # type: ignore[no-untyped-call]
    with pytest.raises(ValueError, match="exemplars"):
        _Exposition().openmetrics(registry)


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
