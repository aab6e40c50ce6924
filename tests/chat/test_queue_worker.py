"""QueueWorker: the errors of answering queued questions are counted like the pipeline's."""

from __future__ import annotations

from typing import Any, cast

from bot.chat.models import IncomingMessage, MessageTarget, message_to_payload
from bot.chat.pipeline import ChatPipeline, ChatStats
from bot.chat.queue_worker import QueueWorker
from bot.llm.errors import LLMUnavailable
from bot.resilience.queue import MessageQueue
from bot.store.answered import AnswerLedger
from tests.fakes import FakeClock


class _Pipeline:
    """What the worker uses of ChatPipeline; answering raises `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.stats = ChatStats()
        self.dropped: list[str] = []
        self.answers = AnswerLedger(None)
        self.attempts = 0

    async def answer_queued(self, msg: IncomingMessage, waited_s: float = 0.0) -> None:
        self.attempts += 1
        raise self.error

    async def notify_dropped(self, payload: dict[str, Any], reason: str) -> None:
        self.dropped.append(reason)

    record_error = ChatPipeline.record_error


def _message() -> IncomingMessage:
    return IncomingMessage(
        message_id=1,
        channel_id=2,
        guild_id=None,
        author_id=3,
        author_name="someone",
        text="a question",
        target=MessageTarget(channel_id=2, message_id=1),
    )


async def _run_once(error: Exception) -> _Pipeline:
    clock = FakeClock(1_000_000.0)
    queue = MessageQueue(None, max_attempts=1, clock=clock)
    await queue.push(message_to_payload(_message()), delay_s=0)
    pipeline = _Pipeline(error)
    await QueueWorker(queue, cast(ChatPipeline, pipeline)).run_once()
    assert pipeline.dropped == ["failed"]  # one attempt: the user is told
    return pipeline


async def test_a_bug_while_answering_a_queued_question_is_an_internal_error() -> None:
    pipeline = await _run_once(RuntimeError("a bug"))
    assert pipeline.stats.errors == {"gemini": 0, "discord": 0, "store": 0, "internal": 1}


async def test_a_model_failure_of_a_queued_question_is_a_gemini_error() -> None:
    pipeline = await _run_once(LLMUnavailable("Gemini answered 503"))
    assert pipeline.stats.errors == {"gemini": 1, "discord": 0, "store": 0, "internal": 0}


async def test_a_queue_entry_already_answered_is_removed_without_a_second_answer() -> None:
    # Issue 16 item 9: the delete after answering failed, a kill -9 brought the entry back, and
    # it was answered a second time. The idempotency record says it was answered.
    queue = MessageQueue(None, clock=FakeClock(1_000_000.0))
    await queue.push(message_to_payload(_message()), delay_s=0)
    pipeline = _Pipeline(RuntimeError("must not be called"))
    assert await pipeline.answers.claim(1, {}, "gateway")
    assert await pipeline.answers.begin_final(1, ("the answer",), "answer")
    await pipeline.answers.finish(1, "answered")

    await QueueWorker(queue, cast(ChatPipeline, pipeline)).run_once()

    assert pipeline.attempts == 0 and pipeline.dropped == []
    assert queue.size == 0 and queue.stats.answered_total == 1
    assert pipeline.answers.stats.duplicates_total["queue"] == 1
