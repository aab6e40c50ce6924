"""Shared fixtures and the unit/e2e split of the whole suite.

The folders mirror the package (tests/chat tests bot/chat, ...). Every test is a unit test
(`make test-unit`: `-m "not e2e and not ops and not bench"`) unless its folder says otherwise:

    tests/e2e/     e2e    the whole bot against the emulators
    tests/deploy/  ops    deploy/ against real Prometheus / Alertmanager binaries
    tests/bench/   bench  every benchmark scenario at a tiny scale (whole bots, about a minute)

Shared fakes are plain classes, imported: `from tests.fakes import FakeClock`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ops.otlp_receiver import otlp_receiver
from tests.ops.spans import recorded
from tests.redis_server import redis_server

# The fixtures: a running OTLP/gRPC trace receiver, spans recorded in memory, and a private
# redis-server (tests/redis_server.py).
__all__ = ["otlp_receiver", "recorded", "redis_server"]

TESTS = Path(__file__).resolve().parent
FOLDER_MARKERS = {"e2e": "e2e", "deploy": "ops", "bench": "bench"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test after its top folder, so a new file there cannot miss the marker."""
    for item in items:
        try:
            folder = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:  # a test outside tests/ (given by path on the command line)
            continue
        marker = FOLDER_MARKERS.get(folder)
        if marker is not None:
            item.add_marker(marker)
