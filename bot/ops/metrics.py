"""The metric catalogue (docs/metrics.md): every `llmbot_` metric is defined here, once.

One owner per fact, so each metric has exactly one way in:

* **Read at scrape time** by `BotCollector` from the plain `stats` objects the components keep
  (the component counts, this module only names and exports): messages and errors
  (`ChatStats`), cache, quota, circuit state, dependency health, conversation memory and
  context, store operations/latency/bytes/health, queue size/capacity/wait/drops, degradation
  level and fallbacks, heal actions/last success/webhook requests, Discord shards/heartbeat/
  guilds (read off the gateway), heap estimate (read at most every `HEAP_REFRESH_S`), asyncio
  tasks, data disk, alert thresholds, build info and the number of health snapshots held.
* **Observed when they happen**, through the `Telemetry` facade (prometheus_client instruments
  on the facade's own registry): response time, LLM call duration and tokens, gateway events,
  Discord REST answers, and event-loop lag (measured by the facade's own monitor task).
* The default process, platform and GC collectors sit on the same registry
  (`process_resident_memory_bytes`, `process_start_time_seconds`, `python_gc_*`, `python_info`).

Every labelled metric has a fixed label set exported from the first scrape, zeros included, and
a source that is missing (a component not wired in) exports zeros, so the set of series never
changes. No label carries an id or free text: models outside the configured list count as
`other`, gateway event names outside `GATEWAY_EVENT_TYPES` as `other`.

Buckets: `LATENCY_BUCKETS_S` (0.05 s ... 60 s, roughly Fibonacci above 1 s) cover a cache hit
through a long Gemini answer with a bucket at 5 s, the latency SLO and default alert threshold
(the rules select `le="5.0"`). `EVENT_LOOP_LAG_BUCKETS_S` run from 1 ms (healthy) to 5 s,
with the alert's 0.5 s as a bound. Store and queue histograms keep the buckets their
components chose (`bot.store.stats`, `bot.resilience.queue`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol, TypeVar

from opentelemetry import trace
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    exposition,
    gc_collector,
    platform_collector,
    process_collector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    Exemplar,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    Sample,
)
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.registry import Collector

from bot.chat.memory import MemoryStats
from bot.healing.actions import HEAL_ACTIONS
from bot.healing.receiver import HEAL_OUTCOMES, IGNORE_REASONS, WEBHOOK_CODES, HealStats
from bot.llm.cache import EVICTION_REASONS, CacheStats
from bot.llm.errors import LLMRateLimited, LLMTimeout
from bot.llm.quota import QuotaSnapshot, Window
from bot.ops.runtime import (
    HEAP_REFRESH_S,
    BuildInfo,
    asyncio_task_count,
    data_disk_usage,
    detect_build_info,
    throttled_heap_bytes,
)
from bot.resilience.breaker import BREAKER_STATES
from bot.resilience.degradation import FALLBACK_KINDS, DegradationStats
from bot.resilience.queue import DROP_REASONS, QUEUE_WAIT_BUCKETS_S, QueueStats
from bot.store.stats import OPS, OTHER_STORE, STORE_NAMES, LatencyHistogram, StoreStats

__all__ = [
    "CACHE_RESULTS",
    "DEPENDENCIES",
    "ERROR_COMPONENTS",
    "EVENT_LOOP_LAG_BUCKETS_S",
    "GATEWAY_EVENT_TYPES",
    "LATENCY_BUCKETS_S",
    "LLM_OUTCOMES",
    "MESSAGE_OUTCOMES",
    "OTHER",
    "QUOTA_WINDOWS",
    "REST_STATUS_CLASSES",
    "TOKEN_TYPES",
    "AlertThresholds",
    "BotCollector",
    "ChatFigures",
    "MetricSources",
    "ShardFigures",
    "Telemetry",
    "TokenCounts",
    "llm_outcome",
    "rest_status_class",
]

logger = logging.getLogger(__name__)

_MIB: Final = 1024 * 1024

# --- fixed label sets ------------------------------------------------------------------------

OTHER: Final = "other"
MESSAGE_OUTCOMES: Final = ("answered", "cached", "fallback", "queued", "rejected", "failed")
ERROR_COMPONENTS: Final = ("gemini", "discord", "store", "internal")
QUOTA_WINDOWS: Final[tuple[Window, ...]] = ("minute", "day")
CACHE_RESULTS: Final = ("hit", "miss")
DEPENDENCIES: Final = ("gemini", "discord")
# Dependencies behind a circuit breaker; a source may add more, never fewer.
CIRCUIT_DEPENDENCIES: Final = ("gemini",)
LLM_OUTCOMES: Final = ("ok", "error", "timeout", "rate_limited")
TOKEN_TYPES: Final = ("input", "output", "thoughts", "cached")
REST_STATUS_CLASSES: Final = ("2xx", "4xx", "429", "5xx", "error")
STORE_LABELS: Final = (*STORE_NAMES, OTHER_STORE)
STORE_DIRECTIONS: Final = ("written", "read")
_STORE_OP_LABELS: Final = ("store", "op")
# Gateway dispatches worth telling apart (Discord's own names); everything else is `other`.
GATEWAY_EVENT_TYPES: Final = (
    "READY",
    "RESUMED",
    "GUILD_CREATE",
    "GUILD_UPDATE",
    "GUILD_DELETE",
    "GUILD_MEMBER_ADD",
    "GUILD_MEMBER_UPDATE",
    "GUILD_MEMBER_REMOVE",
    "CHANNEL_CREATE",
    "CHANNEL_UPDATE",
    "CHANNEL_DELETE",
    "THREAD_CREATE",
    "THREAD_UPDATE",
    "THREAD_DELETE",
    "MESSAGE_CREATE",
    "MESSAGE_UPDATE",
    "MESSAGE_DELETE",
    "MESSAGE_REACTION_ADD",
    "INTERACTION_CREATE",
    "TYPING_START",
    "PRESENCE_UPDATE",
    "VOICE_STATE_UPDATE",
    OTHER,
)

# --- buckets (see the module docstring) ------------------------------------------------------

LATENCY_BUCKETS_S: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)
EVENT_LOOP_LAG_BUCKETS_S: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


# --- what the collector reads ----------------------------------------------------------------


class ChatFigures(Protocol):
    """What the collector reads of `ChatStats` (kept structural: the pipeline owns the class)."""

    @property
    def outcomes(self) -> Mapping[Any, int]: ...

    @property
    def errors(self) -> Mapping[Any, int]: ...

    @property
    def in_flight(self) -> int: ...


class TokenCounts(Protocol):
    """Token usage of one LLM call (`bot.llm.types.TokenUsage` fits)."""

    @property
    def input(self) -> int: ...

    @property
    def output(self) -> int: ...

    @property
    def thoughts(self) -> int: ...

    @property
    def cached(self) -> int: ...


class ShardFigures(NamedTuple):
    """One gateway shard: connected or not, and its heartbeat latency (NaN before the first)."""

    connected: bool
    heartbeat_latency_s: float


@dataclass(frozen=True, slots=True)
class AlertThresholds:
    """The alert thresholds of the settings, in base units (bytes, ratios, seconds)."""

    memory_bytes: float = 500 * _MIB
    error_ratio: float = 0.05
    response_seconds: float = 5.0
    disk_ratio: float = 0.85

    @classmethod
    def from_settings(cls, settings: object) -> AlertThresholds:
        """From HEALTH_MEMORY_THRESHOLD_MB, HEALTH_ERROR_RATE_THRESHOLD (%),
        HEALTH_RESPONSE_TIME_THRESHOLD_MS and HEALTH_DISK_SPACE_THRESHOLD (%)."""
        # getattr with the documented defaults: older Settings objects lack these fields.
        return cls(
            memory_bytes=float(getattr(settings, "health_memory_threshold_mb", 500)) * _MIB,
            error_ratio=float(getattr(settings, "health_error_rate_threshold", 5.0)) / 100,
            response_seconds=float(getattr(settings, "health_response_time_threshold_ms", 5000))
            / 1000,
            disk_ratio=float(getattr(settings, "health_disk_space_threshold", 85.0)) / 100,
        )


def _none() -> None:
    return None


def _no_entries() -> Mapping[Any, Any]:
    return {}


def _zero() -> int:
    return 0


@dataclass(frozen=True, slots=True)
class MetricSources:
    """Where the collector reads each figure; every source defaults to "absent" (zeros)."""

    chat: Callable[[], ChatFigures | None] = _none
    cache: Callable[[], CacheStats | None] = _none
    quota: Callable[[], QuotaSnapshot | None] = _none
    llm_timeout: Callable[[], float | None] = _none  # seconds the next model call may take
    breakers: Callable[[], Mapping[str, str]] = _no_entries  # dependency -> state
    dependencies: Callable[[], Mapping[str, bool]] = _no_entries  # dependency -> up
    memory: Callable[[], MemoryStats | None] = _none
    store: Callable[[], StoreStats | None] = _none
    queue: Callable[[], QueueStats | None] = _none
    degradation: Callable[[], DegradationStats | None] = _none
    heal: Callable[[], HealStats | None] = _none
    shards: Callable[[], Mapping[int, ShardFigures]] = _no_entries
    guilds: Callable[[], int] = _zero
    health_snapshots: Callable[[], int] = _zero
    asyncio_tasks: Callable[[], int] = asyncio_task_count
    heap_bytes: Callable[[], int] = field(default_factory=throttled_heap_bytes)
    data_dir: Path | None = None
    thresholds: AlertThresholds = field(default_factory=AlertThresholds)
    build: BuildInfo = field(default_factory=detect_build_info)


_T = TypeVar("_T")


# --- the scrape-time collector ---------------------------------------------------------------


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _bound(value: float) -> str:
    """A bucket bound as the `le` label: "+Inf" or Python's shortest float text ("5.0")."""
    return "+Inf" if math.isinf(value) else repr(float(value))


_BOUND_TEXT: dict[float, str] = {}  # bound -> `le` text; a few dozen fixed bucket bounds


def _add_histogram(
    family: HistogramMetricFamily,
    names: tuple[str, ...],
    values: tuple[str, ...],
    histogram: LatencyHistogram,
) -> None:
    """The samples `family.add_metric(values, buckets, sum)` adds, built with less overhead
    (this runs for 19 histograms, ~270 samples, at every scrape)."""
    base = dict(zip(names, values, strict=True))
    bucket_name = family.name + "_bucket"
    samples = family.samples
    count = 0.0
    buckets = histogram.cumulative_buckets()
    for bound, n in buckets:
        le = _BOUND_TEXT.get(bound)
        if le is None:
            le = _BOUND_TEXT[bound] = _bound(bound)
        count = float(n)
        labels = base.copy()
        labels["le"] = le
        samples.append(Sample(bucket_name, labels, count))
    if buckets and buckets[0][0] >= 0:  # as the library: no sum or count with negative bounds
        samples.append(Sample(family.name + "_count", base, count))
        samples.append(Sample(family.name + "_sum", base.copy(), histogram.sum))


class BotCollector(Collector):
    """Exports the figures the components keep in their `stats`, read at each scrape."""

    def __init__(self, sources: MetricSources) -> None:
        self._sources = sources
        self._failing: set[str] = set()

    def describe(self) -> Iterable[Metric]:
        """The families without reading the live sources (for the registry's name check)."""
        return list(BotCollector(MetricSources(build=self._sources.build))._families())

    def collect(self) -> Iterable[Metric]:
        """Every family of the catalogue this collector owns, with its values now."""
        return list(self._families())

    def _read(self, name: str, source: Callable[[], _T], default: _T) -> _T:
        # A failing source must not fail the whole scrape: its metrics read as the default and
        # the failure is logged once (until it recovers), not at every scrape.
        try:
            value = source()
        except Exception:
            if name not in self._failing:
                self._failing.add(name)
                logger.exception("metrics source %r failed; exporting zeros", name)
            return default
        self._failing.discard(name)
        return value

    def _families(self) -> Iterator[Metric]:
        yield from self._chat()
        yield from self._cache()
        yield from self._quota()
        yield from self._dependencies()
        yield from self._memory()
        yield from self._store()
        yield from self._queue()
        yield from self._degradation()
        yield from self._heal()
        yield from self._discord()
        yield from self._runtime()

    def _chat(self) -> Iterator[Metric]:
        chat = self._read("chat", self._sources.chat, None)
        outcomes: Mapping[Any, int] = chat.outcomes if chat is not None else {}
        errors: Mapping[Any, int] = chat.errors if chat is not None else {}
        messages = _counter(
            "llmbot_messages_total",
            "Messages the bot finished handling, by how they ended.",
            ["outcome"],
        )
        for outcome in MESSAGE_OUTCOMES:
            messages.add_metric([outcome], outcomes.get(outcome, 0))
        yield messages
        failures = _counter(
            "llmbot_errors_total",
            "Errors while handling messages, by the component that failed.",
            ["component"],
        )
        for component in ERROR_COMPONENTS:
            failures.add_metric([component], errors.get(component, 0))
        yield failures
        in_flight = _gauge("llmbot_messages_in_flight", "Messages being answered right now.")
        in_flight.add_metric([], chat.in_flight if chat is not None else 0)
        yield in_flight

    def _cache(self) -> Iterator[Metric]:
        cache = self._read("cache", self._sources.cache, None) or CacheStats()
        requests = _counter(
            "llmbot_cache_requests_total", "Response cache lookups, by result.", ["result"]
        )
        for result, count in zip(CACHE_RESULTS, (cache.hits, cache.misses), strict=True):
            requests.add_metric([result], count)
        yield requests
        entries = _gauge("llmbot_cache_entries", "Replies held in the response cache.")
        entries.add_metric([], cache.entries)
        yield entries
        size = _gauge("llmbot_cache_bytes", "Estimated bytes held by the response cache.")
        size.add_metric([], cache.bytes)
        yield size
        evictions = _counter(
            "llmbot_cache_evictions_total", "Response cache evictions, by reason.", ["reason"]
        )
        for reason in EVICTION_REASONS:
            evictions.add_metric([reason], cache.evictions.get(reason, 0))
        yield evictions

    def _quota(self) -> Iterator[Metric]:
        quota = self._read("quota", self._sources.quota, None)
        remaining = _gauge(
            "llmbot_llm_quota_remaining", "LLM requests left in the quota window.", ["window"]
        )
        used = _gauge(
            "llmbot_llm_quota_used", "LLM requests counted in the current window.", ["window"]
        )
        limit = _gauge(
            "llmbot_llm_quota_limit",
            "Effective LLM request limit of the window (after the safety margin).",
            ["window"],
        )
        rejections = _counter(
            "llmbot_llm_quota_rejections_total",
            "LLM requests refused by the quota, by the window that refused.",
            ["window"],
        )
        families: tuple[GaugeMetricFamily | CounterMetricFamily, ...] = (
            remaining,
            used,
            limit,
            rejections,
        )
        for window in QUOTA_WINDOWS:
            if quota is None:
                values = (0, 0, 0, 0)
            else:
                w = quota.window(window)
                values = (w.remaining, w.used, w.limit, w.rejections_total)
            for family, value in zip(families, values, strict=True):
                family.add_metric([window], value)
        yield from (remaining, used, limit, rejections)
        timeout = _gauge(
            "llmbot_llm_request_timeout_seconds",
            "Time the next LLM call is allowed (adaptive: 3x the recent p95, within bounds).",
        )
        timeout.add_metric([], self._read("llm_timeout", self._sources.llm_timeout, None) or 0)
        yield timeout

    def _dependencies(self) -> Iterator[Metric]:
        breakers: Mapping[str, str] = self._read("breakers", self._sources.breakers, {})
        state = _gauge(
            "llmbot_circuit_state",
            "Circuit breaker state: 1 on the current state of each dependency.",
            ["dependency", "state"],
        )
        for dependency in _with_extra(CIRCUIT_DEPENDENCIES, breakers):
            current = breakers.get(dependency)
            for name in BREAKER_STATES:
                state.add_metric([dependency, name], 1 if current == name else 0)
        yield state
        health: Mapping[str, bool] = self._read("dependencies", self._sources.dependencies, {})
        up = _gauge(
            "llmbot_dependency_up",
            "1 when the bot considers the dependency usable, else 0.",
            ["dependency"],
        )
        for dependency in _with_extra(DEPENDENCIES, health):
            up.add_metric([dependency], 1 if health.get(dependency) else 0)
        yield up

    def _memory(self) -> Iterator[Metric]:
        memory = self._read("memory", self._sources.memory, None)
        conversations = memory.conversations if memory is not None else 0
        approx_bytes = memory.approx_bytes if memory is not None else 0
        # The bot keeps one context per conversation (channel, thread or DM), not per server:
        # the "server" figures of the catalogue describe those contexts. Compression figures
        # are read if the memory ever reports them; today it does not compress (ratio 1).
        servers = getattr(memory, "servers", conversations)
        values: list[tuple[str, str, float]] = [
            (
                "llmbot_active_conversations",
                "Conversations held in memory (one per channel, thread or DM).",
                conversations,
            ),
            ("llmbot_context_servers", "Conversation contexts held in memory.", servers),
            (
                "llmbot_context_bytes",
                "Estimated bytes held by conversation contexts.",
                approx_bytes,
            ),
            (
                "llmbot_context_average_server_bytes",
                "Average estimated bytes of one conversation context.",
                approx_bytes / conversations if conversations else 0.0,
            ),
            (
                "llmbot_context_largest_server_bytes",
                "Estimated bytes of the largest conversation context (text only).",
                memory.largest_conversation_chars if memory is not None else 0,
            ),
            (
                "llmbot_context_compression_ratio",
                "Stored over original size of the contexts (1 = no compression).",
                getattr(memory, "compression_ratio", 1.0),
            ),
            (
                "llmbot_context_saved_bytes",
                "Bytes saved by context compression.",
                getattr(memory, "saved_bytes", 0),
            ),
        ]
        for name, doc, value in values:
            gauge = _gauge(name, doc)
            gauge.add_metric([], value)
            yield gauge
        duplicates = _counter(
            "llmbot_context_duplicates_removed_total",
            "Duplicate context entries removed by compression.",
        )
        duplicates.add_metric([], getattr(memory, "duplicates_removed", 0))
        yield duplicates

    def _store(self) -> Iterator[Metric]:
        store = self._read("store", self._sources.store, None) or StoreStats(backend="none")
        operations = _counter(
            "llmbot_store_operations_total",
            "Key-value store operations, by logical store, operation and outcome.",
            ["store", "op", "outcome"],
        )
        duration = HistogramMetricFamily(
            "llmbot_store_operation_duration_seconds",
            "Key-value store operation time, by logical store and operation.",
            labels=list(_STORE_OP_LABELS),
        )
        transferred = _counter(
            "llmbot_store_bytes_total",
            "Value bytes written to and read from the store, by logical store.",
            ["store", "direction"],
        )
        healthy = _gauge(
            "llmbot_store_healthy",
            "1 when the latest operation or health check of the store succeeded.",
            ["store"],
        )
        for name in STORE_LABELS:
            figures = store.store(name)
            for op in OPS:
                op_figures = figures.ops[op]
                operations.add_metric([name, op, "ok"], op_figures.ok)
                operations.add_metric([name, op, "error"], op_figures.error)
                _add_histogram(duration, _STORE_OP_LABELS, (name, op), op_figures.latency)
            moved = (figures.bytes_written, figures.bytes_read)
            for direction, count in zip(STORE_DIRECTIONS, moved, strict=True):
                transferred.add_metric([name, direction], count)
            healthy.add_metric([name], 1 if figures.healthy else 0)
        yield from (operations, duration, transferred, healthy)

    def _queue(self) -> Iterator[Metric]:
        queue = self._read("queue", self._sources.queue, None)
        size = _gauge("llmbot_queue_messages", "Messages waiting in the queue.")
        size.add_metric([], queue.size if queue is not None else 0)
        yield size
        capacity = _gauge("llmbot_queue_capacity", "Messages the queue can hold (0: no queue).")
        capacity.add_metric([], queue.capacity if queue is not None else 0)
        yield capacity
        wait = HistogramMetricFamily(
            "llmbot_queue_wait_seconds", "Time from queueing a message to answering it."
        )
        _add_histogram(
            wait,
            (),
            (),
            queue.wait if queue is not None else LatencyHistogram(QUEUE_WAIT_BUCKETS_S),
        )
        yield wait
        dropped = _counter(
            "llmbot_queue_dropped_total",
            "Queued messages that left the queue unanswered, by reason.",
            ["reason"],
        )
        for reason in DROP_REASONS:
            dropped.add_metric(
                [reason], queue.dropped_total.get(reason, 0) if queue is not None else 0
            )
        yield dropped

    def _degradation(self) -> Iterator[Metric]:
        degradation = self._read("degradation", self._sources.degradation, None)
        level = _gauge(
            "llmbot_degradation_level", "Degradation level: 0 none, 1 low, 2 medium, 3 high."
        )
        level.add_metric([], int(degradation.level) if degradation is not None else 0)
        yield level
        fallbacks = _counter(
            "llmbot_fallback_responses_total",
            "Replies given without the model, by kind of fallback.",
            ["kind"],
        )
        for kind in FALLBACK_KINDS:
            count = degradation.fallbacks_total.get(kind, 0) if degradation is not None else 0
            fallbacks.add_metric([kind], count)
        yield fallbacks

    def _heal(self) -> Iterator[Metric]:
        heal = self._read("heal", self._sources.heal, None) or HealStats()
        actions = _counter(
            "llmbot_heal_actions_total",
            "Self-healing decisions and results, by action and outcome.",
            ["action", "outcome"],
        )
        for action in HEAL_ACTIONS:
            for outcome in HEAL_OUTCOMES:
                actions.add_metric([action, outcome], heal.actions_total.get((action, outcome), 0))
        yield actions
        last = _gauge(
            "llmbot_heal_last_success_timestamp_seconds",
            "Unix time of the last successful run of each heal action (0: never).",
            ["action"],
        )
        for action in HEAL_ACTIONS:
            last.add_metric([action], heal.last_success_timestamp.get(action, 0.0))
        yield last
        ignored = _counter(
            "llmbot_heal_alerts_ignored_total",
            "Alerts the heal receiver ignored, by reason.",
            ["reason"],
        )
        for reason in IGNORE_REASONS:
            ignored.add_metric([reason], heal.alerts_ignored_total.get(reason, 0))
        yield ignored
        webhook = _counter(
            "llmbot_webhook_requests_total",
            "Alertmanager webhook requests, by HTTP status answered.",
            ["code"],
        )
        for code in _with_extra(WEBHOOK_CODES, heal.webhook_requests_total):
            webhook.add_metric([str(code)], heal.webhook_requests_total.get(code, 0))
        yield webhook

    def _discord(self) -> Iterator[Metric]:
        shards: Mapping[int, ShardFigures] = self._read("shards", self._sources.shards, {})
        # Before the first connection hikari knows no shard: shard 0 reads "not connected".
        figures = shards or {0: ShardFigures(False, math.nan)}
        connected = _gauge(
            "llmbot_discord_shard_connected",
            "1 when the gateway shard is connected, else 0.",
            ["shard"],
        )
        heartbeat = _gauge(
            "llmbot_discord_heartbeat_latency_seconds",
            "Gateway heartbeat round trip of the shard (NaN before the first).",
            ["shard"],
        )
        for shard_id in sorted(figures):
            shard = figures[shard_id]
            connected.add_metric([str(shard_id)], 1 if shard.connected else 0)
            heartbeat.add_metric([str(shard_id)], shard.heartbeat_latency_s)
        yield from (connected, heartbeat)
        guilds = _gauge("llmbot_discord_guilds", "Discord servers (guilds) the bot is in.")
        guilds.add_metric([], self._read("guilds", self._sources.guilds, 0))
        yield guilds

    def _runtime(self) -> Iterator[Metric]:
        sources = self._sources
        heap = _gauge(
            "llmbot_python_heap_bytes",
            "Estimated heap in use: anonymous resident memory (C heap and Python arenas), "
            f"read at most every {HEAP_REFRESH_S:g} s.",
        )
        heap.add_metric([], self._read("heap_bytes", sources.heap_bytes, 0))
        yield heap
        tasks = _gauge("llmbot_asyncio_tasks", "Unfinished asyncio tasks on the event loop.")
        tasks.add_metric([], self._read("asyncio_tasks", sources.asyncio_tasks, 0))
        yield tasks
        disk = data_disk_usage(sources.data_dir)
        free = _gauge(
            "llmbot_data_disk_free_bytes", "Free bytes on the data directory's file system."
        )
        free.add_metric([], disk.free_bytes)
        size = _gauge("llmbot_data_disk_size_bytes", "Size of the data directory's file system.")
        size.add_metric([], disk.size_bytes)
        yield from (free, size)
        build = _gauge(
            "llmbot_build_info",
            "Always 1; the labels give the bot, Python, hikari and google-genai versions.",
            ["version", "python", "hikari", "genai"],
        )
        b = sources.build
        build.add_metric([b.version, b.python, b.hikari, b.genai], 1)
        yield build
        t = sources.thresholds
        for name, doc, value in (
            (
                "llmbot_alert_threshold_memory_bytes",
                "Resident memory above which the bot alerts (HEALTH_MEMORY_THRESHOLD_MB).",
                t.memory_bytes,
            ),
            (
                "llmbot_alert_threshold_error_ratio",
                "Failed-message ratio above which the bot alerts (HEALTH_ERROR_RATE_THRESHOLD).",
                t.error_ratio,
            ),
            (
                "llmbot_alert_threshold_response_seconds",
                "Response p95 above which the bot alerts (HEALTH_RESPONSE_TIME_THRESHOLD_MS).",
                t.response_seconds,
            ),
            (
                "llmbot_alert_threshold_disk_ratio",
                "Data disk used ratio above which the bot alerts (HEALTH_DISK_SPACE_THRESHOLD).",
                t.disk_ratio,
            ),
        ):
            gauge = _gauge(name, doc)
            gauge.add_metric([], value)
            yield gauge
        snapshots = _gauge("llmbot_health_snapshots", "Health snapshots held in the history.")
        snapshots.add_metric([], self._read("health_snapshots", sources.health_snapshots, 0))
        yield snapshots


def _with_extra(fixed: Iterable[_T], seen: Iterable[_T]) -> list[_T]:
    """The fixed label values first, then any others a source reports (also a fixed set)."""
    values = list(fixed)
    values.extend(value for value in seen if value not in values)
    return values


# --- the event-time facade ---------------------------------------------------------------------


def llm_outcome(error: BaseException | None) -> str:
    """The `outcome` label of an LLM call that raised `error` (None: it answered)."""
    if error is None:
        return "ok"
    if isinstance(error, LLMTimeout | TimeoutError):
        return "timeout"
    if isinstance(error, LLMRateLimited):
        return "rate_limited"
    return "error"


def rest_status_class(status: int | None) -> str:
    """The `status_class` label of a Discord REST answer (None: no answer at all)."""
    if status is None:
        return "error"
    if status == 429:
        return "429"
    if 200 <= status < 300:
        return "2xx"
    if 400 <= status < 500:
        return "4xx"
    if 500 <= status < 600:
        return "5xx"
    return "error"  # 1xx/3xx: not an answer Discord's API gives to the bot's calls


def _exemplar() -> dict[str, str] | None:
    """The current span's trace id, if a sampled span is active (exported traces only)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return {"trace_id": trace.format_trace_id(context.trace_id)}


class Telemetry:
    """The one object components report to; owns the registry that `/metrics` renders."""

    def __init__(
        self,
        *,
        models: Iterable[str] = (),
        sources: MetricSources | None = None,
        lag_interval_s: float = 0.5,
    ) -> None:
        if lag_interval_s <= 0:
            raise ValueError("lag_interval_s must be positive")
        # `_created` series double every counter and histogram for a figure no dashboard or
        # rule reads; the switch is process-wide in prometheus_client.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry = CollectorRegistry(auto_describe=True)
        process_collector.ProcessCollector(registry=registry)
        platform_collector.PlatformCollector(registry=registry)
        gc_collector.GCCollector(registry=registry)
        self._lag_interval_s = lag_interval_s
        self._lag_task: asyncio.Task[None] | None = None
        self._collector: BotCollector | None = None
        self._models = tuple(dict.fromkeys((*models, OTHER)))
        self._exposition = _Exposition()

        self._response = Histogram(
            "llmbot_response_duration_seconds",
            "Time from a message reaching the bot to its reply being sent.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self._llm_duration = Histogram(
            "llmbot_llm_request_duration_seconds",
            "Time of one LLM call (one attempt), by model and outcome.",
            ["model", "outcome"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self._tokens = Counter(
            "llmbot_llm_tokens_total",
            "LLM tokens used, by model and type (cached: input tokens served from cache).",
            ["model", "type"],
            registry=registry,
        )
        self._gateway_events = Counter(
            "llmbot_discord_gateway_events_total",
            "Discord gateway dispatch events received, by type.",
            ["type"],
            registry=registry,
        )
        self._rest = Counter(
            "llmbot_discord_rest_requests_total",
            "Discord REST requests made, by status class of the answer.",
            ["status_class"],
            registry=registry,
        )
        self._loop_lag = Histogram(
            "llmbot_event_loop_lag_seconds",
            "How late the event loop ran a timer (sampled every 0.5 s).",
            buckets=EVENT_LOOP_LAG_BUCKETS_S,
            registry=registry,
        )
        # Every labelled series exists from the start, at zero.
        for model in self._models:
            for outcome in LLM_OUTCOMES:
                self._llm_duration.labels(model, outcome)
            for kind in TOKEN_TYPES:
                self._tokens.labels(model, kind)
        for event in GATEWAY_EVENT_TYPES:
            self._gateway_events.labels(event)
        for status_class in REST_STATUS_CLASSES:
            self._rest.labels(status_class)
        if sources is not None:
            self.bind(sources)

    # -- wiring --------------------------------------------------------------------------------

    def bind(self, sources: MetricSources) -> None:
        """Export the component figures of `sources` (replaces an earlier binding)."""
        if self._collector is not None:
            self.registry.unregister(self._collector)
        self._collector = BotCollector(sources)
        self.registry.register(self._collector)

    @property
    def models(self) -> tuple[str, ...]:
        """The `model` label values (the configured models, then `other`)."""
        return self._models

    # -- observations --------------------------------------------------------------------------

    def observe_response(self, seconds: float) -> None:
        """One reply sent, `seconds` after its message reached the bot."""
        self._response.observe(max(0.0, seconds), _exemplar())

    def observe_llm_call(
        self,
        model: str,
        outcome: str,
        seconds: float,
        usage: TokenCounts | None = None,
    ) -> None:
        """One LLM call (attempt) finished; `outcome` is one of `LLM_OUTCOMES`."""
        label = model if model in self._models else OTHER
        if outcome not in LLM_OUTCOMES:
            outcome = "error"  # a caller's mistake must not create a new series
        self._llm_duration.labels(label, outcome).observe(max(0.0, seconds), _exemplar())
        if usage is not None:
            for kind in TOKEN_TYPES:  # TokenCounts names its fields after the label values
                count = int(getattr(usage, kind))
                if count > 0:
                    self._tokens.labels(label, kind).inc(count)

    def gateway_event(self, event_type: str) -> None:
        """One gateway dispatch received (Discord's event name, e.g. MESSAGE_CREATE)."""
        name = event_type.upper()
        self._gateway_events.labels(name if name in GATEWAY_EVENT_TYPES else OTHER).inc()

    def discord_rest(self, status: int | None) -> None:
        """One Discord REST request answered with HTTP `status` (None: no answer)."""
        self._rest.labels(rest_status_class(status)).inc()

    # -- event-loop lag ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the event-loop lag monitor on the running loop (idempotent)."""
        if self._lag_task is None or self._lag_task.done():
            self._lag_task = asyncio.create_task(self._watch_loop_lag(), name="event-loop-lag")

    async def stop(self) -> None:
        """Stop the lag monitor."""
        task, self._lag_task = self._lag_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # asyncio.sleep schedules through loop.call_later: the delay past the due time is
            # how long other callbacks kept the loop busy.
            due = loop.time() + self._lag_interval_s
            await asyncio.sleep(self._lag_interval_s)
            self._loop_lag.observe(max(0.0, loop.time() - due))

    # -- exposition ----------------------------------------------------------------------------

    def render(self, openmetrics: bool = False) -> tuple[bytes, str]:
        """The registry as (body, content type): OpenMetrics 1.0 (with exemplars) or text 0.0.4."""
        if openmetrics:
            return self._exposition.openmetrics(self.registry), _OPENMETRICS_CONTENT_TYPE
        return self._exposition.text(self.registry), exposition.CONTENT_TYPE_PLAIN_0_0_4


# --- exposition ----------------------------------------------------------------------------------

_OPENMETRICS_CONTENT_TYPE: Final[str] = openmetrics_exposition.CONTENT_TYPE_LATEST
# Names the fast path writes as they are: what both of prometheus_client's formats leave
# unescaped (no colon: its OpenMetrics writer turns one into "_" in sample names).
_PLAIN_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TEXT_OM_SUFFIXES: Final = ("_created", "_gsum", "_gcount")
_MEMO_LIMIT: Final = 10_000  # families; far above the catalogue's, a bound and not a size


class _Unusual(Exception):
    """Something the fast path does not write itself; prometheus_client renders the scrape."""


_SPECIAL_FLOATS: Final = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


def _go_float(value: float) -> str:
    """A sample value as `prometheus_client.utils.floatToGoString` writes it, in fewer steps:
    Python's shortest text, Go's exponent form for positive values from 1e7, and +Inf/-Inf/NaN.
    """
    if value == 0 and math.copysign(1.0, value) > 0:
        return "0.0"  # most samples: counters and buckets not yet reached
    text = repr(float(value))
    dot = text.find(".")
    if dot > 6 and text[0] != "-":  # seven digits before the point: positive and >= 1e6
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    if dot < 0:  # "1e+16" stays; only inf, -inf and nan have other names
        return _SPECIAL_FLOATS.get(text, text)
    return text


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _Collected(Collector):
    """Families already collected, for prometheus_client's own writers (the fallback)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics


class _Exposition:
    """Writes a registry byte for byte as prometheus_client's `generate_latest` of either
    format does, in a fraction of the time.

    The library escapes and validates every name and label of every sample at every scrape,
    which is most of the cost of `/metrics` (the series set is fixed, ~650 series). Here the
    `name{labels} ` text of each family's series and its HELP/TYPE lines are worked out once
    and kept, and reused while the family has the same series in the same order (checked at
    every scrape; else worked out again). Every value is read and formatted at each scrape. A
    family the fast path does not cover (names outside `_PLAIN_NAME`, native histograms) makes
    the library write that scrape, so the output never differs (tests compare the two).
    """

    def __init__(self) -> None:
        # family name -> ((sample name, labels) of each sample, their `name{labels} ` text)
        self._layouts: dict[str, tuple[list[tuple[str, dict[str, str]]], list[str]]] = {}
        self._text_headers: dict[tuple[str, str, str], tuple[str, dict[str, str]]] = {}
        self._om_headers: dict[tuple[str, str, str, str], str] = {}

    def text(self, registry: CollectorRegistry) -> bytes:
        """Prometheus text format 0.0.4, as `prometheus_client.generate_latest`."""
        metrics = list(registry.collect())
        try:
            return self._text(metrics).encode("utf-8")
        except _Unusual:
            return exposition.generate_latest(_Collected(metrics))

    def openmetrics(self, registry: CollectorRegistry) -> bytes:
        """OpenMetrics 1.0.0, as `prometheus_client.openmetrics.exposition.generate_latest`."""
        metrics = list(registry.collect())
        try:
            return self._openmetrics(metrics).encode("utf-8")
        except _Unusual:
            body: bytes = openmetrics_exposition.generate_latest(_Collected(metrics))  # type: ignore[no-untyped-call]
            return body

    def _text(self, metrics: list[Metric]) -> str:
        output: list[str] = []
        append = output.append
        go = _go_float
        for metric in metrics:
            header, moved = self._text_header(metric.name, metric.type, metric.documentation)
            append(header)
            extra: dict[str, list[str]] = {}
            for sample, prefix in zip(metric.samples, self._prefixes(metric), strict=True):
                name, _, value, timestamp, _, native_histogram = sample
                if native_histogram is not None:
                    raise _Unusual
                if timestamp is None:
                    line = f"{prefix}{go(value)}\n"
                else:
                    line = f"{prefix}{go(value)} {int(float(timestamp) * 1000):d}\n"
                if name in moved:
                    extra.setdefault(moved[name], []).append(line)
                else:
                    append(line)
            for suffix, lines in sorted(extra.items()):
                append(self._text_header(metric.name + suffix, "gauge", metric.documentation)[0])
                output.extend(lines)
        return "".join(output)

    def _openmetrics(self, metrics: list[Metric]) -> str:
        output: list[str] = []
        append = output.append
        go = _go_float
        for metric in metrics:
            append(self._om_header(metric.name, metric.type, metric.documentation, metric.unit))
            for sample, prefix in zip(metric.samples, self._prefixes(metric), strict=True):
                name, _, value, timestamp, exemplar, native_histogram = sample
                if native_histogram is not None:
                    raise _Unusual  # (the library leaves them out of OpenMetrics 1.0)
                line = prefix if value is None else prefix + go(value)
                if timestamp is not None:
                    line += f" {timestamp}"
                if exemplar:
                    line += _exemplar_text(metric, name, exemplar)
                append(line + "\n")
        append("# EOF\n")
        return "".join(output)

    def _prefixes(self, metric: Metric) -> list[str]:
        """The `name{labels} ` text of each sample of `metric` (both formats write it alike)."""
        samples = metric.samples
        layout = self._layouts.get(metric.name)
        if layout is not None and len(layout[0]) == len(samples):
            for sample, (name, labels) in zip(samples, layout[0], strict=True):
                if sample.name != name or sample.labels != labels:
                    break
            else:
                return layout[1]
        # First scrape of the family, or its series changed: work the text out again.
        series = [(sample.name, dict(sample.labels)) for sample in samples]
        prefixes = [_series_text(name, labels) for name, labels in series]
        if len(self._layouts) >= _MEMO_LIMIT:
            self._layouts.clear()
        self._layouts[metric.name] = (series, prefixes)
        return prefixes

    def _text_header(self, name: str, kind: str, documentation: str) -> tuple[str, dict[str, str]]:
        """The HELP/TYPE lines of a family in the text format, and the names of the samples the
        library moves to a gauge family of their own after it (name -> suffix)."""
        key = (name, kind, documentation)
        known = self._text_headers.get(key)
        if known is None:
            if _PLAIN_NAME.fullmatch(name) is None:
                raise _Unusual
            moved = {name + suffix: suffix for suffix in _TEXT_OM_SUFFIXES}
            # The library's renaming of OpenMetrics types to the text format's.
            if kind == "counter":
                name += "_total"
            elif kind == "info":
                name += "_info"
                kind = "gauge"
            elif kind == "stateset":
                kind = "gauge"
            elif kind == "gaugehistogram":
                kind = "histogram"
            elif kind == "unknown":
                kind = "untyped"
            doc = documentation.replace("\\", r"\\").replace("\n", r"\n")
            known = (f"# HELP {name} {doc}\n# TYPE {name} {kind}\n", moved)
            if len(self._text_headers) >= _MEMO_LIMIT:
                self._text_headers.clear()
            self._text_headers[key] = known
        return known

    def _om_header(self, name: str, kind: str, documentation: str, unit: str) -> str:
        key = (name, kind, documentation, unit)
        header = self._om_headers.get(key)
        if header is None:
            if _PLAIN_NAME.fullmatch(name) is None:
                raise _Unusual
            header = f"# HELP {name} {_escape_label_value(documentation)}\n# TYPE {name} {kind}\n"
            if unit:
                header += f"# UNIT {name} {unit}\n"
            if len(self._om_headers) >= _MEMO_LIMIT:
                self._om_headers.clear()
            self._om_headers[key] = header
        return header


def _series_text(name: str, labels: Mapping[str, str]) -> str:
    """`name{label="value",...} ` as both of the library's formats write a plain name."""
    if _PLAIN_NAME.fullmatch(name) is None:
        raise _Unusual
    if not labels:
        return f"{name} "
    pairs = []
    for label, text in sorted(labels.items()):
        if _PLAIN_NAME.fullmatch(label) is None:
            raise _Unusual
        pairs.append(f'{label}="{_escape_label_value(text)}"')
    return f"{name}{{{','.join(pairs)}}} "


def _exemplar_text(metric: Metric, sample_name: str, exemplar: Exemplar) -> str:
    """` # {labels} value [timestamp]` after an OpenMetrics sample, as the library writes it."""
    kind = metric.type
    if not (
        (kind == "counter" and sample_name.endswith("_total"))
        or (kind == "gaugehistogram" and sample_name.endswith("_bucket"))
        or (kind == "histogram" and (sample_name.endswith("_bucket") or sample_name == metric.name))
    ):
        # The library refuses the scrape; let it say so in its own words.
        raise _Unusual
    labels = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in sorted(exemplar.labels.items()))
    text = f" # {{{labels}}} {_go_float(exemplar.value)}"
    if exemplar.timestamp is not None:
        text += f" {exemplar.timestamp}"
    return text
