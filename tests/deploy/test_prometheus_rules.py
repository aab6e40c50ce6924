"""Prometheus config and rules: promtool checks, unit-test coverage, and the alert conventions."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from bot.healing import HEAL_ACTIONS
from tests.deploy.support import (
    GRAFANA_BASE,
    LINK_ENV,
    PROMETHEUS_DIR,
    RULE_TESTS_DIR,
    RULES_DIR,
    RUNBOOK_BASE,
    Rule,
    alerts,
    catalogue,
    catalogue_recording_rules,
    dashboards,
    known_name,
    load_yaml,
    metric_names,
    recordings,
    rule_files,
    runbook_anchors,
)

pytestmark = pytest.mark.ops

SEVERITIES = {"critical", "warning", "info"}
ALERT_NAME = re.compile(r"^LLMBot(?:[A-Z][a-z0-9]*|SLO)+$")


def _run(args: list[str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    # A guard against a hung promtool, not a speed limit: on a loaded machine (three pytest
    # workers beside the live-timing tests) the unit tests took over 60 s.
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)


def test_promtool_accepts_the_config(promtool: str) -> None:
    # The committed file names its rule files relative to itself, so it checks in place.
    result = _run([promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = _run([promtool, "check", "rules", *map(str, rule_files())])
    assert result.returncode == 0, result.stdout + result.stderr


def test_there_are_promtool_unit_tests() -> None:
    assert sorted(path.name for path in RULE_TESTS_DIR.glob("*.yml")) == [
        "alerts_test.yml",
        "heal_test.yml",
        "recording_test.yml",
        "slo_test.yml",
    ]


@pytest.mark.parametrize("name", ["alerts_test", "heal_test", "recording_test", "slo_test"])
def test_promtool_unit_tests_pass(promtool: str, name: str) -> None:
    result = _run([promtool, "test", "rules", str(RULE_TESTS_DIR / f"{name}.yml")], 300)
    assert result.returncode == 0, result.stdout + result.stderr


def _alert_cases() -> tuple[dict[str, set[str]], dict[str, int]]:
    """Severities seen firing per alert, and the number of not-firing cases per alert."""
    firing: dict[str, set[str]] = defaultdict(set)
    quiet: dict[str, int] = defaultdict(int)
    for path in sorted(RULE_TESTS_DIR.glob("*.yml")):
        for group in load_yaml(path)["tests"]:
            for case in group.get("alert_rule_test") or []:
                expected = case.get("exp_alerts") or []
                if not expected:
                    quiet[case["alertname"]] += 1
                for alert in expected:
                    firing[case["alertname"]].add(alert["exp_labels"]["severity"])
    return firing, quiet


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing, quiet = _alert_cases()
    severities: dict[str, set[str]] = defaultdict(set)
    for rule in alerts():
        severities[rule.name].add(rule.labels["severity"])
    problems = []
    for name, wanted in sorted(severities.items()):
        if not wanted <= firing[name]:
            problems.append(f"{name}: no firing case for severity {sorted(wanted - firing[name])}")
        if quiet[name] == 0:
            problems.append(f"{name}: no case where it stays quiet")
    stale = (set(firing) | set(quiet)) - set(severities)
    problems.extend(f"{name}: tested but not defined" for name in sorted(stale))
    assert not problems, "\n".join(problems)


def test_every_recording_rule_has_an_expression_test() -> None:
    tested: set[str] = set()
    for path in sorted(RULE_TESTS_DIR.glob("*.yml")):
        for group in load_yaml(path)["tests"]:
            for case in group.get("promql_expr_test") or []:
                if case.get("exp_samples"):
                    tested |= metric_names(case["expr"])
    untested = sorted({rule.name for rule in recordings()} - tested)
    assert not untested, f"recording rules without a promql_expr_test: {untested}"


def test_catalogue_recording_rules_are_defined() -> None:
    defined = {rule.name for rule in recordings()}
    assert catalogue_recording_rules() <= defined


def test_recording_rule_names_follow_level_metric_operations() -> None:
    bad = [
        r.name for r in recordings() if not re.fullmatch(r"llmbot:[a-z0-9_]+:[a-z0-9_]+", r.name)
    ]
    assert not bad


def test_rules_only_use_catalogued_metrics() -> None:
    allowed = catalogue() | {rule.name for rule in recordings()}
    unknown = {
        f"{rule.name}: {name}"
        for rule in (*recordings(), *alerts())
        for name in metric_names(rule.expr)
        if not known_name(name, allowed)
    }
    assert not unknown, sorted(unknown)


def test_alerts_follow_the_conventions() -> None:
    uids = {board["uid"] for board in dashboards().values()}
    problems = []
    for rule in alerts():
        where = f"{rule.name} ({rule.labels.get('severity')})"
        if not ALERT_NAME.match(rule.name):
            problems.append(f"{where}: not CamelCase with the LLMBot prefix")
        if rule.labels.get("severity") not in SEVERITIES:
            problems.append(f"{where}: severity must be one of {sorted(SEVERITIES)}")
        if "heal" in rule.labels and rule.labels["heal"] not in HEAL_ACTIONS:
            problems.append(f"{where}: heal={rule.labels['heal']} is not a bot action")
        missing = {"summary", "description", "runbook_url", "dashboard_url"} - set(rule.annotations)
        if missing:
            problems.append(f"{where}: missing annotations {sorted(missing)}")
            continue
        if "$value" not in rule.annotations["description"]:
            problems.append(f"{where}: the description does not show the value")
        if rule.annotations["runbook_url"] != f"{RUNBOOK_BASE}#{rule.name.lower()}":
            problems.append(f"{where}: runbook_url is not {RUNBOOK_BASE}#{rule.name.lower()}")
        dashboard = re.fullmatch(
            re.escape(GRAFANA_BASE) + r"/d/([\w-]+)\?(.*)", rule.annotations["dashboard_url"]
        )
        if dashboard is None or dashboard.group(1) not in uids:
            problems.append(f"{where}: dashboard_url names no generated dashboard")
    assert not problems, "\n".join(problems)


def test_every_heal_action_has_an_alert() -> None:
    used = {rule.labels["heal"] for rule in alerts() if "heal" in rule.labels}
    assert used == set(HEAL_ACTIONS)


def test_every_alert_has_a_runbook_section() -> None:
    anchors = runbook_anchors()
    missing = sorted(rule.name for rule in alerts() if rule.name.lower() not in anchors)
    assert not missing, f"docs/runbooks.md has no section for {missing}"


# --- alert links: one configured place ----------------------------------------------------------


def test_link_bases_are_external_labels_from_the_environment() -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    labels = config["global"]["external_labels"]
    assert {name: labels[name] for name in LINK_ENV} == {
        name: "${" + variable + "}" for name, variable in LINK_ENV.items()
    }
    # They exist for the annotation templates only: alerts leave Prometheus without them.
    (relabel,) = config["alerting"]["alert_relabel_configs"]
    assert relabel["action"] == "labeldrop"
    assert set(relabel["regex"].split("|")) == set(LINK_ENV)


def test_no_link_is_written_out_in_the_rules() -> None:
    for path in rule_files():
        text = path.read_text(encoding="utf-8")
        assert "example" not in text, path.name
        assert not re.search(r"https?://", text.split("groups:", 1)[1]), path.name
    assert sorted(RULES_DIR.glob("*.yml")) == rule_files()


def test_promtool_renders_the_links_from_the_external_labels(promtool: str, tmp_path: Path) -> None:
    # Every committed alert's two link templates, rendered with prometheus.yml's labels given
    # values: each link starts with exactly the configured base.
    rules_file = tmp_path / "links.yml"
    rules_file.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "links",
                        "rules": [
                            {
                                "alert": rule.name,
                                "expr": 'up{job="j"}',
                                "annotations": {
                                    key: rule.annotations[key]
                                    for key in ("runbook_url", "dashboard_url")
                                },
                            }
                            for rule in _distinct_alerts()
                        ],
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    base_runbook, base_grafana = "https://docs.test/runbooks.md", "https://grafana.test:3000"
    cases = []
    for rule in _distinct_alerts():
        uid = re.search(r"/d/([\w-]+)\?", rule.annotations["dashboard_url"])
        assert uid is not None, rule.name
        cases.append(
            {
                "eval_time": "1m",
                "alertname": rule.name,
                "exp_alerts": [
                    {
                        "exp_labels": {"job": "j", "instance": "i"},
                        "exp_annotations": {
                            "runbook_url": f"{base_runbook}#{rule.name.lower()}",
                            "dashboard_url": f"{base_grafana}/d/{uid.group(1)}"
                            "?var-job=j&var-instance=i",
                        },
                    }
                ],
            }
        )
    test_file = tmp_path / "links_test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(rules_file)],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "external_labels": {
                            "runbook_base_url": base_runbook,
                            "dashboard_base_url": base_grafana,
                        },
                        "input_series": [{"series": 'up{job="j", instance="i"}', "values": "1x5"}],
                        "alert_rule_test": cases,
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    result = _run([promtool, "test", "rules", str(test_file)])
    assert result.returncode == 0, result.stdout + result.stderr


def _distinct_alerts() -> list[Rule]:
    """One rule per alert name (the burn-rate alerts have a page and a ticket rule)."""
    return list({rule.name: rule for rule in alerts()}.values())
