"""Shared knowledge of the ops files for the tests: paths, parsed rules, PromQL names."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import pytest
import yaml

ROOT: Final = Path(__file__).resolve().parents[2]
DEPLOY: Final = ROOT / "deploy"
PROMETHEUS_DIR: Final = DEPLOY / "prometheus"
RULES_DIR: Final = PROMETHEUS_DIR / "rules"
RULE_TESTS_DIR: Final = PROMETHEUS_DIR / "tests"
ALERTMANAGER_CONFIG: Final = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARDS_DIR: Final = DEPLOY / "grafana" / "dashboards"
RUNBOOKS: Final = ROOT / "docs" / "runbooks.md"
# The design documents live in shared/ beside the repository (also in CI).
METRICS_MD: Final = ROOT / "docs" / "metrics.md"

# How alert annotations start their links: the two external labels of prometheus.yml, the one
# place the bases are configured (the rule files are checked against these).
RUNBOOK_BASE: Final = "{{ $externalLabels.runbook_base_url }}"
GRAFANA_BASE: Final = "{{ $externalLabels.dashboard_base_url }}"
# The environment variables the committed prometheus.yml takes the two bases from.
LINK_ENV: Final = {
    "runbook_base_url": "RUNBOOK_BASE_URL",
    "dashboard_base_url": "DASHBOARD_BASE_URL",
}
BOT_JOB: Final = "discord-llm-bot"

INSTALL_HINT: Final = "apt-get install prometheus prometheus-alertmanager (make system-deps)"


def in_ci() -> bool:
    """CI sets CI=true; there a missing tool is a failure, never a skip."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def missing(what: str, hint: str) -> None:
    """Fail in CI, skip elsewhere, saying what is missing and how to get it."""
    message = f"{what} is missing: {hint}"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def need_binary(name: str, hint: str = INSTALL_HINT) -> str:
    """The path of an installed binary (or skip/fail)."""
    path = shutil.which(name)
    if path is None:
        missing(name, hint)
        raise AssertionError("unreachable")  # pytest.skip/fail raise
    return path


def load_yaml(path: Path) -> Any:
    """Parse a YAML file."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@cache
def local_stack() -> ModuleType:
    """deploy/local_stack.py, imported by path (it is a script, not a package module)."""
    name = "llmbot_local_stack"
    spec = importlib.util.spec_from_file_location(name, DEPLOY / "local_stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before running so dataclasses can resolve the module's annotations.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --- rules --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One rule of a rule file."""

    file: str
    group: str
    name: str  # the alert or record name
    kind: str  # "alert" or "record"
    expr: str
    labels: dict[str, str]
    annotations: dict[str, str]


def rule_files() -> list[Path]:
    """The committed rule files."""
    return sorted(RULES_DIR.glob("*.yml"))


def rules() -> list[Rule]:
    """Every rule of every committed rule file."""
    found = []
    for path in rule_files():
        for group in load_yaml(path)["groups"]:
            for raw in group["rules"]:
                kind = "alert" if "alert" in raw else "record"
                found.append(
                    Rule(
                        file=path.name,
                        group=group["name"],
                        name=raw[kind],
                        kind=kind,
                        expr=raw["expr"],
                        labels=dict(raw.get("labels") or {}),
                        annotations=dict(raw.get("annotations") or {}),
                    )
                )
    return found


def alerts() -> list[Rule]:
    """The alerting rules."""
    return [rule for rule in rules() if rule.kind == "alert"]


def recordings() -> list[Rule]:
    """The recording rules."""
    return [rule for rule in rules() if rule.kind == "record"]


# --- dashboards ---------------------------------------------------------------------------------


def dashboards() -> dict[str, dict[str, Any]]:
    """The committed dashboards by file name."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS_DIR.glob("*.json"))
    }


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every non-row panel of a dashboard, including panels inside collapsed rows."""
    found = []
    for panel in board.get("panels", []):
        if panel.get("type") == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def substitute_variables(expr: str, board: dict[str, Any]) -> str:
    """Replace Grafana variables with values Prometheus accepts, as Grafana would send them."""
    values = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
    for variable in board.get("templating", {}).get("list", []):
        if variable["type"] in ("textbox", "constant"):
            values[variable["name"]] = str(variable.get("query", ""))
        else:
            values[variable["name"]] = ".*"  # an "All" selection
    # Longest names first so $price_input is not taken for $price.
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return expr


def dashboard_exprs() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expression with variables substituted) for every target."""
    found = []
    for name, board in dashboards().items():
        for panel in panels(board):
            for target in panel.get("targets", []):
                found.append((name, panel["title"], substitute_variables(target["expr"], board)))
    return found


# --- PromQL -------------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:$])[A-Za-z_:][\w:]*")
_CALL = re.compile(r"\s*\(")
_KEYWORDS: Final = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "Inf", "NaN", "atan2"}
)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, labels and keywords left out)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        # A name followed by "(" is a function or aggregation, not a metric.
        if not _CALL.match(text, match.end()) and match.group() not in _KEYWORDS:
            names.add(match.group())
    return names


def catalogue() -> set[str]:
    """Metric names METRICS.md lists, histograms expanded to their series."""
    if not METRICS_MD.is_file():
        missing(str(METRICS_MD), "the metric catalogue docs/metrics.md is part of the repository")
    names: set[str] = set()
    for line in METRICS_MD.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3:
            continue
        # Both tables have the metric(s) in the second column and the type in the third.
        found = re.findall(r"`([a-z_][a-z0-9_]*)`", cells[1])
        names.update(found)
        if "histogram" in cells[2]:
            names.update(
                f"{name}{suffix}" for name in found for suffix in ("_bucket", "_count", "_sum")
            )
    return names


def catalogue_recording_rules() -> set[str]:
    """Recording-rule names METRICS.md spells out."""
    if not METRICS_MD.is_file():
        missing(str(METRICS_MD), "the metric catalogue docs/metrics.md is part of the repository")
    return set(re.findall(r"`(llmbot:[a-z0-9_:]+)`", METRICS_MD.read_text(encoding="utf-8")))


# Series prometheus_client's default collectors and Prometheus itself provide.
DEFAULT_PREFIXES: Final = ("process_", "python_gc_", "python_info")
BUILTIN_SERIES: Final = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})


def known_name(name: str, allowed: set[str]) -> bool:
    """Whether a metric name is in the catalogue, a recording rule, or a default series."""
    return name in allowed or name in BUILTIN_SERIES or name.startswith(DEFAULT_PREFIXES)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def runbook_anchors() -> set[str]:
    """Anchors of the headings in docs/runbooks.md."""
    return {
        github_anchor(match)
        for match in re.findall(r"^#{1,6}\s+(.+)$", RUNBOOKS.read_text(encoding="utf-8"), re.M)
    }
