"""MemoryPersistence: conversations saved to a store namespace and restored; failures reported."""

from __future__ import annotations

from bot.chat.memory import ConversationMemory, Turn
from bot.chat.memory_store import MemoryPersistence
from bot.store import MemoryStore


async def test_saves_and_restores_conversations() -> None:
    async with MemoryStore(cleanup_interval_s=3600) as store:
        memory = ConversationMemory()
        memory.append(10, Turn("user", "hi", 1, 100, 1.0), Turn("model", "hello", None, 101, 2.0))
        assert await MemoryPersistence(memory, store.namespace("conversations"), 60).save() == 1

        restored = ConversationMemory()
        persistence = MemoryPersistence(restored, store.namespace("conversations"), 60)
        assert await persistence.load() == 1
        assert [turn.text for turn in restored.history(10)] == ["hi", "hello"]


async def test_a_failed_save_keeps_memory_and_is_reported() -> None:
    # A store with room for one key: the second conversation cannot be written.
    async with MemoryStore(max_keys=1, cleanup_interval_s=3600) as store:
        reported: list[None] = []
        memory = ConversationMemory()
        memory.append(10, Turn("user", "one", 1, 100, 1.0))
        memory.append(20, Turn("user", "two", 2, 200, 1.0))
        persistence = MemoryPersistence(
            memory,
            store.namespace("conversations"),
            60,
            on_store_error=lambda: reported.append(None),
        )
        assert await persistence.save() == 0
        # The app counts it as llmbot_errors_total{component="store"}; memory is untouched.
        assert len(reported) == 1
        assert [turn.text for turn in memory.history(20)] == ["two"]

        memory.clear(20)
        assert await persistence.save() == 1
        assert len(reported) == 1
