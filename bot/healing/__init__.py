"""Self-healing: the Alertmanager webhook, the decisions it leads to, and the action interface."""

from __future__ import annotations

from bot.healing.actions import HEAL_ACTIONS, ActionRegistry, ActionResult, HealAction
from bot.healing.http import alerts_handler, load_token
from bot.healing.payload import Alert, PayloadError, WebhookPayload, parse_payload
from bot.healing.receiver import (
    HEAL_OUTCOMES,
    IGNORE_REASONS,
    ActiveHeal,
    AlertDecision,
    HealEvent,
    HealReceiver,
    HealStats,
    ManualRunError,
    SubmitSummary,
)

__all__ = [
    "HEAL_ACTIONS",
    "HEAL_OUTCOMES",
    "IGNORE_REASONS",
    "ActionRegistry",
    "ActionResult",
    "ActiveHeal",
    "Alert",
    "AlertDecision",
    "HealAction",
    "HealEvent",
    "HealReceiver",
    "HealStats",
    "ManualRunError",
    "PayloadError",
    "SubmitSummary",
    "WebhookPayload",
    "alerts_handler",
    "load_token",
    "parse_payload",
]
