"""The websocket gateway: HELLO/IDENTIFY/READY, heartbeats, RESUME with replay, shard routing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from bot.emulator.discord import payloads
from bot.emulator.discord.ids import shard_for_guild
from bot.emulator.discord.messages import without_content
from bot.emulator.discord.payloads import Intent
from bot.emulator.discord.records import Notifier
from bot.emulator.discord.state import DiscordState

__all__ = ["GatewayServer", "GatewaySession"]

JSON = dict[str, Any]
_LOG = logging.getLogger(__name__)

_DISPATCH, _HEARTBEAT, _IDENTIFY, _PRESENCE, _VOICE = 0, 1, 2, 3, 4
_RESUME, _RECONNECT, _REQUEST_MEMBERS, _INVALID_SESSION, _HELLO, _ACK = 6, 7, 8, 9, 10, 11
_HEARTBEAT_INTERVAL_MS = 41_250
# Close codes after which Discord forgets the session (a client going away for good).
_SESSION_ENDING_CLOSES = {1000, 1001}
_NOT_AUTHENTICATED, _AUTH_FAILED, _ALREADY_AUTHENTICATED = 4003, 4004, 4005
_UNKNOWN_OPCODE, _DECODE_ERROR, _INVALID_SHARD = 4001, 4002, 4010
_DISALLOWED_INTENTS = 4014


def _dumps(payload: JSON) -> str:
    return json.dumps(payload, separators=(",", ":"))


class _Connection:
    """One websocket: an ordered outbound queue, optionally zlib-stream compressed."""

    def __init__(
        self, ws: web.WebSocketResponse, request: web.Request, *, zlib_stream: bool
    ) -> None:
        self.ws = ws
        self.request = request
        # One compressor for the connection's lifetime: zlib-stream is a single stream.
        self._deflate = zlib.compressobj() if zlib_stream else None
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[None]]] = asyncio.Queue()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        self.closed = False

    def send(self, payload: JSON) -> asyncio.Future[None]:
        """Queue a payload; the future resolves once it is written (or the socket is gone)."""
        return self.send_text(_dumps(payload))

    def send_text(self, text: str) -> asyncio.Future[None]:
        """Queue an already serialised payload."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.closed:
            future.set_result(None)
        else:
            self._queue.put_nowait((text, future))
        return future

    async def _write_loop(self) -> None:
        while True:
            text, future = await self._queue.get()
            try:
                if self._deflate is not None:
                    data = self._deflate.compress(text.encode()) + self._deflate.flush(
                        zlib.Z_SYNC_FLUSH
                    )
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                self.closed = True
            finally:
                if not future.done():
                    future.set_result(None)

    async def close(self, code: int | None) -> None:
        """Close with a close code, or drop the TCP connection when ``code`` is None."""
        self.closed = True
        if code is None:
            if (transport := self.request.transport) is not None:
                transport.abort()
            return
        with contextlib.suppress(ConnectionError, RuntimeError, asyncio.TimeoutError):
            await self.ws.close(code=code, message=b"closed by the emulator")

    async def stop(self) -> None:
        """Stop the writer and resolve every payload still queued."""
        self.closed = True
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_result(None)


@dataclass(eq=False)
class GatewaySession:
    """A gateway session: one shard's sequence numbers and the dispatches kept for RESUME."""

    session_id: str
    shard_id: int
    shard_count: int
    intents: int
    replay: deque[tuple[int, str]]
    seq: int = 0
    evicted_upto: int = 0
    connection: _Connection | None = None
    ready: bool = False
    dispatched: Counter[str] = field(default_factory=Counter)

    def dispatch(self, event: str, data: JSON, *, replayable: bool = True) -> asyncio.Future[None]:
        """Send a dispatch now, or keep it for the RESUME of a reconnecting client."""
        self.seq += 1
        # Serialised now, so a replay after RESUME shows the event as it was, not later edits.
        text = _dumps({"op": _DISPATCH, "t": event, "s": self.seq, "d": data})
        if replayable:
            if self.replay.maxlen is not None and len(self.replay) == self.replay.maxlen:
                self.evicted_upto = self.replay[0][0]
            self.replay.append((self.seq, text))
        self.dispatched[event] += 1
        if self.connection is not None:
            return self.connection.send_text(text)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class GatewayServer:
    """Serves ``/gateway`` and routes dispatches to the sessions of the right shards."""

    def __init__(
        self,
        state: DiscordState,
        notifier: Notifier,
        *,
        token: str,
        application_id: int,
        url: Callable[[], str],
        replay_limit: int = 1000,
        max_concurrency: int = 1,
        identify_interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._state = state
        # Discord's identify buckets (shard_id % max_concurrency, one IDENTIFY per bucket per
        # 5 s), enforced only when identify_interval_s is set.
        self.max_concurrency = max(1, max_concurrency)
        self._identify_interval_s = identify_interval_s
        self._clock = clock
        self._bucket_last: dict[int, float] = {}
        # IDENTIFYs refused for coming too early in their bucket, per shard.
        self.identify_rate_limited: Counter[int] = Counter()
        self._notifier = notifier
        self._token = token
        self._application_id = application_id
        self._url = url
        self._replay_limit = replay_limit
        # Intent bits the application may not use (its privileged intents switched off on the
        # developer portal): an IDENTIFY asking for any of them is closed with 4014.
        self.disallowed_intents = 0
        self._sessions: dict[str, GatewaySession] = {}
        self._connections: set[_Connection] = set()
        self.identifies: Counter[int] = Counter()
        self.resumes: Counter[int] = Counter()
        self.invalid_sessions = 0
        self.compression_log: deque[str] = deque(maxlen=1000)

    # Routing

    @property
    def sessions(self) -> list[GatewaySession]:
        """Every live session (connected or waiting for a RESUME)."""
        return list(self._sessions.values())

    def is_ready(self, shard_count: int) -> bool:
        """Whether every shard has a connected session that received READY and its guilds."""
        return all(
            any(
                s.ready and s.connection is not None
                for s in self._sessions.values()
                if s.shard_id == shard
            )
            for shard in range(shard_count)
        )

    def dispatch(
        self,
        event: str,
        data: JSON,
        *,
        guild_id: int | None,
        intent: Intent | None = None,
        content_visible: bool = True,
    ) -> list[asyncio.Future[None]]:
        """Send an event to the shard owning ``guild_id`` (shard 0 for DMs), honouring intents."""
        futures = []
        for session in self._sessions.values():
            shard = 0 if guild_id is None else shard_for_guild(guild_id, session.shard_count)
            if session.shard_id != shard or (intent is not None and not session.intents & intent):
                continue
            payload = data
            if not content_visible and not session.intents & Intent.MESSAGE_CONTENT:
                payload = without_content(data)
            futures.append(session.dispatch(event, payload))
        return futures

    def dispatch_guild_create(self, guild_id: int) -> list[asyncio.Future[None]]:
        """Send GUILD_CREATE for a guild that appeared while clients are connected."""
        return [
            session.dispatch(
                "GUILD_CREATE", self.guild_create_payload(session, guild_id, newly_joined=True)
            )
            for session in self._sessions.values()
            if session.shard_id == shard_for_guild(guild_id, session.shard_count)
        ]

    def has_identified(self) -> bool:
        """Whether any client ever identified (dispatching before that is a test mistake)."""
        return sum(self.identifies.values()) > 0

    # Fault injection

    async def disconnect(self, shard: int, code: int | None) -> int:
        """Close the connections of a shard (``code=None`` drops TCP); sessions stay resumable."""
        targets = [s for s in self._sessions.values() if s.shard_id == shard and s.connection]
        for session in targets:
            connection, session.connection = session.connection, None
            assert connection is not None
            await connection.close(code)
        return len(targets)

    async def end_sessions(self, shard: int, code: int = 4000) -> int:
        """Forget a shard's sessions and close their connections (as when Discord's session
        expires): the client's RESUME gets INVALID_SESSION, so it identifies afresh and gets a
        new READY. Events dispatched before then reach no session."""
        ended = [s for s in self._sessions.values() if s.shard_id == shard]
        for session in ended:
            self._sessions.pop(session.session_id, None)
            connection, session.connection = session.connection, None
            if connection is not None:
                await connection.close(code)
        return len(ended)

    def request_reconnect(self, shard: int) -> int:
        """Send RECONNECT (op 7) to a shard's connections; clients then resume."""
        count = 0
        for session in self._sessions.values():
            if session.shard_id == shard and session.connection is not None:
                session.connection.send({"op": _RECONNECT, "d": None, "s": None, "t": None})
                count += 1
        return count

    async def close_all(self) -> None:
        """Close every connection (server shutdown)."""
        connections = list(self._connections)
        await asyncio.gather(*(c.close(1001) for c in connections))
        await asyncio.gather(*(c.stop() for c in connections))

    # The websocket protocol

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one gateway websocket connection."""
        if request.query.get("encoding", "json") != "json":
            return _refuse("the emulator only speaks encoding=json")
        compress = request.query.get("compress", "")
        if compress not in ("", "zlib-stream"):
            return _refuse(
                f"compress={compress} is not supported: the emulator speaks zlib-stream "
                "(hikari picks zstd-stream only when backports.zstd is installed)"
            )
        self.compression_log.append(compress or "none")
        ws = web.WebSocketResponse(compress=False, max_msg_size=0, timeout=2.0)
        await ws.prepare(request)
        connection = _Connection(ws, request, zlib_stream=compress == "zlib-stream")
        self._connections.add(connection)
        connection.send(
            {
                "op": _HELLO,
                "d": {"heartbeat_interval": _HEARTBEAT_INTERVAL_MS},
                "s": None,
                "t": None,
            }
        )
        session: GatewaySession | None = None
        try:
            async for message in ws:
                if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                try:
                    payload = json.loads(message.data)
                except ValueError:
                    await connection.close(_DECODE_ERROR)
                    break
                session = await self._on_payload(connection, session, payload)
                if connection.closed:
                    break
        finally:
            self._connections.discard(connection)
            await connection.stop()
            if session is not None and session.connection is connection:
                session.connection = None
                if ws.close_code in _SESSION_ENDING_CLOSES:
                    self._sessions.pop(session.session_id, None)
            self._notifier.notify()
        return ws

    async def _on_payload(
        self, connection: _Connection, session: GatewaySession | None, payload: JSON
    ) -> GatewaySession | None:
        op, data = payload.get("op"), payload.get("d")
        if op == _HEARTBEAT:
            connection.send({"op": _ACK, "d": None, "s": None, "t": None})
        elif op == _IDENTIFY:
            if session is not None:
                await connection.close(_ALREADY_AUTHENTICATED)
                return session
            return await self._identify(connection, data or {})
        elif op == _RESUME:
            return await self._resume(connection, data or {})
        elif session is None and op in (_PRESENCE, _VOICE, _REQUEST_MEMBERS):
            await connection.close(_NOT_AUTHENTICATED)
        elif op == _REQUEST_MEMBERS and session is not None:
            self._send_member_chunk(session, data or {})
        elif op not in (_PRESENCE, _VOICE):
            await connection.close(_UNKNOWN_OPCODE)
        return session

    async def _identify(self, connection: _Connection, data: JSON) -> GatewaySession | None:
        if data.get("token") != self._token:
            await connection.close(_AUTH_FAILED)
            return None
        if int(data.get("intents", 0)) & self.disallowed_intents:
            await connection.close(_DISALLOWED_INTENTS)
            return None
        shard_id, shard_count = data.get("shard") or [0, 1]
        if not 0 <= shard_id < shard_count:
            await connection.close(_INVALID_SHARD)
            return None
        if not self._identify_allowed(shard_id):
            # Discord answers an IDENTIFY over the bucket's rate with INVALID_SESSION (not
            # resumable); the client waits and identifies again.
            self.identify_rate_limited[shard_id] += 1
            connection.send({"op": _INVALID_SESSION, "d": False, "s": None, "t": None})
            self._notifier.notify()
            return None
        # A new IDENTIFY for a shard replaces the old session, as a restarted bot would.
        for stale in [
            s
            for s in self._sessions.values()
            if s.shard_id == shard_id and s.shard_count == shard_count
        ]:
            self._sessions.pop(stale.session_id)
        session = GatewaySession(
            session_id=uuid.uuid4().hex,
            shard_id=shard_id,
            shard_count=shard_count,
            intents=int(data.get("intents", 0)),
            replay=deque(maxlen=self._replay_limit),
            connection=connection,
        )
        self._sessions[session.session_id] = session
        self.identifies[shard_id] += 1
        guild_ids = [g for g in self._state.guilds if shard_for_guild(g, shard_count) == shard_id]
        last = session.dispatch("READY", self._ready_payload(session, guild_ids))
        for guild_id in guild_ids:
            last = session.dispatch("GUILD_CREATE", self.guild_create_payload(session, guild_id))
        # READY and the GUILD_CREATEs are written in order, so the last one done means all are.
        await last
        session.ready = True
        self._notifier.notify()
        return session

    def _identify_allowed(self, shard_id: int) -> bool:
        """One IDENTIFY per bucket per interval (when enforced); records the accepted one."""
        if self._identify_interval_s is None:
            return True
        bucket = shard_id % self.max_concurrency
        now = self._clock()
        last = self._bucket_last.get(bucket)
        if last is not None and now - last < self._identify_interval_s:
            return False
        self._bucket_last[bucket] = now
        return True

    async def _resume(self, connection: _Connection, data: JSON) -> GatewaySession | None:
        if data.get("token") != self._token:
            await connection.close(_AUTH_FAILED)
            return None
        session = self._sessions.get(str(data.get("session_id")))
        seq = int(data.get("seq") or 0)
        if session is None or seq < session.evicted_upto or seq > session.seq:
            # Unknown or too old to replay: tell the client to identify afresh.
            self.invalid_sessions += 1
            connection.send({"op": _INVALID_SESSION, "d": False, "s": None, "t": None})
            self._notifier.notify()
            return None
        if session.connection is not None and session.connection is not connection:
            await session.connection.close(4000)
        session.connection = connection
        for number, text in session.replay:
            if number > seq:
                connection.send_text(text)
        resumed = session.dispatch("RESUMED", {"_trace": ["discord-emulator"]}, replayable=False)
        self.resumes[session.shard_id] += 1
        await resumed
        self._notifier.notify()
        return session

    def _ready_payload(self, session: GatewaySession, guild_ids: list[int]) -> JSON:
        return {
            "v": 10,
            "user": payloads.own_user(self._state.bot_id, str(self._state.bot_user["username"])),
            "guilds": [{"id": str(g), "unavailable": True} for g in guild_ids],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self._url(),
            "shard": [session.shard_id, session.shard_count],
            "application": {"id": str(self._application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "_trace": ["discord-emulator"],
        }

    def guild_create_payload(
        self, session: GatewaySession, guild_id: int, *, newly_joined: bool = False
    ) -> JSON:
        """Return a guild's GUILD_CREATE data as this session may see it."""
        # Without GUILD_PRESENCES Discord sends only the bot's own member; the rest come by chunks.
        return self._state.guild_create_payload(
            guild_id,
            all_members=bool(session.intents & Intent.GUILD_PRESENCES),
            newly_joined=newly_joined,
        )

    def _send_member_chunk(self, session: GatewaySession, data: JSON) -> None:
        guild = self._state.guilds.get(int(data.get("guild_id", 0)))
        if guild is None:
            return
        wanted = {int(u) for u in data.get("user_ids") or []}
        query = str(data.get("query") or "").lower()
        members = [
            self._state.member_payload(guild.id, user_id)
            for user_id, member in guild.members.items()
            if (not wanted or user_id in wanted)
            and str(member.user["username"]).lower().startswith(query)
        ]
        limit = int(data.get("limit") or 0)
        chunk = {
            "guild_id": str(guild.id),
            "members": members[:limit] if limit else members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [str(u) for u in wanted - set(guild.members)],
            "presences": [],
        }
        if "nonce" in data:
            chunk["nonce"] = data["nonce"]
        session.dispatch("GUILD_MEMBERS_CHUNK", chunk)


def _refuse(reason: str) -> web.Response:
    _LOG.warning("refused a gateway connection: %s", reason)
    return web.json_response({"message": reason, "code": 0}, status=400)
