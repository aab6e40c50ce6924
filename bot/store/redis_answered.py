"""The idempotency record of a fleet (REDIS_URL set): `AnswerRecord` with its guards in Redis.

Each process keeps its own journal (`AnswerLedger` on its SQLite store: the questions *it*
accepted, with their payloads and recorded replies, resumed after its own restart); Redis holds
the fleet-wide guard of each message id, so that two processes never both answer it:

    {p}:answer:{message id}   "<state>|<owner instance>"
                              open (accepted, delivering): expires after 2 x IDEMPOTENCY_TTL,
                              longer than any question stays journalled (a queued question
                              expires after QUEUE_MAX_AGE, an undelivered reply is given up
                              after IDEMPOTENCY_TTL); terminal (answered, notified): after
                              IDEMPOTENCY_TTL_SECONDS
    {p}:alive:{instance}      this process's heartbeat, expiring after the queue's claim idle
                              time: an owner whose key is gone is dead

- `claim`: SET NX (atomic across processes): a second claim of one id anywhere is a duplicate.
- `begin_final`: one script: refused when the record is terminal, or `delivering` by another
  live owner; else this process becomes the one delivering.
- `finish`: the terminal state, with its TTL.
- `take_over` (a queue item reclaimed from a dead process): True when the record is terminal
  already (the item is acknowledged without an answer); else the record becomes
  `queued|<this process>` (the only writer of `queued` in Redis), so that the dead process,
  when it restarts, leaves it alone (`load` reconciles its journal with Redis: records final,
  or taken over by another process, are closed locally).

Redis unreachable: the local journal alone decides (as in one process) and the Redis writes
are kept (bounded) and written by the next `heartbeat` that reaches Redis. Round trips: one per
claim, begin_final and finish.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any, Final

from bot.store.answered import _TERMINAL, AnswerLedger, State
from bot.store.base import Namespace
from bot.store.redis_link import RedisLink, RedisUnavailable

__all__ = ["FleetAnswerLedger"]

logger = logging.getLogger(__name__)

# KEYS: record. ARGV: me, open ttl ms, alive key prefix. 1: this process delivers now.
_BEGIN: Final = """
local v = redis.call('GET', KEYS[1])
if v then
  local state, owner = string.match(v, '^([^|]*)|(.*)$')
  if state == 'answered' or state == 'notified' then return 0 end
  if state == 'delivering' and owner ~= ARGV[1]
     and redis.call('EXISTS', ARGV[3] .. owner) == 1 then return 0 end
end
redis.call('SET', KEYS[1], 'delivering|' .. ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: record. ARGV: me. 1: final already; 0: taken over (or unknown, or being delivered).
_TAKE_OVER: Final = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local state, owner = string.match(v, '^([^|]*)|(.*)$')
if state == 'answered' or state == 'notified' then return 1 end
if state ~= 'delivering' then
  redis.call('SET', KEYS[1], 'queued|' .. ARGV[1], 'KEEPTTL')
end
return 0
"""

MAX_PENDING: Final = 10_000


class FleetAnswerLedger(AnswerLedger):
    """`AnswerLedger` (this process's journal) guarded fleet-wide by Redis; see the module doc."""

    def __init__(
        self,
        store: Namespace | None,
        link: RedisLink,
        instance: str,
        *,
        ttl_s: float = 3600.0,
        max_records: int = 50_000,
        alive_ttl_s: float = 60.0,
        prefix: str = "llmbot",
        clock: Callable[[], float] = time.time,
        on_store_error: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(
            store, ttl_s=ttl_s, max_records=max_records, clock=clock, on_store_error=on_store_error
        )
        self._link = link
        self.instance = instance
        self._prefix = prefix
        self._alive_ttl_ms = max(1, int(alive_ttl_s * 1000))
        self._open_ttl_ms = int(2 * ttl_s * 1000)
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._begin = link.client.register_script(_BEGIN)
        self._take_over = link.client.register_script(_TAKE_OVER)
        # Writes Redis missed (message id -> (value, ttl ms)), oldest first.
        self._pending: OrderedDict[int, tuple[str, int]] = OrderedDict()
        self.taken_over_total = 0  # local records closed because another process took them

    def key(self, message_id: int) -> str:
        return f"{self._prefix}:answer:{message_id}"

    # -- the fleet's guards ----------------------------------------------------------------

    async def claim(self, message_id: int, payload: dict[str, Any], source: str) -> bool:
        if self.known(message_id):
            self.count_duplicate(source)
            return False
        value, client = f"accepted|{self.instance}", self._link.client
        try:
            won = await self._link.run(
                "answers",
                lambda: client.set(self.key(message_id), value, nx=True, px=self._open_ttl_ms),
            )
        except RedisUnavailable:
            self._later(message_id, value, self._open_ttl_ms)
            won = True  # this process's journal alone decides while Redis is away
        if not won:
            self.count_duplicate(source)
            return False
        return await super().claim(message_id, payload, source)

    async def begin_final(
        self,
        message_id: int,
        chunks: tuple[str, ...],
        kind: str,
        payload: dict[str, Any] | None = None,
    ) -> bool:
        if message_id in self._done or message_id in self._finalizing:
            return False
        args: list[str | int] = [self.instance, self._open_ttl_ms, f"{self._prefix}:alive:"]
        try:
            mine = await self._link.run(
                "answers", lambda: self._begin(keys=[self.key(message_id)], args=args)
            )
        except RedisUnavailable:
            self._later(message_id, f"delivering|{self.instance}", self._open_ttl_ms)
            mine = 1
        if not int(mine):
            if message_id in self._open:  # another process answers it: not ours to resume
                await super().finish(message_id, "notified")
            return False
        return await super().begin_final(message_id, chunks, kind, payload)

    async def finish(self, message_id: int, state: State) -> None:
        await super().finish(message_id, state)
        value, client = f"{state}|{self.instance}", self._link.client
        try:
            await self._link.run(
                "answers", lambda: client.set(self.key(message_id), value, px=self._ttl_ms)
            )
        except RedisUnavailable:
            self._later(message_id, value, self._ttl_ms)
            return
        self._pending.pop(message_id, None)

    async def take_over(self, message_id: int) -> bool:
        """A queued question reclaimed from another process: True if it was answered (or told)
        already; else this process owns its record now."""
        if self.is_final(message_id):
            self.count_duplicate("queue")
            return True
        try:
            done = await self._link.run(
                "answers",
                lambda: self._take_over(keys=[self.key(message_id)], args=[self.instance]),
            )
        except RedisUnavailable:
            return False  # begin_final decides when it can
        if int(done):
            self.count_duplicate("queue")
            return True
        return False

    async def heartbeat(self) -> None:
        """Say this process is alive, and write what Redis missed. Raises RedisUnavailable."""
        client = self._link.client
        alive = f"{self._prefix}:alive:{self.instance}"
        await self._link.run("answers", lambda: client.set(alive, "1", px=self._alive_ttl_ms))
        while self._pending:
            message_id, (value, ttl_ms) = next(iter(self._pending.items()))
            # An open state never overwrites what another process wrote meanwhile.
            nx = value.split("|", 1)[0] not in _TERMINAL
            await self._link.run(
                "answers",
                partial(client.set, self.key(message_id), value, nx=nx, px=ttl_ms),
            )
            self._pending.pop(message_id, None)

    async def load(self) -> int:
        """This process's journal, reconciled with Redis: records final in Redis, or taken
        over by another process, are closed here (nothing to resume)."""
        await super().load()
        ids = [r.message_id for r in self.unfinished()]
        if not ids:
            return 0
        client = self._link.client
        try:
            values = await self._link.run(
                "answers", lambda: client.mget([self.key(i) for i in ids])
            )
        except RedisUnavailable as exc:
            logger.warning("could not check the journal against Redis: %s", exc)
            return len(self._open)
        for message_id, raw in zip(ids, values, strict=True):
            if raw is None:
                continue
            state, _, owner = (raw.decode() if isinstance(raw, bytes) else str(raw)).partition("|")
            if state in _TERMINAL or (state == "queued" and owner != self.instance):
                self.taken_over_total += 1
                await AnswerLedger.finish(self, message_id, "notified")
        return len(self._open)

    def _later(self, message_id: int, value: str, ttl_ms: int) -> None:
        self._pending[message_id] = (value, ttl_ms)
        self._pending.move_to_end(message_id)
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
