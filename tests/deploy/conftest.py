"""Fixtures for the ops tests: the Debian Prometheus/Alertmanager tools and a live Prometheus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.support import local_stack, need_binary


@pytest.fixture(scope="session")
def promtool() -> str:
    return need_binary("promtool")


@pytest.fixture(scope="session")
def amtool() -> str:
    return need_binary("amtool")


@pytest.fixture(scope="session")
def stack() -> Any:
    """deploy/local_stack.py as a module."""
    return local_stack()


@pytest.fixture(scope="session")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secrets") / "webhook_token"
    path.write_text("test-token-0123456789\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def live_prometheus(
    tmp_path_factory: pytest.TempPathFactory, stack: Any, token_file: Path
) -> Iterator[Any]:
    """A real Prometheus with the committed rules, scraping a bot address where nothing listens."""
    need_binary(stack.PROMETHEUS_BINARY)
    workdir = tmp_path_factory.mktemp("prometheus")
    nobody = f"127.0.0.1:{stack.free_port()}"
    rendered = stack.render_configs(
        workdir / "config",
        nobody,
        f"http://{nobody}/alerts",
        token_file,
        stack.FAST_INTERVALS,
    )
    with stack.start_prometheus(rendered.prometheus, workdir, stack.free_port()) as prometheus:
        yield prometheus
