"""The idempotency record of a fleet (REDIS_URL set): `AnswerRecord` with its guards in Redis.

Each process keeps its own journal (`AnswerLedger` on its SQLite store: the questions *it*
accepted, with their payloads and recorded replies, resumed after its own restart); Redis holds
the fleet-wide guard of each message id, so that two processes never both answer it:

    {p}:answer:{message id}   "<state>|<owner instance>", and while `accepted` also "|<the
                              question, JSON>" (so that another process can answer it if its
                              owner dies; the same payload the SQLite journal keeps)
                              open: expires after 2 x IDEMPOTENCY_TTL, longer than any
                              question stays journalled (a queued question expires after
                              QUEUE_MAX_AGE, an undelivered reply is given up after
                              IDEMPOTENCY_TTL); terminal (answered, notified): after
                              IDEMPOTENCY_TTL_SECONDS
    {p}:journal               sorted set: accepted message ids by claim time (the orphans'
                              index; removed when queued, delivering or final)
    {p}:alive:{instance}      this process's heartbeat, expiring after the queue's claim idle
                              time: an owner whose key is gone is dead

- `claim`: SET NX (atomic across processes): a second claim of one id anywhere is a duplicate.
- `begin_final`: one script: refused when the record is terminal, or `delivering` by another
  live owner; else this process becomes the one delivering.
- `finish`: the terminal state, with its TTL.
- `take_over` (a queue item reclaimed from a dead process): True when the record is terminal
  already (the item is acknowledged without an answer); else the record becomes
  `queued|<this process>`, so that the dead process, when it restarts, leaves it alone (`load`
  reconciles its journal with Redis: records final, or queued under another owner, are closed
  locally: the stream, not this journal, answers for a queued question).
- `queued`: the queue's stream holds it now (reclaimed there if its holder dies), so it is no
  orphan: `queued|<owner>`.
- `orphans`: accepted questions (neither queued nor being delivered) whose owner's heartbeat
  expired: taken over (`queued|<this process>`) and returned, for this process to queue them.

Redis unreachable: the local journal alone decides (as in one process) and the Redis writes
are kept (bounded) and written by the next `heartbeat` that reaches Redis (and by `flush` at a
stop). Round trips: one per claim (also `claim_for_later`: a question kept for the next start),
queued, begin_final, finish, take_over and orphans pass.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any, Final

from bot.store.answered import _TERMINAL, AnswerLedger, ClaimedForLater, State
from bot.store.base import Namespace
from bot.store.redis_link import RedisLink, RedisUnavailable

__all__ = ["FleetAnswerLedger"]

logger = logging.getLogger(__name__)

# Values: "<state>|<owner>", and "accepted|<owner>|<payload JSON>" (the question, so that
# another process can answer it if its owner dies while answering).
# KEYS: record, journal. ARGV: value, open ttl ms, message id, now.
_CLAIM: Final = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
return 1
"""

# KEYS: record, journal. ARGV: me, open ttl ms, alive key prefix, message id.
# 1: this process delivers now.
_BEGIN: Final = """
local v = redis.call('GET', KEYS[1])
if v then
  local state, owner = string.match(v, '^([^|]*)|([^|]*)')
  if state == 'answered' or state == 'notified' then return 0 end
  if state == 'delivering' and owner ~= ARGV[1]
     and redis.call('EXISTS', ARGV[3] .. owner) == 1 then return 0 end
end
redis.call('SET', KEYS[1], 'delivering|' .. ARGV[1], 'PX', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[4])
return 1
"""

# KEYS: record, journal. ARGV: value, ttl ms (-1: keep the record's, and only if it exists),
# message id.
_SET: Final = """
if ARGV[2] == '-1' then
  if not redis.call('SET', KEYS[1], ARGV[1], 'XX', 'KEEPTTL') then return 0 end
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
"""

# KEYS: record, journal. ARGV: me, message id.
# 1: final already; 0: taken over (or unknown, or being delivered).
_TAKE_OVER: Final = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local state, owner = string.match(v, '^([^|]*)|([^|]*)')
if state == 'answered' or state == 'notified' then return 1 end
if state ~= 'delivering' then
  redis.call('SET', KEYS[1], 'queued|' .. ARGV[1], 'KEEPTTL')
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return 0
"""

# KEYS: journal. ARGV: claimed before (epoch s), limit, me, record key prefix, alive prefix.
# The questions accepted (not queued, not being delivered) by a process that is dead now:
# taken over ("queued|me") and returned (their payloads).
_ORPHANS: Final = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[4] .. id
  local v = redis.call('GET', key)
  local state, owner, payload = nil, nil, nil
  if v then state, owner, payload = string.match(v, '^([^|]*)|([^|]*)|(.*)$') end
  if state ~= 'accepted' or not payload then
    redis.call('ZREM', KEYS[1], id)
  elseif redis.call('EXISTS', ARGV[5] .. owner) == 0 then
    redis.call('SET', key, 'queued|' .. ARGV[3], 'KEEPTTL')
    redis.call('ZREM', KEYS[1], id)
    out[#out + 1] = payload
  end
end
return out
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
        self._claim = link.client.register_script(_CLAIM)
        self._begin = link.client.register_script(_BEGIN)
        self._set = link.client.register_script(_SET)
        self._take_over = link.client.register_script(_TAKE_OVER)
        self._orphans = link.client.register_script(_ORPHANS)
        self._journal = f"{prefix}:journal"
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
        if not await self._claim_in_redis(message_id, payload):
            self.count_duplicate(source)
            return False
        return await super().claim(message_id, payload, source)

    async def _claim_in_redis(self, message_id: int, payload: dict[str, Any]) -> bool:
        """SET NX of `accepted|<me>|<payload>`: False when another claim was first. Redis away:
        True (this process's journal alone decides meanwhile; Redis learns it later)."""
        value = f"accepted|{self.instance}|{json.dumps(payload, separators=(',', ':'))}"
        keys = [self.key(message_id), self._journal]
        args: list[str | int | float] = [value, self._open_ttl_ms, message_id, self._clock()]
        try:
            return bool(await self._link.run("answers", lambda: self._claim(keys=keys, args=args)))
        except RedisUnavailable:
            self._later(message_id, f"accepted|{self.instance}", self._open_ttl_ms)
            return True

    async def begin_final(
        self,
        message_id: int,
        chunks: tuple[str, ...],
        kind: str,
        payload: dict[str, Any] | None = None,
    ) -> bool:
        if message_id in self._done or message_id in self._finalizing:
            return False
        keys = [self.key(message_id), self._journal]
        args: list[str | int] = [
            self.instance,
            self._open_ttl_ms,
            f"{self._prefix}:alive:",
            message_id,
        ]
        try:
            mine = await self._link.run("answers", lambda: self._begin(keys=keys, args=args))
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
        value = f"{state}|{self.instance}"
        keys = [self.key(message_id), self._journal]
        args: list[str | int] = [value, self._ttl_ms, message_id]
        try:
            await self._link.run("answers", lambda: self._set(keys=keys, args=args))
        except RedisUnavailable:
            self._later(message_id, value, self._ttl_ms)
            return
        self._pending.pop(message_id, None)
        self.stats.redis_backlog = len(self._pending)

    async def queued(self, message_id: int) -> None:
        """The queue holds it (the stream, from which a dead holder's questions are
        reclaimed): no longer an orphan to adopt from the journal."""
        await super().queued(message_id)
        keys = [self.key(message_id), self._journal]
        args: list[str | int] = [f"queued|{self.instance}", -1, message_id]
        try:
            await self._link.run("answers", lambda: self._set(keys=keys, args=args))
        except RedisUnavailable as exc:
            logger.debug("could not mark a question queued in Redis: %s", exc)

    async def orphans(self, *, older_than_s: float, limit: int) -> list[dict[str, Any]]:
        """Questions accepted by processes that died before answering or queueing them (their
        heartbeat expired): now owned by this process, which answers them (their payloads).
        Raises RedisUnavailable."""
        args: list[str | int | float] = [
            self._clock() - older_than_s,
            limit,
            self.instance,
            f"{self._prefix}:answer:",
            f"{self._prefix}:alive:",
        ]
        raw = await self._link.run(
            "answers", lambda: self._orphans(keys=[self._journal], args=args)
        )
        payloads: list[dict[str, Any]] = []
        for item in raw:
            try:
                payload = json.loads(item)
            except ValueError:
                continue
            if isinstance(payload, dict):
                payloads.append(payload)
        return payloads

    async def take_over(self, message_id: int) -> bool:
        """A queued question reclaimed from another process: True if it was answered (or told)
        already; else this process owns its record now."""
        if self.is_final(message_id):
            self.count_duplicate("queue")
            return True
        try:
            done = await self._link.run(
                "answers",
                lambda: self._take_over(
                    keys=[self.key(message_id), self._journal], args=[self.instance, message_id]
                ),
            )
        except RedisUnavailable:
            return False  # begin_final decides when it can
        if int(done):
            self.count_duplicate("queue")
            return True
        return False

    async def claim_for_later(
        self, message_id: int, payload: dict[str, Any], source: str
    ) -> ClaimedForLater:
        """A question kept for the next start (it arrived while this process stopped): claimed
        in Redis as an accepted question with its payload, so that if this process does not
        come back within the claim idle time another one answers it (`orphans`), and no other
        process answers it meanwhile."""
        if self.known(message_id):
            self.count_duplicate(source)
            return "duplicate"
        if not await self._claim_in_redis(message_id, payload):
            self.count_duplicate(source)
            return "duplicate"
        kept = await super().claim_for_later(message_id, payload, source)
        if kept == "unstored":  # nothing promised (the user is asked to ask again): let it go
            value = f"notified|{self.instance}"
            keys = [self.key(message_id), self._journal]
            try:
                await self._link.run(
                    "answers",
                    lambda: self._set(keys=keys, args=[value, self._ttl_ms, message_id]),
                )
            except RedisUnavailable:
                self._later(message_id, value, self._ttl_ms)
        return kept

    async def heartbeat(self) -> None:
        """Say this process is alive, and write what Redis missed. Raises RedisUnavailable."""
        client = self._link.client
        alive = f"{self._prefix}:alive:{self.instance}"
        await self._link.run("answers", lambda: client.set(alive, "1", px=self._alive_ttl_ms))
        await self.flush()

    async def flush(self) -> None:
        """Write what Redis missed while it was away (at each heartbeat, and at a stop).
        Raises RedisUnavailable."""
        client = self._link.client
        while self._pending:
            message_id, (value, ttl_ms) = next(iter(self._pending.items()))
            # An open state never overwrites what another process wrote meanwhile.
            nx = value.split("|", 1)[0] not in _TERMINAL
            await self._link.run(
                "answers",
                partial(client.set, self.key(message_id), value, nx=nx, px=ttl_ms),
            )
            self._pending.pop(message_id, None)
            self.stats.redis_backlog = len(self._pending)

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
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            state, owner, *_ = [*text.split("|", 2), ""]
            if state in _TERMINAL or (state == "queued" and owner != self.instance):
                self.taken_over_total += 1
                await AnswerLedger.finish(self, message_id, "notified")
        return len(self._open)

    def _later(self, message_id: int, value: str, ttl_ms: int) -> None:
        self._pending[message_id] = (value, ttl_ms)
        self._pending.move_to_end(message_id)
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
        self.stats.redis_backlog = len(self._pending)
