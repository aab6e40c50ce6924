"""The fleet's answer-later inbox: one Redis stream with one consumer group, in small Lua scripts.

Keys, under a prefix (`llmbot` by default):

    {p}:queue            stream: one entry per queued question (field `item`: the queue's JSON)
    {p}:queue:epoch      a random value written with the group: when it changes (or is gone),
                         Redis lost its data (a restart without persistence) and every process
                         hands the questions it holds over again

Consumer group `workers`; each process is one consumer, named by its instance label. Every
entry is in the pending list (PEL) of exactly one consumer from the moment it is added: `add`
appends it and reads it into the adder's PEL in the same atomic script, so a question is held
by the process that queued it (its shard's process) and never read by two processes at once.

- `add`: refuses (`full`) when the stream already holds `max_size` entries (the fleet-wide
  QUEUE_MAX_SIZE), unless `force` (a hand-over of a question already promised to its user).
- `touch`: for each id this process holds, re-claims it (XCLAIM JUSTID, idle back to 0) if it
  is still in this process's PEL; returns the ids still held. An id not returned was reclaimed
  by another process (or answered by it): the caller lets it go.
- `reclaim`: XAUTOCLAIM of entries idle for `min_idle_ms` (their holder stopped touching them:
  dead), and (`own=True`, at start) this consumer's own pending entries from before a restart.
- `ack`: XACK + XDEL, once the answer or notice is durable.
- `let_go`: at a clean stop, the held entries are marked idle, so another process reclaims them
  at its next pass (a process that restarts under the same name reads back what is left).

Each call is one round trip; errors are `RedisUnavailable` (bot.store.redis_link).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Final

from bot.store.redis_link import RedisLink

__all__ = ["AddResult", "RedisQueueStream", "StreamEntry", "TouchResult"]

GROUP: Final = "workers"

# KEYS: stream, epoch. ARGV: group, consumer, max_size, data, force (0/1), new epoch.
_ADD: Final = """
redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
redis.call('SET', KEYS[2], ARGV[6], 'NX')
local epoch = redis.call('GET', KEYS[2])
if ARGV[5] == '0' and redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return {0, epoch, {}}
end
local id = redis.call('XADD', KEYS[1], '*', 'item', ARGV[4])
local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1000,
                        'STREAMS', KEYS[1], '>')
local entries = {}
if read and read[1] then entries = read[1][2] end
return {1, epoch, entries, id}
"""

# KEYS: stream, epoch. ARGV: group, consumer, ids...
_TOUCH: Final = """
local epoch = redis.call('GET', KEYS[2])
if not epoch then return {'', {}} end
local kept = {}
for i = 3, #ARGV do
  local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if type(p) == 'table' and p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    kept[#kept + 1] = ARGV[i]
  end
end
return {epoch, kept}
"""

# KEYS: stream, epoch. ARGV: group, consumer, min_idle_ms, count, own (0/1).
_RECLAIM: Final = """
local epoch = redis.call('GET', KEYS[2]) or ''
if redis.call('EXISTS', KEYS[1]) == 0 then return {epoch, {}, {}} end
redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0')
local count = tonumber(ARGV[4])
if ARGV[5] == '1' then
  local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', count,
                          'STREAMS', KEYS[1], '0')
  local entries = {}
  if read and read[1] then entries = read[1][2] end
  return {epoch, entries, {}}
end
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', count)
return {epoch, r[2], r[3] or {}}
"""

# KEYS: stream. ARGV: group, ids...
_ACK: Final = """
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
end
return n
"""


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One entry: its stream id and its data (None when it was deleted meanwhile)."""

    id: str
    data: bytes | None


@dataclass(frozen=True, slots=True)
class AddResult:
    accepted: bool  # False: the fleet's queue is full
    epoch: str
    entry_id: str  # "" when refused
    # Entries read into this consumer's PEL with it: normally just the new one.
    entries: tuple[StreamEntry, ...]


@dataclass(frozen=True, slots=True)
class TouchResult:
    epoch: str  # "" when Redis has no epoch: it lost its data
    kept: frozenset[str]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(raw: Any) -> tuple[StreamEntry, ...]:
    out: list[StreamEntry] = []
    for entry in raw or ():
        entry_id = _text(entry[0])
        fields = entry[1] or []
        data: bytes | None = None
        for name, value in zip(fields[::2], fields[1::2], strict=True):
            if _text(name) == "item":
                data = value if isinstance(value, bytes) else str(value).encode()
        out.append(StreamEntry(entry_id, data))
    return tuple(out)


class RedisQueueStream:
    """The stream and its consumer group, seen from one consumer (this process)."""

    def __init__(self, link: RedisLink, consumer: str, prefix: str = "llmbot") -> None:
        self._link = link
        self.consumer = consumer
        self.key = f"{prefix}:queue"
        self._epoch_key = f"{prefix}:queue:epoch"
        client = link.client
        self._add = client.register_script(_ADD)
        self._touch = client.register_script(_TOUCH)
        self._reclaim = client.register_script(_RECLAIM)
        self._ack = client.register_script(_ACK)

    async def add(self, data: bytes, *, max_size: int, force: bool = False) -> AddResult:
        """Append one entry held by this consumer; refused when the stream is full."""
        args: list[str | int | bytes] = [
            GROUP,
            self.consumer,
            max_size,
            data,
            int(force),
            uuid.uuid4().hex,
        ]
        raw = await self._link.run(
            "queue", lambda: self._add(keys=[self.key, self._epoch_key], args=args)
        )
        if int(raw[0]) == 0:
            return AddResult(False, _text(raw[1]), "", ())
        return AddResult(True, _text(raw[1]), _text(raw[3]), _entries(raw[2]))

    async def touch(self, entry_ids: list[str]) -> TouchResult:
        """Keep the entries this consumer still holds from being reclaimed (idle -> 0)."""
        args = [GROUP, self.consumer, *entry_ids]
        raw = await self._link.run(
            "queue", lambda: self._touch(keys=[self.key, self._epoch_key], args=args)
        )
        return TouchResult(_text(raw[0]), frozenset(_text(i) for i in raw[1]))

    async def reclaim(
        self, *, min_idle_ms: int, count: int, own: bool = False
    ) -> tuple[str, tuple[StreamEntry, ...], tuple[str, ...]]:
        """(epoch, entries now held by this consumer, ids that were deleted meanwhile)."""
        args: list[str | int] = [GROUP, self.consumer, min_idle_ms, count, int(own)]
        raw = await self._link.run(
            "queue", lambda: self._reclaim(keys=[self.key, self._epoch_key], args=args)
        )
        return _text(raw[0]), _entries(raw[1]), tuple(_text(i) for i in raw[2])

    async def let_go(self, entry_ids: list[str], idle_ms: int) -> None:
        """Mark held entries idle for `idle_ms` (XCLAIM IDLE JUSTID): at a clean stop, so that
        the other processes reclaim them at their next pass instead of after the idle time."""
        if not entry_ids:
            return
        client = self._link.client
        ids: list[int | bytes | str | memoryview[int]] = list(entry_ids)
        await self._link.run(
            "queue",
            lambda: client.xclaim(
                self.key, GROUP, self.consumer, 0, ids, idle=idle_ms, justid=True
            ),
        )

    async def ack(self, entry_ids: list[str]) -> int:
        """XACK + XDEL: the entries are done for good."""
        if not entry_ids:
            return 0
        args = [GROUP, *entry_ids]
        n: int = await self._link.run("queue", lambda: self._ack(keys=[self.key], args=args))
        return n

    async def length(self) -> int:
        """Entries in the stream: questions queued fleet-wide."""
        n: int = await self._link.run("queue", lambda: self._link.client.xlen(self.key))
        return n
