"""Grafana: the committed dashboards are the generator's output and follow the panel rules."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.support import (
    DASHBOARDS_DIR,
    DEPLOY,
    catalogue,
    dashboards,
    known_name,
    load_yaml,
    metric_names,
    missing,
    panels,
    recordings,
)

pytestmark = pytest.mark.ops

GENERATOR = DEPLOY / "grafana" / "generate.py"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
DATASOURCE = "${datasource}"


def test_committed_json_is_the_generators_output(tmp_path: Path) -> None:
    if importlib.util.find_spec("grafana_foundation_sdk") is None:
        missing("grafana-foundation-sdk", "pip install -e '.[dev]'")
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    generated = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_text(encoding="utf-8") for p in DASHBOARDS_DIR.glob("*.json")}
    assert sorted(generated) == sorted(committed)
    stale = [name for name in generated if generated[name] != committed[name]]
    assert not stale, f"run `python deploy/grafana/generate.py`: {stale} differ"


def test_the_required_dashboards_exist() -> None:
    uids = {board["uid"] for board in dashboards().values()}
    assert {"llmbot-overview", "llmbot-llm", "llmbot-discord", "llmbot-runtime"} <= uids


def test_every_panel_has_title_description_unit_and_the_datasource_variable() -> None:
    problems = []
    for name, board in dashboards().items():
        ids = [panel["id"] for panel in board["panels"]]
        if len(ids) != len(set(ids)):
            problems.append(f"{name}: duplicate panel ids")
        for panel in panels(board):
            where = f"{name} / {panel.get('title') or panel.get('id')}"
            for key in ("title", "description"):
                if not str(panel.get(key, "")).strip():
                    problems.append(f"{where}: no {key}")
            if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
                problems.append(f"{where}: no unit")
            if panel.get("datasource", {}).get("uid") != DATASOURCE:
                problems.append(f"{where}: panel datasource is not {DATASOURCE}")
            if not panel.get("targets"):
                problems.append(f"{where}: no query")
            for target in panel.get("targets", []):
                if target.get("datasource", {}).get("uid") != DATASOURCE:
                    problems.append(f"{where}: query datasource is not {DATASOURCE}")
                if "$job" not in target["expr"] or "$instance" not in target["expr"]:
                    problems.append(f"{where}: query ignores $job/$instance: {target['expr']}")
    assert not problems, "\n".join(problems)


def test_template_variables() -> None:
    for name, board in dashboards().items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", name
        assert variables["datasource"]["query"] == "prometheus", name
        for key in ("job", "instance"):
            assert variables[key]["type"] == "query", name
            assert variables[key]["datasource"]["uid"] == DATASOURCE, name


def test_every_range_is_the_rate_interval() -> None:
    # Raw counters and histograms are read over $__rate_interval (four scrapes at least, and
    # following the zoom); fixed windows live in the recording rules.
    bad = [
        (name, panel["title"], window)
        for name, board in dashboards().items()
        for panel in panels(board)
        for target in panel["targets"]
        for window in re.findall(r"\[([^\]]*)\]", target["expr"])
        if window != "$__rate_interval"
    ]
    assert not bad


def test_every_rate_has_a_range() -> None:
    for board in dashboards().values():
        for panel in panels(board):
            for target in panel["targets"]:
                for call in re.findall(r"\b(?:rate|irate|increase)\(([^()]*)\)", target["expr"]):
                    assert call.endswith("[$__rate_interval]"), target["expr"]


def test_dashboards_only_use_catalogued_metrics() -> None:
    allowed = catalogue() | {rule.name for rule in recordings()}
    unknown = {
        f"{name} / {panel['title']}: {metric}"
        for name, board in dashboards().items()
        for panel in panels(board)
        for target in panel["targets"]
        for metric in metric_names(re.sub(r"\$\{?\w+\}?", "1", target["expr"]))
        if not known_name(metric, allowed)
    }
    assert not unknown, sorted(unknown)


def test_threshold_series_are_drawn_as_lines() -> None:
    for board in dashboards().values():
        for panel in panels(board):
            legends = {t.get("legendFormat") for t in panel["targets"]}
            if "threshold" in legends:
                names = [o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"]]
                assert "threshold" in names, panel["title"]


def test_provisioning() -> None:
    sources = load_yaml(PROVISIONING / "datasources" / "datasources.yml")["datasources"]
    by_type = {source["type"]: source for source in sources}
    prometheus, tempo = by_type["prometheus"], by_type["tempo"]
    assert prometheus["uid"] and prometheus["isDefault"] is True
    (destination,) = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert destination == {"name": "trace_id", "datasourceUid": tempo["uid"]}
    assert by_type["alertmanager"]["jsonData"]["implementation"] == "prometheus"

    (provider,) = load_yaml(PROVISIONING / "dashboards" / "dashboards.yml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
