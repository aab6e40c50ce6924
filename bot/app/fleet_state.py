"""Wiring of the fleet's answer-later queue and idempotency record (REDIS_URL set).

Without Redis the app keeps `MessageQueue` and `AnswerLedger` on SQLite, unchanged. With it,
`FleetQueue` (bot/resilience/fleet_queue.py, a Redis stream with a consumer group) and
`FleetAnswerLedger` (bot/store/redis_answered.py, SET NX guards) replace them; both keep their
local SQLite store for what Redis cannot take while it is away. `run` is their background pass:
a heartbeat (the record's owner is alive), then the queue's touch / hand-over / reclaim.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from bot.config import Settings
from bot.resilience.fleet_queue import FleetQueue
from bot.store import SqliteStore
from bot.store.redis_answered import FleetAnswerLedger
from bot.store.redis_link import RedisLink, RedisUnavailable
from bot.store.redis_stream import RedisQueueStream

__all__ = ["FleetState"]

log = logging.getLogger(__name__)


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

    async def run(self) -> None:
        """Heartbeat and queue pass, every third of the claim idle time, until cancelled."""
        while True:
            await self.heartbeat()
            await asyncio.sleep(self.queue.pass_interval_s)
            await self.queue.sync()
