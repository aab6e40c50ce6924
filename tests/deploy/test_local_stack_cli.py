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
