"""Paging people in Discord: the human receivers, their message template, and a live page.

The live test runs the committed rules and routes (1 s timings, every `for:` at 0 s) in a real
Prometheus and Alertmanager, with the Discord receivers pointed at a webhook of the emulated
Discord's ops channel: a target that cannot be scraped fires LLMBotDown (a page), the target
comes up, and the page resolves. Both posts must carry the summary and the runbook link.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.emulator.discord import DiscordEmulator
from bot.emulator.discord.records import WebhookMessage
from tests.deploy.live import eventually
from tests.deploy.support import ALERTMANAGER_CONFIG, DEPLOY, alerts, load_yaml, need_binary

pytestmark = pytest.mark.ops

TEMPLATES = DEPLOY / "alertmanager" / "templates"
HUMAN_RECEIVERS = ("pager", "chat")
# Discord's limits for one embed (Alertmanager 0.25 sends what the template renders, uncut).
TITLE_LIMIT, DESCRIPTION_LIMIT, EMBED_TOTAL_LIMIT = 256, 4096, 6000
# The embed colours Alertmanager's Discord notifier sets.
FIRING_RED, RESOLVED_GREEN = 0x992D22, 0x2ECC71


# --- the committed receivers --------------------------------------------------------------------


def test_human_receivers_post_to_discord_from_a_secret_file() -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    receivers = {r["name"]: r for r in config["receivers"]}
    for name in HUMAN_RECEIVERS:
        assert set(receivers[name]) == {"name", "discord_configs"}, name
        (discord,) = receivers[name]["discord_configs"]
        # The URL is a secret: a file compose mounts, never a URL in git.
        assert discord["webhook_url_file"] == "/etc/alertmanager/secrets/discord_webhook_url"
        assert "webhook_url" not in discord
        assert discord["send_resolved"] is True
        assert discord["title"] == '{{ template "llmbot.discord.title" . }}'
        assert discord["message"] == '{{ template "llmbot.discord.message" . }}'
    assert config["templates"] == ["templates/*.tmpl"]
    assert "discord.com/api/webhooks" not in ALERTMANAGER_CONFIG.read_text(encoding="utf-8")


def test_rendered_for_alertmanager_025_with_the_url_inline(
    stack: Any, tmp_path: Path, token_file: Path, amtool: str
) -> None:
    url = "https://discord.example/api/webhooks/1/secret-token"
    rendered = stack.render_configs(
        tmp_path, "127.0.0.1:19464", "http://127.0.0.1:19464/alerts", token_file, discord_url=url
    )
    config = load_yaml(rendered.alertmanager)
    receivers = {r["name"]: r for r in config["receivers"]}
    for name in HUMAN_RECEIVERS:
        (discord,) = receivers[name]["discord_configs"]
        assert discord["webhook_url"] == url
        assert "webhook_url_file" not in discord
    assert config["templates"] == [str(TEMPLATES / "*.tmpl")]
    assert rendered.alertmanager.stat().st_mode & 0o777 == 0o600  # it holds the secret
    result = subprocess.run(
        [amtool, "check-config", str(rendered.alertmanager)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 templates" in result.stdout


def test_discord_url_comes_from_the_environment_or_a_file(
    stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "https://discord.example/api/webhooks/1/abc"
    # A developer's own deploy/secrets/discord_webhook_url must not leak into the test.
    monkeypatch.setattr(stack, "DEFAULT_DISCORD_URL_FILE", tmp_path / "absent")
    assert stack.discord_webhook_url(None, {}) == (None, "nowhere")
    assert stack.discord_webhook_url(None, {stack.DISCORD_URL_ENV: f" {url}\n"}) == (
        url,
        stack.DISCORD_URL_ENV,
    )
    url_file = tmp_path / "discord_webhook_url"
    url_file.write_text(url + "\n", encoding="utf-8")
    assert stack.discord_webhook_url(url_file, {}) == (url, str(url_file))
    with pytest.raises(stack.StackError, match="both set"):
        stack.discord_webhook_url(url_file, {stack.DISCORD_URL_ENV: url})
    url_file.write_text("discord.example/api/webhooks/1/SECRET\n", encoding="utf-8")
    with pytest.raises(stack.StackError) as error:
        stack.discord_webhook_url(url_file, {})
    assert str(url_file) in str(error.value)
    assert "SECRET" not in str(error.value)  # the URL is a secret: never echoed


# --- the template -------------------------------------------------------------------------------


def _render(amtool: str, tmp_path: Path, definition: str, data: dict[str, Any]) -> str:
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(data), encoding="utf-8")
    result = subprocess.run(
        [
            amtool,
            "template",
            "render",
            f"--template.glob={TEMPLATES / '*.tmpl'}",
            f'--template.text={{{{ template "{definition}" . }}}}',
            f"--template.data={data_file}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # amtool ends its output with a newline of its own.
    return result.stdout.removesuffix("\n")


def _alert(status: str, labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": "2024-05-01T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2024-05-01T10:07:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": "4f6a1c2b3d4e5f60",
    }


def _group(status: str, alert_list: list[dict[str, Any]], **common: str) -> dict[str, Any]:
    labels = alert_list[0]["labels"]
    return {
        "receiver": "pager",
        "status": status,
        "alerts": alert_list,
        "groupLabels": {k: labels[k] for k in ("alertname", "instance") if k in labels},
        "commonLabels": {**labels, **common},
        "commonAnnotations": {},
        "externalURL": "http://localhost:9093",
    }


def test_every_rule_renders_its_summary_and_runbook(amtool: str, tmp_path: Path) -> None:
    for rule in alerts():
        labels = {"alertname": rule.name, "instance": "bot:9464", **rule.labels}
        group = _group("firing", [_alert("firing", labels, rule.annotations)])
        title = _render(amtool, tmp_path, "llmbot.discord.title", group)
        message = _render(amtool, tmp_path, "llmbot.discord.message", group)
        page = "🔴 PAGE · FIRING" if labels["severity"] == "critical" else "🟠 "
        assert title.startswith(page), (rule.name, title)
        assert title.endswith(f": {rule.name} on bot:9464"), title
        assert f"**{rule.annotations['summary']}**" in message, rule.name
        assert f"📖 Runbook: {rule.annotations['runbook_url']}" in message, rule.name
        assert f"`{labels['severity']}` " in message


def test_resolved_and_mixed_groups(amtool: str, tmp_path: Path) -> None:
    labels = {"alertname": "LLMBotHighMemory", "instance": "bot:9464", "severity": "warning"}
    notes = {"summary": "Memory is high.", "runbook_url": "https://runbooks/x#llmbothighmemory"}
    resolved = _group("resolved", [_alert("resolved", {**labels, "heal": "memory"}, notes)])
    assert _render(amtool, tmp_path, "llmbot.discord.title", resolved) == (
        "✅ RESOLVED: LLMBotHighMemory on bot:9464"
    )
    text = _render(amtool, tmp_path, "llmbot.discord.message", resolved)
    assert "✅ **Memory is high.**" in text
    assert "self-healing: `memory` · resolved 2024-05-01 10:07:00 UTC" in text
    assert "📖 Runbook: https://runbooks/x#llmbothighmemory" in text

    mixed = _group(
        "firing",
        [
            _alert("firing", {**labels, "dependency": "a"}, notes),
            _alert("firing", {**labels, "dependency": "b"}, notes),
            _alert("resolved", {**labels, "dependency": "c"}, notes),
        ],
    )
    assert _render(amtool, tmp_path, "llmbot.discord.title", mixed) == (
        "🟠 WARNING · FIRING ×2: LLMBotHighMemory on bot:9464"
    )
    text = _render(amtool, tmp_path, "llmbot.discord.message", mixed)
    assert text.count("**Memory is high.**") == 2
    assert "1 alert(s) of this group resolved meanwhile." in text


def test_the_longest_group_stays_within_discords_limits(amtool: str, tmp_path: Path) -> None:
    # Everything that can grow, grown past any limit: 40 alerts, huge labels and annotations,
    # newlines included (Go's "." does not cross them unless told to).
    huge = ("x" * 300 + "\n") * 30
    labels = {
        "alertname": "LLMBot" + "A" * 500,
        "instance": "i" * 500,
        "severity": "s" * 500,
        "heal": "h" * 500,
    }
    notes = {
        "summary": huge,
        "description": huge,
        "runbook_url": "https://r/" + "u" * 5000,
        "dashboard_url": "https://d/" + "u" * 5000,
    }
    for status in ("firing", "resolved"):
        group = _group(status, [_alert(status, labels, notes) for _ in range(40)])
        group["externalURL"] = "http://am/" + "e" * 5000
        title = _render(amtool, tmp_path, "llmbot.discord.title", group)
        message = _render(amtool, tmp_path, "llmbot.discord.message", group)
        assert len(title) <= TITLE_LIMIT, len(title)
        assert len(message) <= DESCRIPTION_LIMIT, len(message)
        assert len(title) + len(message) <= EMBED_TOTAL_LIMIT
        assert "…40 alerts" in message  # the rest is counted, not listed
        assert message.count("📖 Runbook: https://r/uuu") == 3


# --- live: Prometheus -> Alertmanager -> the emulated Discord -----------------------------------


class FlakyTarget:
    """A scrape target answering 503 (Prometheus counts a failed scrape: up == 0) until healthy."""

    def __init__(self) -> None:
        self.healthy = False
        self.address = ""

    async def metrics(self, _: web.Request) -> web.Response:
        if not self.healthy:
            return web.Response(status=503, text="not yet")
        return web.Response(text="# an empty exposition: up == 1 is all the test needs\n")


@pytest.fixture
async def target() -> AsyncIterator[FlakyTarget]:
    flaky = FlakyTarget()
    app = web.Application()
    app.router.add_get("/metrics", flaky.metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    flaky.address = f"{host}:{port}"
    yield flaky
    await runner.cleanup()


@pytest.fixture
async def discord() -> AsyncIterator[DiscordEmulator]:
    async with DiscordEmulator() as emulator:
        yield emulator


def _posted(discord: DiscordEmulator, heading: str) -> WebhookMessage | None:
    for message in discord.webhook_messages:
        if message.embeds and heading in str(message.embeds[0].get("title", "")):
            return message
    return None


async def _alertmanager_alert(am_url: str, alertname: str) -> dict[str, Any] | None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{am_url}/api/v2/alerts", params={"filter": f'alertname="{alertname}"'}) as r,
    ):
        found: list[dict[str, Any]] = await r.json()
    return found[0] if found else None


async def test_a_page_fires_and_resolves_in_the_ops_channel(
    stack: Any,
    tmp_path: Path,
    token_file: Path,
    discord: DiscordEmulator,
    target: FlakyTarget,
) -> None:
    need_binary(stack.PROMETHEUS_BINARY)
    need_binary(stack.ALERTMANAGER_BINARY)
    ops = discord.create_channel(discord.create_guild("ops"), "ops-alerts")
    webhook = discord.create_webhook(ops, "Alertmanager")
    started = time.monotonic()
    with stack.running_stack(
        tmp_path,
        target.address,
        stack.DISCARD_URL,  # LLMBotDown has no heal label: the bot's route stays unused
        token_file,
        {**stack.FAST_INTERVALS, "alert_for": "0s"},
        discord_url=webhook,
    ) as (_prometheus, alertmanager):
        instance = f"on {target.address}"

        async def page() -> WebhookMessage | None:
            return _posted(discord, f"🔴 PAGE · FIRING: LLMBotDown {instance}")

        firing = await eventually(page, "the LLMBotDown page reaches the ops channel", 45, 0.2)
        fired_after = time.monotonic() - started
        alert = await _alertmanager_alert(alertmanager.url, "LLMBotDown")
        assert alert is not None
        annotations = alert["annotations"]

        target.healthy = True
        healthy_at = time.monotonic()

        async def resolved() -> WebhookMessage | None:
            return _posted(discord, f"✅ RESOLVED: LLMBotDown {instance}")

        cleared = await eventually(resolved, "the resolved page reaches the ops channel", 45, 0.2)
        resolved_after = time.monotonic() - healthy_at

    print(f"\npage after {fired_after:.1f} s; resolved {resolved_after:.1f} s after recovery")
    for message, colour in ((firing, FIRING_RED), (cleared, RESOLVED_GREEN)):
        (embed,) = message.embeds
        assert message.channel_id == ops
        assert embed["color"] == colour
        description = embed["description"]
        assert f"**{annotations['summary']}**" in description
        assert f"📖 Runbook: {annotations['runbook_url']}" in description
        assert annotations["runbook_url"].endswith("#llmbotdown")
        assert "`critical`" in description
    assert "· since " in firing.embeds[0]["description"]
    assert "· resolved " in cleared.embeds[0]["description"]
    # What Discord would have refused never reached the channel.
    assert discord.spec_violations == []
    assert all(m.channel_id == ops for m in discord.webhook_messages)
