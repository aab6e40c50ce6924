"""The memory heal's figures: bytes freed by the owners' own accounting, never negative."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.healing.controls import Freed
from bot.healing.payload import Alert
from bot.healing.remedies import MemoryRemedy
from bot.healing.testing import sample_alert


class Controls:
    """Just the memory verbs of BotControls, returning what a test chose."""

    def __init__(self, cache: Freed, idle: Freed) -> None:
        self.cache, self.idle = cache, idle

    def clear_response_cache(self) -> Freed:
        return self.cache

    def forget_idle_conversations(self) -> Freed:
        return self.idle

    async def trim_history(self, keep_s: float) -> int:
        return 2

    async def top_allocations(self, limit: int) -> list[tuple[str, int]]:
        return []  # tracemalloc off


ALERT = Alert.model_validate_json(json.dumps(sample_alert()))
counts = st.integers(min_value=0, max_value=10_000)
sizes = st.integers(min_value=-(2**20), max_value=2**40)


# Each example runs a full gc.collect(): a few dozen cover the signs and sizes.
@settings(max_examples=30, deadline=None)
@given(cache_items=counts, cache_bytes=sizes, idle_items=counts, idle_bytes=sizes)
async def test_bytes_freed_is_what_the_owners_held(
    cache_items: int, cache_bytes: int, idle_items: int, idle_bytes: int
) -> None:
    controls = Controls(Freed(cache_items, cache_bytes), Freed(idle_items, idle_bytes))
    result = await MemoryRemedy(controls).apply(ALERT)
    figures = result.figures
    assert result.ok
    assert figures["bytes_freed"] >= 0
    assert figures["bytes_freed"] == max(0, cache_bytes) + max(0, idle_bytes)
    assert figures["cache_bytes_freed"] == max(0, cache_bytes)
    assert figures["conversation_bytes_freed"] == max(0, idle_bytes)
    assert figures["cache_entries_cleared"] == cache_items
    assert figures["conversations_forgotten"] == idle_items
    assert figures["history_trimmed"] == 2
    # The process's RSS is reported beside, as measured, whichever way it moved.
    assert figures["rss_before_bytes"] > 0 and figures["rss_after_bytes"] > 0
    assert "bytes_freed=-" not in result.detail
