"""The error_rate heal's override follows the alert's scope: fleet-wide for an alert without an
`instance` label, this process's for one naming an instance (docs/runbooks.md, "Degradation
overrides in a fleet")."""

from __future__ import annotations

import json

import pytest

from bot.healing.payload import Alert
from bot.healing.remedies import ErrorRateRemedy
from bot.healing.testing import sample_alert
from bot.resilience.degradation import DegradationLevel


class Controls:
    """The verbs ErrorRateRemedy uses, recording each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool]] = []

    def override_degradation(
        self, source: str, level: DegradationLevel, reason: str, *, fleet_wide: bool = False
    ) -> None:
        self.calls.append(("override", source, fleet_wide))

    def clear_degradation(self, source: str, *, fleet_wide: bool = False) -> None:
        self.calls.append(("clear", source, fleet_wide))

    async def reset_model_client(self) -> None:
        self.calls.append(("reset", "gemini", False))


def _alert(instance: str | None, status: str = "firing") -> Alert:
    raw = sample_alert(heal="error_rate", instance=instance, status=status)
    return Alert.model_validate_json(json.dumps(raw))


@pytest.mark.parametrize(("instance", "fleet_wide"), [(None, True), ("bot-a:9464", False)])
async def test_the_override_follows_the_alerts_scope(
    instance: str | None, fleet_wide: bool
) -> None:
    controls = Controls()
    remedy = ErrorRateRemedy(controls)  # type: ignore[arg-type]
    applied = await remedy.apply(_alert(instance))
    assert applied.ok and ("on every process" in applied.detail) == fleet_wide
    await remedy.revert(_alert(instance, status="resolved"))
    assert controls.calls == [
        ("override", "heal:error_rate", fleet_wide),
        ("reset", "gemini", False),
        ("clear", "heal:error_rate", fleet_wide),
    ]
