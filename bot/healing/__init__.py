"""Self-healing: the Alertmanager webhook, the decisions it leads to, and the action interface."""

from __future__ import annotations

from bot.healing.actions import HEAL_ACTIONS, ActionRegistry, ActionResult, HealAction
from bot.healing.http import alerts_handler, load_token
from bot.healing.payload import Alert, PayloadError, WebhookPayload, parse_payload
from bot.healing.receiver import (
    HEAL_OUTCOMES,
    IGNORE_REASONS,
    AlertDecision,
    HealEvent,
    HealReceiver,
    HealStats,
    SubmitSummary,
)

__all__ = [
    "HEAL_ACTIONS",
    "HEAL_OUTCOMES",
    "IGNORE_REASONS",
    "ActionRegistry",
    "ActionResult",
    "Alert",
    "AlertDecision",
    "HealAction",
    "HealEvent",
    "HealReceiver",
    "HealStats",
    "PayloadError",
    "SubmitSummary",
    "WebhookPayload",
    "alerts_handler",
    "load_token",
    "parse_payload",
]
