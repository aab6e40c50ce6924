"""The answer the bot gives instead of calling Gemini, shared by access and attachment checks."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REFUSAL_REASONS", "Refusal"]

REFUSAL_REASONS = (
    "user_blocked",
    "role_blocked",
    "channel_blocked",
    "user_not_allowed",
    "channel_not_allowed",
    "cooldown",
    "video_cooldown",
    "video_too_long",
    "video_hourly_requests",
    "video_daily_requests",
    "video_hourly_tokens",
    "video_daily_tokens",
    "video_degraded",
    "unsupported_attachment",
    "attachment_too_large",
    "attachments_too_large",
    "attachment_not_on_discord",
    "attachment_invalid",
    "image_too_large",
    "video_too_large",
)
"""Every reason the chat modules give, so a metric can start each label at zero."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused request: `reason` is a fixed code (safe as a metric label), `message` the reply."""

    reason: str
    message: str
