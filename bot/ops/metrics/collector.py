"""The scrape-time half of the catalogue: `BotCollector` reads the plain `stats` objects the
components keep (the component counts, this module only names and exports) through
`MetricSources`, at each scrape.

It exports messages and errors (`ChatStats`), cache, quota, circuit state, dependency health,
conversation memory and context, store operations/latency/bytes/health, queue size/capacity/
wait/drops, degradation level and fallbacks, heal actions/last success/webhook requests, Discord
shards/heartbeat/guilds (read off the gateway), heap estimate (read at most every
`HEAP_REFRESH_S`), asyncio tasks, data disk, alert thresholds, build info and the number of
health snapshots held.

A source that is missing (not wired in) or fails exports zeros, with the same series: a failing
source is logged once until it recovers, and never fails the scrape.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    Sample,
)
from prometheus_client.registry import Collector

from bot.chat.intake import SHED_REASONS, IntakeStats
from bot.chat.memory import MemoryStats
from bot.healing.actions import HEAL_ACTIONS
from bot.healing.receiver import (
    HEAL_OUTCOMES,
    HEAL_STREAK_RESULTS,
    IGNORE_REASONS,
    WEBHOOK_CODES,
    HealStats,
)
from bot.llm.cache import EVICTION_REASONS, CacheStats
from bot.llm.call_stats import LLMCallStats
from bot.llm.quota import QuotaSnapshot
from bot.llm.quota_shared import FleetQuotaStats
from bot.ops.metrics.catalogue import (
    CACHE_RESULTS,
    CIRCUIT_DEPENDENCIES,
    DEPENDENCIES,
    ERROR_COMPONENTS,
    MESSAGE_OUTCOMES,
    QUOTA_WINDOWS,
    STORE_DIRECTIONS,
    STORE_LABELS,
    STORE_OP_LABELS,
    AlertThresholds,
)
from bot.ops.metrics.fair_use import FairUseFigures, fair_use_families
from bot.ops.metrics.fleet import fleet_families, fleet_queue_families, rest_pace_families
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
from bot.resilience.fleet_fallback import FleetFallbackStats
from bot.resilience.hold import ABANDON_REASONS, HoldStats
from bot.resilience.queue import DROP_REASONS, QUEUE_WAIT_BUCKETS_S, QueueStats
from bot.resilience.rest_pace import SharedPaceStats
from bot.store.answered import DUPLICATE_SOURCES, OPEN_STATES, RESUME_OUTCOMES, LedgerStats
from bot.store.redis_link import RedisStats
from bot.store.stats import OPS, LatencyHistogram, StoreStats

logger = logging.getLogger(__name__)

# --- what the collector reads ----------------------------------------------------------------


class ChatFigures(Protocol):
    """What the collector reads of `ChatStats` (kept structural: the pipeline owns the class)."""

    @property
    def outcomes(self) -> Mapping[Any, int]: ...

    @property
    def errors(self) -> Mapping[Any, int]: ...

    @property
    def late(self) -> Mapping[Any, int]: ...

    @property
    def in_flight(self) -> int: ...


class ShardFigures(NamedTuple):
    """One gateway shard: connected or not, and its heartbeat latency (NaN before the first)."""

    connected: bool
    heartbeat_latency_s: float


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
    llm_calls: Callable[[], LLMCallStats | None] = _none
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
    discord_hold: Callable[[], HoldStats | None] = _none
    intake: Callable[[], IntakeStats | None] = _none
    typing: Callable[[], Mapping[str, int]] = _no_entries  # "sent", "skipped"
    fair_use: Callable[[], FairUseFigures | None] = _none
    answers: Callable[[], LedgerStats | None] = _none
    redis: Callable[[], RedisStats | None] = _none  # REDIS_URL set: the link's figures
    fleet: Callable[[], FleetQuotaStats | None] = _none  # REDIS_URL set: the shared quota's
    rest_pace: Callable[[], SharedPaceStats | None] = _none  # REDIS_URL set: the shared pace's
    # REDIS_URL set: the fleet-wide cache, cooldowns and video budgets' fallbacks, by part.
    fleet_parts: Callable[[], Mapping[str, FleetFallbackStats] | None] = _none
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
        yield from self._answers()
        yield from self._degradation()
        yield from self._heal()
        yield from self._discord()
        yield from self._intake()
        yield from fair_use_families(lambda: self._read("fair_use", self._sources.fair_use, None))
        yield from self._runtime()
        yield from fleet_families(
            self._read("redis", self._sources.redis, None),
            self._read("fleet", self._sources.fleet, None),
            _add_histogram,
            parts=self._read("fleet_parts", self._sources.fleet_parts, None),
        )
        yield from rest_pace_families(
            self._read("rest_pace", self._sources.rest_pace, None), _add_histogram
        )

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
        late: Mapping[Any, int] = chat.late if chat is not None else {}
        late_replies = _counter(
            "llmbot_late_replies_total",
            "Replies to questions that were queued first (the later answer, refusal or drop "
            "notice), by outcome; each is also in llmbot_messages_total.",
            ["outcome"],
        )
        for outcome in MESSAGE_OUTCOMES:
            late_replies.add_metric([outcome], late.get(outcome, 0))
        yield late_replies
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
        calls = self._read("llm_calls", self._sources.llm_calls, None)
        circuit = _counter(
            "llmbot_llm_circuit_rejections_total",
            "Model calls not made because the Gemini circuit breaker was open (they count as "
            "failed in the model-call error ratio).",
        )
        circuit.add_metric([], calls.circuit_rejections if calls is not None else 0)
        yield circuit

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
        # the "server" figures of the catalogue describe those contexts.
        servers = conversations
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
        ]
        for name, doc, value in values:
            gauge = _gauge(name, doc)
            gauge.add_metric([], value)
            yield gauge

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
            labels=list(STORE_OP_LABELS),
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
                _add_histogram(duration, STORE_OP_LABELS, (name, op), op_figures.latency)
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
        yield from fleet_queue_families(queue, self._read("answers", self._sources.answers, None))

    def _answers(self) -> Iterator[Metric]:
        """The idempotency record and in-flight journal (bot.store.answered)."""
        answers = self._read("answers", self._sources.answers, None)
        records = _gauge(
            "llmbot_idempotency_records", "Message ids remembered as accepted or answered."
        )
        records.add_metric([], answers.size if answers is not None else 0)
        capacity = _gauge("llmbot_idempotency_capacity", "Message ids that can be remembered.")
        capacity.add_metric([], answers.capacity if answers is not None else 0)
        inflight = _gauge(
            "llmbot_inflight_questions",
            "Accepted questions not yet answered or told (journalled), by state.",
            ["state"],
        )
        for state in OPEN_STATES:
            inflight.add_metric([state], answers.open_by_state[state] if answers else 0)
        duplicates = _counter(
            "llmbot_duplicate_deliveries_total",
            "Deliveries of an already accepted message id, given no reply, by source.",
            ["source"],
        )
        for source in DUPLICATE_SOURCES:
            duplicates.add_metric([source], answers.duplicates_total[source] if answers else 0)
        resumed = _counter(
            "llmbot_resumed_questions_total",
            "Questions in flight at the last stop, finished after the restart, by outcome.",
            ["outcome"],
        )
        for outcome in RESUME_OUTCOMES:
            resumed.add_metric([outcome], answers.resumed_total[outcome] if answers else 0)
        yield from (records, capacity, inflight, duplicates, resumed)

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
        streaks = _counter(
            "llmbot_heal_streaks_total",
            "Heal streaks (an alert's applications of its action until it resolves) by how they "
            "ended: recovered (resolved before escalation) or escalated.",
            ["action", "result"],
        )
        for action in HEAL_ACTIONS:
            for result in HEAL_STREAK_RESULTS:
                streaks.add_metric([action, result], heal.streaks_total.get((action, result), 0))
        yield streaks
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
        audit = _gauge("llmbot_heal_audit_entries", "Heal decisions and results in the audit.")
        audit.add_metric([], heal.audit_entries)
        audit_cap = _gauge(
            "llmbot_heal_audit_capacity",
            "Most entries the heal audit keeps (HEAL_AUDIT_MAX_ENTRIES).",
        )
        audit_cap.add_metric([], heal.audit_capacity)
        yield from (audit, audit_cap)

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
        yield from self._discord_hold()

    def _discord_hold(self) -> Iterator[Metric]:
        hold = self._read("discord_hold", self._sources.discord_hold, None) or HoldStats(0)
        held = _gauge(
            "llmbot_discord_held_replies",
            "Replies waiting for Discord (its REST breaker open, or a send failed) right now.",
        )
        held.add_metric([], hold.held)
        capacity = _gauge(
            "llmbot_discord_hold_capacity",
            "Replies that may wait for Discord at once (DISCORD_HOLD_MAX_REPLIES).",
        )
        capacity.add_metric([], hold.capacity)
        holds = _counter(
            "llmbot_discord_reply_holds_total",
            "Replies that had to wait for Discord at least once.",
        )
        holds.add_metric([], hold.held_total)
        undelivered = _counter(
            "llmbot_discord_replies_undelivered_total",
            "Replies given up while waiting for Discord, by reason (overflow: no room to "
            "wait; expired: waited DISCORD_HOLD_MAX_SECONDS; shutdown).",
            ["reason"],
        )
        for reason in ABANDON_REASONS:
            undelivered.add_metric([reason], hold.abandoned_total.get(reason, 0))
        yield from (held, capacity, holds, undelivered)

    def _intake(self) -> Iterator[Metric]:
        intake = self._read("intake", self._sources.intake, None) or IntakeStats(0, 0)
        values: list[tuple[str, str, float]] = [
            ("llmbot_intake_in_flight", "New messages being handled right now.", intake.in_flight),
            (
                "llmbot_intake_max_in_flight",
                "Most new messages handled at once (MAX_CONCURRENT_MESSAGES).",
                intake.max_in_flight,
            ),
            (
                "llmbot_intake_waiting",
                "New messages waiting for a handler slot right now.",
                intake.waiting,
            ),
            (
                "llmbot_intake_capacity",
                "Most new messages that may wait for a slot (INTAKE_MAX_WAITING).",
                intake.max_waiting,
            ),
        ]
        for name, doc, value in values:
            gauge = _gauge(name, doc)
            gauge.add_metric([], value)
            yield gauge
        shed = _counter(
            "llmbot_intake_shed_total",
            "New messages not handled, by reason (full: no room to wait; shutdown: the bot was "
            "stopping); each is told by a shed notice.",
            ["reason"],
        )
        for reason in SHED_REASONS:
            shed.add_metric([reason], intake.shed_total.get(reason, 0))
        yield shed
        notices = _counter(
            "llmbot_intake_shed_notices_total",
            "Shed notices sent (one per channel per INTAKE_SHED_NOTICE_INTERVAL_SECONDS, naming "
            "everyone shed there).",
        )
        notices.add_metric([], intake.shed_notices_total)
        untold = _counter(
            "llmbot_intake_shed_untold_total",
            "Shed messages whose author could not be told (no room to hold the notice, or "
            "Discord refused it).",
        )
        untold.add_metric([], intake.shed_untold_total)
        yield from (notices, untold)
        wait = HistogramMetricFamily(
            "llmbot_intake_wait_seconds",
            "Time a new message waited for a handler slot (0 when one was free).",
        )
        _add_histogram(wait, (), (), intake.wait)
        yield wait
        typing: Mapping[str, int] = self._read("typing", self._sources.typing, {})
        triggers = _counter(
            "llmbot_discord_typing_total",
            "Typing indicators: sent, or skipped because a reply needed the REST budget.",
            ["result"],
        )
        for result in ("sent", "skipped"):
            triggers.add_metric([result], typing.get(result, 0))
        yield triggers

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
                "Model-call error ratio above which the bot alerts (HEALTH_ERROR_RATE_THRESHOLD).",
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
