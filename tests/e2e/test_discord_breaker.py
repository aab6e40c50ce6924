"""Discord's REST API fails: replies wait behind the "discord" circuit breaker and are
delivered once, exactly once, when it is back; what cannot wait is counted and logged.

The real hikari client against the Discord emulator's faults: a 5xx outage, and sends that
Discord carried out but whose answer was lost (a timeout, a dropped connection).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Literal

import aiohttp
import pytest

from bot.app import BotApp
from bot.emulator.discord import DiscordEmulator
from bot.healing.payload import Alert
from bot.healing.remedies import build_remedies
from bot.healing.testing import sample_alert
from tests.e2e.test_observability import parse_samples, scrape, value

# No hikari-internal retries and a short reset timeout: the breaker's own behaviour, fast.
FAST_BREAKER = {
    "discord_rest_max_retries": 0,
    "discord_breaker_failure_threshold": 2,
    "discord_breaker_reset_timeout_seconds": 0.3,
}


def _replies_to(discord: DiscordEmulator, message_id: int) -> list[str]:
    return [m.content for m in discord.sent_messages if m.reply_to == message_id]


async def _dm_burst(discord: DiscordEmulator, count: int) -> list[int]:
    ids = []
    for i in range(count):
        user = discord.create_user(f"user{i}")
        msg = await discord.send_message(discord.create_dm(user), author=user, content=f"q{i}")
        ids.append(int(msg["id"]))
    return ids


def _message_posts(discord: DiscordEmulator, status: int | None = None) -> int:
    return sum(
        1
        for method, path, answered in discord.requests
        if method == "POST"
        and path.endswith("/messages")
        and (status is None or answered == status)
    )


async def _status(app: BotApp) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{app.ops.url}/status") as response:
        body: dict[str, Any] = await response.json()
        return body


async def test_an_outage_holds_the_replies_and_delivers_each_exactly_once_after_it(
    start_bot: Callable[..., Any], discord: DiscordEmulator
) -> None:
    # A reset timeout long enough for the checks below to see the breaker still open.
    app: BotApp = await start_bot(**{**FAST_BREAKER, "discord_breaker_reset_timeout_seconds": 1})
    breaker = app.gateway.delivery.hold.breaker
    discord.inject_rest_fault(503, count=None, route_contains="/messages")

    ids = await _dm_burst(discord, 5)
    await discord.wait_for(lambda: app.gateway.delivery.hold.stats.held == 5, timeout=10)
    # A failed probe: the breaker opened, let one held reply probe, and opened again.
    await discord.wait_for(lambda: breaker.stats.transitions_total["half_open"] >= 1, timeout=10)
    await discord.wait_for(lambda: breaker.state == "open", timeout=10)

    during = parse_samples(await scrape(app.ops.url))
    status = await _status(app)
    assert value(during, "llmbot_circuit_state", dependency="discord", state="open") == 1
    assert value(during, "llmbot_dependency_up", dependency="discord") == 0
    assert value(during, "llmbot_dependency_up", dependency="gemini") == 1
    assert value(during, "llmbot_discord_held_replies") == 5
    assert (status["discord_breaker_state"], status["discord_up"]) == ("open", False)
    assert status["discord_held_replies"] == 5
    assert all(not _replies_to(discord, i) for i in ids)
    # Not hammered: each reply's first try, then one probe per reset timeout (the posts counted
    # first: a probe's half-open transition comes before its post, and a busy machine may let
    # another reset timeout pass during the checks above).
    posts = _message_posts(discord, 503)
    probes = breaker.stats.transitions_total["half_open"]
    assert posts <= len(ids) + probes

    discord.clear_rest_faults()
    await discord.wait_for(lambda: all(_replies_to(discord, i) for i in ids), timeout=10)
    await discord.wait_for(lambda: app.pipeline.stats.in_flight == 0, timeout=10)

    assert all(len(_replies_to(discord, i)) == 1 for i in ids)
    assert all(_replies_to(discord, i)[0].startswith(f"You said: q{n}") for n, i in enumerate(ids))
    after = parse_samples(await scrape(app.ops.url))
    assert value(after, "llmbot_circuit_state", dependency="discord", state="closed") == 1
    assert value(after, "llmbot_dependency_up", dependency="discord") == 1
    assert value(after, "llmbot_discord_held_replies") == 0
    assert value(after, "llmbot_discord_reply_holds_total") == 5
    assert (
        sum(
            value(after, "llmbot_discord_replies_undelivered_total", reason=reason)
            for reason in ("overflow", "expired", "shutdown")
        )
        == 0
    )
    assert value(after, "llmbot_errors_total", component="discord") == 0
    # Every 503 Discord answered is counted (how many replies tried before the breaker opened
    # depends on timing: the REST pace lets a few calls go at once).
    refused = _message_posts(discord, 503)
    assert refused >= 2  # at least the failure threshold's
    assert value(after, "llmbot_discord_rest_requests_total", status_class="5xx") == refused
    assert (await _status(app))["discord_breaker_state"] == "closed"


@pytest.mark.parametrize("kind", ["slow", "drop"])
async def test_a_send_whose_answer_was_lost_is_retried_without_a_duplicate(
    start_bot: Callable[..., Any], discord: DiscordEmulator, kind: Literal["slow", "drop"]
) -> None:
    app: BotApp = await start_bot(
        discord_rest_max_retries=0,
        discord_rest_timeout_seconds=0.5,
        discord_breaker_reset_timeout_seconds=0.3,
    )
    # Discord creates the message, but the bot hears nothing (a timeout or a cut connection).
    discord.inject_rest_lost_answer(kind, route_contains="/messages", delay_s=1.5)

    (question,) = await _dm_burst(discord, 1)
    await discord.wait_for(lambda: app.gateway.delivery.hold.stats.retries_total == 1)
    await discord.wait_for(lambda: app.pipeline.stats.in_flight == 0, timeout=10)

    # The send, and its retry with the same nonce (a slow answer is logged when it is given).
    await discord.wait_for(lambda: _message_posts(discord) == 2)
    (reply,) = _replies_to(discord, question)
    assert reply.startswith("You said: q0")
    assert app.pipeline.stats.errors["discord"] == 0


async def test_replies_beyond_the_bounds_are_counted_and_logged_never_lost_silently(
    start_bot: Callable[..., Any], discord: DiscordEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    app: BotApp = await start_bot(
        discord_rest_max_retries=0,
        discord_breaker_failure_threshold=1,
        discord_breaker_reset_timeout_seconds=30,
        discord_hold_max_replies=1,
        discord_hold_max_seconds=0.5,
    )
    discord.inject_rest_fault(503, count=None, route_contains="/messages")

    await _dm_burst(discord, 3)
    # One reply waits (room for one) until it expires; the other two find no room.
    await discord.wait_for(lambda: app.pipeline.stats.errors["discord"] == 3, timeout=10)
    await discord.wait_for(lambda: app.pipeline.stats.in_flight == 0, timeout=10)

    samples = parse_samples(await scrape(app.ops.url))
    assert value(samples, "llmbot_discord_replies_undelivered_total", reason="overflow") == 2
    assert value(samples, "llmbot_discord_replies_undelivered_total", reason="expired") == 1
    assert value(samples, "llmbot_discord_held_replies") == 0
    assert value(samples, "llmbot_discord_hold_capacity") == 1
    assert value(samples, "llmbot_errors_total", component="discord") == 3
    lost = [
        r.getMessage() + str(r.exc_info[1] if r.exc_info else "")
        for r in caplog.records
        if r.levelno >= logging.ERROR and "could not deliver a reply" in r.getMessage()
    ]
    assert len(lost) == 3
    assert sum("(overflow)" in line for line in lost) == 2
    assert sum("(expired)" in line for line in lost) == 1
    assert discord.sent_messages == []


async def test_the_api_health_heal_lets_the_held_replies_probe_discord_at_once(
    start_bot: Callable[..., Any], discord: DiscordEmulator
) -> None:
    app: BotApp = await start_bot(
        discord_rest_max_retries=0,
        discord_breaker_failure_threshold=1,
        discord_breaker_reset_timeout_seconds=600,  # no probe of its own within the test
    )
    discord.inject_rest_fault(503, count=None, route_contains="/messages")
    (question,) = await _dm_burst(discord, 1)
    await discord.wait_for(lambda: app.gateway.delivery.hold.stats.held == 1, timeout=10)
    discord.clear_rest_faults()

    action = next(a for a in build_remedies(app.controls) if a.name == "api_health")
    raw: dict[str, Any] = sample_alert(heal="api_health")
    raw["labels"].update(dependency="discord", shard="0")
    result = await action.apply(Alert.model_validate_json(json.dumps(raw)))

    assert result.ok
    assert result.figures["breaker_half_open"] == 1
    await discord.wait_for(lambda: bool(_replies_to(discord, question)), timeout=10)
    await discord.wait_for(lambda: app.gateway.delivery.hold.state == "closed")
