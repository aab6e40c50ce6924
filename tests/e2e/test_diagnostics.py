"""Diagnostics on the running bot: which token opens /debug, TRACEMALLOC_FRAMES, and the
memory heal's record of the top allocations."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from bot.app import BotApp
from bot.config import ConfigError
from bot.healing.payload import Alert
from bot.healing.remedies import build_remedies
from bot.healing.testing import sample_alert


@pytest.fixture(autouse=True)
def _no_tracing_left() -> Iterator[None]:
    yield
    tracemalloc.stop()  # process-wide


async def _get(app: BotApp, path: str, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(app.ops.url + path, headers=headers) as r:
        return r.status, await r.json()


async def test_ops_admin_token_opens_debug_and_the_webhook_token_does_not(
    start_bot: Callable[..., Any],
) -> None:
    app: BotApp = await start_bot(ops_admin_token="admin-token", alert_webhook_token="am-token")

    assert (await _get(app, "/debug/tasks", None))[0] == 401
    assert (await _get(app, "/debug/tasks", "am-token"))[0] == 401
    status, body = await _get(app, "/debug/tasks", "admin-token")

    assert status == 200
    names = {task["name"] for task in body["tasks"]}
    assert {"queue worker", "health history", "event-loop-lag"} <= names


async def test_without_ops_admin_token_the_webhook_token_opens_debug(
    start_bot: Callable[..., Any],
) -> None:
    app: BotApp = await start_bot(alert_webhook_token="am-token")

    status, body = await _get(app, "/debug/memory", "am-token")

    assert status == 200
    assert body["tracing"] is False


def test_ops_admin_token_and_its_file_together_fail_at_start(
    make_settings: Callable[..., Any], tmp_path: Any
) -> None:
    (tmp_path / "token").write_text("from-file")
    settings = make_settings(ops_admin_token="env", ops_admin_token_file=tmp_path / "token")

    with pytest.raises(ConfigError, match="OPS_ADMIN_TOKEN and OPS_ADMIN_TOKEN_FILE"):
        BotApp(settings, discord_token="MTIz.x.y", gemini_api_key="k")


async def test_tracemalloc_frames_traces_from_the_start_and_the_memory_heal_records_it(
    start_bot: Callable[..., Any],
) -> None:
    app: BotApp = await start_bot(tracemalloc_frames=2, ops_admin_token="t")
    status, body = await _get(app, "/debug/memory?limit=3", "t")
    assert status == 200
    assert (body["tracing"], body["frames"], len(body["top"])) == (True, 2, 3)

    memory = next(a for a in build_remedies(app.controls) if a.name == "memory")
    alert = Alert.model_validate_json(json.dumps(sample_alert(heal="memory")))
    result = await memory.apply(alert)

    assert result.ok
    assert "; top allocations before: " in result.detail and "; after: " in result.detail
    assert " MiB" in result.detail.split("before: ")[1]


async def test_without_tracing_the_memory_heal_says_nothing_of_allocations(
    start_bot: Callable[..., Any],
) -> None:
    app: BotApp = await start_bot()
    memory = next(a for a in build_remedies(app.controls) if a.name == "memory")

    result = await memory.apply(Alert.model_validate_json(json.dumps(sample_alert(heal="memory"))))

    assert result.ok
    assert "allocations" not in result.detail
