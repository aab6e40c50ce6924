"""Snowflakes, bot tokens and timestamps shaped like Discord's."""

from __future__ import annotations

import base64
import datetime
import secrets
import time

__all__ = [
    "DISCORD_EPOCH_MS",
    "SnowflakeFactory",
    "iso_timestamp",
    "make_bot_token",
    "shard_for_guild",
    "snowflake_time",
]

DISCORD_EPOCH_MS = 1_420_070_400_000


class SnowflakeFactory:
    """Hands out strictly increasing snowflakes whose timestamp is the current time."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        """Return a new snowflake, larger than every earlier one."""
        now_ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        # Worker/process bits set to 1 so ids look real; the low 12 bits absorb bursts.
        candidate = (now_ms << 22) | (1 << 17) | (1 << 12)
        self._last = max(candidate, self._last + 1)
        return self._last


def snowflake_time(snowflake: int) -> datetime.datetime:
    """Return the creation time encoded in a snowflake."""
    ms = (snowflake >> 22) + DISCORD_EPOCH_MS
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)


def iso_timestamp(when: datetime.datetime | None = None) -> str:
    """Format a time the way Discord does (ISO 8601 with microseconds and +00:00)."""
    moment = when or datetime.datetime.now(tz=datetime.UTC)
    return moment.astimezone(datetime.UTC).isoformat(timespec="microseconds")


def make_bot_token(user_id: int) -> str:
    """Return a token whose first segment is base64 of the user id, as hikari requires."""
    first = base64.b64encode(str(user_id).encode()).decode()
    # Discord omits padding; hikari re-pads with len % 4 '=' which only works for some
    # lengths, so keep the padding whenever stripping it would make the id unreadable.
    stripped = first.rstrip("=")
    if len(stripped) % 4 in (0, 2):
        first = stripped
    return f"{first}.{secrets.token_urlsafe(5)}.{secrets.token_urlsafe(27)}"


def shard_for_guild(guild_id: int, shard_count: int) -> int:
    """Return the shard that receives a guild's events (Discord's routing formula)."""
    return (guild_id >> 22) % max(shard_count, 1)
