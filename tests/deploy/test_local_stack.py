"""deploy/local_stack.py: rendered configs keep routes and rules, and the launcher runs for real."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.support import ALERTMANAGER_CONFIG, DEPLOY, PROMETHEUS_DIR, load_yaml, need_binary

pytestmark = pytest.mark.ops

TIMINGS = ("group_wait", "group_interval", "repeat_interval")


def _without_timings(route: dict[str, Any]) -> dict[str, Any]:
    stripped = {key: value for key, value in route.items() if key not in TIMINGS}
    if "routes" in route:
        stripped["routes"] = [_without_timings(child) for child in route["routes"]]
    return stripped


def _timings(route: dict[str, Any]) -> list[dict[str, str]]:
    own = {key: route[key] for key in TIMINGS if key in route}
    return [own, *(t for child in route.get("routes", []) for t in _timings(child))]


def _render(stack: Any, tmp_path: Path, token_file: Path, **kwargs: Any) -> Any:
    return stack.render_configs(
        tmp_path, "127.0.0.1:19464", "http://127.0.0.1:19464/alerts", token_file, **kwargs
    )


def test_rendered_prometheus_config(
    stack: Any, tmp_path: Path, token_file: Path, promtool: str
) -> None:
    rendered = _render(
        stack,
        tmp_path,
        token_file,
        intervals=stack.FAST_INTERVALS,
        alertmanager_target="127.0.0.1:19093",
    )
    config = load_yaml(rendered.prometheus)
    assert config["global"]["scrape_interval"] == "1s"
    assert config["global"]["evaluation_interval"] == "1s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"discord-llm-bot", "alertmanager"}
    assert jobs["discord-llm-bot"]["static_configs"] == [{"targets": ["127.0.0.1:19464"]}]
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["127.0.0.1:19093"]
    rule_files = [Path(f).name for f in config["rule_files"]]
    assert rule_files == ["recording.yml", "alerts.yml", "heal.yml"]
    result = subprocess.run(
        [promtool, "check", "config", str(rendered.prometheus)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_alertmanager_keeps_routes_and_receivers(
    stack: Any, tmp_path: Path, token_file: Path, amtool: str
) -> None:
    rendered = _render(
        stack,
        tmp_path,
        token_file,
        intervals=stack.FAST_INTERVALS,
        human_webhook_url="http://127.0.0.1:1/h",
    )
    committed = load_yaml(ALERTMANAGER_CONFIG)
    config = load_yaml(rendered.alertmanager)
    assert _without_timings(config["route"]) == _without_timings(committed["route"])
    assert config["inhibit_rules"] == committed["inhibit_rules"]
    assert [r["name"] for r in config["receivers"]] == [r["name"] for r in committed["receivers"]]
    # Every timing the committed file sets is shortened; none is added.
    for mine, theirs in zip(_timings(config["route"]), _timings(committed["route"]), strict=True):
        assert set(mine) == set(theirs)
        assert all(mine[key] == stack.FAST_INTERVALS[key] for key in mine)

    receivers = {r["name"]: r for r in config["receivers"]}
    (heal,) = receivers["bot-heal"]["webhook_configs"]
    assert heal["url"] == "http://127.0.0.1:19464/alerts"
    assert heal["http_config"]["authorization"]["credentials_file"] == str(token_file.resolve())
    for name in ("pager", "chat"):
        assert [h["url"] for h in receivers[name]["webhook_configs"]] == ["http://127.0.0.1:1/h"]
    result = subprocess.run(
        [amtool, "check-config", str(rendered.alertmanager)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_timings_stay_without_intervals(
    stack: Any, tmp_path: Path, token_file: Path
) -> None:
    rendered = _render(stack, tmp_path, token_file)
    config = load_yaml(rendered.alertmanager)
    assert _timings(config["route"]) == _timings(load_yaml(ALERTMANAGER_CONFIG)["route"])
    prometheus = load_yaml(rendered.prometheus)
    committed = load_yaml(PROMETHEUS_DIR / "prometheus.yml")["global"]
    assert {**prometheus["global"], "external_labels": committed["external_labels"]} == committed
    assert "alerting" not in prometheus
    # Without a Discord URL pages and chat messages go to a closed loopback port, never off
    # the machine.
    receivers = {r["name"]: r for r in config["receivers"]}
    for name in ("pager", "chat"):
        assert receivers[name]["discord_configs"][0]["webhook_url"] == stack.DISCARD_URL


def test_alert_links_are_written_in(stack: Any, tmp_path: Path, token_file: Path) -> None:
    # Debian's Prometheus runs without expand-external-labels: the copy holds the values.
    default = load_yaml(_render(stack, tmp_path / "a", token_file).prometheus)
    labels = default["global"]["external_labels"]
    assert labels["runbook_base_url"] == stack.DEFAULT_RUNBOOK_BASE_URL
    assert (
        labels["dashboard_base_url"] == stack.DEFAULT_DASHBOARD_BASE_URL == "http://localhost:3000"
    )
    # The default runbook link is this checkout's file, which has a section per alert.
    assert (DEPLOY.parent / "docs" / "runbooks.md").as_uri() == stack.DEFAULT_RUNBOOK_BASE_URL
    assert (DEPLOY.parent / "docs" / "runbooks.md").is_file()

    rendered = _render(
        stack,
        tmp_path / "b",
        token_file,
        alertmanager_target="127.0.0.1:19093",
        runbook_base_url="https://git.test/runbooks.md",
        dashboard_base_url="https://grafana.test",
    )
    config = load_yaml(rendered.prometheus)
    assert config["global"]["external_labels"] == {
        "runbook_base_url": "https://git.test/runbooks.md",
        "dashboard_base_url": "https://grafana.test",
    }
    # The relabelling that keeps them off the alerts stays beside the re-pointed target.
    committed = load_yaml(PROMETHEUS_DIR / "prometheus.yml")["alerting"]
    assert config["alerting"]["alert_relabel_configs"] == committed["alert_relabel_configs"]


def test_alert_for_override(stack: Any, tmp_path: Path, token_file: Path, promtool: str) -> None:
    rendered = _render(stack, tmp_path, token_file, intervals={"alert_for": "0s"})
    alerts = [
        rule
        for path in rendered.rule_files
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert alerts and all(rule["for"] == "0s" for rule in alerts)
    result = subprocess.run(
        [promtool, "check", "rules", *map(str, rendered.rule_files)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_unknown_interval_is_refused(stack: Any, tmp_path: Path, token_file: Path) -> None:
    with pytest.raises(ValueError, match="scrape_intrval"):
        _render(stack, tmp_path, token_file, intervals={"scrape_intrval": "1s"})


def test_a_broken_config_is_reported_with_the_log(stack: Any, tmp_path: Path) -> None:
    need_binary(stack.PROMETHEUS_BINARY)
    config = tmp_path / "broken.yml"
    config.write_text("global: [not, a, mapping]\n", encoding="utf-8")
    with pytest.raises(stack.StackError, match="prometheus exited"):
        stack.start_prometheus(config, tmp_path / "data", stack.free_port(), timeout=20)


def test_command_line_runs_both_until_interrupted(
    stack: Any, tmp_path: Path, token_file: Path
) -> None:
    need_binary(stack.PROMETHEUS_BINARY)
    need_binary(stack.ALERTMANAGER_BINARY)
    prom_port, am_port = stack.free_port(), stack.free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            str(DEPLOY / "local_stack.py"),
            "--bot=127.0.0.1:9",
            f"--prometheus-port={prom_port}",
            f"--alertmanager-port={am_port}",
            f"--token-file={token_file}",
            f"--workdir={tmp_path}",
            "--fast",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "Ctrl-C" in line or not line:
                break
        assert "Ctrl-C" in lines[-1], "".join(lines) + (
            process.stderr.read() if process.stderr else ""
        )
        for port in (prom_port, am_port):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5) as response:
                assert response.status == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    for port in (prom_port, am_port):
        with pytest.raises(urllib.error.URLError, match="refused"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2)
