"""The metric catalogue (docs/metrics.md): every `llmbot_` metric is defined in this package,
once.

One owner per fact, so each metric has exactly one way in:

* **Read at scrape time** by `BotCollector` (`collector`) from the plain `stats` objects the
  components keep (the component counts, this package only names and exports): messages and
  errors (`ChatStats`), cache, quota, circuit state, dependency health, conversation memory and
  context, store operations/latency/bytes/health, queue size/capacity/wait/drops, degradation
  level and fallbacks, heal actions/last success/webhook requests, Discord shards/heartbeat/
  guilds (read off the gateway), heap estimate (read at most every `HEAP_REFRESH_S`), asyncio
  tasks, data disk, alert thresholds, build info and the number of health snapshots held.
* **Observed when they happen**, through the `Telemetry` facade (`telemetry`; prometheus_client
  instruments on the facade's own registry): response time, LLM call duration and tokens,
  the OpenTelemetry GenAI histograms (`gen_ai_client_*`) and the estimated cost, gateway
  events, Discord REST answers, and event-loop lag (measured by the facade's own monitor task).
* The default process, platform and GC collectors sit on the same registry
  (`process_resident_memory_bytes`, `process_start_time_seconds`, `python_gc_*`, `python_info`).

Every labelled metric has a fixed label set exported from the first scrape, zeros included, so
the set of series never changes; the label sets and buckets are in `catalogue`. The running bot
reaches the collector only through `bot.ops.view.BotView.metric_sources()`.

The modules, in import order (each imports only those before it):

* `catalogue`: fixed label sets, buckets, `AlertThresholds`, `rest_status_class`;
* `collector`: `MetricSources` and the figures it reads, `BotCollector`;
* `telemetry`: `Telemetry` (event-time instruments, event-loop lag monitor, `render`).
"""

from __future__ import annotations

from bot.ops.metrics.catalogue import (
    CACHE_RESULTS,
    DEPENDENCIES,
    ERROR_COMPONENTS,
    EVENT_LOOP_LAG_BUCKETS_S,
    GATEWAY_EVENT_TYPES,
    LATENCY_BUCKETS_S,
    LLM_OUTCOMES,
    MESSAGE_OUTCOMES,
    OPS_REFUSAL_REASONS,
    OTHER,
    QUOTA_WINDOWS,
    REST_STATUS_CLASSES,
    TOKEN_TYPES,
    AlertThresholds,
    LLMPrices,
    rest_status_class,
)
from bot.ops.metrics.collector import BotCollector, ChatFigures, MetricSources, ShardFigures
from bot.ops.metrics.telemetry import Telemetry, TokenCounts

__all__ = [
    "CACHE_RESULTS",
    "DEPENDENCIES",
    "ERROR_COMPONENTS",
    "EVENT_LOOP_LAG_BUCKETS_S",
    "GATEWAY_EVENT_TYPES",
    "LATENCY_BUCKETS_S",
    "LLM_OUTCOMES",
    "MESSAGE_OUTCOMES",
    "OPS_REFUSAL_REASONS",
    "OTHER",
    "QUOTA_WINDOWS",
    "REST_STATUS_CLASSES",
    "TOKEN_TYPES",
    "AlertThresholds",
    "BotCollector",
    "ChatFigures",
    "LLMPrices",
    "MetricSources",
    "ShardFigures",
    "Telemetry",
    "TokenCounts",
    "rest_status_class",
]
