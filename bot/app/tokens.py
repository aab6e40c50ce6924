"""The ops tokens read from settings (or their files), and the quota limiter's JSON state."""

from __future__ import annotations

from typing import Any

from bot.config import ConfigError, Settings
from bot.healing.http import load_token
from bot.store import Namespace

__all__ = ["JsonState", "admin_token", "webhook_token"]


def webhook_token(settings: Settings) -> str | None:
    """The /alerts token: ALERT_WEBHOOK_TOKEN[_FILE] (None: the webhook is off)."""
    try:
        return load_token(
            settings.alert_webhook_token.get_secret_value()
            if settings.alert_webhook_token
            else None,
            settings.alert_webhook_token_file,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def admin_token(settings: Settings) -> str | None:
    """The /debug routes' token: OPS_ADMIN_TOKEN[_FILE], else the alerts webhook's."""
    try:
        token = load_token(
            settings.ops_admin_token.get_secret_value() if settings.ops_admin_token else None,
            settings.ops_admin_token_file,
            name="OPS_ADMIN_TOKEN",
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return token or webhook_token(settings)


class JsonState:
    """The quota limiter's state as one JSON value in a store namespace."""

    def __init__(self, namespace: Namespace, key: str) -> None:
        self._ns = namespace
        self._key = key

    async def load(self) -> dict[str, Any] | None:
        value = await self._ns.get_json(self._key)
        return value if isinstance(value, dict) else None

    async def save(self, state: dict[str, Any]) -> None:
        await self._ns.set_json(self._key, state)
