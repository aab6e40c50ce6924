"""The metric catalogue: names, types and labels as METRICS.md says, values that track the
components' figures, a fixed series set, exemplars and a clean `promtool check metrics`."""

from __future__ import annotations

import asyncio
import base64
import math
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from bot.chat.memory import Turn
from bot.chat.pipeline import ChatStats
from bot.config import load_settings
from bot.llm.errors import LLMBadRequest, LLMRateLimited, LLMTimeout, call_outcome
from bot.llm.types import LLMReply, TokenUsage
from bot.ops.metrics import (
    ERROR_COMPONENTS,
    GATEWAY_EVENT_TYPES,
    LATENCY_BUCKETS_S,
    MESSAGE_OUTCOMES,
    AlertThresholds,
    LLMPrices,
    MetricSources,
    ShardFigures,
    Telemetry,
    rest_status_class,
)
from bot.resilience.degradation import DegradationLevel
from tests.deploy.support import need_binary
from tests.ops.fakes import BUILD, MODEL, START, World, scrape, value

METRICS_MD = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


# --- the catalogue, read from METRICS.md ---------------------------------------------------------


@dataclass(frozen=True)
class CatalogueRow:
    names: tuple[str, ...]
    type: str
    labels: dict[str, tuple[str, ...]]  # label -> values the catalogue lists (may be empty)


def catalogue() -> list[CatalogueRow]:
    rows = []
    for line in METRICS_MD.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[2] or cells[2] == "type" or set(cells[2]) <= {"-"}:
            continue
        names = tuple(
            n
            for n in re.findall(r"`([a-z_]+)`", cells[1])
            if n.startswith(("llmbot_", "process_", "gen_ai_"))
        )
        if not names:
            continue
        labels: dict[str, tuple[str, ...]] = {}
        text = re.sub(r"\([^)]*\)", "", cells[3])  # "(fixed list + `other`)" is prose
        matches = list(re.finditer(r"`([a-z_]+)`", text))
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            rest = text[match.end() : end]
            values: tuple[str, ...] = ()
            if "=" in rest:
                values = tuple(v.strip() for v in rest.split("=", 1)[1].split(",") if v.strip())
                values = tuple(v.rstrip(";").strip() for v in values if v.rstrip(";").strip())
            labels[match.group(1)] = values
        rows.append(CatalogueRow(names, cells[2].split()[0], labels))
    return rows


def exported_families(telemetry: Telemetry) -> dict[str, Any]:
    body, _ = telemetry.render(openmetrics=False)
    families = {}
    for family in text_string_to_metric_families(body.decode()):
        name = family.name + "_total" if family.type == "counter" else family.name
        families[name] = family
    return families


def test_the_catalogue_parses() -> None:
    rows = catalogue()
    names = [n for row in rows for n in row.names]
    assert len(names) >= 50
    assert "llmbot_store_operations_total" in names
    messages = next(row for row in rows if "llmbot_messages_total" in row.names)
    assert messages.labels["outcome"] == MESSAGE_OUTCOMES
    assert messages.labels["component"] == ERROR_COMPONENTS


def test_every_catalogued_metric_is_exported_with_its_type_and_labels(tmp_path: Path) -> None:
    families = exported_families(World(tmp_path).telemetry())
    for row in catalogue():
        row_labels: set[str] = set()
        for name in row.names:
            assert name in families, f"{name} is in METRICS.md but not exported"
            family = families[name]
            assert family.type == row.type, f"{name}: {family.type} != {row.type}"
            label_names = {k for s in family.samples for k in s.labels if k != "le"}
            assert label_names <= set(row.labels), f"{name} has labels {label_names}"
            row_labels |= label_names
            for label, values in row.labels.items():
                if label in label_names:
                    exported = {s.labels[label] for s in family.samples if label in s.labels}
                    assert set(values) <= exported, f"{name}{{{label}}} lacks {values}"
        assert row_labels == set(row.labels), f"{row.names}: labels {row_labels}"


def test_label_sets_match_the_components() -> None:
    stats = ChatStats()
    assert tuple(stats.outcomes) == MESSAGE_OUTCOMES
    assert tuple(stats.errors) == ERROR_COMPONENTS


def test_only_llmbot_and_default_collector_metrics() -> None:
    families = exported_families(World().telemetry())
    prefixes = {name.split("_")[0] for name in families}
    # gen_ai_client_*: the OpenTelemetry GenAI conventions' names, as an OTel export writes them.
    assert prefixes == {"llmbot", "process", "python", "gen"}
    assert "process_resident_memory_bytes" in families
    assert "python_gc_objects_collected_total" in families
    assert "python_info" in families
    # Its own registry: nothing lands in prometheus_client's global one.
    assert REGISTRY.get_sample_value("llmbot_response_duration_seconds_count") is None
    # No `_created` series doubling every counter.
    assert not any(name.endswith("_created") for name in families)


# --- values track the figures -------------------------------------------------------------------


def test_values_track_the_component_figures(tmp_path: Path) -> None:
    world = World(tmp_path)
    telemetry = world.telemetry()
    before = scrape(telemetry)
    assert value(before, "llmbot_messages_total", outcome="answered") == 0
    assert value(before, "llmbot_circuit_state", dependency="gemini", state="closed") == 1

    world.chat.outcomes["answered"] += 3
    world.chat.outcomes["failed"] += 1
    world.chat.errors["gemini"] += 2
    world.chat.late["answered"] += 1
    world.chat.in_flight = 4
    world.calls.record("error")
    world.calls.reject()
    world.calls.reject()
    reply = LLMReply("hello", MODEL)
    world.cache.get("k1")
    world.cache.put("k1", reply)
    world.cache.get("k1")
    world.cache.clear()
    for _ in range(5):
        world.quota.try_acquire()
    world.breaker.record_failure()
    world.breaker.record_failure()
    world.memory.append(1, Turn("user", "x" * 100, 9, 10, START))
    world.memory.append(2, Turn("user", "y" * 300, 9, 11, START))
    world.store.store("quota").record("save", ok=True, seconds=0.003, bytes_written=40)
    world.store.store("quota").record("load", ok=False, seconds=2.0)
    world.store.store("history").healthy = True
    world.queue.size = 7
    world.queue.wait.observe(12.0)
    world.queue.dropped_total["overflow"] += 2
    world.degradation.set_override("test", DegradationLevel.HIGH, "testing")
    world.degradation.record_fallback("cached")
    world.heal.actions_total[("memory", "ok")] += 1
    world.heal.streaks_total[("memory", "recovered")] += 1
    world.heal.last_success_timestamp["memory"] = START
    world.heal.webhook_requests_total[202] += 2
    world.shards = {0: ShardFigures(True, 0.25), 1: ShardFigures(False, math.nan)}
    world.guilds = 12
    world.snapshots = 5

    after = scrape(telemetry)
    assert value(after, "llmbot_messages_total", outcome="answered") == 3
    assert value(after, "llmbot_messages_total", outcome="failed") == 1
    assert value(after, "llmbot_errors_total", component="gemini") == 2
    assert value(after, "llmbot_late_replies_total", outcome="answered") == 1
    assert value(after, "llmbot_late_replies_total", outcome="failed") == 0
    assert value(after, "llmbot_llm_circuit_rejections_total") == 2
    assert value(after, "llmbot_messages_in_flight") == 4
    assert value(after, "llmbot_cache_requests_total", result="hit") == 1
    assert value(after, "llmbot_cache_requests_total", result="miss") == 1
    assert value(after, "llmbot_cache_evictions_total", reason="cleared") == 1
    assert value(after, "llmbot_cache_entries") == 0
    assert value(after, "llmbot_llm_quota_used", window="minute") == 5
    assert value(after, "llmbot_llm_quota_used", window="day") == 5
    limit = value(after, "llmbot_llm_quota_limit", window="minute")
    assert value(after, "llmbot_llm_quota_remaining", window="minute") == limit - 5
    assert value(after, "llmbot_circuit_state", dependency="gemini", state="open") == 1
    assert value(after, "llmbot_circuit_state", dependency="gemini", state="closed") == 0
    assert value(after, "llmbot_dependency_up", dependency="gemini") == 0
    assert value(after, "llmbot_dependency_up", dependency="discord") == 1
    assert value(after, "llmbot_active_conversations") == 2
    assert value(after, "llmbot_context_servers") == 2
    memory = world.memory.stats()
    assert value(after, "llmbot_context_bytes") == memory.approx_bytes
    assert value(after, "llmbot_context_average_server_bytes") == memory.approx_bytes / 2
    assert value(after, "llmbot_context_largest_server_bytes") == 300
    ok = {"store": "quota", "op": "save", "outcome": "ok"}
    assert value(after, "llmbot_store_operations_total", **ok) == 1
    failed = {"store": "quota", "op": "load", "outcome": "error"}
    assert value(after, "llmbot_store_operations_total", **failed) == 1
    duration = "llmbot_store_operation_duration_seconds"
    assert value(after, duration + "_bucket", store="quota", op="save", le="0.0025") == 0
    assert value(after, duration + "_bucket", store="quota", op="save", le="0.005") == 1
    assert value(after, duration + "_bucket", store="quota", op="load", le="1.0") == 0
    assert value(after, duration + "_bucket", store="quota", op="load", le="+Inf") == 1
    assert value(after, duration + "_sum", store="quota", op="load") == pytest.approx(2.0)
    assert value(after, "llmbot_store_bytes_total", store="quota", direction="written") == 40
    assert value(after, "llmbot_store_healthy", store="quota") == 0  # the failed load
    assert value(after, "llmbot_store_healthy", store="history") == 1
    assert value(after, "llmbot_queue_messages") == 7
    assert value(after, "llmbot_queue_capacity") == 50
    assert value(after, "llmbot_queue_wait_seconds_bucket", le="15.0") == 1
    assert value(after, "llmbot_queue_wait_seconds_bucket", le="5.0") == 0
    assert value(after, "llmbot_queue_dropped_total", reason="overflow") == 2
    assert value(after, "llmbot_degradation_level") == 3
    assert value(after, "llmbot_fallback_responses_total", kind="cached") == 1
    assert value(after, "llmbot_heal_actions_total", action="memory", outcome="ok") == 1
    assert value(after, "llmbot_heal_streaks_total", action="memory", result="recovered") == 1
    assert value(after, "llmbot_heal_streaks_total", action="memory", result="escalated") == 0
    assert value(after, "llmbot_heal_last_success_timestamp_seconds", action="memory") == START
    assert value(after, "llmbot_webhook_requests_total", code="202") == 2
    assert value(after, "llmbot_discord_shard_connected", shard="0") == 1
    assert value(after, "llmbot_discord_shard_connected", shard="1") == 0
    assert value(after, "llmbot_discord_heartbeat_latency_seconds", shard="0") == 0.25
    assert math.isnan(value(after, "llmbot_discord_heartbeat_latency_seconds", shard="1"))
    assert value(after, "llmbot_discord_guilds") == 12
    assert value(after, "llmbot_health_snapshots") == 5
    assert value(after, "llmbot_python_heap_bytes") == 123_456
    assert value(after, "llmbot_asyncio_tasks") == 7
    assert value(after, "llmbot_data_disk_size_bytes") > 0
    assert (
        0
        < value(after, "llmbot_data_disk_free_bytes")
        <= value(after, "llmbot_data_disk_size_bytes")
    )
    build = {"version": "1.2.3", "python": "3.11.7", "hikari": "2.6.0", "genai": "3.6.1"}
    assert value(after, "llmbot_build_info", **build) == 1


def test_thresholds_come_from_the_settings() -> None:
    # The default settings give the thresholds a MetricSources without settings exports.
    assert AlertThresholds.from_settings(load_settings(_env_file=None)) == AlertThresholds(
        memory_bytes=500 * 1024 * 1024, error_ratio=0.05, response_seconds=5.0, disk_ratio=0.85
    )
    settings = load_settings(
        _env_file=None,
        health_memory_threshold_mb=256,
        health_error_rate_threshold=2.5,
        health_response_time_threshold_ms=1500,
        health_disk_space_threshold=90.0,
    )
    thresholds = AlertThresholds.from_settings(settings)
    series = scrape(Telemetry(sources=MetricSources(thresholds=thresholds, build=BUILD)))
    assert value(series, "llmbot_alert_threshold_memory_bytes") == 256 * 1024 * 1024
    assert value(series, "llmbot_alert_threshold_error_ratio") == 0.025
    assert value(series, "llmbot_alert_threshold_response_seconds") == 1.5
    assert value(series, "llmbot_alert_threshold_disk_ratio") == 0.9


def test_absent_or_failing_sources_export_the_same_series_as_zeros(
    caplog: pytest.LogCaptureFixture,
) -> None:
    present = scrape(World().telemetry())

    def broken() -> Any:
        raise RuntimeError("boom")

    absent = scrape(Telemetry(models=[MODEL], sources=MetricSources(build=BUILD)))
    failing = scrape(
        Telemetry(
            models=[MODEL],
            sources=MetricSources(chat=broken, store=broken, heal=broken, build=BUILD),
        )
    )
    llmbot = {key for key in present if key[0].startswith("llmbot_")}
    assert llmbot == {key for key in absent if key[0].startswith("llmbot_")}
    assert llmbot == {key for key in failing if key[0].startswith("llmbot_")}
    assert value(absent, "llmbot_queue_capacity") == 0
    assert value(failing, "llmbot_messages_total", outcome="answered") == 0
    assert "metrics source 'chat' failed" in caplog.text


# --- the facade ---------------------------------------------------------------------------------


def test_facade_observations_and_their_fixed_labels() -> None:
    telemetry = Telemetry(models=[MODEL], sources=MetricSources(build=BUILD))
    telemetry.observe_response(1.2)
    telemetry.observe_response(7.0)
    usage = TokenUsage(input=100, output=20, thoughts=5, cached=30)
    telemetry.observe_llm_call(MODEL, "ok", 0.8, usage)
    telemetry.observe_llm_call("gemini-9-secret-preview", "timeout", 30.0)
    telemetry.observe_llm_call(MODEL, "made-up outcome", 0.1)
    telemetry.gateway_event("MESSAGE_CREATE")
    telemetry.gateway_event("message_create")
    telemetry.gateway_event("SOME_NEW_EVENT")
    for status in (200, 204, 404, 429, 503, None):
        telemetry.discord_rest(status)

    series = scrape(telemetry)
    response = "llmbot_response_duration_seconds"
    assert value(series, response + "_count") == 2
    assert value(series, response + "_bucket", le="5.0") == 1
    assert value(series, response + "_bucket", le="8.0") == 2
    llm = "llmbot_llm_request_duration_seconds"
    assert value(series, llm + "_count", model=MODEL, outcome="ok") == 1
    assert value(series, llm + "_count", model="other", outcome="timeout") == 1
    assert value(series, llm + "_count", model=MODEL, outcome="error") == 1
    tokens = "llmbot_llm_tokens_total"
    assert value(series, tokens, model=MODEL, type="input") == 100
    assert value(series, tokens, model=MODEL, type="output") == 20
    assert value(series, tokens, model=MODEL, type="thoughts") == 5
    assert value(series, tokens, model=MODEL, type="cached") == 30
    events = "llmbot_discord_gateway_events_total"
    assert value(series, events, type="MESSAGE_CREATE") == 2
    assert value(series, events, type="other") == 1
    assert value(series, events, type="READY") == 0
    rest = "llmbot_discord_rest_requests_total"
    assert [value(series, rest, status_class=c) for c in ("2xx", "4xx", "429", "5xx", "error")] == [
        2,
        1,
        1,
        1,
        1,
    ]
    models = {dict(labels).get("model") for name, labels in series if name.startswith(tokens)}
    assert models == {MODEL, "other"}
    assert len({dict(labels)["type"] for name, labels in series if name == events}) == len(
        GATEWAY_EVENT_TYPES
    )


def test_response_buckets_hold_the_slo_bound() -> None:
    assert 5.0 in LATENCY_BUCKETS_S
    assert list(LATENCY_BUCKETS_S) == sorted(LATENCY_BUCKETS_S)


def test_outcome_and_status_class_helpers() -> None:
    assert call_outcome(None) == "ok"
    assert call_outcome(LLMTimeout("slow")) == "timeout"
    assert call_outcome(TimeoutError()) == "timeout"
    assert call_outcome(LLMRateLimited("429")) == "rate_limited"
    assert call_outcome(LLMBadRequest("400")) == "bad_request"
    assert [rest_status_class(s) for s in (200, 299, 301, 400, 429, 500, None)] == [
        "2xx",
        "2xx",
        "error",
        "4xx",
        "429",
        "5xx",
        "error",
    ]


def test_openmetrics_exemplar_carries_the_trace_id_of_a_real_span() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    telemetry = Telemetry(models=[MODEL], sources=MetricSources(build=BUILD))
    with tracer.start_as_current_span("message") as span:
        telemetry.observe_response(1.7)
        telemetry.observe_llm_call(MODEL, "ok", 0.9)
    telemetry.observe_response(0.3)  # no span: no exemplar
    trace_id = trace.format_trace_id(span.get_span_context().trace_id)

    body, content_type = telemetry.render(openmetrics=True)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    exemplars = {}
    for family in openmetrics_families(body.decode()):
        for sample in family.samples:
            if sample.exemplar is not None:
                exemplars[(sample.name, sample.labels.get("le"))] = sample.exemplar
    response = exemplars[("llmbot_response_duration_seconds_bucket", "2.0")]
    assert response.labels == {"trace_id": trace_id}
    assert response.value == 1.7
    llm = exemplars[("llmbot_llm_request_duration_seconds_bucket", "1.0")]
    assert llm.labels == {"trace_id": trace_id}
    assert ("llmbot_response_duration_seconds_bucket", "0.5") not in exemplars
    # The text format carries no exemplars and still parses.
    text, text_type = telemetry.render(openmetrics=False)
    assert text_type == "text/plain; version=0.0.4; charset=utf-8"
    assert trace_id not in text.decode()


async def test_event_loop_lag_monitor_sees_a_blocked_loop() -> None:
    telemetry = Telemetry(sources=MetricSources(build=BUILD), lag_interval_s=0.02)
    await telemetry.start()
    await telemetry.start()  # idempotent
    await asyncio.sleep(0.1)
    time.sleep(0.3)  # noqa: ASYNC251 - blocking the loop is the point
    await asyncio.sleep(0.1)
    await telemetry.stop()
    series = scrape(telemetry)
    lag = "llmbot_event_loop_lag_seconds"
    count = value(series, lag + "_count")
    assert count >= 2
    # At least one tick came more than 0.1 s late: the one the sleep held up.
    assert value(series, lag + "_bucket", le="0.1") < count
    assert value(series, lag + "_sum") >= 0.2


# --- cardinality --------------------------------------------------------------------------------


def drive(world: World, telemetry: Telemetry, guilds: int, users: int) -> list[str]:
    """Activity from guilds x users distinct people; returns the ids used."""
    ids = []
    reply = LLMReply("an answer", MODEL, usage=TokenUsage(input=10, output=5))
    for g in range(guilds):
        guild_id = 910_000_000_000_000_000 + g
        for u in range(users):
            user_id = 920_000_000_000_000_000 + g * 1000 + u
            channel_id = 930_000_000_000_000_000 + g * 1000 + u % 5
            ids += [str(guild_id), str(user_id), str(channel_id)]
            world.memory.append(channel_id, Turn("user", f"hi from {user_id}", user_id, 1, START))
            key = f"{guild_id}:{user_id}"
            world.cache.get(key)
            world.cache.put(key, reply, tag=channel_id)
            world.quota.try_acquire()
            world.chat.outcomes["answered"] += 1
            world.store.store(f"user-{user_id}").record("save", ok=True, seconds=0.001)
            world.store.store("conversations").record("save", ok=True, seconds=0.001)
            telemetry.observe_response(0.5)
            telemetry.observe_llm_call(reply.model, "ok", 0.4, reply.usage)
            telemetry.gateway_event("MESSAGE_CREATE")
            telemetry.discord_rest(200)
        world.guilds += 1
    return ids


def test_ids_never_reach_labels_series_count_is_constant() -> None:
    small_world = World()
    small = small_world.telemetry()
    drive(small_world, small, 1, 1)
    big_world = World()
    big = big_world.telemetry()
    ids = drive(big_world, big, 200, 50)

    small_series, big_series = scrape(small), scrape(big)
    assert len(big_series) == len(small_series)
    assert set(big_series) == set(small_series)
    assert value(big_series, "llmbot_messages_total", outcome="answered") == 10_000
    assert value(big_series, "llmbot_discord_guilds") == 200
    text, _ = big.render(openmetrics=False)
    decoded = text.decode()
    assert not any(i in decoded for i in ids[:: len(ids) // 500])


# --- promtool ----------------------------------------------------------------------------------


def test_promtool_check_metrics_reports_nothing(tmp_path: Path) -> None:
    promtool = need_binary("promtool")
    world = World(tmp_path)
    telemetry = world.telemetry()
    drive(world, telemetry, 3, 3)
    telemetry.observe_llm_call(MODEL, "error", 2.0)
    body, _ = telemetry.render(openmetrics=False)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False
    )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    assert output.strip() == "", output


# --- the view of a real BotApp --------------------------------------------------------------


def _token(bot_id: int) -> str:
    first = base64.urlsafe_b64encode(str(bot_id).encode()).decode().rstrip("=")
    return f"{first}.AAAAAA.not-a-real-token"


async def test_the_view_of_a_real_app_reads_its_parts(tmp_path: Path) -> None:
    from bot.app import BotApp

    settings = load_settings(_env_file=None, data_dir=tmp_path / "data")
    app = BotApp(settings, discord_token=_token(123456789012345678), gemini_api_key="key")
    try:
        telemetry = Telemetry(models=[settings.gemini_model], sources=app.view.metric_sources())
        app.pipeline.stats.outcomes["answered"] += 2
        app.llm.stats.reject()
        series = scrape(telemetry)
    finally:
        await app.gemini.aclose()
    assert value(series, "llmbot_messages_total", outcome="answered") == 2
    assert value(series, "llmbot_llm_circuit_rejections_total") == 1
    assert value(series, "llmbot_dependency_up", dependency="gemini") == 1
    assert value(series, "llmbot_dependency_up", dependency="discord") == 0
    assert value(series, "llmbot_discord_shard_connected", shard="0") == 0
    assert value(series, "llmbot_circuit_state", dependency="gemini", state="closed") == 1
    assert value(series, "llmbot_queue_capacity") == settings.queue_max_size
    assert value(series, "llmbot_store_healthy", store="quota") == 0  # not opened
    limit = value(series, "llmbot_llm_quota_limit", window="minute")
    assert limit == app.llm.quota.minute_limit
    assert value(series, "llmbot_data_disk_size_bytes") > 0
    assert value(series, "llmbot_asyncio_tasks") >= 1  # scraped on the loop: this test's task


def test_the_cost_estimate_uses_the_settings_prices(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, data_dir=tmp_path / "data")
    assert LLMPrices.from_settings(settings) == LLMPrices()  # one set of defaults
    prices = LLMPrices(input=1.0, output=10.0, cached_input=0.1)
    # 1,000 prompt tokens of which 400 cached, 100 answer and 50 thinking tokens.
    cost = prices.cost_usd(input=1_000, output=100, thoughts=50, cached=400)
    assert cost == pytest.approx((600 * 1.0 + 400 * 0.1 + 150 * 10.0) / 1e6)
    # A cache count above the prompt is capped at the prompt.
    assert prices.cost_usd(input=10, output=0, thoughts=0, cached=50) == pytest.approx(1e-6)
