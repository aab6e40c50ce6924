"""Every PromQL expression of the rules and dashboards, sent to a real Prometheus."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy.support import dashboard_exprs, dashboards, panels, rules, substitute_variables

pytestmark = pytest.mark.ops


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _query(base: str, expr: str) -> dict[str, Any]:
    body = urllib.parse.urlencode({"query": expr, "time": f"{time.time():.3f}"}).encode()
    try:
        with urllib.request.urlopen(f"{base}/api/v1/query", data=body, timeout=10) as response:
            answer: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as error:  # 400 carries the parse error as JSON
        answer = json.load(error)
    return answer


def _query_exemplars(base: str, expr: str) -> dict[str, Any]:
    now = time.time()
    params = {"query": expr, "start": f"{now - 3600:.3f}", "end": f"{now:.3f}"}
    body = urllib.parse.urlencode(params).encode()
    try:
        url = f"{base}/api/v1/query_exemplars"
        with urllib.request.urlopen(url, data=body, timeout=10) as response:
            answer: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as error:
        answer = json.load(error)
    return answer


def _rejected(
    base: str, exprs: list[tuple[str, str]], send: Callable[[str, str], dict[str, Any]] = _query
) -> list[str]:
    problems = []
    for where, expr in exprs:
        answer = send(base, expr)
        if answer.get("status") != "success":
            problems.append(f"{where}: {answer.get('error')}\n    {expr}")
    return problems


def test_prometheus_loaded_every_rule(live_prometheus: Any) -> None:
    groups = _get(f"{live_prometheus.url}/api/v1/rules")["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    assert {rule.name for rule in rules()} <= loaded


def test_rule_expressions_are_accepted(live_prometheus: Any) -> None:
    exprs = [(f"{rule.file} {rule.name}", rule.expr) for rule in rules()]
    problems = _rejected(live_prometheus.url, exprs)
    assert not problems, "\n".join(problems)


def test_dashboard_expressions_are_accepted(live_prometheus: Any) -> None:
    exprs = [(f"{name} / {title}", expr) for name, title, expr in dashboard_exprs()]
    assert exprs
    problems = _rejected(live_prometheus.url, exprs)
    assert not problems, "\n".join(problems)


def test_exemplar_queries_are_accepted(live_prometheus: Any) -> None:
    # Grafana asks /api/v1/query_exemplars for queries with exemplars on; Prometheus answers
    # it only with --enable-feature=exemplar-storage, which the launcher sets.
    exprs = [
        (f"{name} / {panel['title']}", substitute_variables(target["expr"], board))
        for name, board in dashboards().items()
        for panel in panels(board)
        for target in panel["targets"]
        if target.get("exemplar")
    ]
    assert exprs
    problems = _rejected(live_prometheus.url, exprs, _query_exemplars)
    assert not problems, "\n".join(problems)


def test_a_broken_expression_is_reported(live_prometheus: Any) -> None:
    assert _rejected(live_prometheus.url, [("broken", "sum(rate(x[5m])")])


def test_rules_evaluate_without_errors(live_prometheus: Any) -> None:
    # With 1-second evaluation every group but the 5-minute SLO-period one runs within seconds;
    # an error here is a runtime problem (for example many-to-many matching), not syntax.
    deadline = time.monotonic() + 20
    while True:
        groups = _get(f"{live_prometheus.url}/api/v1/rules")["data"]["groups"]
        evaluated = [g for g in groups if g["interval"] <= 1 and g["lastEvaluation"][:4] != "0001"]
        if len(evaluated) == sum(1 for g in groups if g["interval"] <= 1):
            break
        assert time.monotonic() < deadline, "rule groups were not evaluated in 20 s"
        time.sleep(0.5)
    errors = [
        f"{rule['name']}: {rule.get('lastError')}"
        for group in groups
        for rule in group["rules"]
        if rule.get("health") == "err"
    ]
    assert not errors, "\n".join(errors)
