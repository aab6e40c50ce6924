"""deploy/local_stack.py command line: --fast and --alert-for become render timings."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from tests.deploy.support import DEPLOY

pytestmark = pytest.mark.ops


def test_fast_and_alert_for(stack: Any) -> None:
    assert stack.cli_intervals(False, None) is None  # the committed timings
    assert stack.cli_intervals(True, None) == dict(stack.FAST_INTERVALS)
    assert stack.cli_intervals(False, "0s") == {"alert_for": "0s"}
    assert stack.cli_intervals(True, "30s") == {**stack.FAST_INTERVALS, "alert_for": "30s"}


@pytest.mark.parametrize("text", ["0s", "30s", "1m30s", "2h", "500ms"])
def test_prometheus_durations_are_accepted(stack: Any, text: str) -> None:
    assert stack.prometheus_duration(text) == text


def test_a_wrong_duration_is_refused_before_anything_starts() -> None:
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "local_stack.py"), "--alert-for", "5 minutes"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "is not a Prometheus duration" in result.stderr


def test_link_bases_default_from_the_environment(
    stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNBOOK_BASE_URL", raising=False)
    monkeypatch.delenv("DASHBOARD_BASE_URL", raising=False)
    args = stack.build_parser().parse_args([])
    assert args.runbook_base_url == stack.DEFAULT_RUNBOOK_BASE_URL
    assert args.dashboard_base_url == stack.DEFAULT_DASHBOARD_BASE_URL

    monkeypatch.setenv("RUNBOOK_BASE_URL", "https://git.test/rb.md")
    monkeypatch.setenv("DASHBOARD_BASE_URL", "https://g.test")
    args = stack.build_parser().parse_args([])
    assert (args.runbook_base_url, args.dashboard_base_url) == (
        "https://git.test/rb.md",
        "https://g.test",
    )
    args = stack.build_parser().parse_args(["--runbook-base-url", "https://other.test/r.md"])
    assert args.runbook_base_url == "https://other.test/r.md"
