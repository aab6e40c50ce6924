"""Wiring of the fleet's answer-later queue and idempotency record (REDIS_URL set).

Without Redis the app keeps `MessageQueue` and `AnswerLedger` on SQLite, unchanged. With it,
`FleetQueue` (bot/resilience/fleet_queue.py, a Redis stream with a consumer group) and
`FleetAnswerLedger` (bot/store/redis_answered.py, SET NX guards) replace them; both keep their
local SQLite store for what Redis cannot take while it is away. `run` is their background pass:
a heartbeat (the record's owner is alive), the queue's touch / hand-over / reclaim, then the
orphans: questions a process that died had accepted but neither answered nor queued (in flight
at a kill -9), taken over through the record and queued here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.config import Settings
from bot.resilience.fleet_queue import FleetQueue
from bot.store import SqliteStore
from bot.store.redis_answered import FleetAnswerLedger
from bot.store.redis_link import RedisLink, RedisUnavailable
from bot.store.redis_stream import RedisQueueStream

__all__ = ["FleetState"]

log = logging.getLogger(__name__)

ORPHANS_PER_PASS = 100


class FleetState:
    """The fleet's queue and record, and their pass."""

    def __init__(
        self,
        settings: Settings,
        store: SqliteStore,
        redis: RedisLink,
        *,
        clock: Callable[[], float],
        on_store_error: Callable[[], None],
    ) -> None:
        s = settings
        instance = s.heal_instance_label
        self.stream = RedisQueueStream(redis, instance)
        self.answers = FleetAnswerLedger(
            store.namespace("answered"),
            redis,
            instance,
            ttl_s=s.idempotency_ttl_seconds,
            max_records=s.idempotency_max_records,
            alive_ttl_s=s.fleet_queue_claim_idle_seconds,
            clock=clock,
            on_store_error=on_store_error,
        )
        self.queue = FleetQueue(
            store.namespace("queue"),
            self.stream,
            claim_idle_s=s.fleet_queue_claim_idle_seconds,
            is_done=self._is_done,
            max_size=s.queue_max_size,
            max_age_s=s.queue_max_age_seconds,
            max_attempts=s.queue_max_attempts,
            retry_interval_s=s.queue_retry_interval_seconds,
            batch_size=s.queue_batch_size,
            clock=clock,
            on_store_error=on_store_error,
        )

    # Tells the user of an adopted question that could not be queued here (set by the app:
    # `ChatPipeline.notify_dropped`).
    on_unqueued: Callable[[dict[str, Any]], Awaitable[None]] | None = None

    async def prepare(self, instance: str) -> None:
        """This process's name in the fleet (known once the ops server listens): the stream's
        consumer and the records' owner; then a first heartbeat. Call before `queue.load()`."""
        self.stream.consumer = instance
        self.answers.instance = instance
        await self.heartbeat()

    async def _is_done(self, payload: dict[str, Any]) -> bool:
        message_id = payload.get("message_id")
        return isinstance(message_id, int) and await self.answers.take_over(message_id)

    async def heartbeat(self) -> None:
        try:
            await self.answers.heartbeat()
        except RedisUnavailable as exc:
            log.debug("fleet heartbeat: %s", exc)

    async def adopt_orphans(self) -> int:
        """Questions a dead process had accepted but neither answered nor queued: into this
        process's queue (`llmbot_resumed_questions_total{outcome="requeued"}`)."""
        room = min(ORPHANS_PER_PASS, self.queue.max_size - self.queue.size)
        if room <= 0 or not self.queue.redis_ok:
            return 0
        try:
            payloads = await self.answers.orphans(older_than_s=self.queue.claim_idle_s, limit=room)
        except RedisUnavailable as exc:
            log.debug("orphaned questions: %s", exc)
            return 0
        adopted = 0
        for payload in payloads:
            pushed = await self.queue.push(payload, reason="restart", delay_s=0)
            if pushed.accepted:
                adopted += 1
                self.answers.count_resumed("requeued")
            else:
                self.answers.count_resumed("failed")
                log.warning("a question of a stopped process could not be queued here")
                if self.on_unqueued is not None:  # its user is told, not left waiting
                    await self.on_unqueued(payload)
        if adopted:
            log.info("answering %d questions a stopped process had accepted", adopted)
        return adopted

    async def flush(self) -> None:
        """At a stop: the record states Redis missed while it was away, written now (else a
        question answered here could look unanswered to the others, who would answer it)."""
        try:
            await self.answers.flush()
        except RedisUnavailable as exc:
            log.warning("could not write the idempotency record's last states to Redis: %s", exc)

    async def keep_alive(self) -> None:
        """The heartbeat, every third of the claim idle time, from `prepare` on (a slow start,
        waiting for its identify turn, must not look dead to the others), until cancelled."""
        while True:
            await asyncio.sleep(self.queue.pass_interval_s)
            await self.heartbeat()

    async def run(self) -> None:
        """Queue pass and orphans, every third of the claim idle time, until cancelled (the
        heartbeat is `keep_alive`'s)."""
        while True:
            await asyncio.sleep(self.queue.pass_interval_s)
            await self.queue.sync()
            await self.adopt_orphans()
