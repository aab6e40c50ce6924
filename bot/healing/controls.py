"""`BotControls`: the seam through which heal actions and admin commands change the running bot.

The heal remedies, `/heal` and `/maintenance` act only through this interface, which
`bot.app` implements over its components. Each method is one operator-level verb with a
result that can be reported; none hands out a component, so what a remedy may touch is listed
here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.resilience.degradation import DegradationLevel

__all__ = ["BotControls", "Freed"]


@dataclass(frozen=True, slots=True)
class Freed:
    """What a clean-up dropped: how many items, and the bytes they held by their owner's own
    accounting (never negative, unlike a before/after reading of the process's RSS)."""

    items: int
    bytes: int


class BotControls(Protocol):
    """What may be changed on the running bot, and by whom: remedies and admin commands."""

    # -- memory and disk -----------------------------------------------------------------------

    def clear_response_cache(self) -> Freed:
        """Drop every cached answer; returns how many were held and their bytes."""
        ...

    def forget_idle_conversations(self) -> Freed:
        """Forget conversations past their session timeout; returns how many and their bytes."""
        ...

    async def trim_history(self, keep_s: float) -> int:
        """Drop health-history points older than `keep_s`; returns how many."""
        ...

    async def clean_store(self) -> int:
        """Remove expired store entries and compact the database; returns the entries removed."""
        ...

    # -- how questions are answered ------------------------------------------------------------

    def set_reduced_mode(self, history_messages: int | None, max_output_tokens: int | None) -> None:
        """Cap the context and the answer length (None: the settings' own)."""
        ...

    def override_degradation(
        self, source: str, level: DegradationLevel, reason: str, *, fleet_wide: bool = False
    ) -> None:
        """Hold the degradation level at least at `level` until `clear_degradation(source)`;
        `fleet_wide`: on every process of a fleet (REDIS_URL), this one alone otherwise."""
        ...

    def clear_degradation(self, source: str, *, fleet_wide: bool = False) -> None: ...

    def enter_maintenance(self, reason: str) -> None: ...

    def exit_maintenance(self) -> bool:
        """Leave maintenance mode; False when it was not on."""
        ...

    # -- dependencies --------------------------------------------------------------------------

    async def reset_model_client(self) -> None:
        """Recreate the Gemini client (new connections, new session)."""
        ...

    def probe_model_now(self) -> bool:
        """Let the open breaker let one call through now, and wake the queue to make it; True
        when the breaker was open."""
        ...

    async def reconnect_shard(self, shard_id: int) -> None:
        """Close one Discord shard's websocket so that it reconnects and resumes."""
        ...

    def probe_discord_now(self) -> bool:
        """Let the open Discord REST breaker try the replies waiting behind it now; True when
        it was open."""
        ...

    # -- diagnostics ---------------------------------------------------------------------------

    async def top_allocations(self, limit: int) -> list[tuple[str, int]]:
        """tracemalloc's largest allocation sites now, as ("file:line", bytes); empty while
        tracing is off."""
        ...

    # -- the queue of waiting questions --------------------------------------------------------

    async def drop_expired_questions(self) -> int:
        """Drop queued questions past their age limit, telling each user; returns how many."""
        ...

    @property
    def queue_retry_interval_s(self) -> float: ...

    def set_queue_retry_interval(self, seconds: float) -> None: ...
