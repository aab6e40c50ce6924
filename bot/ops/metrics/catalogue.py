"""The fixed parts of the catalogue: label sets, histogram buckets, alert thresholds, and the
small mappings from what happened to a label value.

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

from dataclasses import dataclass
from typing import Final

from bot.config import Settings
from bot.llm.quota import Window
from bot.store.stats import OTHER_STORE, STORE_NAMES

_MIB: Final = 1024 * 1024

# --- fixed label sets ------------------------------------------------------------------------

OTHER: Final = "other"
MESSAGE_OUTCOMES: Final = ("answered", "cached", "fallback", "queued", "rejected", "failed")
ERROR_COMPONENTS: Final = ("gemini", "discord", "store", "internal")
QUOTA_WINDOWS: Final[tuple[Window, ...]] = ("minute", "day")
CACHE_RESULTS: Final = ("hit", "miss")
DEPENDENCIES: Final = ("gemini", "discord")
# Dependencies behind a circuit breaker; a source may add more, never fewer.
CIRCUIT_DEPENDENCIES: Final = ("gemini", "discord")
LLM_OUTCOMES: Final = ("ok", "error", "timeout", "rate_limited", "bad_request", "configuration")
TOKEN_TYPES: Final = ("input", "output", "thoughts", "cached")
# The OpenTelemetry GenAI metrics (gen_ai_client_*): one operation, one provider, the
# conventions' two token types, and `error_type` = "" (absent to Prometheus) for a call that
# succeeded, else the outcome of the failed call.
GEN_AI_OPERATION: Final = "chat"
GEN_AI_PROVIDER: Final = "gcp.gemini"
GEN_AI_TOKEN_TYPES: Final = ("input", "output")
GEN_AI_ERROR_TYPES: Final = ("", *(o for o in LLM_OUTCOMES if o != "ok"))
REST_STATUS_CLASSES: Final = ("2xx", "4xx", "429", "5xx", "error")
# llmbot_ops_requests_refused_total{reason} (bot/ops/connections.py says what each one means).
OPS_REFUSAL_REASONS: Final = (
    "unauthorized",
    "forbidden",
    "too_large",
    "connection_limit",
    "idle_evicted",
)
# What became of each message a restart catch-up read (bot.discord.catchup.CATCHUP_OUTCOMES).
CATCHUP_OUTCOMES: Final = ("answered", "not_for_bot", "already_seen", "over_limit")
# llmbot_time_to_first_visible_seconds{mode}, llmbot_stream_edits_total{outcome}
FIRST_VISIBLE_MODES: Final = ("streamed", "whole")
STREAM_EDIT_OUTCOMES: Final = ("ok", "rate_limited", "failed")
STORE_LABELS: Final = (*STORE_NAMES, OTHER_STORE)
STORE_DIRECTIONS: Final = ("written", "read")
STORE_OP_LABELS: Final = ("store", "op")
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
# The GenAI conventions' explicit bucket boundaries: operation duration and time to first chunk
# (0.01 s doubling to 81.92 s), token usage (1 token, times 4 up to 67,108,864).
GEN_AI_DURATION_BUCKETS_S: Final = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
GEN_AI_TOKEN_BUCKETS: Final = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
# One catch-up run: reading the channels and answering what was asked (sequentially).
CATCHUP_BUCKETS_S: Final = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
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


# --- alert thresholds ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertThresholds:
    """The alert thresholds of the settings, in base units (bytes, ratios, seconds)."""

    memory_bytes: float = 500 * _MIB
    error_ratio: float = 0.05
    response_seconds: float = 5.0
    disk_ratio: float = 0.85

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertThresholds:
        """From HEALTH_MEMORY_THRESHOLD_MB, HEALTH_ERROR_RATE_THRESHOLD (%),
        HEALTH_RESPONSE_TIME_THRESHOLD_MS and HEALTH_DISK_SPACE_THRESHOLD (%)."""
        return cls(
            memory_bytes=settings.health_memory_threshold_mb * _MIB,
            error_ratio=settings.health_error_rate_threshold / 100,
            response_seconds=settings.health_response_time_threshold_ms / 1000,
            disk_ratio=settings.health_disk_space_threshold / 100,
        )


@dataclass(frozen=True, slots=True)
class LLMPrices:
    """USD per million tokens for the cost estimate (`llmbot_llm_cost_usd_total`).

    Defaults: Google's published paid-tier prices for gemini-2.5-flash, the default model
    (input $0.30, output including thinking $2.50, cached input $0.03). Estimates: the
    provider's bill is authoritative.
    """

    input: float = 0.30
    output: float = 2.50
    cached_input: float = 0.03

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMPrices:
        """From GEMINI_PRICE_INPUT_USD_PER_MILLION, ..._OUTPUT_... and ..._CACHED_INPUT_..."""
        return cls(
            input=settings.gemini_price_input_usd_per_million,
            output=settings.gemini_price_output_usd_per_million,
            cached_input=settings.gemini_price_cached_input_usd_per_million,
        )

    def cost_usd(self, *, input: int, output: int, thoughts: int, cached: int) -> float:
        """The estimated cost of one call: the prompt less its cached part at the input price,
        the cached part at the cached price, the answer and the thinking at the output price."""
        cached = min(max(cached, 0), max(input, 0))
        fresh = max(input, 0) - cached
        billed = fresh * self.input + cached * self.cached_input
        billed += (max(output, 0) + max(thoughts, 0)) * self.output
        return billed / 1_000_000


# --- label values of events ------------------------------------------------------------------


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
