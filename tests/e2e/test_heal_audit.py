"""The heal audit and the safety switches on a running bot: real receiver, real remedies, real
store, real HTTP. HEAL_DRY_RUN changes nothing but records; HEAL_ENABLED=false records and runs
nothing; the audit is readable at GET /heal/audit and survives a restart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from bot.app import BotApp
from bot.emulator.discord import DiscordEmulator
from bot.healing.testing import sample_alert, sample_body
from bot.resilience.degradation import DegradationLevel

TOKEN = "audit-e2e-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MANAGE_GUILD = 1 << 5
JSON = dict[str, Any]


async def _post(app: BotApp, *alerts: JSON) -> tuple[int, JSON]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{app.ops.url}/alerts",
            data=sample_body(*alerts),
            headers={**AUTH, "Content-Type": "application/json"},
        ) as response,
    ):
        return response.status, await response.json()


async def _audit(app: BotApp, query: str = "", headers: dict[str, str] = AUTH) -> tuple[int, JSON]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{app.ops.url}/heal/audit{query}", headers=headers) as response,
    ):
        return response.status, await response.json()


def _alerts(app: BotApp, status: str, *heals: str) -> list[JSON]:
    return [
        sample_alert(
            heal=heal, instance=app.healer.instance, fingerprint=f"fp-{heal}", status=status
        )
        for heal in heals
    ]


async def _chat(discord: DiscordEmulator, name: str, text: str) -> str:
    user = discord.create_user(name)
    dm = discord.create_dm(user)
    msg = await discord.send_message(dm, author=user, content=text)
    return (await discord.wait_for_reply(int(msg["id"]))).content


def _state(app: BotApp) -> tuple[Any, ...]:
    """What the remedies would change: cache, reduced mode, degradation, queue speed."""
    tuning = app.pipeline.tuning
    return (
        app.llm.cache.stats.entries,
        tuning.history_messages,
        tuning.max_output_tokens,
        app.degradation.level,
        dict(app.degradation.overrides),
        app.queue.retry_interval_s,
        app.healer.stats.active_heals,
    )


async def test_dry_run_changes_nothing_but_records(
    start_bot: Callable[..., Any], discord: DiscordEmulator
) -> None:
    app: BotApp = await start_bot(heal_dry_run=True, alert_webhook_token=TOKEN)
    await _chat(discord, "amy", "fill the cache")
    before = _state(app)
    assert before[0] == 1 and before[3] == DegradationLevel.NONE

    heals = ("memory", "response_time", "error_rate", "queue", "disk")
    status, body = await _post(app, *_alerts(app, "firing", *heals))
    assert status == 200
    assert [d["decision"] for d in body["decisions"]] == ["dry_run"] * len(heals)
    await app.healer.join()
    assert _state(app) == before

    status, body = await _post(app, *_alerts(app, "resolved", "response_time", "error_rate"))
    assert status == 200
    await app.healer.join()
    assert _state(app) == before
    # The question is still answered from the cache the memory heal did not clear.
    assert app.llm.cache.stats.entries == 1

    status, audit = await _audit(app)
    assert status == 200
    assert audit["dry_run"] is True
    entries = list(reversed(audit["entries"]))  # oldest first
    assert [(e["action"], e["outcome"], e["kind"]) for e in entries] == [
        *((heal, "dry_run", "apply") for heal in heals),
        ("response_time", "dry_run", "revert"),
        ("error_rate", "dry_run", "revert"),
    ]
    memory = entries[0]
    assert memory["detail"].startswith("would apply memory: Clear the response cache")
    assert (memory["alertname"], memory["fingerprint"]) == ("LLMBotHighMemory", "fp-memory")
    assert app.healer.stats.actions_total[("memory", "ok")] == 0
    assert app.healer.stats.actions_total[("memory", "dry_run")] == 1


async def test_disabled_records_alerts_and_runs_no_action(
    start_bot: Callable[..., Any], discord: DiscordEmulator
) -> None:
    app: BotApp = await start_bot(heal_enabled=False, alert_webhook_token=TOKEN)
    await _chat(discord, "bo", "fill the cache")
    before = _state(app)

    status, body = await _post(app, *_alerts(app, "firing", "memory", "error_rate"))
    assert status == 200
    assert [d["decision"] for d in body["decisions"]] == ["disabled", "disabled"]
    await app.healer.join()
    assert _state(app) == before
    _, audit = await _audit(app)
    assert audit["enabled"] is False
    assert [e["outcome"] for e in audit["entries"]] == ["disabled", "disabled"]
    assert "HEAL_ENABLED=false" in audit["entries"][0]["detail"]


async def test_the_audit_is_authenticated_and_survives_a_restart(
    start_bot: Callable[..., Any], discord: DiscordEmulator
) -> None:
    first: BotApp = await start_bot(alert_webhook_token=TOKEN)
    await _chat(discord, "cy", "fill the cache")
    held = first.llm.cache.stats.bytes
    status, _ = await _post(first, *_alerts(first, "firing", "memory"))
    assert status == 202
    await first.healer.join()

    assert (await _audit(first, headers={}))[0] == 401
    assert (await _audit(first, headers={"Authorization": "Bearer nope"}))[0] == 401
    assert (await _audit(first, "?limit=0"))[0] == 400
    _, audit = await _audit(first)
    (ok,) = [e for e in audit["entries"] if e["outcome"] == "ok"]
    assert ok["figures"]["bytes_freed"] == held > 0  # what the cache held, never negative
    assert ok["figures"]["rss_before_bytes"] > 0
    await first.stop()

    # A new process on the same data directory (the store) finds the audit where it was.
    second: BotApp = await start_bot(alert_webhook_token=TOKEN)
    _, restored = await _audit(second)
    assert restored["entries"] == audit["entries"]
    assert second.healer.stats.audit_entries == len(audit["entries"])
    # ... and numbers on from there.
    await _post(second, *_alerts(second, "firing", "disk"))
    await second.healer.join()
    _, after = await _audit(second, "?limit=1")
    assert after["entries"][0]["seq"] > max(e["seq"] for e in audit["entries"])


async def test_heal_status_shows_the_mode_and_the_audit(
    start_bot: Callable[..., Any], discord: DiscordEmulator
) -> None:
    app: BotApp = await start_bot(heal_dry_run=True, alert_webhook_token=TOKEN, admin_user_ids="1")
    await _post(app, *_alerts(app, "firing", "response_time"))
    guild = discord.create_guild("Ops")
    channel = discord.guild_text_channel(guild)
    alice = discord.create_user("alice")
    discord.add_member(guild, alice)
    await discord.wait_for(lambda: any(c["name"] == "heal" for c in discord.registered_commands))
    ix = await discord.send_interaction(
        "heal", user=alice, channel_id=channel, options={"status": {}}, permissions=MANAGE_GUILD
    )
    text = await ix.wait_for_response()
    assert "🧪 **Dry run** (HEAL_DRY_RUN=true)" in text
    assert "Would be in force: `response_time`" in text
    assert "`response_time` **dry_run** LLMBotHighMemory — would apply response_time" in text
    assert "all in `GET /heal/audit`" in text


@pytest.mark.parametrize("name", ["HEAL_ENABLED", "HEALTH_ALERTS_ENABLED"])
async def test_either_name_turns_healing_off(
    name: str, monkeypatch: pytest.MonkeyPatch, start_bot: Callable[..., Any]
) -> None:
    monkeypatch.setenv(name, "false")
    app: BotApp = await start_bot(alert_webhook_token=TOKEN)
    assert app.healer.enabled is False
