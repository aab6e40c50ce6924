"""The worst-case delay from a fault to the bot's heal webhook, and from its end to the revert,
computed from the committed prometheus.yml, rule files and alertmanager.yml (no binaries).

For every alert with a `heal` label (the triggers of rules/heal.yml):

    fault -> webhook <= detect + E + for + AM + HOPS                      (must be <= 120 s)
    fault end -> revert <= detect + E + keep_firing_for + GI + HOPS       (must be <= 180 s)

where, with S the bot job's scrape interval, T its scrape timeout and E the evaluation interval
of the alert's rule group:

- detect = max(W, S + T) + recording hops. "Fault" means the bot's /metrics shows it: a gauge
  over its threshold, or every call/reply the bot counts being faulty.
  A gauge (no range selector, W = 0): the first scrape after the fault starts at most S later
  and its sample can be queried once the scrape has finished, at most T (the scrape timeout)
  after it started.
  A range window of W seconds: once the fault is W old, every sample of the window was taken
  during the fault, so the window's rate or quantile is the fault's own (the test checks the
  window holds at least 4 scrapes, so at least 2 samples are committed even T after the last
  scrape). A fault strong enough shows sooner; a fault just over the threshold needs all of W.
  A recording rule read by the alert adds one evaluation interval of its group (its value may
  be that old), unless it is in the alert's group before the alert: rules of a group run in
  order at the same evaluation time, so the alert reads the value recorded that instant.
- E: the condition is true from `detect` on; the next evaluation of the group comes within E.
- for: the alert fires at the first evaluation `for` after the first true one (the `for:`
  values are multiples of E; otherwise it is rounded up to one).
- AM = max(group_wait, group_interval) of the Alertmanager route that takes `heal` alerts.
  Prometheus sends a newly firing alert right after the evaluation. A new aggregation group
  notifies after group_wait; an alert joining an existing group (with `group_by: ['...']`
  only the same alert firing again before Alertmanager has dropped its resolved group, which
  it does within 30 s) waits for the group's next flush, within group_interval.
- HOPS = 5 s for what the figures above leave out: Prometheus -> Alertmanager and
  Alertmanager -> bot HTTP posts (loopback or one network hop; the bot answers in
  milliseconds and starts the action at once), and a rule group evaluation that is late.
- The revert: the condition is false once the fault has left the window (detect, as above)
  and at the next evaluation (E) the alert resolves, unless `keep_firing_for` holds it;
  Prometheus sends the resolved alert at once and Alertmanager notifies the resolve at the
  group's next flush (GI = group_interval; `resolve_timeout` only applies to alerts that come
  without an end time, which Prometheus never sends). The bot reverts on receipt.

Left out, on purpose: the bot's HEAL_COOLDOWN_SECONDS (300 s) refuses to apply the same action
again within 5 minutes of its last application (flap protection); the budget is for a fault
after a quiet period. A refused trigger is re-sent every repeat_interval (5 minutes) and
applied once the cooldown has passed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import pytest

from tests.deploy.support import (
    ALERTMANAGER_CONFIG,
    BOT_JOB,
    PROMETHEUS_DIR,
    RUNBOOKS,
    load_yaml,
    metric_names,
)

pytestmark = pytest.mark.ops

FAULT_TO_WEBHOOK_LIMIT_S: Final = 120.0
FAULT_END_TO_REVERT_LIMIT_S: Final = 180.0
HOPS_S: Final = 5.0
MIN_SCRAPES_PER_WINDOW: Final = 4
# Alertmanager's defaults, for timings the route tree leaves unset.
AM_DEFAULTS: Final = {"group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"}
PROMETHEUS_DEFAULTS: Final = {"scrape_interval": "1m", "scrape_timeout": "10s"}

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_S: Final = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    "y": 31536000,
}
_RANGE = re.compile(r"\[\s*((?:\d+(?:ms|s|m|h|d|w|y))+)\s*(?::[^\]]*)?\]")


def seconds(text: str | int | float) -> float:
    """A Prometheus/Alertmanager duration ("1m30s") in seconds."""
    if isinstance(text, int | float):
        return float(text)
    parts = _DURATION.findall(text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


@dataclass(frozen=True)
class RuleAt:
    """A rule with where it is evaluated."""

    group: str
    index: int
    interval_s: float
    raw: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.raw.get("alert") or self.raw["record"])


@dataclass(frozen=True)
class Delay:
    """The parts of one heal trigger's worst case, in seconds."""

    alert: str
    heal: str
    window_s: float
    detect_s: float
    evaluation_s: float
    for_s: float
    alertmanager_s: float
    fire_s: float  # fault -> webhook
    revert_s: float  # fault end -> revert


def _prometheus() -> dict[str, Any]:
    config: dict[str, Any] = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    return config


def _scrape_timings() -> tuple[float, float]:
    """(scrape interval, scrape timeout) of the bot's job, job settings over global ones."""
    config = _prometheus()
    merged = {**PROMETHEUS_DEFAULTS, **config.get("global", {})}
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == BOT_JOB]
    merged.update({k: v for k, v in job.items() if k in PROMETHEUS_DEFAULTS})
    return seconds(merged["scrape_interval"]), seconds(merged["scrape_timeout"])


def _rules() -> dict[str, list[RuleAt]]:
    """Every rule of the rule files prometheus.yml loads, by name."""
    config = _prometheus()
    default_interval = seconds(config.get("global", {}).get("evaluation_interval", "1m"))
    found: dict[str, list[RuleAt]] = {}
    for pattern in config["rule_files"]:
        paths = sorted(PROMETHEUS_DIR.glob(pattern))
        assert paths, f"prometheus.yml loads {pattern}, which does not exist"
        for path in paths:
            for group in load_yaml(path)["groups"]:
                interval = seconds(group.get("interval", default_interval))
                for index, raw in enumerate(group["rules"]):
                    rule = RuleAt(group["name"], index, interval, raw)
                    found.setdefault(rule.name, []).append(rule)
    return found


def _window_and_hops(rule: RuleAt, rules: dict[str, list[RuleAt]]) -> tuple[float, float]:
    """The longest range window the rule depends on, and the evaluation intervals that
    recording rules of other groups (or later in its own) add on the way."""
    windows = [seconds(m) for m in _RANGE.findall(rule.raw["expr"])]
    window, hops = max(windows, default=0.0), 0.0
    for name in metric_names(rule.raw["expr"]):
        for record in (r for r in rules.get(name, []) if "record" in r.raw):
            inner_window, inner_hops = _window_and_hops(record, rules)
            same_group_before = record.group == rule.group and record.index < rule.index
            hop = 0.0 if same_group_before else record.interval_s
            window = max(window, inner_window)
            hops = max(hops, inner_hops + hop)
    return window, hops


def _matches(matcher: str, labels: dict[str, str]) -> bool:
    match = re.fullmatch(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*', matcher)
    assert match, f"cannot read the matcher {matcher!r}"
    name, op, value = match.groups()
    actual = labels.get(name, "")
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    found = re.fullmatch(value, actual) is not None
    return found if op == "=~" else not found


def _routes_for(labels: dict[str, str]) -> list[dict[str, Any]]:
    """The routes (timings inherited, as Alertmanager does) an alert is sent through."""
    config = load_yaml(ALERTMANAGER_CONFIG)
    keys = (*AM_DEFAULTS, "group_by", "receiver")

    def walk(route: dict[str, Any], inherited: dict[str, Any]) -> list[dict[str, Any]]:
        effective = {**inherited, **{k: route[k] for k in keys if k in route}}
        hits: list[dict[str, Any]] = []
        for child in route.get("routes", []):
            if all(_matches(m, labels) for m in child.get("matchers", [])):
                hits.extend(walk(child, effective))
                if not child.get("continue", False):
                    break
        return hits or [effective]

    return walk(config["route"], dict(AM_DEFAULTS))


def heal_delays() -> list[Delay]:
    """The worst case of every heal trigger (see the module docstring)."""
    scrape_s, timeout_s = _scrape_timings()
    rules = _rules()
    delays = []
    for name, found in sorted(rules.items()):
        for rule in found:
            labels = rule.raw.get("labels") or {}
            if "alert" not in rule.raw or "heal" not in labels:
                continue
            window_s, hops_s = _window_and_hops(rule, rules)
            assert window_s == 0 or window_s >= MIN_SCRAPES_PER_WINDOW * scrape_s, (
                f"{name}: a {window_s:g} s window holds fewer than "
                f"{MIN_SCRAPES_PER_WINDOW} scrapes of {scrape_s:g} s"
            )
            detect_s = max(window_s, scrape_s + timeout_s) + hops_s
            evaluation_s = rule.interval_s
            for_s = seconds(rule.raw.get("for", "0s"))
            for_s = -(-for_s // evaluation_s) * evaluation_s  # the evaluation that fires
            keep_s = seconds(rule.raw.get("keep_firing_for", "0s"))
            heal_routes = [
                r for r in _routes_for({"alertname": name, **labels}) if r["receiver"] == "bot-heal"
            ]
            assert len(heal_routes) == 1, f"{name} reaches the bot-heal receiver once"
            (route,) = heal_routes
            group_wait_s = seconds(route["group_wait"])
            group_interval_s = seconds(route["group_interval"])
            alertmanager_s = max(group_wait_s, group_interval_s)
            fire_s = detect_s + evaluation_s + for_s + alertmanager_s + HOPS_S
            revert_s = detect_s + evaluation_s + keep_s + group_interval_s + HOPS_S
            delays.append(
                Delay(
                    name,
                    labels["heal"],
                    window_s,
                    detect_s,
                    evaluation_s,
                    for_s,
                    alertmanager_s,
                    fire_s,
                    revert_s,
                )
            )
    return delays


def test_every_heal_trigger_reaches_the_bot_within_two_minutes(
    record_property: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    delays = heal_delays()
    assert {d.heal for d in delays} >= {
        "memory",
        "error_rate",
        "response_time",
        "api_health",
        "disk",
        "queue",
    }
    with capsys.disabled():
        print("\nworst case, committed timings (s): fault->webhook, fault end->revert")
        for d in delays:
            print(
                f"  {d.alert:24} {d.heal:14} {d.fire_s:5.0f} = detect {d.detect_s:g} "
                f"+ eval {d.evaluation_s:g} + for {d.for_s:g} + AM {d.alertmanager_s:g} "
                f"+ {HOPS_S:g};  revert {d.revert_s:5.0f}"
            )
    for d in delays:
        record_property(f"{d.alert}_fault_to_webhook_s", d.fire_s)
        record_property(f"{d.alert}_fault_end_to_revert_s", d.revert_s)
    slow = [f"{d.alert}: {d.fire_s:g} s" for d in delays if d.fire_s > FAULT_TO_WEBHOOK_LIMIT_S]
    assert not slow, f"fault -> webhook above {FAULT_TO_WEBHOOK_LIMIT_S:g} s: {slow}"


def test_every_heal_is_reverted_within_three_minutes_of_the_fault_ending() -> None:
    slow = [
        f"{d.alert}: {d.revert_s:g} s"
        for d in heal_delays()
        if d.revert_s > FAULT_END_TO_REVERT_LIMIT_S
    ]
    assert not slow, f"fault end -> revert above {FAULT_END_TO_REVERT_LIMIT_S:g} s: {slow}"


def test_heal_triggers_page_nobody() -> None:
    # The short triggers must not reach people: their receivers are the bot's and `null`.
    for rule in (r for found in _rules().values() for r in found if "alert" in r.raw):
        labels = rule.raw.get("labels") or {}
        if "heal" not in labels:
            continue
        receivers = {r["receiver"] for r in _routes_for({"alertname": rule.name, **labels})}
        assert receivers == {"bot-heal", "null"}, f"{rule.name} reaches {sorted(receivers)}"


def test_the_runbook_states_the_computed_delays() -> None:
    # docs/runbooks.md "Heal triggers": | trigger | ... | fault -> webhook | fault end -> revert |
    text = RUNBOOKS.read_text(encoding="utf-8")
    row = re.compile(r"^\| \[(LLMBotHeal\w+)\]\(#\w+\) \|.*\| (\d+ s) \| (\d+ s) \|$", re.M)
    stated = {name: (fire, revert) for name, fire, revert in row.findall(text)}
    computed = {d.alert: (f"{d.fire_s:g} s", f"{d.revert_s:g} s") for d in heal_delays()}
    assert stated == computed


def test_the_arithmetic_of_one_trigger() -> None:
    # A check of the formula itself on numbers worked out by hand for the committed
    # LLMBotHealResponseTime: 1-minute window read through a recording rule of its own group
    # (no hop), 15 s scrapes and evaluations, for 15s, heal route 5 s / 15 s.
    (d,) = [d for d in heal_delays() if d.alert == "LLMBotHealResponseTime"]
    assert (d.window_s, d.detect_s, d.evaluation_s, d.for_s, d.alertmanager_s) == (
        60,
        60,
        15,
        15,
        15,
    )
    assert d.fire_s == 60 + 15 + 15 + 15 + 5
    assert d.revert_s == 60 + 15 + 15 + 5
