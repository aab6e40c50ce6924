"""Test helpers: Alertmanager 0.25-shaped payloads and a fake action that records its runs.

Shipped with the package (like `aiohttp.test_utils`) so unit, e2e and ops tests share them.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from bot.healing.actions import ActionResult
from bot.healing.payload import Alert

__all__ = ["ConcurrencyProbe", "RecordingAction", "sample_alert", "sample_body", "sample_payload"]


def sample_alert(
    *,
    heal: str | None = "memory",
    instance: str | None = "127.0.0.1:9464",
    status: str = "firing",
    fingerprint: str = "4f6a1c2b3d4e5f60",
    starts_at: str = "2024-05-01T10:00:00.123Z",
    alertname: str = "LLMBotHighMemory",
) -> dict[str, Any]:
    """One alert as Alertmanager 0.25 puts it in a webhook body; None leaves a label out."""
    labels = {"alertname": alertname, "job": "llmbot", "severity": "warning"}
    if heal is not None:
        labels["heal"] = heal
    if instance is not None:
        labels["instance"] = instance
    return {
        "status": status,
        "labels": dict(sorted(labels.items())),
        "annotations": {
            "description": "The bot's resident memory has been above 512 MiB for 5 minutes.",
            "runbook_url": f"https://example.invalid/runbook#{alertname.lower()}",
            "summary": "Bot memory is high",
        },
        "startsAt": starts_at,
        # Alertmanager's zero time marks an alert that has not ended.
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2024-05-01T10:07:30.456Z",
        "generatorURL": (
            "http://127.0.0.1:9090/graph?g0.expr=process_resident_memory_bytes%7Bjob%3D%22"
            "llmbot%22%7D+%3E+5.36870912e%2B08&g0.tab=1"
        ),
        "fingerprint": fingerprint,
    }


def sample_payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    """A webhook body around `alerts` (default: one firing memory alert), keys in AM's order."""
    chosen = list(alerts) or [sample_alert()]
    common = dict(chosen[0]["labels"])
    for alert in chosen[1:]:
        common = {k: v for k, v in common.items() if alert["labels"].get(k) == v}
    alertname = common.get("alertname", "")
    firing = any(alert["status"] == "firing" for alert in chosen)
    return {
        "receiver": "llmbot-heal",
        "status": "firing" if firing else "resolved",
        "alerts": chosen,
        "groupLabels": {"alertname": alertname} if alertname else {},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "version": "4",
        "groupKey": f'{{}}/{{heal=~"^(?:.+)$"}}:{{alertname="{alertname}"}}',
        "truncatedAlerts": 0,
    }


def sample_body(*alerts: dict[str, Any]) -> bytes:
    """`sample_payload()` encoded as Alertmanager sends it."""
    return json.dumps(sample_payload(*alerts)).encode()


@dataclass
class ConcurrencyProbe:
    """Counts runs in progress across the actions sharing it, and the highest count seen."""

    current: int = 0
    highest: int = 0

    def enter(self) -> None:
        """A run started."""
        self.current += 1
        self.highest = max(self.highest, self.current)

    def leave(self) -> None:
        """A run ended."""
        self.current -= 1


@dataclass
class RecordingAction:
    """A fake heal action: records (kind, fingerprint) per run, optionally waits on `gate`."""

    name: str
    fail: bool = False
    gate: asyncio.Event | None = None
    probe: ConcurrencyProbe | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    own: ConcurrencyProbe = field(default_factory=ConcurrencyProbe)

    async def apply(self, alert: Alert) -> ActionResult:
        """Record an apply; fail if `fail` is set."""
        return await self._run("apply", alert)

    async def revert(self, alert: Alert) -> ActionResult:
        """Record a revert."""
        return await self._run("revert", alert)

    async def _run(self, kind: str, alert: Alert) -> ActionResult:
        self.calls.append((kind, alert.fingerprint))
        self.own.enter()
        if self.probe is not None:
            self.probe.enter()
        self.started.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
        finally:
            self.own.leave()
            if self.probe is not None:
                self.probe.leave()
        if self.fail and kind == "apply":
            return ActionResult.failure("fake failure")
        return ActionResult.success(f"fake {kind}", bytes_freed=1024.0)
