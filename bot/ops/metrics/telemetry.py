"""The event-time half of the catalogue: the `Telemetry` facade, the one object components
report to. It owns the registry `/metrics` renders and the instruments of what is observed
when it happens (prometheus_client instruments on that registry): response time, LLM call
duration and tokens (ours and the OpenTelemetry GenAI conventions' `gen_ai_client_*`
histograms with their bucket boundaries), the estimated cost (`LLMPrices`), gateway events,
Discord REST answers, and event-loop lag (measured by the facade's own monitor task). The
default process, platform and GC collectors sit on the same registry
(`process_resident_memory_bytes`, `process_start_time_seconds`, `python_gc_*`, `python_info`),
and so does the scrape-time `BotCollector` once sources are bound.

`render` writes the registry with prometheus_client's own `generate_latest` (text 0.0.4, or
OpenMetrics 1.0 with exemplars). Until the package split the bot had its own byte-for-byte
re-implementation of both writers (`_Exposition`, ~220 lines, and ~180 of tests comparing it
with the library) that kept each family's HELP/TYPE and series text between scrapes. Measured
before removing it: a Telemetry over the World of tests/ops/fakes.py after some traffic,
649-652 series (the text format's sample lines); median of 2,000 renders in 5 interleaved
rounds, four runs on a shared 2-core VM; collecting the families is 1.5-1.6 ms of each figure:

| ms per render | text 0.0.4 | OpenMetrics 1.0 |
|---|---|---|
| prometheus_client `generate_latest` | 5.5-6.8 | 10.4-10.9 |
| the private writer (removed) | 2.1-2.4 | 2.1-2.5 |

Prometheus scrapes every 15 s (deploy/prometheus/prometheus.yml) and asks for OpenMetrics, so
the library costs ~11 ms per scrape: 0.07 % of one core (the private writer: 0.015 %), and a
scrape duration of ~11 ms against the 10 s scrape timeout. Neither is visible, so the
re-implementation went. What is left of the difference: the render runs on the event loop and
holds it ~11 ms (was ~2 ms) once per scrape; at 50 messages/s the few messages with a step due
in that window (about 2 of the 750 of 15 s) wait up to ~9 ms more, which stays out of the p99.
The benchmarks' scrape scenario (a GET of the text format) is in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Final, Protocol

from opentelemetry import trace
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    exposition,
    gc_collector,
    platform_collector,
    process_collector,
)
from prometheus_client.openmetrics import exposition as openmetrics_exposition

from bot.ops.linecache_bound import LINECACHE_MAX_BYTES, trim_linecache
from bot.ops.loop_watchdog import LoopWatchdog
from bot.ops.metrics.catalogue import (
    CATCHUP_BUCKETS_S,
    CATCHUP_OUTCOMES,
    EVENT_LOOP_LAG_BUCKETS_S,
    FIRST_VISIBLE_MODES,
    GATEWAY_EVENT_TYPES,
    GEN_AI_DURATION_BUCKETS_S,
    GEN_AI_ERROR_TYPES,
    GEN_AI_OPERATION,
    GEN_AI_PROVIDER,
    GEN_AI_TOKEN_BUCKETS,
    GEN_AI_TOKEN_TYPES,
    LATENCY_BUCKETS_S,
    LLM_OUTCOMES,
    OPS_REFUSAL_REASONS,
    OTHER,
    REST_STATUS_CLASSES,
    STREAM_EDIT_OUTCOMES,
    TOKEN_TYPES,
    LLMPrices,
    rest_status_class,
)
from bot.ops.metrics.collector import BotCollector, MetricSources

_OPENMETRICS_CONTENT_TYPE: Final[str] = openmetrics_exposition.CONTENT_TYPE_LATEST
# How often the lag monitor keeps linecache within its bound (bot/ops/linecache_bound.py).
LINECACHE_CHECK_S: Final = 60.0


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
        block_threshold_s: float | None = None,
        prices: LLMPrices | None = None,
        linecache_max_bytes: int = LINECACHE_MAX_BYTES,
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
        self._linecache_max_bytes = linecache_max_bytes  # checked every LINECACHE_CHECK_S
        self._lag_task: asyncio.Task[None] | None = None
        self._collector: BotCollector | None = None
        self._models = tuple(dict.fromkeys((*models, OTHER)))
        self._prices = prices if prices is not None else LLMPrices()

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
        # The OpenTelemetry GenAI metrics, named as an OTel-to-Prometheus export names them.
        gen_ai_labels = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"]
        self._gen_ai_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration: one model call (attempt); error_type is set on failures.",
            [*gen_ai_labels, "error_type"],
            buckets=GEN_AI_DURATION_BUCKETS_S,
            registry=registry,
        )
        self._gen_ai_tokens = Histogram(
            "gen_ai_client_token_usage",
            "Number of input and output tokens used per model call (output includes thinking).",
            [*gen_ai_labels, "gen_ai_token_type"],
            buckets=GEN_AI_TOKEN_BUCKETS,
            registry=registry,
        )
        self._gen_ai_first_chunk = Histogram(
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "Time from issuing a streamed model call to receiving its first chunk.",
            gen_ai_labels,
            buckets=GEN_AI_DURATION_BUCKETS_S,
            registry=registry,
        )
        self._cost = Counter(
            "llmbot_llm_cost_usd",
            "Estimated cost of the model calls in USD, from the GEMINI_PRICE_* settings.",
            ["model"],
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
        self._first_visible = Histogram(
            "llmbot_time_to_first_visible_seconds",
            "Time from a user's message being created to the first text of its answer being "
            "visible in Discord, by mode (streamed, or whole when not streamed).",
            ["mode"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self._stream_edits = Counter(
            "llmbot_stream_edits_total",
            "Edits of streamed answers, by outcome (ok, rate_limited: Discord answered 429 "
            "beyond what hikari waits out, failed).",
            ["outcome"],
            registry=registry,
        )
        self._streams_active = Gauge(
            "llmbot_stream_replies_active",
            "Answers streaming into Discord now (at most 500; more are answered whole).",
            registry=registry,
        )
        self._loop_lag = Histogram(
            "llmbot_event_loop_lag_seconds",
            "How late the event loop ran a timer (sampled every 0.5 s).",
            buckets=EVENT_LOOP_LAG_BUCKETS_S,
            registry=registry,
        )
        self._loop_blocks = Counter(
            "llmbot_event_loop_blocks",
            "Times one piece of code held the event loop longer than "
            "EVENT_LOOP_BLOCK_THRESHOLD_MS (each logged with its stack, rate-limited).",
            registry=registry,
        )
        self._ops_refused = Counter(
            "llmbot_ops_requests_refused",
            "Requests and connections the ops server refused, by reason (a 401, 403 or 413; a "
            "connection over OPS_MAX_CONNECTIONS; an idle connection closed to make room).",
            ["reason"],
            registry=registry,
        )
        self._ops_connections = Gauge(
            "llmbot_ops_connections",
            "Connections open to the ops server (at most OPS_MAX_CONNECTIONS).",
            registry=registry,
        )
        # Slow operations: a watchdog thread that logs the blocking stack (None: off).
        self._watchdog = (
            LoopWatchdog(block_threshold_s, self._loop_blocks.inc) if block_threshold_s else None
        )
        self._catchup_messages = Counter(
            "llmbot_catchup_messages",
            "Messages read by the restart catch-up, by what became of them.",
            ["outcome"],
            registry=registry,
        )
        self._catchup_channels = Counter(
            "llmbot_catchup_channels_scanned",
            "Channels read by the restart catch-up (one per channel and run).",
            registry=registry,
        )
        self._catchup_duration = Histogram(
            "llmbot_catchup_duration_seconds",
            "Time of one restart catch-up run, reading and answering included.",
            buckets=CATCHUP_BUCKETS_S,
            registry=registry,
        )
        self._catchup_tracked = Gauge(
            "llmbot_catchup_tracked_channels",
            "Channels whose last seen message is remembered for catch-up (CATCHUP_MAX_CHANNELS).",
            registry=registry,
        )
        # Every labelled series exists from the start, at zero.
        for outcome in CATCHUP_OUTCOMES:
            self._catchup_messages.labels(outcome)
        for model in self._models:
            for outcome in LLM_OUTCOMES:
                self._llm_duration.labels(model, outcome)
            for kind in TOKEN_TYPES:
                self._tokens.labels(model, kind)
            gen_ai = (GEN_AI_OPERATION, GEN_AI_PROVIDER, model)
            for error_type in GEN_AI_ERROR_TYPES:
                self._gen_ai_duration.labels(*gen_ai, error_type)
            for kind in GEN_AI_TOKEN_TYPES:
                self._gen_ai_tokens.labels(*gen_ai, kind)
            self._gen_ai_first_chunk.labels(*gen_ai)
            self._cost.labels(model)
        for event in GATEWAY_EVENT_TYPES:
            self._gateway_events.labels(event)
        for status_class in REST_STATUS_CLASSES:
            self._rest.labels(status_class)
        for reason in OPS_REFUSAL_REASONS:
            self._ops_refused.labels(reason)
        for mode in FIRST_VISIBLE_MODES:
            self._first_visible.labels(mode)
        for outcome in STREAM_EDIT_OUTCOMES:
            self._stream_edits.labels(outcome)
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
        *,
        time_to_first_chunk_s: float | None = None,
    ) -> None:
        """One LLM call (attempt) finished; `outcome` is one of `LLM_OUTCOMES`.

        `time_to_first_chunk_s` is given for a streamed answer only (the conventions record it
        for streaming calls and not otherwise).
        """
        label = model if model in self._models else OTHER
        if outcome not in LLM_OUTCOMES:
            outcome = "error"  # a caller's mistake must not create a new series
        exemplar = _exemplar()
        seconds = max(0.0, seconds)
        self._llm_duration.labels(label, outcome).observe(seconds, exemplar)
        gen_ai = (GEN_AI_OPERATION, GEN_AI_PROVIDER, label)
        error_type = "" if outcome == "ok" else outcome
        self._gen_ai_duration.labels(*gen_ai, error_type).observe(seconds, exemplar)
        if time_to_first_chunk_s is not None:
            self._gen_ai_first_chunk.labels(*gen_ai).observe(max(0.0, time_to_first_chunk_s))
        if usage is not None:
            for kind in TOKEN_TYPES:  # TokenCounts names its fields after the label values
                count = int(getattr(usage, kind))
                if count > 0:
                    self._tokens.labels(label, kind).inc(count)
            tokens = {"input": usage.input, "output": usage.output, "thoughts": usage.thoughts}
            # The conventions' output tokens are the billed ones: the answer and the thinking.
            self._gen_ai_tokens.labels(*gen_ai, "input").observe(max(0, usage.input))
            output = max(0, usage.output) + max(0, usage.thoughts)
            self._gen_ai_tokens.labels(*gen_ai, "output").observe(output)
            cost = self._prices.cost_usd(**tokens, cached=usage.cached)
            if cost > 0:
                self._cost.labels(label).inc(cost)

    def gateway_event(self, event_type: str) -> None:
        """One gateway dispatch received (Discord's event name, e.g. MESSAGE_CREATE)."""
        name = event_type.upper()
        self._gateway_events.labels(name if name in GATEWAY_EVENT_TYPES else OTHER).inc()

    def discord_rest(self, status: int | None) -> None:
        """One Discord REST request answered with HTTP `status` (None: no answer)."""
        self._rest.labels(rest_status_class(status)).inc()

    def ops_refused(self, reason: str) -> None:
        """The ops server refused a request or connection; `reason` is one of
        `OPS_REFUSAL_REASONS`."""
        self._ops_refused.labels(reason if reason in OPS_REFUSAL_REASONS else OTHER).inc()

    def ops_connections(self, open_connections: int) -> None:
        """How many connections the ops server has open now."""
        self._ops_connections.set(open_connections)

    def catchup_message(self, outcome: str) -> None:
        """One message read by catch-up; `outcome` is one of `CATCHUP_OUTCOMES`."""
        if outcome in CATCHUP_OUTCOMES:  # a fixed label set: nothing else makes a series
            self._catchup_messages.labels(outcome).inc()

    def catchup_channel_scanned(self) -> None:
        """Catch-up read one channel."""
        self._catchup_channels.inc()

    def catchup_finished(self, seconds: float) -> None:
        """One catch-up run ended after `seconds`."""
        self._catchup_duration.observe(max(0.0, seconds))

    def catchup_tracked(self, channels: int) -> None:
        """Channels tracked for catch-up now."""
        self._catchup_tracked.set(channels)

    def first_visible(self, seconds: float, mode: str) -> None:
        """The first text of an answer became visible `seconds` after the user's message."""
        label = mode if mode in FIRST_VISIBLE_MODES else "whole"
        self._first_visible.labels(label).observe(max(0.0, seconds), _exemplar())

    def stream_edit(self, outcome: str) -> None:
        """One edit of a streamed answer (`outcome` one of STREAM_EDIT_OUTCOMES)."""
        self._stream_edits.labels(outcome if outcome in STREAM_EDIT_OUTCOMES else "failed").inc()

    def streams_active(self, count: int) -> None:
        self._streams_active.set(count)

    # -- event-loop lag ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the event-loop lag monitor (and the block watchdog) on the running loop
        (idempotent)."""
        if self._lag_task is None or self._lag_task.done():
            self._lag_task = asyncio.create_task(self._watch_loop_lag(), name="event-loop-lag")
        if self._watchdog is not None:
            await self._watchdog.start()

    async def stop(self) -> None:
        """Stop the lag monitor (and the block watchdog)."""
        if self._watchdog is not None:
            await self._watchdog.stop()
        task, self._lag_task = self._lag_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        next_trim = loop.time() + LINECACHE_CHECK_S
        while True:
            # asyncio.sleep schedules through loop.call_later: the delay past the due time is
            # how long other callbacks kept the loop busy.
            due = loop.time() + self._lag_interval_s
            await asyncio.sleep(self._lag_interval_s)
            self._loop_lag.observe(max(0.0, loop.time() - due))
            if loop.time() >= next_trim:  # on the loop thread, as linecache needs
                next_trim = loop.time() + LINECACHE_CHECK_S
                trim_linecache(self._linecache_max_bytes)

    # -- exposition ----------------------------------------------------------------------------

    def render(self, openmetrics: bool = False) -> tuple[bytes, str]:
        """The registry as (body, content type): OpenMetrics 1.0 (with exemplars) or text 0.0.4."""
        if openmetrics:
            body: bytes = openmetrics_exposition.generate_latest(self.registry)  # type: ignore[no-untyped-call]
            return body, _OPENMETRICS_CONTENT_TYPE
        return exposition.generate_latest(self.registry), exposition.CONTENT_TYPE_PLAIN_0_0_4
