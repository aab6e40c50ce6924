"""Answers queued questions once the model can take them again; tells users about the rest."""

from __future__ import annotations

import asyncio
import logging

from bot.chat.models import message_from_payload
from bot.chat.pipeline import ChatPipeline
from bot.llm.errors import CircuitOpen, LLMError, QuotaExhausted
from bot.resilience.queue import MessageQueue, QueuedItem

__all__ = ["QueueWorker"]

log = logging.getLogger(__name__)

# A refusal that names no wait (a half-open breaker busy with its probe) is retried after this,
# so the worker never spins.
MIN_DEFER_S = 1.0


class QueueWorker:
    """One loop: wait until something is due, drop what expired, answer what is due."""

    def __init__(self, queue: MessageQueue, pipeline: ChatPipeline) -> None:
        self.queue = queue
        self.pipeline = pipeline

    async def run(self) -> None:
        while True:
            await self.queue.wait_until_due(timeout_s=self.queue.retry_interval_s)
            await self.run_once()

    async def run_once(self) -> None:
        """One pass: notify the expired, then attempt one batch of due questions."""
        for item in await self.queue.expire():
            await self.pipeline.notify_dropped(item.payload, "expired")
        for item in self.queue.due():
            await self._attempt(item)

    async def _attempt(self, item: QueuedItem) -> None:
        # Every leased item ends in mark_answered, mark_failed or defer (see MessageQueue.due).
        try:
            msg = message_from_payload(item.payload)
        except (KeyError, TypeError, ValueError):
            # Nobody to tell: it goes after max attempts like any failing entry.
            log.error("queue entry %s is unreadable", item.id)
            await self.queue.mark_failed(item)
            return
        if self.pipeline.answers.is_final(msg.message_id):
            # Answered already: a delete after answering failed and the item came back (a
            # restart), or another path answered it. Never a second answer.
            self.pipeline.answers.count_duplicate("queue")
            await self.queue.mark_answered(item)
            return
        try:
            await self.pipeline.answer_queued(msg, item.age_s(self.queue.now()))
        except (QuotaExhausted, CircuitOpen) as exc:
            # No call was made: waiting costs no attempt.
            await self.queue.defer(item, max(MIN_DEFER_S, exc.retry_after_s or 0.0))
        except LLMError as exc:
            self.pipeline.record_error("gemini")
            log.warning("queued question failed again: %s", exc.kind)
            if not await self.queue.mark_failed(item, exc.retry_after_s):
                await self.pipeline.notify_dropped(item.payload, "failed")
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug of ours, as in ChatPipeline.handle: counted as an internal error.
            self.pipeline.record_error("internal")
            log.exception("answering a queued question failed")
            if not await self.queue.mark_failed(item):
                await self.pipeline.notify_dropped(item.payload, "failed")
        else:
            await self.queue.mark_answered(item)
