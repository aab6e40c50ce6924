"""Generate the Grafana dashboards of discord-llm-bot as JSON (grafana-foundation-sdk, 11.6).

    python deploy/grafana/generate.py              # rewrite deploy/grafana/dashboards/*.json
    python deploy/grafana/generate.py --out DIR    # write elsewhere (tests compare the two)

Every panel queries the `${datasource}` variable, filters on `$job` and `$instance`, has a
title, a description and a unit, and uses `$__rate_interval` in rate(). Metric names come from
the catalogue (docs/metrics.md) and the recording rules in deploy/prometheus/rules/.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from grafana_foundation_sdk.builders import (
    bargauge,
    dashboard,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import prometheus as prometheus_model

OUT_DIR: Final = Path(__file__).resolve().parent / "dashboards"
TAG: Final = "discord-llm-bot"
DS: Final = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every query filters on the two template variables.
SEL: Final = 'job=~"$job", instance=~"$instance"'
# The legend name that marks a series as a threshold line (dashed red, see _threshold_style).
THRESHOLD: Final = "threshold"

# Gemini 2.5 Flash list prices in USD per million tokens when this was written (the defaults of
# the GEMINI_PRICE_* settings too); the text boxes let an operator change them here.
PRICES: Final = {"price_input": "0.30", "price_output": "2.50", "price_cached": "0.03"}

AnyPanel = Builder[model.Panel]


def sel(extra: str = "") -> str:
    """A label selector with the job/instance filter and optional extra matchers."""
    return "{" + SEL + (", " + extra if extra else "") + "}"


def v(metric: str, extra: str = "") -> str:
    """A metric with the job/instance filter (and `extra` matchers)."""
    return metric + sel(extra)


def rate(metric: str, extra: str = "") -> str:
    """rate() over Grafana's $__rate_interval (at least four scrape intervals)."""
    return f"rate({v(metric, extra)}[$__rate_interval])"


def increase(metric: str, extra: str = "") -> str:
    """increase() over $__rate_interval: events per interval, for bar charts of rare events."""
    return f"increase({v(metric, extra)}[$__rate_interval])"


def quantile(q: str, histogram: str, by: str = "") -> str:
    """A quantile of a histogram's buckets over $__rate_interval, optionally kept `by` labels."""
    keep = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({keep}) ({rate(histogram + '_bucket')}))"


def objective(value: str) -> str:
    """A fixed objective drawn as a line (llmbot_build_info is 1 for every selected bot)."""
    return f"{value} * max({v('llmbot_build_info')})"


def query(expr: str, legend: str = "", *, instant: bool = False, exemplar: bool = False) -> Any:
    """A Prometheus query on the datasource variable."""
    built = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").datasource(DS)
    if instant:
        # Tables and bar gauges want one row per series, not a time series.
        built = built.instant().format(prometheus_model.PromQueryFormat.TABLE)
    else:
        built = built.range()
    if exemplar:
        built = built.exemplar(True)
    return built


def _with_targets(panel: Any, targets: Sequence[Any]) -> Any:
    for index, target in enumerate(targets):
        panel = panel.with_target(target.ref_id(chr(ord("A") + index)))
    return panel


def _threshold_style(panel: Any) -> Any:
    return panel.override_by_name(
        THRESHOLD,
        [
            model.DynamicConfigValue(
                id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
            ),
            model.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"}),
            model.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
        ],
    )


def ts(
    title: str,
    description: str,
    unit: str,
    targets: Sequence[Any],
    *,
    bars: bool = False,
    min_value: float | None = 0,
    max_value: float | None = None,
    span: int = 12,
) -> AnyPanel:
    """A time series panel; a target with legend "threshold" is drawn as a dashed red line."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DS)
        .height(8)
        .span(span)
        .fill_opacity(10)
    )
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(80)
    if min_value is not None:
        panel = panel.min(min_value)
    if max_value is not None:
        panel = panel.max(max_value)
    panel = _with_targets(panel, targets)
    if any(t.build().legend_format == THRESHOLD for t in targets):
        panel = _threshold_style(panel)
    result: AnyPanel = panel
    return result


def single(
    title: str,
    description: str,
    unit: str,
    target: Any,
    *,
    mappings: Sequence[model.ValueMapping] = (),
    span: int = 4,
) -> AnyPanel:
    """A stat panel showing the last value."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DS)
        .height(4)
        .span(span)
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    )
    if mappings:
        panel = panel.mappings(list(mappings))
    result: AnyPanel = _with_targets(panel, [target])
    return result


def states(
    title: str,
    description: str,
    target: Any,
    mapping: model.ValueMap,
    *,
    span: int = 12,
) -> AnyPanel:
    """A state timeline whose numeric values are named by `mapping`."""
    panel = (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .unit("none")
        .datasource(DS)
        .height(6)
        .span(span)
        .mappings([mapping])
    )
    result: AnyPanel = _with_targets(panel, [target])
    return result


def gauge_bars(title: str, description: str, unit: str, target: Any, *, span: int = 8) -> AnyPanel:
    """A bar gauge from 0 to 1."""
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DS)
        .height(8)
        .span(span)
        .min(0)
        .max(1)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    )
    result: AnyPanel = _with_targets(panel, [target])
    return result


def grid(title: str, description: str, unit: str, target: Any, *, span: int = 24) -> AnyPanel:
    """A table of an instant query."""
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DS)
        .height(6)
        .span(span)
    )
    result: AnyPanel = _with_targets(panel, [target])
    return result


def value_map(names: dict[int, tuple[str, str]]) -> model.ValueMap:
    """Map numbers to (text, color)."""
    return model.ValueMap(
        options={
            str(value): model.ValueMappingResult(text=text, color=color, index=index)
            for index, (value, (text, color)) in enumerate(sorted(names.items()))
        }
    )


UP_DOWN: Final = {0: ("down", "red"), 1: ("up", "green")}


# --- dashboards -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """A row title (None: no row) and its panels."""

    title: str | None
    panels: Sequence[AnyPanel]


def _variables(extra: Sequence[Builder[model.VariableModel]] = ()) -> list[Any]:
    datasource = (
        dashboard.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .description("Prometheus that scrapes the bot")
    )
    job = (
        dashboard.QueryVariable("job")
        .label("Job")
        .description("Prometheus job of the bot")
        .datasource(DS)
        .query("label_values(llmbot_build_info, job)")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .include_all(True)
        .all_value(".*")
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
    )
    instance = (
        dashboard.QueryVariable("instance")
        .label("Instance")
        .description("Bot instance (its ops address)")
        .datasource(DS)
        .query('label_values(llmbot_build_info{job=~"$job"}, instance)')
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .include_all(True)
        .all_value(".*")
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
    )
    return [datasource, job, instance, *extra]


def build(
    uid: str,
    title: str,
    description: str,
    sections: Sequence[Section],
    variables: Sequence[Builder[model.VariableModel]] = (),
) -> model.Dashboard:
    """Assemble a dashboard; panel ids are assigned in order so the JSON is stable."""
    board = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .editable()
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .link(
            dashboard.DashboardLink("Discord LLM bot")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    for variable in _variables(variables):
        board = board.with_variable(variable)
    next_id = 1
    for section in sections:
        if section.title is not None:
            board = board.with_row(dashboard.Row(section.title).id(next_id))
            next_id += 1
        for panel in section.panels:
            board = board.with_panel(panel.id(next_id))  # type: ignore[attr-defined]
            next_id += 1
    built: model.Dashboard = board.build()
    return built


def overview() -> model.Dashboard:
    """Service level, queue, quota, SLO budgets, alerts and self-healing at a glance."""
    answered = rate("llmbot_messages_total", 'outcome="answered"')
    budget = (
        "1 - max(llmbot:{slo}_sli_error:ratio_rate30d{s})"
        ' / (1 - scalar(llmbot:slo_objective:ratio{{slo="{slo}"}}))'
    )
    burn = (
        "llmbot:{slo}_sli_error:ratio_rate1h{s}"
        ' / (1 - scalar(llmbot:slo_objective:ratio{{slo="{slo}"}}))'
    )
    degradation = value_map(
        {0: ("none", "green"), 1: ("low", "yellow"), 2: ("medium", "orange"), 3: ("high", "red")}
    )
    return build(
        "llmbot-overview",
        "Discord LLM bot / Overview",
        "Is the bot answering, how fast, and how much error budget is left.",
        [
            Section(
                "Service level",
                [
                    single(
                        "Answered per minute",
                        "Messages answered by Gemini per minute (cached and fallback replies "
                        "are counted separately).",
                        "reqpm",
                        query(f"sum({answered}) * 60", "answered"),
                    ),
                    single(
                        "Gemini call error ratio (5m)",
                        "Failed Gemini calls (error, timeout) plus calls refused by the open "
                        "circuit breaker, over the calls wanted: llmbot:llm_call_error_ratio, the "
                        "error rate of /status; LLMBotHighErrorRatio compares its 2-minute "
                        "figure with the configured threshold.",
                        "percentunit",
                        query(f"max(llmbot:llm_call_error_ratio:rate5m{sel()})", "error ratio"),
                    ),
                    single(
                        "Degradation level",
                        "0 none, 1 low, 2 medium, 3 high: how far the bot has fallen back to "
                        "queueing, cached or canned answers.",
                        "none",
                        query(f"max(llmbot_degradation_level{sel()})", "level"),
                        mappings=[degradation],
                    ),
                    single(
                        "Gemini requests left today",
                        "Remaining requests in the daily Gemini quota (after the safety margin).",
                        "short",
                        query(
                            "min(" + v("llmbot_llm_quota_remaining", 'window="day"') + ")", "left"
                        ),
                    ),
                    single(
                        "Availability budget left (30 d)",
                        "Share of the 30-day error budget of the 99 % availability SLO not yet "
                        "spent. A message is good when its first reply answers it (answered, "
                        "cached); queued, fallback and failed ones spend the budget.",
                        "percentunit",
                        query(budget.format(slo="availability", s=sel()), "budget left"),
                    ),
                    single(
                        "Latency budget left (30 d)",
                        "Share of the 30-day error budget of the latency SLO (95 % of replies "
                        "within 5 s) not yet spent.",
                        "percentunit",
                        query(budget.format(slo="latency", s=sel()), "budget left"),
                    ),
                    ts(
                        "Messages by outcome",
                        "Messages per minute by outcome: answered, cached, fallback, queued, "
                        "rejected (access control, cooldown) and failed.",
                        "reqpm",
                        [
                            query(
                                "sum by (outcome) (" + rate("llmbot_messages_total") + ") * 60",
                                "{{outcome}}",
                            )
                        ],
                    ),
                    ts(
                        "Error ratios",
                        "Gemini calls: failed (error, timeout) or refused by the open breaker, "
                        "over 2 minutes, as LLMBotHighErrorRatio judges them against the "
                        "threshold exported by the bot (llmbot_alert_threshold_error_ratio). "
                        "Failed replies: failed over all replies in 5 minutes; during a Gemini "
                        "outage questions are queued, not failed, so this one stays low.",
                        "percentunit",
                        [
                            query(
                                f"llmbot:llm_call_error_ratio:rate2m{sel()}",
                                "Gemini calls {{instance}}",
                            ),
                            query(
                                f"llmbot:error_ratio:rate5m{sel()}", "failed replies {{instance}}"
                            ),
                            query(f"max(llmbot_alert_threshold_error_ratio{sel()})", THRESHOLD),
                        ],
                    ),
                    ts(
                        "Internal error ratio",
                        "Replies after an unexpected exception (a bug) over all replies in "
                        "5 minutes, with the 1 % objective LLMBotInternalErrors uses.",
                        "percentunit",
                        [
                            query(f"llmbot:internal_error_ratio:rate5m{sel()}", "{{instance}}"),
                            query(objective("0.01"), THRESHOLD),
                        ],
                    ),
                    ts(
                        "Response time",
                        "Message received to reply sent, p50/p95/p99 over 5 minutes "
                        "(recording rules), with the threshold LLMBotSlowResponses uses.",
                        "s",
                        [
                            query(f"max(llmbot:response_duration_seconds:p50_5m{sel()})", "p50"),
                            query(f"max(llmbot:response_duration_seconds:p95_5m{sel()})", "p95"),
                            query(f"max(llmbot:response_duration_seconds:p99_5m{sel()})", "p99"),
                            query(
                                f"max(llmbot_alert_threshold_response_seconds{sel()})", THRESHOLD
                            ),
                        ],
                    ),
                    ts(
                        "Median reply time",
                        "Message received to reply sent, p50 over 5 minutes, with the 2 s "
                        "objective LLMBotResponseP50High uses.",
                        "s",
                        [
                            query(f"max(llmbot:response_duration_seconds:p50_5m{sel()})", "p50"),
                            query(objective("2"), THRESHOLD),
                        ],
                    ),
                    ts(
                        "p99 reply time",
                        "Message received to reply sent, p99 over 5 minutes, with the 10 s "
                        "objective LLMBotResponseP99High uses.",
                        "s",
                        [
                            query(f"max(llmbot:response_duration_seconds:p99_5m{sel()})", "p99"),
                            query(objective("10"), THRESHOLD),
                        ],
                    ),
                    ts(
                        "Queue",
                        "Messages waiting in the degradation queue and its capacity; "
                        "LLMBotQueuePressure fires above 80 %.",
                        "short",
                        [
                            query(f"max(llmbot_queue_messages{sel()})", "queued"),
                            query(f"max(llmbot_queue_capacity{sel()})", "capacity"),
                        ],
                    ),
                    ts(
                        "SLO burn rate (1h)",
                        "How fast each error budget burns over the last hour (1 = spent in "
                        "exactly 30 days); the fast-burn page needs 14.4 here and over 5 minutes.",
                        "short",
                        [
                            query(burn.format(slo="availability", s=sel()), "availability"),
                            query(burn.format(slo="latency", s=sel()), "latency"),
                        ],
                    ),
                    ts(
                        "Queue wait",
                        "Time messages spent in the degradation queue before being processed, "
                        "p50 and p95.",
                        "s",
                        [
                            query(
                                quantile("0.5", "llmbot_queue_wait_seconds"),
                                "p50",
                            ),
                            query(
                                quantile("0.95", "llmbot_queue_wait_seconds"),
                                "p95",
                            ),
                        ],
                    ),
                    ts(
                        "Intake (backpressure)",
                        "New messages being answered and waiting for a handler slot, against "
                        "MAX_CONCURRENT_MESSAGES and INTAKE_MAX_WAITING; beyond both a message "
                        "is shed with a notice.",
                        "short",
                        [
                            query(f"sum(llmbot_intake_in_flight{sel()})", "in flight"),
                            query(f"sum(llmbot_intake_max_in_flight{sel()})", "max in flight"),
                            query(f"sum(llmbot_intake_waiting{sel()})", "waiting"),
                            query(f"sum(llmbot_intake_capacity{sel()})", "max waiting"),
                        ],
                    ),
                    ts(
                        "Shed messages and typing",
                        "New messages shed per second by reason, shed notices sent, and typing "
                        "indicators skipped because replies needed the REST budget.",
                        "reqps",
                        [
                            query(
                                "sum by (reason) (" + rate("llmbot_intake_shed_total") + ")",
                                "shed {{reason}}",
                            ),
                            query(
                                "sum(" + rate("llmbot_intake_shed_notices_total") + ")",
                                "notices",
                            ),
                            query(
                                "sum("
                                + rate("llmbot_discord_typing_total", 'result="skipped"')
                                + ")",
                                "typing skipped",
                            ),
                        ],
                    ),
                    grid(
                        "Firing alerts",
                        "LLMBot alerts Prometheus currently fires (the ALERTS series); "
                        "silences and inhibitions are in Alertmanager.",
                        "none",
                        query(
                            'ALERTS{alertstate="firing", alertname=~"LLMBot.*", '
                            'job=~"$job", instance=~"$instance"}',
                            "{{alertname}}",
                            instant=True,
                        ),
                    ),
                ],
            ),
            Section(
                "Self-healing",
                [
                    ts(
                        "Healing actions",
                        "Actions run by the bot on Alertmanager's webhook, by action and "
                        "outcome (ok, failed, cooldown, duplicate, reverted).",
                        "short",
                        [
                            query(
                                "sum by (action, outcome) ("
                                + increase("llmbot_heal_actions_total")
                                + ")",
                                "{{action}} {{outcome}}",
                            )
                        ],
                        bars=True,
                    ),
                    ts(
                        "Alert webhook requests",
                        "Requests to the bot's /alerts endpoint per minute by HTTP status "
                        "(401/403: token mismatch, 4xx: bad payload).",
                        "reqpm",
                        [
                            query(
                                "sum by (code) ("
                                + rate("llmbot_webhook_requests_total")
                                + ") * 60",
                                "{{code}}",
                            )
                        ],
                    ),
                    ts(
                        "Heal recovery rate",
                        "Of the heal streaks that ended in the last day, the share whose alert "
                        "resolved rather than escalated (llmbot:heal_recovery_ratio:rate1d), "
                        "with the 80 % LLMBotHealRecoveryLow uses. Empty until a streak ends.",
                        "percentunit",
                        [
                            query(f"llmbot:heal_recovery_ratio:rate1d{sel()}", "{{instance}}"),
                            query(objective("0.8"), THRESHOLD),
                        ],
                        max_value=1,
                    ),
                    grid(
                        "Last successful healing",
                        "When each healing action last succeeded (actions that never ran are "
                        "left out).",
                        "dateTimeFromNow",
                        query(
                            "max by (action) "
                            f"(llmbot_heal_last_success_timestamp_seconds{sel()} > 0) * 1000",
                            "{{action}}",
                            instant=True,
                        ),
                    ),
                ],
            ),
            Section(
                "Fair use",
                [
                    ts(
                        "Budget refusals",
                        "Questions per minute not sent to Gemini because a daily token budget "
                        "was used up, by the budget's scope (user, role, guild). Runbook: a "
                        "user says the bot ignores them.",
                        "short",
                        [
                            query(
                                "sum by (scope) ("
                                + rate("llmbot_budget_refusals_total")
                                + ") * 60",
                                "{{scope}}",
                            )
                        ],
                        bars=True,
                        span=8,
                    ),
                    ts(
                        "Refused users' usage today",
                        "Median and p95 of the refused user's tokens used today, at each budget "
                        "refusal: far above the budget means a budget too small for real use.",
                        "short",
                        [
                            query(
                                quantile("0.5", "llmbot_budget_user_usage_at_refusal_tokens"),
                                "p50",
                            ),
                            query(
                                quantile("0.95", "llmbot_budget_user_usage_at_refusal_tokens"),
                                "p95",
                            ),
                        ],
                        span=8,
                    ),
                    single(
                        "Auto-reply channels",
                        "Channels and threads where the bot answers every message without a "
                        "mention (/channel autoreply).",
                        "short",
                        query(f"sum({v('llmbot_autoreply_channels')})"),
                    ),
                    single(
                        "Fair-use maps, fullest",
                        "The fullest of the fair-use maps (over-budget notices, budget "
                        "overrides, channels with settings) as a share of its limit.",
                        "percentunit",
                        query(
                            "max(" + v("llmbot_fair_use_entries") + " / "
                            "on (job, instance, map) " + v("llmbot_fair_use_capacity") + ")"
                        ),
                    ),
                ],
            ),
        ],
    )


def cost_per_second(tokens: Callable[[str], str]) -> str:
    """USD per second from per-second token series `tokens(matcher)` and the price boxes.

    Gemini's input count includes the cached tokens, so those are priced at the cached price
    instead of the input price: the same estimate as llmbot_llm_cost_usd_total.
    """
    priced = [
        ('type="input"', "$price_input"),
        ('type=~"output|thoughts"', "$price_output"),
        ('type="cached"', "($price_cached - $price_input)"),
    ]
    # `or vector(0)`: a type with no series yet must not blank the whole sum.
    parts = [f"(sum({tokens(matcher)}) or vector(0)) * {price}" for matcher, price in priced]
    return "(" + " + ".join(parts) + ") / 1e6"


GEN_AI_DURATION: Final = "gen_ai_client_operation_duration_seconds"
GEN_AI_TOKENS: Final = "gen_ai_client_token_usage"
GEN_AI_FIRST_CHUNK: Final = "gen_ai_client_operation_time_to_first_chunk_seconds"


def _token_rate(matcher: str) -> str:
    return rate("llmbot_llm_tokens_total", matcher)


def _token_rate_1h(matcher: str) -> str:
    return v("llmbot:llm_tokens:rate1h", matcher)


def llm() -> model.Dashboard:
    """Gemini: calls, latency with exemplars, tokens and cost, quota, breaker, cache."""
    half_open = v("llmbot_circuit_state", 'state="half_open"')
    is_open = v("llmbot_circuit_state", 'state="open"')
    breaker = f"sum by (dependency) ({half_open}) + 2 * sum by (dependency) ({is_open})"
    price_boxes = [
        dashboard.TextBoxVariable(name)
        .label(label)
        .description("Price used by the cost panels; change it here for your tier.")
        .default_value(PRICES[name])
        .current(model.VariableOption(selected=True, text=PRICES[name], value=PRICES[name]))
        for name, label in (
            ("price_input", "USD / 1M input tokens"),
            ("price_output", "USD / 1M output+thinking tokens"),
            ("price_cached", "USD / 1M cached tokens"),
        )
    ]
    return build(
        "llmbot-llm",
        "Discord LLM bot / LLM",
        "Gemini calls, latency (with trace exemplars), tokens and cost, quota, circuit breaker "
        "and the response cache.",
        [
            Section(
                "Gemini",
                [
                    ts(
                        "Gemini calls by outcome",
                        "Calls to the Gemini API per second by outcome (ok, error, timeout, "
                        "rate_limited), retries included, and the calls the open circuit "
                        "breaker refused (counted as failed in the model-call error ratio).",
                        "reqps",
                        [
                            query(
                                "sum by (outcome) ("
                                + rate("llmbot_llm_request_duration_seconds_count")
                                + ")",
                                "{{outcome}}",
                            ),
                            query(
                                "sum(" + rate("llmbot_llm_circuit_rejections_total") + ")",
                                "refused by the breaker",
                            ),
                        ],
                    ),
                    ts(
                        "Gemini latency",
                        "Duration of Gemini calls, p50/p95/p99, and the time the next call is "
                        "allowed (adaptive: 3x the recent p95, within GEMINI_TIMEOUT_MIN_SECONDS "
                        "and GEMINI_TIMEOUT_SECONDS). The dots are exemplars: click one to open "
                        "the trace of that call in Tempo.",
                        "s",
                        [
                            query(
                                quantile("0.5", "llmbot_llm_request_duration_seconds"),
                                "p50",
                                exemplar=True,
                            ),
                            query(
                                quantile("0.95", "llmbot_llm_request_duration_seconds"),
                                "p95",
                                exemplar=True,
                            ),
                            query(
                                quantile("0.99", "llmbot_llm_request_duration_seconds"),
                                "p99",
                                exemplar=True,
                            ),
                            query(v("llmbot_llm_request_timeout_seconds"), "timeout"),
                        ],
                    ),
                    states(
                        "Dependency health",
                        "Gemini and Discord as the bot sees them (llmbot_dependency_up); "
                        "LLMBotDependencyDown fires after 2 minutes down.",
                        query(f"llmbot_dependency_up{sel()}", "{{dependency}}"),
                        value_map(UP_DOWN),
                    ),
                    states(
                        "Circuit breaker",
                        "State of each circuit breaker: closed (calls pass), half-open (probing), "
                        "open (calls refused, fallback answers).",
                        query(breaker, "{{dependency}}"),
                        value_map(
                            {0: ("closed", "green"), 1: ("half-open", "yellow"), 2: ("open", "red")}
                        ),
                    ),
                ],
            ),
            Section(
                "Tokens and cost",
                [
                    ts(
                        "Tokens by type",
                        "Tokens per second by type: input (prompt), output, thoughts "
                        "(thinking) and cached (served from Gemini's context cache).",
                        "short",
                        [
                            query(
                                "sum by (type) (" + rate("llmbot_llm_tokens_total") + ")",
                                "{{type}}",
                            )
                        ],
                    ),
                    ts(
                        "Estimated cost per hour",
                        "Token rate times the prices in the dashboard's text boxes, in USD per "
                        "hour; an estimate, the provider's bill is authoritative.",
                        "currencyUSD",
                        [query(cost_per_second(_token_rate) + " * 3600", "USD per hour")],
                    ),
                    single(
                        "Estimated cost per day",
                        "The last hour's token rate (llmbot:llm_tokens:rate1h) projected over a "
                        "day at the dashboard's prices.",
                        "currencyUSD",
                        query(cost_per_second(_token_rate_1h) + " * 86400", "USD per day"),
                        span=6,
                    ),
                    single(
                        "Output tokens per reply",
                        "Output plus thinking tokens per answered message, averaged over the "
                        "rate interval.",
                        "short",
                        query(
                            "sum("
                            + rate("llmbot_llm_tokens_total", 'type=~"output|thoughts"')
                            + ") / sum("
                            + rate("llmbot_messages_total", 'outcome="answered"')
                            + ")",
                            "tokens",
                        ),
                        span=6,
                    ),
                ],
            ),
            Section(
                "Streaming and cost",
                [
                    ts(
                        "Time to first chunk",
                        "Seconds from issuing a streamed Gemini call to its first chunk, "
                        "p50/p95 (gen_ai_client_operation_time_to_first_chunk_seconds, the "
                        "OpenTelemetry GenAI conventions' buckets). Empty unless GEMINI_STREAM "
                        "is on: whole answers have no first chunk.",
                        "s",
                        [
                            query(quantile("0.5", GEN_AI_FIRST_CHUNK), "p50"),
                            query(quantile("0.95", GEN_AI_FIRST_CHUNK), "p95"),
                        ],
                        span=8,
                    ),
                    ts(
                        "GenAI operation duration",
                        "Duration of each Gemini call on the GenAI conventions' histogram "
                        "(gen_ai_client_operation_duration_seconds), p95 of the calls that "
                        "succeeded and of those that failed, by error type.",
                        "s",
                        [
                            query(
                                "histogram_quantile(0.95, sum by (error_type, le) ("
                                + rate(GEN_AI_DURATION + "_bucket")
                                + "))",
                                "p95 {{error_type}}",
                            ),
                        ],
                        span=8,
                    ),
                    ts(
                        "Tokens per call",
                        "Input (the whole prompt) and output (answer plus thinking) tokens per "
                        "Gemini call, p50/p95 (gen_ai_client_token_usage).",
                        "short",
                        [
                            query(
                                quantile("0.5", GEN_AI_TOKENS, by="gen_ai_token_type"),
                                "p50 {{gen_ai_token_type}}",
                            ),
                            query(
                                quantile("0.95", GEN_AI_TOKENS, by="gen_ai_token_type"),
                                "p95 {{gen_ai_token_type}}",
                            ),
                        ],
                        span=8,
                    ),
                    ts(
                        "Estimated cost per hour (price settings)",
                        "llmbot_llm_cost_usd_total as USD per hour, by model: the bot's own "
                        "estimate from the GEMINI_PRICE_* settings (defaults: Google's "
                        "published gemini-2.5-flash prices). The provider's bill is "
                        "authoritative.",
                        "currencyUSD",
                        [
                            query(
                                "sum by (model) (" + rate("llmbot_llm_cost_usd_total") + ") * 3600",
                                "{{model}}",
                            )
                        ],
                    ),
                    single(
                        "Estimated cost per answer",
                        "Estimated USD per message answered by Gemini, over the rate interval "
                        "(llmbot_llm_cost_usd_total over llmbot_messages_total{outcome="
                        '"answered"}).',
                        "currencyUSD",
                        query(
                            "sum("
                            + rate("llmbot_llm_cost_usd_total")
                            + ") / sum("
                            + rate("llmbot_messages_total", 'outcome="answered"')
                            + ")",
                            "USD per answer",
                        ),
                        span=6,
                    ),
                    single(
                        "Streamed calls",
                        "Share of successful Gemini calls that were streamed (they have a time "
                        "to first chunk), over the rate interval.",
                        "percentunit",
                        query(
                            "sum("
                            + rate(GEN_AI_FIRST_CHUNK + "_count")
                            + ") / sum("
                            + rate(GEN_AI_DURATION + "_count", 'error_type=""')
                            + ")",
                            "streamed",
                        ),
                        span=6,
                    ),
                ],
            ),
            Section(
                "Quota",
                [
                    gauge_bars(
                        "Quota used",
                        "Share of each Gemini quota window used (limit after the safety "
                        "margin); LLMBotDailyQuotaNearlyExhausted fires above 90 % of the day.",
                        "percentunit",
                        query(f"llmbot:llm_quota_used:ratio{sel()}", "{{window}}", instant=True),
                    ),
                    ts(
                        "Quota used and limit",
                        "Requests counted in the current minute and day windows against their "
                        "limits.",
                        "short",
                        [
                            query(
                                f"max by (window) (llmbot_llm_quota_used{sel()})",
                                "used ({{window}})",
                            ),
                            query(
                                f"max by (window) (llmbot_llm_quota_limit{sel()})",
                                "limit ({{window}})",
                            ),
                        ],
                        span=8,
                    ),
                    ts(
                        "Quota rejections",
                        "Requests per minute the bot did not send because a quota window was full.",
                        "reqpm",
                        [
                            query(
                                "sum by (window) ("
                                + rate("llmbot_llm_quota_rejections_total")
                                + ")"
                                " * 60",
                                "{{window}}",
                            )
                        ],
                        span=8,
                    ),
                ],
            ),
            Section(
                "Cache and fallbacks",
                [
                    ts(
                        "Cache hit ratio",
                        "Share of response-cache lookups that hit, over 5 minutes "
                        "(llmbot:cache_hit_ratio:rate5m).",
                        "percentunit",
                        [query(f"llmbot:cache_hit_ratio:rate5m{sel()}", "{{instance}}")],
                        max_value=1,
                        span=8,
                    ),
                    ts(
                        "Cache entries",
                        "Entries in the response cache.",
                        "short",
                        [query(f"max(llmbot_cache_entries{sel()})", "entries")],
                        span=8,
                    ),
                    ts(
                        "Cache memory",
                        "Bytes held by the response cache.",
                        "bytes",
                        [query(f"max(llmbot_cache_bytes{sel()})", "bytes")],
                        span=8,
                    ),
                    ts(
                        "Cache evictions",
                        "Entries evicted per minute by reason (lru, ttl, cleared).",
                        "short",
                        [
                            query(
                                "sum by (reason) ("
                                + rate("llmbot_cache_evictions_total")
                                + ") * 60",
                                "{{reason}}",
                            )
                        ],
                    ),
                    ts(
                        "Fallback answers",
                        "Replies per minute that did not come from Gemini, by kind (cached, "
                        "maintenance, generic).",
                        "reqpm",
                        [
                            query(
                                "sum by (kind) ("
                                + rate("llmbot_fallback_responses_total")
                                + ") * 60",
                                "{{kind}}",
                            )
                        ],
                    ),
                ],
            ),
        ],
        price_boxes,
    )


def discord() -> model.Dashboard:
    """Discord: shards, heartbeat latency, guilds, gateway events, REST outcomes."""
    return build(
        "llmbot-discord",
        "Discord LLM bot / Discord",
        "The bot's Discord gateway shards and REST calls.",
        [
            Section(
                None,
                [
                    single(
                        "Guilds",
                        "Servers the bot is in.",
                        "short",
                        query(f"max(llmbot_discord_guilds{sel()})", "guilds"),
                        span=8,
                    ),
                    single(
                        "Shards connected",
                        "Gateway shards with an open connection.",
                        "short",
                        query(f"sum(llmbot_discord_shard_connected{sel()})", "connected"),
                        span=8,
                    ),
                    single(
                        "REST 429 per minute",
                        "Discord REST requests answered 429 (rate limited) per minute.",
                        "reqpm",
                        query(
                            "sum("
                            + rate("llmbot_discord_rest_requests_total", 'status_class="429"')
                            + ") * 60",
                            "429",
                        ),
                        span=8,
                    ),
                    states(
                        "Shard connection",
                        "Connection state of each gateway shard over time.",
                        query(f"llmbot_discord_shard_connected{sel()}", "shard {{shard}}"),
                        value_map({0: ("disconnected", "red"), 1: ("connected", "green")}),
                        span=24,
                    ),
                    ts(
                        "Heartbeat latency",
                        "Gateway heartbeat round trip per shard; LLMBotGatewayLatencyHigh fires "
                        "above 1 s for 10 minutes.",
                        "s",
                        [
                            query(
                                f"llmbot_discord_heartbeat_latency_seconds{sel()}",
                                "shard {{shard}}",
                            )
                        ],
                    ),
                    ts(
                        "Gateway events by type",
                        "Gateway dispatch events received per second by type.",
                        "cps",
                        [
                            query(
                                "sum by (type) ("
                                + rate("llmbot_discord_gateway_events_total")
                                + ")",
                                "{{type}}",
                            )
                        ],
                    ),
                    ts(
                        "REST requests by status",
                        "Discord REST requests per second by status class (2xx, 4xx, 429, 5xx, "
                        "error = no answer).",
                        "reqps",
                        [
                            query(
                                "sum by (status_class) ("
                                + rate("llmbot_discord_rest_requests_total")
                                + ")",
                                "{{status_class}}",
                            )
                        ],
                        span=24,
                    ),
                    ts(
                        "Replies waiting for Discord",
                        "Replies held while Discord's REST API fails (the discord circuit "
                        "breaker open, or a send failed), and how many may wait at once "
                        "(DISCORD_HOLD_MAX_REPLIES).",
                        "short",
                        [
                            query(f"sum(llmbot_discord_held_replies{sel()})", "waiting"),
                            query(f"max(llmbot_discord_hold_capacity{sel()})", "capacity"),
                        ],
                        span=12,
                    ),
                    ts(
                        "Replies held and given up",
                        "Per minute: replies that had to wait for Discord, and those given up "
                        "(overflow: no room to wait; expired: waited DISCORD_HOLD_MAX_SECONDS; "
                        "shutdown), each logged.",
                        "short",
                        [
                            query(
                                "sum(" + rate("llmbot_discord_reply_holds_total") + ") * 60",
                                "held",
                            ),
                            query(
                                "sum by (reason) ("
                                + rate("llmbot_discord_replies_undelivered_total")
                                + ") * 60",
                                "given up: {{reason}}",
                            ),
                        ],
                        span=12,
                    ),
                    ts(
                        "Restart catch-up: messages read back",
                        "Per minute: messages the restart catch-up read after a start or a new "
                        "gateway session, by outcome (answered late; not_for_bot; already_seen: "
                        "answered live; over_limit: beyond 200 per run).",
                        "short",
                        [
                            query(
                                "sum by (outcome) ("
                                + rate("llmbot_catchup_messages_total")
                                + ") * 60",
                                "{{outcome}}",
                            ),
                        ],
                        span=12,
                    ),
                    ts(
                        "Restart catch-up: channels",
                        "Channels whose last seen message is remembered (at most "
                        "CATCHUP_MAX_CHANNELS), and channels read per minute.",
                        "short",
                        [
                            query(f"max(llmbot_catchup_tracked_channels{sel()})", "tracked"),
                            query(
                                "sum(" + rate("llmbot_catchup_channels_scanned_total") + ") * 60",
                                "read per minute",
                            ),
                        ],
                        span=12,
                    ),
                ],
            ),
        ],
    )


def runtime() -> model.Dashboard:
    """Process, event loop, data stores, disk, health history, conversation memory."""
    return build(
        "llmbot-runtime",
        "Discord LLM bot / Runtime",
        "The bot's process: memory, CPU, event loop, data stores, disk and conversation memory.",
        [
            Section(
                "Process",
                [
                    ts(
                        "Resident memory",
                        "Resident set size of the bot process, with the threshold "
                        "LLMBotHighMemory uses (llmbot_alert_threshold_memory_bytes).",
                        "bytes",
                        [
                            query(f"process_resident_memory_bytes{sel()}", "{{instance}}"),
                            query(f"max(llmbot_alert_threshold_memory_bytes{sel()})", THRESHOLD),
                        ],
                    ),
                    ts(
                        "Python heap",
                        "Estimate of the memory the bot itself allocated (anonymous resident "
                        "memory: Python objects, caches, conversations), with the 80 % of the "
                        "memory threshold LLMBotHeapHigh uses.",
                        "bytes",
                        [
                            query(f"llmbot_python_heap_bytes{sel()}", "{{instance}}"),
                            query(
                                f"0.8 * max(llmbot_alert_threshold_memory_bytes{sel()})", THRESHOLD
                            ),
                        ],
                    ),
                    ts(
                        "Memory forecast",
                        "Resident memory and where it will be in 4 hours at the growth rate of "
                        "the last hour (llmbot:process_resident_memory_bytes:predict_linear4h), "
                        "with the threshold: LLMBotMemoryGrowth warns when the forecast crosses "
                        "it after the first hour of uptime.",
                        "bytes",
                        [
                            query(f"process_resident_memory_bytes{sel()}", "now {{instance}}"),
                            query(
                                f"llmbot:process_resident_memory_bytes:predict_linear4h{sel()}",
                                "in 4 h {{instance}}",
                            ),
                            query(f"max(llmbot_alert_threshold_memory_bytes{sel()})", THRESHOLD),
                        ],
                    ),
                    ts(
                        "CPU",
                        "CPU time used per second of wall time (1 = one core busy).",
                        "percentunit",
                        [
                            query(
                                rate("process_cpu_seconds_total"),
                                "{{instance}}",
                            )
                        ],
                        span=8,
                    ),
                    ts(
                        "Open file descriptors",
                        "File descriptors in use and the process limit.",
                        "short",
                        [
                            query(f"max(process_open_fds{sel()})", "open"),
                            query(f"max(process_max_fds{sel()})", "limit"),
                        ],
                        span=8,
                    ),
                    single(
                        "Uptime",
                        "Time since the bot process started.",
                        "s",
                        query(f"time() - max(process_start_time_seconds{sel()})", "uptime"),
                        span=8,
                    ),
                ],
            ),
            Section(
                "Event loop",
                [
                    ts(
                        "Event-loop lag",
                        "How late the asyncio loop runs a scheduled callback, p50 and p99; "
                        "LLMBotEventLoopLagHigh fires when the 5-minute p99 stays above 0.5 s.",
                        "s",
                        [
                            query(quantile("0.5", "llmbot_event_loop_lag_seconds"), "p50"),
                            query(quantile("0.99", "llmbot_event_loop_lag_seconds"), "p99"),
                        ],
                        span=8,
                    ),
                    ts(
                        "asyncio tasks",
                        "Tasks alive on the event loop.",
                        "short",
                        [query(f"llmbot_asyncio_tasks{sel()}", "{{instance}}")],
                        span=8,
                    ),
                    ts(
                        "Garbage collections",
                        "Python garbage collections per second by generation.",
                        "cps",
                        [
                            query(
                                "sum by (generation) (" + rate("python_gc_collections_total") + ")",
                                "gen {{generation}}",
                            )
                        ],
                        span=8,
                    ),
                    ts(
                        "Event-loop blocks",
                        "Times one piece of code held the loop longer than "
                        "EVENT_LOOP_BLOCK_THRESHOLD_MS (100 ms), per interval; the log has "
                        "the blocking stack of each (rate-limited).",
                        "short",
                        [query(increase("llmbot_event_loop_blocks_total"), "{{instance}}")],
                        span=24,
                    ),
                ],
            ),
            Section(
                "Data stores",
                [
                    states(
                        "Store health",
                        "Health of each data store; LLMBotStoreUnhealthy fires after 2 minutes "
                        "unhealthy.",
                        query(f"llmbot_store_healthy{sel()}", "{{store}}"),
                        value_map({0: ("unhealthy", "red"), 1: ("healthy", "green")}),
                        span=24,
                    ),
                    ts(
                        "Store operations",
                        "Successful store operations per second by store and operation.",
                        "ops",
                        [
                            query(
                                "sum by (store, op) ("
                                + rate("llmbot_store_operations_total", 'outcome="ok"')
                                + ")",
                                "{{store}} {{op}}",
                            )
                        ],
                        span=8,
                    ),
                    ts(
                        "Store errors",
                        "Failed store operations per second by store and operation.",
                        "ops",
                        [
                            query(
                                "sum by (store, op) ("
                                + rate("llmbot_store_operations_total", 'outcome="error"')
                                + ")",
                                "{{store}} {{op}}",
                            )
                        ],
                        span=8,
                    ),
                    ts(
                        "Store latency (p95)",
                        "95th percentile duration of store operations by store and operation.",
                        "s",
                        [
                            query(
                                quantile(
                                    "0.95",
                                    "llmbot_store_operation_duration_seconds",
                                    by="store, op",
                                ),
                                "{{store}} {{op}}",
                            )
                        ],
                        span=8,
                    ),
                    ts(
                        "Store throughput",
                        "Bytes written to and read from the stores per second.",
                        "Bps",
                        [
                            query(
                                "sum by (store, direction) ("
                                + rate("llmbot_store_bytes_total")
                                + ")",
                                "{{store}} {{direction}}",
                            )
                        ],
                    ),
                    ts(
                        "Data disk used",
                        "Share of the data volume in use, with the threshold "
                        "LLMBotDataDiskAlmostFull uses (llmbot_alert_threshold_disk_ratio).",
                        "percentunit",
                        [
                            query(
                                f"1 - llmbot_data_disk_free_bytes{sel()}"
                                f" / llmbot_data_disk_size_bytes{sel()}",
                                "{{instance}}",
                            ),
                            query(f"max(llmbot_alert_threshold_disk_ratio{sel()})", THRESHOLD),
                        ],
                        max_value=1,
                    ),
                    ts(
                        "Health history size",
                        "Health snapshots kept in the bot's bounded history.",
                        "short",
                        [query(f"llmbot_health_snapshots{sel()}", "{{instance}}")],
                        span=24,
                    ),
                ],
            ),
            Section(
                "Fleet (REDIS_URL)",
                [
                    ts(
                        "Answers per instance and fleet total",
                        "Answered messages per second by bot process (instance), and the "
                        "fleet's total. A single bot shows one line twice.",
                        "ops",
                        [
                            query(
                                "sum by (instance) ("
                                + rate("llmbot_messages_total", 'outcome="answered"')
                                + ")",
                                "{{instance}}",
                            ),
                            query(
                                "sum(" + rate("llmbot_messages_total", 'outcome="answered"') + ")",
                                "fleet",
                            ),
                        ],
                    ),
                    ts(
                        "Live instances",
                        "Bot processes with a Redis heartbeat in the last 10 s, as each "
                        "process last saw (0 without REDIS_URL).",
                        "short",
                        [query(f"max(llmbot_fleet_live_instances{sel()})", "live instances")],
                    ),
                    grid(
                        "Shard to instance",
                        "Which process runs each Discord shard (1: connected, 0: not).",
                        "none",
                        query(
                            f"llmbot_discord_shard_connected{sel()}",
                            "shard {{shard}} on {{instance}}",
                            instant=True,
                        ),
                        span=8,
                    ),
                    states(
                        "Redis reachable",
                        "Each process's view of Redis (llmbot_dependency_up); down means the "
                        "process counts its local share of the quota (LLMBotFleetQuotaFallback).",
                        query(v("llmbot_dependency_up", 'dependency="redis"'), "{{instance}}"),
                        value_map({0: ("down", "red"), 1: ("up", "green")}),
                        span=8,
                    ),
                    states(
                        "Quota on the local share",
                        "1 while a process cannot reach Redis and answers within the limit "
                        "divided by the live instances it last saw.",
                        query(f"llmbot_llm_quota_fallback{sel()}", "{{instance}}"),
                        value_map({0: ("shared", "green"), 1: ("local share", "orange")}),
                        span=8,
                    ),
                    ts(
                        "Redis commands and errors",
                        "Redis commands per second by use, and the failed ones (refused, "
                        "timed out, lost connection).",
                        "ops",
                        [
                            query(
                                "sum by (op) (" + rate("llmbot_redis_commands_total") + ")",
                                "{{op}}",
                            ),
                            query(
                                "sum by (op) (" + rate("llmbot_redis_errors_total") + ")",
                                "{{op}} errors",
                            ),
                        ],
                    ),
                    ts(
                        "Redis latency (p95)",
                        "95th percentile time of one Redis command or script, by process.",
                        "s",
                        [
                            query(
                                quantile(
                                    "0.95", "llmbot_redis_command_duration_seconds", by="instance"
                                ),
                                "{{instance}}",
                            )
                        ],
                    ),
                    ts(
                        "Discord REST: wait for a turn in the shared pace (p95)",
                        "95th percentile time a Discord REST call waited for its turn in the "
                        "fleet's schedule in Redis (DISCORD_REST_MAX_RPS for the whole fleet), "
                        "by process; seconds during a burst of replies are the pace at work.",
                        "s",
                        [
                            query(
                                quantile(
                                    "0.95", "llmbot_discord_rest_shared_wait_seconds", by="instance"
                                ),
                                "{{instance}}",
                            )
                        ],
                    ),
                    states(
                        "Discord REST pace on the local share",
                        "1 while a process cannot reach Redis and paces its REST calls at "
                        "DISCORD_REST_MAX_RPS divided by the live instances it last saw.",
                        query(f"llmbot_discord_rest_shared_fallback{sel()}", "{{instance}}"),
                        value_map({0: ("shared", "green"), 1: ("local share", "orange")}),
                        span=12,
                    ),
                    states(
                        "Shared parts on their local stand-in",
                        "1 while a process cannot reach Redis and uses its own response cache, "
                        "per-user cooldowns or video budgets instead of the fleet's "
                        "(llmbot_fleet_fallback); Redis is tried again every 2 s.",
                        query(f"llmbot_fleet_fallback{sel()}", "{{part}} on {{instance}}"),
                        value_map({0: ("shared", "green"), 1: ("local", "orange")}),
                        span=24,
                    ),
                    ts(
                        "Fleet queue: waiting, reclaimed, handed over",
                        "Questions in the fleet's queue stream (all processes, as last seen); "
                        "questions reclaimed from a process silent for "
                        "FLEET_QUEUE_CLAIM_IDLE_SECONDS (it died), and those kept locally while "
                        "Redis was away then handed to it, per interval.",
                        "short",
                        [
                            query(f"max(llmbot_queue_fleet_messages{sel()})", "in the stream"),
                            query(
                                "sum(" + increase("llmbot_queue_reclaimed_total") + ")", "reclaimed"
                            ),
                            query(
                                "sum(" + increase("llmbot_queue_handed_over_total") + ")",
                                "handed over",
                            ),
                        ],
                    ),
                    ts(
                        "Writes waiting for Redis",
                        "Queue acks and idempotency record states a process could not write "
                        "while Redis was away (each bounded at 10,000); they drain when it is "
                        "back. Growing for minutes: see the LLMBotFleetQuotaFallback runbook.",
                        "short",
                        [query(f"llmbot_fleet_redis_backlog{sel()}", "{{kind}} on {{instance}}")],
                    ),
                ],
            ),
            Section(
                "Conversation memory",
                [
                    ts(
                        "Conversations",
                        "Active conversations and servers with stored context.",
                        "short",
                        [
                            query(f"max(llmbot_active_conversations{sel()})", "conversations"),
                            query(f"max(llmbot_context_servers{sel()})", "servers"),
                        ],
                        span=12,
                    ),
                    ts(
                        "Context memory",
                        "Bytes of conversation context: total, average and largest server.",
                        "bytes",
                        [
                            query(f"max(llmbot_context_bytes{sel()})", "total"),
                            query(f"max(llmbot_context_average_server_bytes{sel()})", "average"),
                            query(f"max(llmbot_context_largest_server_bytes{sel()})", "largest"),
                        ],
                        span=12,
                    ),
                    grid(
                        "Build",
                        "Version of the bot and of its main libraries (llmbot_build_info).",
                        "none",
                        query(f"llmbot_build_info{sel()}", "{{version}}", instant=True),
                    ),
                ],
            ),
        ],
    )


DASHBOARDS: Final[dict[str, Callable[[], model.Dashboard]]] = {
    "overview.json": overview,
    "llm.json": llm,
    "discord.json": discord,
    "runtime.json": runtime,
}


def render(board: model.Dashboard) -> str:
    """Stable JSON text of a dashboard (sorted keys, trailing newline)."""
    return json.dumps(board, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def write_all(out_dir: Path) -> list[Path]:
    """Write every dashboard into `out_dir`; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in DASHBOARDS.items():
        path = out_dir / name
        path.write_text(render(make()), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"default: {OUT_DIR}")
    args = parser.parse_args(argv)
    for path in write_all(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
