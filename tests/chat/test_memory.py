"""Tests for bot.chat.memory: bounded, expiring conversation memory."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from bot.chat.memory import ConversationMemory, MemoryStats, Turn
from tests.fakes import FakeClock


def user(text: str, author: int = 1, message_id: int | None = None) -> Turn:
    return Turn("user", text, author, message_id, 0.0)


def model(text: str, message_id: int | None = None, reply_to: int | None = None) -> Turn:
    return Turn("model", text, None, message_id, 0.0, reply_to=reply_to)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000.0)


def test_history_is_per_conversation_and_in_order(clock: FakeClock) -> None:
    memory = ConversationMemory(clock=clock)
    memory.append(10, user("hi"), model("hello"))
    memory.append(20, user("other channel"))
    memory.append(10, user("again"))
    assert [t.text for t in memory.history(10)] == ["hi", "hello", "again"]
    assert [t.text for t in memory.history(20)] == ["other channel"]
    assert memory.history(30) == []


def test_history_returns_a_copy(clock: FakeClock) -> None:
    memory = ConversationMemory(clock=clock)
    memory.append(1, user("hi"))
    memory.history(1).clear()
    assert len(memory.history(1)) == 1


def test_conversation_expires_after_the_session_timeout(clock: FakeClock) -> None:
    memory = ConversationMemory(session_timeout_s=60, clock=clock)
    memory.append(1, user("hi"))
    clock.advance(59)
    assert len(memory.history(1)) == 1
    clock.advance(1)
    assert memory.history(1) == []
    assert memory.stats().conversations == 0


def test_new_turn_extends_the_session_and_expired_history_is_not_merged(clock: FakeClock) -> None:
    memory = ConversationMemory(session_timeout_s=60, clock=clock)
    memory.append(1, user("one"))
    clock.advance(50)
    memory.append(1, user("two"))
    clock.advance(50)  # 100 s after "one", 50 s after "two"
    assert [t.text for t in memory.history(1)] == ["one", "two"]
    clock.advance(60)
    memory.append(1, user("three"))
    assert [t.text for t in memory.history(1)] == ["three"]


def test_reading_does_not_extend_the_session(clock: FakeClock) -> None:
    memory = ConversationMemory(session_timeout_s=60, clock=clock)
    memory.append(1, user("hi"))
    clock.advance(40)
    memory.history(1)
    clock.advance(20)
    assert memory.history(1) == []


def test_message_cap_drops_oldest_and_no_orphan_model_turn(clock: FakeClock) -> None:
    memory = ConversationMemory(max_messages=4, clock=clock)
    for i in range(3):
        memory.append(1, user(f"q{i}"), model(f"a{i}"))
    # Six turns, cap four: the first exchange goes.
    assert [t.text for t in memory.history(1)] == ["q1", "a1", "q2", "a2"]
    memory.append(1, user("q3"))
    # q1 is dropped for the cap, and a1 would be an answer without its question.
    assert [t.text for t in memory.history(1)] == ["q2", "a2", "q3"]


def test_char_cap_keeps_whole_turns(clock: FakeClock) -> None:
    memory = ConversationMemory(max_chars=10, clock=clock)
    memory.append(1, user("aaaa"), model("bbbb"))
    memory.append(1, user("cccc"))
    assert [t.text for t in memory.history(1)] == ["cccc"]
    assert memory.stats().chars == 4


def test_turn_longer_than_the_char_cap_is_truncated(clock: FakeClock) -> None:
    memory = ConversationMemory(max_chars=10, clock=clock)
    memory.append(1, user("x" * 25, message_id=5))
    (turn,) = memory.history(1)
    assert turn.text == "x" * 10
    assert turn.message_id == 5


def test_model_turns_without_trimming_are_kept(clock: FakeClock) -> None:
    memory = ConversationMemory(clock=clock)
    memory.append(1, model("I was told to post this."))
    assert len(memory.history(1)) == 1


def test_least_recently_active_conversation_is_evicted(clock: FakeClock) -> None:
    memory = ConversationMemory(max_conversations=2, clock=clock)
    memory.append(1, user("one"))
    memory.append(2, user("two"))
    memory.append(1, user("one again"))  # 2 is now the least recently active
    memory.append(3, user("three"))
    assert memory.history(2) == []
    assert len(memory.history(1)) == 2
    assert len(memory.history(3)) == 1
    assert memory.stats() == MemoryStats(
        conversations=2,
        turns=3,
        chars=len("one") + len("one again") + len("three"),
        largest_conversation_chars=len("one") + len("one again"),
        approx_bytes=memory.stats().approx_bytes,
    )


def test_clear_forgets_one_conversation(clock: FakeClock) -> None:
    memory = ConversationMemory(clock=clock)
    memory.append(1, user("a"))
    memory.append(2, user("b"))
    assert memory.clear(1) is True
    assert memory.clear(1) is False
    assert memory.history(1) == []
    assert memory.stats().turns == 1


def test_clear_user_removes_their_turns_and_the_answers_to_them(clock: FakeClock) -> None:
    memory = ConversationMemory(clock=clock)
    memory.append(
        1,
        user("alice 1", author=100, message_id=1),
        model("to alice 1", reply_to=1),
        user("bob 1", author=200, message_id=2),
        user("alice 2", author=100, message_id=3),
        model("to bob 1", reply_to=2),  # answers bob although it follows alice's turn
        model("to alice 2", reply_to=3),
        user("alice 3", author=100),
        model("to alice 3 (no link, follows it)"),
        user("bob 2", author=200),
        model("to bob 2"),
    )
    assert memory.clear_user(1, 100) == 6
    assert [t.text for t in memory.history(1)] == ["bob 1", "to bob 1", "bob 2", "to bob 2"]
    assert memory.stats().chars == sum(len(t.text) for t in memory.history(1))
    assert memory.clear_user(1, 100) == 0
    assert memory.clear_user(2, 100) == 0


def test_clear_user_of_the_only_user_drops_the_conversation(clock: FakeClock) -> None:
    memory = ConversationMemory(clock=clock)
    memory.append(1, user("hi", author=7), model("hello"))
    assert memory.clear_user(1, 7) == 2
    assert memory.stats().conversations == 0


def test_find_turn_by_message_id(clock: FakeClock) -> None:
    memory = ConversationMemory(session_timeout_s=60, clock=clock)
    memory.append(1, user("question", message_id=11), model("answer", message_id=12))
    found = memory.find_turn(1, 12)
    assert found is not None and found.text == "answer"
    assert memory.find_turn(1, 13) is None
    assert memory.find_turn(2, 12) is None
    clock.advance(60)
    assert memory.find_turn(1, 11) is None


def test_sweep_removes_only_expired_conversations(clock: FakeClock) -> None:
    memory = ConversationMemory(session_timeout_s=100, clock=clock)
    memory.append(1, user("old"))
    clock.advance(30)
    memory.append(2, user("middle"))
    clock.advance(30)
    memory.append(3, user("new"))
    memory.append(1, user("old but active again"))  # 1 is now the newest
    clock.advance(80)  # 2 is 110 s quiet, 3 and 1 are 80 s quiet
    assert memory.sweep() == 1
    assert memory.history(2) == []
    assert memory.stats().conversations == 2
    clock.advance(20)
    assert memory.sweep() == 2
    assert memory.stats() == MemoryStats(0, 0, 0, 0, 0)


def test_append_without_turns_does_nothing(clock: FakeClock) -> None:
    memory = ConversationMemory(clock=clock)
    memory.append(1)
    assert memory.stats().conversations == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_messages": 0},
        {"max_chars": 0},
        {"session_timeout_s": 0},
        {"max_conversations": -1},
    ],
)
def test_non_positive_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        ConversationMemory(**kwargs)  # type: ignore[arg-type]


def test_turn_is_frozen() -> None:
    turn = user("hi")
    with pytest.raises(AttributeError):
        turn.text = "changed"  # type: ignore[misc]


# --- stateful property test ------------------------------------------------------------------

KEYS = st.sampled_from([1, 2, 3, 4])
USERS = st.sampled_from([100, 200, 300])
MAX_MESSAGES, MAX_CHARS, TIMEOUT, MAX_CONVERSATIONS = 6, 40, 100.0, 3


class MemoryMachine(RuleBasedStateMachine):
    """Random operations; after each, the caps hold and stats match a recomputation."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(1_000.0)
        self.memory = ConversationMemory(
            max_messages=MAX_MESSAGES,
            max_chars=MAX_CHARS,
            session_timeout_s=TIMEOUT,
            max_conversations=MAX_CONVERSATIONS,
            clock=self.clock,
        )
        self.next_message_id = 1

    @rule(
        key=KEYS,
        author=USERS,
        texts=st.lists(st.text(max_size=30), min_size=1, max_size=3),
        answered=st.booleans(),
    )
    def append(self, key: int, author: int, texts: list[str], answered: bool) -> None:
        turns = []
        for text in texts:
            turns.append(Turn("user", text, author, self._new_id(), self.clock()))
            if answered:
                turns.append(Turn("model", text[::-1], None, self._new_id(), self.clock()))
        self.memory.append(key, *turns)
        history = self.memory.history(key)
        # The newest turn survives (possibly truncated) unless trimming emptied the exchange.
        if history:
            assert history[-1].message_id == turns[-1].message_id
            assert self.memory.find_turn(key, turns[-1].message_id or 0) == history[-1]

    def _new_id(self) -> int:
        self.next_message_id += 1
        return self.next_message_id

    @rule(key=KEYS)
    def clear(self, key: int) -> None:
        self.memory.clear(key)
        assert self.memory.history(key) == []

    @rule(key=KEYS, author=USERS)
    def clear_user(self, key: int, author: int) -> None:
        before = len(self.memory.history(key))
        removed = self.memory.clear_user(key, author)
        after = self.memory.history(key)
        assert len(after) == before - removed
        assert all(t.author_id != author for t in after)

    @rule(seconds=st.floats(0, 150))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def sweep(self) -> None:
        held = self.memory.stats().conversations
        swept = self.memory.sweep()
        assert self.memory.stats().conversations == held - swept

    @invariant()
    def caps_hold_and_stats_match_a_recomputation(self) -> None:
        stats = self.memory.stats()
        assert stats.conversations <= MAX_CONVERSATIONS
        assert stats.chars <= MAX_CHARS * MAX_CONVERSATIONS
        # After a sweep, reading histories expires nothing, so they account for everything held.
        self.memory.sweep()
        stats = self.memory.stats()
        histories = [self.memory.history(key) for key in (1, 2, 3, 4)]
        assert stats == self.memory.stats()
        assert stats.turns == sum(len(h) for h in histories)
        assert stats.chars == sum(len(t.text) for h in histories for t in h)
        assert stats.largest_conversation_chars == max(
            (sum(len(t.text) for t in h) for h in histories), default=0
        )
        for history in histories:
            assert len(history) <= MAX_MESSAGES
            assert sum(len(t.text) for t in history) <= MAX_CHARS


MemoryMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None, derandomize=True
)
test_memory_state_machine = MemoryMachine.TestCase
