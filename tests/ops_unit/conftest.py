"""Fixtures of the ops unit tests: the OTLP receiver, fake component figures, a Telemetry."""

from __future__ import annotations

from tests.ops_unit.otlp_receiver import otlp_receiver

__all__ = ["otlp_receiver"]
