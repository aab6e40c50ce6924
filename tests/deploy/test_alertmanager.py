"""Alertmanager: the config checks, the routing tree, and a live run of routes and inhibitions."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.support import ALERTMANAGER_CONFIG, load_yaml, need_binary

pytestmark = pytest.mark.ops

INSTANCE = "bot:9464"


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


# The one field newer than Debian's Alertmanager 0.25 (compose runs 0.28.1), and what 0.25 takes
# instead; deploy/local_stack.py makes the same change with the real URL.
NEWER_FIELD = "webhook_url_file: /etc/alertmanager/secrets/discord_webhook_url"
FOR_025 = "webhook_url: http://127.0.0.1:9/"


@pytest.fixture(scope="module")
def config_025(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed config with only `webhook_url_file` swapped for `webhook_url` (and the
    template glob made absolute, as the copy lives elsewhere)."""
    text = ALERTMANAGER_CONFIG.read_text(encoding="utf-8")
    assert text.count(NEWER_FIELD) == 1  # the chat receiver reuses it through a YAML alias
    templates = ALERTMANAGER_CONFIG.parent / "templates"
    text = text.replace(NEWER_FIELD, FOR_025).replace(
        "  - templates/*.tmpl", f"  - {templates}/*.tmpl"
    )
    path = tmp_path_factory.mktemp("am025") / "alertmanager.yml"
    path.write_text(text, encoding="utf-8")
    return path


def test_amtool_accepts_the_config(amtool: str, config_025: Path) -> None:
    result = _run([amtool, "check-config", str(config_025)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 templates" in result.stdout


def test_only_webhook_url_file_is_newer_than_025(amtool: str) -> None:
    result = _run([amtool, "check-config", str(ALERTMANAGER_CONFIG)])
    assert result.returncode != 0
    assert "field webhook_url_file not found" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        ({"heal": "memory", "severity": "warning"}, "bot-heal,chat"),
        ({"heal": "api_health", "severity": "critical"}, "bot-heal,pager"),
        ({"heal": "queue", "severity": "info"}, "bot-heal,null"),
        ({"severity": "critical"}, "pager"),
        ({"severity": "warning"}, "chat"),
        ({"severity": "info"}, "null"),
        ({}, "chat"),  # an alert without severity still reaches a person
    ],
)
def test_routes(amtool: str, config_025: Path, labels: dict[str, str], receivers: str) -> None:
    pairs = [f"{key}={value}" for key, value in {"alertname": "LLMBotX", **labels}.items()]
    result = _run([amtool, "config", "routes", "test", f"--config.file={config_025}", *pairs])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receivers


def _duration_s(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(text[:-1]) * units[text[-1]]


def test_heal_route_and_receiver() -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    route = config["route"]
    assert route["group_by"] == ["alertname", "instance"]
    heal = next(r for r in route["routes"] if r["receiver"] == "bot-heal")
    assert heal["matchers"] == ['heal=~".+"']
    assert heal["continue"] is True
    # The 5-minute healing cooldown is Alertmanager's repeat interval on this route.
    assert _duration_s(heal["repeat_interval"]) == 300
    # One group per alert, so a new heal trigger never waits for a running group's interval;
    # test_heal_timing.py holds group_wait and group_interval to the 2-minute budget.
    assert heal["group_by"] == ["..."]
    pager = next(r for r in route["routes"] if r["receiver"] == "pager")
    assert _duration_s(pager["repeat_interval"]) >= 3600

    receivers = {r["name"]: r for r in config["receivers"]}
    (hook,) = receivers["bot-heal"]["webhook_configs"]
    assert hook["url"] == "http://bot:9464/alerts"
    assert hook["send_resolved"] is True
    assert hook["http_config"]["authorization"] == {
        "type": "Bearer",
        "credentials_file": "/etc/alertmanager/secrets/webhook_token",
    }


def test_no_inline_secrets_or_newer_fields() -> None:
    text = ALERTMANAGER_CONFIG.read_text(encoding="utf-8")
    config = load_yaml(ALERTMANAGER_CONFIG)
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            # `timeout` needs Alertmanager 0.28; the tests and the docs target 0.25.
            assert "timeout" not in hook
            assert "credentials" not in hook.get("http_config", {}).get("authorization", {})
    assert "password:" not in text
    assert "api_url:" not in text


def test_inhibitions() -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    rules = config["inhibit_rules"]
    down = next(r for r in rules if r["source_matchers"] == ['alertname="LLMBotDown"'])
    assert down["equal"] == ["instance"]
    assert 'alertname!="LLMBotDown"' in down["target_matchers"]
    severity = next(r for r in rules if r["source_matchers"] == ['severity="critical"'])
    assert severity["target_matchers"] == ['severity="warning"']
    assert severity["equal"] == ["alertname", "instance"]


# --- live ---------------------------------------------------------------------------------------


@dataclass
class Sink:
    """A loopback HTTP server recording the webhook calls it receives."""

    url: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for call in self.calls:
                    if predicate(call):
                        return call
            time.sleep(0.1)
        with self.lock:
            seen = [
                (c["path"], c["body"].get("receiver"), c["body"].get("groupLabels"))
                for c in self.calls
            ]
        raise AssertionError(f"no matching webhook call within {timeout} s; got {seen}")


@pytest.fixture
def sink() -> Iterator[Sink]:
    calls: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            with lock:
                calls.append({"path": self.path, "headers": dict(self.headers), "body": body})
            self.send_response(202)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Sink(f"http://127.0.0.1:{server.server_address[1]}", calls, lock)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def alertmanager(tmp_path: Path, stack: Any, sink: Sink, token_file: Path) -> Iterator[Any]:
    """The committed routes with fast timings, the bot and the humans replaced by the sink."""
    need_binary(stack.ALERTMANAGER_BINARY)
    rendered = stack.render_configs(
        tmp_path / "config",
        "127.0.0.1:9",
        f"{sink.url}/alerts",
        token_file,
        stack.FAST_INTERVALS,
        human_webhook_url=f"{sink.url}/humans",
    )
    with stack.start_alertmanager(rendered.alertmanager, tmp_path, stack.free_port()) as am:
        yield am


def _post_alerts(url: str, alerts: list[dict[str, str]]) -> None:
    body = json.dumps([{"labels": {"instance": INSTANCE, **labels}} for labels in alerts]).encode()
    request = urllib.request.Request(
        f"{url}/api/v2/alerts", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def _alerts(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=10) as response:
        found: list[dict[str, Any]] = json.load(response)
        return found


def _inhibited(url: str, match: dict[str, str], timeout: float = 20.0) -> bool:
    """Whether the alert with these labels becomes inhibited within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for alert in _alerts(url):
            if match.items() <= alert["labels"].items() and alert["status"]["inhibitedBy"]:
                return True
        time.sleep(0.2)
    return False


def test_heal_alert_reaches_the_bot_with_the_token_and_the_humans(
    alertmanager: Any, sink: Sink, token_file: Path
) -> None:
    _post_alerts(
        alertmanager.url,
        [{"alertname": "LLMBotHighMemory", "severity": "warning", "heal": "memory"}],
    )
    heal = sink.wait_for(lambda call: call["path"] == "/alerts")
    assert heal["headers"]["Authorization"] == f"Bearer {token_file.read_text().strip()}"
    assert heal["body"]["version"] == "4"
    assert heal["body"]["receiver"] == "bot-heal"
    assert heal["body"]["alerts"][0]["labels"]["heal"] == "memory"
    # `continue: true`: the same alert goes on to the warning route.
    human = sink.wait_for(lambda call: call["path"] == "/humans")
    assert human["body"]["receiver"] == "chat"
    assert "Authorization" not in human["headers"]


def test_bot_down_inhibits_the_other_alerts_of_its_instance(alertmanager: Any) -> None:
    _post_alerts(
        alertmanager.url,
        [
            {"alertname": "LLMBotDown", "severity": "critical", "job": "discord-llm-bot"},
            {"alertname": "LLMBotQueuePressure", "severity": "warning", "heal": "queue"},
            {"alertname": "LLMBotStoreUnhealthy", "severity": "warning", "instance": "other:9464"},
        ],
    )
    assert _inhibited(alertmanager.url, {"alertname": "LLMBotQueuePressure"})
    # Decided in the same pass: another instance's alert is not held back.
    other = [a for a in _alerts(alertmanager.url) if a["labels"]["instance"] == "other:9464"]
    assert other
    assert not other[0]["status"]["inhibitedBy"]


def test_page_inhibits_the_ticket_of_the_same_alert(alertmanager: Any) -> None:
    _post_alerts(
        alertmanager.url,
        [
            {"alertname": "LLMBotAvailabilityBudgetBurn", "severity": "critical"},
            {"alertname": "LLMBotAvailabilityBudgetBurn", "severity": "warning"},
        ],
    )
    assert _inhibited(alertmanager.url, {"severity": "warning"})
    (page,) = [a for a in _alerts(alertmanager.url) if a["labels"]["severity"] == "critical"]
    assert not page["status"]["inhibitedBy"]
