"""The Discord side of the bot: the hikari gateway, its listeners and the slash commands."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any

import hikari
import lightbulb

from bot.chat.intake import Intake
from bot.chat.models import IncomingMessage, MessageTarget, Reply, Source
from bot.config import (
    DEFAULT_DISCORD_REST_URL,
    ConfigError,
    GatewayRefused,
    ServiceUnavailable,
)
from bot.discord.catchup import CatchUp, CatchupObserver, ChannelMark, SeenChannels
from bot.discord.commands import CommandServices, build_commands
from bot.discord.convert import (
    addresses_bot,
    manages_guild,
    message_source,
    message_to_incoming,
    to_incoming,
)
from bot.discord.delivery import DiscordDelivery, DiscordObserver
from bot.discord.downloads import DEFAULT_CDN_HOSTS, AttachmentFetcher
from bot.discord.shed import ShedNotices
from bot.discord.streaming import StreamingReplies, StreamObserver
from bot.discord.typing import TypingScheduler
from bot.resilience.breaker import CircuitBreaker
from bot.resilience.rest_pace import RestPace
from bot.store import Namespace

__all__ = ["INTENTS", "DiscordGateway", "bot_id_from_token"]

log = logging.getLogger(__name__)

# MESSAGE_CONTENT is privileged: enable it on the Bot page of the developer portal.
INTENTS = (
    hikari.Intents.GUILDS
    | hikari.Intents.GUILD_MESSAGES
    | hikari.Intents.DM_MESSAGES
    | hikari.Intents.MESSAGE_CONTENT
)

# A close code from the 3000-3999 range that Discord treats as resumable (hikari uses it too).
RESUMABLE_CLOSE_CODE = 3000

# Close codes after which Discord will not take this session back, and what to change.
FATAL_CLOSE_HINTS: dict[int, str] = {
    4004: "Discord rejected DISCORD_TOKEN: reset the token on the Bot page of the developer "
    "portal and set the new one",
    4010: "the shard id is invalid for this bot: check its sharding settings",
    4011: "Discord requires sharding for this bot (2,500 servers or more)",
    4012: "the gateway API version is invalid: upgrade the bot",
    4013: "the gateway intents are invalid: upgrade the bot",
    4014: "a privileged intent is not enabled: turn on Message Content on the Bot page of the "
    "developer portal",
}

SHED_FLUSH_TIMEOUT_S = 5.0  # at shutdown, the pending shed notices get this long

RESTARTING_TEXT = "I'm restarting right now, so I can't take new questions. Ask again in a minute."


def fatal_close_line(exc: hikari.GatewayServerClosedConnectionError) -> str:
    """One line for a close Discord will not take back: the code and what to set."""
    code = int(exc.code) if exc.code is not None else 0
    hint = FATAL_CLOSE_HINTS.get(code, "see Discord's gateway close codes")
    return f"Discord closed the gateway for good (close code {code}): {hint}"


def bot_id_from_token(token: str) -> int:
    """A bot token's first segment is the bot's user id in base64."""
    first = token.split(".", 1)[0]
    try:
        return int(base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)).decode())
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(
            "DISCORD_TOKEN is malformed (its first part is not a bot id): copy the token again "
            "from the Bot page of your application in the Discord developer portal"
        ) from None


class DiscordGateway:
    """Owns the GatewayBot; hands each message addressed to the bot to `on_message`."""

    def __init__(
        self,
        *,
        token: str,
        rest_url: str,
        max_rps: float,
        telemetry: DiscordObserver,
        typing_delay_s: float = 0.0,
        cdn_hosts: Iterable[str] = (),
        breaker: CircuitBreaker | None = None,
        hold_max_replies: int = 100,
        hold_max_seconds: float = 120.0,
        rest_max_retries: int = 3,
        rest_timeout_s: float = 10.0,
        max_concurrent_messages: int = 100,
        intake_max_waiting: int = 5_000,
        shed_notice_interval_s: float = 10.0,
        catchup_window_s: float = 0.0,
        catchup_max_channels: int = 1000,
        catchup_store: Namespace | None = None,
        catchup_observer: CatchupObserver | None = None,
        clock: Callable[[], float] = time.time,
        on_store_error: Callable[[], None] = lambda: None,
        shard_ids: tuple[int, ...] | None = None,
        shard_count: int | None = None,
        rest_pace: RestPace | None = None,
    ) -> None:
        self.bot_id = bot_id_from_token(token)
        # DISCORD_SHARD_IDS / DISCORD_SHARD_COUNT: the shards this process runs (None: all).
        self._shard_ids = shard_ids
        self._shard_count = shard_count
        self._rest_url = rest_url
        self.bot = hikari.GatewayBot(
            token,
            intents=INTENTS,
            rest_url=rest_url,
            banner=None,
            logs=None,
            # hikari's own retries of a 5xx, timeout or lost connection, with its backoff;
            # what still fails is counted by the "discord" breaker (DiscordDelivery).
            max_retries=rest_max_retries,
            # Keep REST connections alive: hikari's default opens (and TLS-handshakes) a new
            # connection for every call.
            # Nothing reads cached messages; without the cache, the MESSAGE_UPDATE that each
            # edit of a streamed answer echoes back is not even parsed (no listener either).
            cache_settings=hikari.impl.CacheSettings(
                components=hikari.api.CacheComponents.ALL & ~hikari.api.CacheComponents.MESSAGES
            ),
            http_settings=hikari.impl.HTTPSettings(
                force_close_transports=False,
                timeouts=hikari.impl.HTTPTimeoutSettings(total=rest_timeout_s),
            ),
        )
        self._accepting = True
        self._handler: Callable[[IncomingMessage], Awaitable[None]] | None = None
        # While stopping: journal a message for the next start (False: could not, refuse it).
        self._keep_for_restart: Callable[[IncomingMessage], Awaitable[bool]] | None = None
        # Handlers journalling a message for the restart right now (at most the intake's
        # waiting line, `INTAKE_MAX_WAITING`, plus what arrives while the bot drains).
        self._keeping: set[asyncio.Task[Any]] = set()
        # Is this channel (thread, parent) an auto-reply channel for this text? (`/channel`)
        self._autoreplies: Callable[[int, int | None, str], bool] | None = None
        fetcher = AttachmentFetcher(
            cdn_hosts=cdn_hosts or DEFAULT_CDN_HOSTS,
            # A REST proxy or the emulator serves attachments from its own origin.
            local_origins=[rest_url] if rest_url != DEFAULT_DISCORD_REST_URL else [],
        )
        self.delivery = DiscordDelivery(
            self.bot.rest,
            self.bot_id,
            max_rps,
            telemetry,
            fetcher=fetcher,
            breaker=breaker,
            hold_max_replies=hold_max_replies,
            hold_max_seconds=hold_max_seconds,
            pace=rest_pace,  # a fleet's, shared through Redis; None: this process's own
        )
        # Backpressure (bot.chat.intake): a bounded number of messages answered at once, a
        # bounded line behind them, the rest shed with a cheap notice (bot.discord.shed).
        self.intake = Intake(max_concurrent_messages, intake_max_waiting)
        self.shed = ShedNotices(
            self.delivery.notify, self.intake.stats, interval_s=shed_notice_interval_s
        )
        # Typing only with REST budget no reply needs, one loop per channel (bot.discord.typing).
        self.typing = TypingScheduler(
            self.delivery.trigger_typing, self.delivery.rest_budget_spare, delay_s=typing_delay_s
        )
        self._telemetry = telemetry
        observer = catchup_observer or _NoCatchupObserver()
        # Restart catch-up (bot.discord.catchup): the channels' marks, and the reader that runs
        # at start and after every new (non-resumed) session.
        self.seen = SeenChannels(
            catchup_store, catchup_max_channels, observer, on_store_error=on_store_error
        )
        self.catchup = CatchUp(
            self.seen,
            window_s=catchup_window_s,
            fetch_after=self.delivery.messages_after,
            source_of=self._source_of,
            incoming_of=self._incoming_of,
            hand_off=self._hand_off,
            accepting=lambda: self._accepting,
            observer=observer,
            clock=clock,
        )
        self.lightbulb = lightbulb.client_from_app(self.bot)
        self.bot.subscribe(hikari.StartedEvent, self.lightbulb.start)
        self.bot.subscribe(hikari.StoppingEvent, self.lightbulb.stop)
        self.bot.subscribe(hikari.MessageCreateEvent, self._on_message_create)
        self.bot.subscribe(hikari.ShardPayloadEvent, self._on_payload)
        # READY starts a new session (at start, or after Discord would not resume the old one);
        # a RESUME (ShardResumedEvent) replays the missed events, so it needs no catch-up.
        self.bot.subscribe(hikari.ShardReadyEvent, self._on_shard_ready)

    def attach(
        self,
        handler: Callable[[IncomingMessage], Awaitable[None]],
        services: CommandServices,
    ) -> None:
        self._handler = handler
        self._keep_for_restart = services.pipeline.keep_for_restart
        channels = services.pipeline.channels
        self._autoreplies = channels.autoreplies if channels is not None else None
        for command in build_commands(services):
            self.lightbulb.register(command)

    def stream_replies(
        self, observer: StreamObserver, *, edit_interval_s: float, first_post_s: float
    ) -> StreamingReplies:
        """Streamed replies through this gateway's REST client; its Stop buttons answered."""
        streaming = StreamingReplies(
            self.delivery, observer, edit_interval_s=edit_interval_s, first_post_s=first_post_s
        )
        self.bot.subscribe(hikari.InteractionCreateEvent, streaming.on_interaction)
        return streaming

    async def start(self) -> None:
        self.shed.start()
        try:
            await self.bot.start(
                check_for_updates=False,
                shard_ids=self._shard_ids if self._shard_count is not None else None,
                shard_count=self._shard_count,
            )
        except hikari.UnauthorizedError:
            await self._close_after_failed_start()
            raise ConfigError(
                "Discord rejected DISCORD_TOKEN (401): reset the token on the Bot page of the "
                "developer portal and put the new one in .env"
            ) from None
        except hikari.GatewayServerClosedConnectionError as exc:  # at the first IDENTIFY
            await self._close_after_failed_start()
            raise GatewayRefused(fatal_close_line(exc)) from None
        except (hikari.HTTPError, OSError) as exc:  # hikari has retried three times already
            await self._close_after_failed_start()
            raise ServiceUnavailable(
                f"cannot reach Discord at DISCORD_REST_URL = {self._rest_url} ({exc}): check "
                "the network, a proxy, or DISCORD_REST_URL, then start again"
            ) from None

    async def _close_after_failed_start(self) -> None:
        """Release what `start` opened (hikari's REST session), so nothing leaks at exit."""
        await self.close()

    async def reconnect_shard(self, shard_id: int) -> None:
        """Close one shard's websocket and open it again (self-healing for Discord)."""
        shard = self.bot.shards.get(shard_id)
        if shard is None:
            raise ValueError(f"there is no shard {shard_id}")
        # hikari has no public "reconnect": a closed shard cannot be started again, but when
        # its websocket closes with a resumable code the shard reconnects and resumes itself.
        transport = getattr(shard, "_ws", None)
        if transport is None:
            raise RuntimeError(f"shard {shard_id} has no open connection to reconnect")
        await transport.send_close(code=RESUMABLE_CLOSE_CODE, message=b"reconnect requested")

    def stop_accepting(self) -> None:
        """Take no new messages; those waiting in the intake are journalled for the restart
        (their users told), as many as the queue takes after it; the rest are shed with a
        notice."""
        self._accepting = False
        self.intake.close()

    async def close(self) -> None:
        """Close the gateway and REST sessions (idempotent: also after a failed start)."""
        if self._keeping:  # messages being journalled for the restart: let their notices out
            await asyncio.wait(set(self._keeping), timeout=SHED_FLUSH_TIMEOUT_S)
        await self.shed.stop(SHED_FLUSH_TIMEOUT_S)  # tell the shed ones while REST still works
        await self.typing.close()
        self.delivery.hold.close()  # replies still waiting for Discord give up first
        await self.catchup.close()
        with contextlib.suppress(hikari.ComponentStateConflictError):  # never started, or closed
            await self.bot.close()
        await self.delivery.aclose()
        await self.seen.flush()  # the last marks, for the next start's catch-up

    @property
    def connected(self) -> bool:
        """Every shard of this process has a live, handshaken connection (a shard closed for
        good, or reconnecting, is not connected)."""
        shards = self.bot.shards
        return bool(self.bot.is_alive and shards) and all(
            shard.is_connected for shard in shards.values()
        )

    async def wait_for_fatal_close(self) -> str:
        """Wait until a shard is closed for good (4004, 4010-4014, or another close hikari will
        not reconnect after) and return one line saying what happened and what to set; "" when
        the bot was closed normally. A shard that ends never comes back by itself."""
        try:
            await self.bot.join()
        except hikari.GatewayServerClosedConnectionError as exc:
            return fatal_close_line(exc)
        except Exception as exc:  # a shard that died of anything else is as dead
            return f"the Discord gateway failed for good: {type(exc).__name__}: {exc}"
        return ""

    def guild_count(self) -> int:
        """Discord servers in the gateway's cache (0 before the first connection)."""
        return len(self.bot.cache.get_guilds_view())

    def shard_figures(self) -> dict[int, tuple[bool, float]]:
        """Each shard of this process: (connected, heartbeat latency in seconds, NaN before the
        first heartbeat)."""
        return {
            int(shard_id): (bool(shard.is_connected), float(shard.heartbeat_latency))
            for shard_id, shard in self.bot.shards.items()
        }

    async def _on_payload(self, event: hikari.ShardPayloadEvent) -> None:
        self._telemetry.gateway_event(event.name)

    async def _on_shard_ready(self, event: hikari.ShardReadyEvent) -> None:
        self.catchup.request()

    async def _on_message_create(self, event: hikari.MessageCreateEvent) -> None:
        if event.is_bot or not event.message.author or event.author_id == self.bot_id:
            return
        source = addresses_bot(event, self.bot_id)
        if self._handler is None:
            return
        thread = self.bot.cache.get_thread(event.message.channel_id)
        parent = int(thread.parent_id) if thread is not None else None
        if source is None:
            if not self._autoreplies_to(event, parent):
                # Moves the catch-up mark of a channel the bot answers in (a dict lookup
                # otherwise).
                self.seen.saw(int(event.channel_id), int(event.message_id))
                return
            source = "autoreply"
        incoming = to_incoming(event, self.bot_id, source, parent)
        incoming = replace(incoming, manages_guild=manages_guild(self.bot.cache, event))
        await self._hand_off(incoming)

    async def _hand_off(self, incoming: IncomingMessage) -> None:
        """The one way a channel message reaches the pipeline, live or found by catch-up.

        A live message that a catch-up also read is handed off once (the catch-up skips it); any
        other duplicate delivery, also across restarts, gets no reply from the pipeline's
        idempotency record (bot.store.answered)."""
        self.seen.saw(
            incoming.channel_id,
            incoming.message_id,
            guild_id=incoming.guild_id,
            parent_id=incoming.parent_channel_id,
            track=True,
        )
        if self._handler is None:
            return
        # Catch-up skips what was handed off here already; a duplicate delivery (a replay after
        # RESUME) is the pipeline's idempotency record's to refuse and count.
        self.seen.remember_handled(incoming.message_id)
        if not self._accepting:
            await self._while_stopping(incoming)
            return
        admission = await self.intake.admit()
        if admission == "shutdown" and await self._kept_for_restart(incoming):
            return  # waiting when the bot began to stop: answered after the restart
        if admission != "admitted":
            self.shed.shed(incoming, admission)
            return
        # Typing until the answer shows: a streamed answer ends it at its first words.
        stop_typing = self.typing.hold(incoming.channel_id)
        self.delivery.track_typing(incoming.message_id, stop_typing)
        try:
            await self._handler(incoming)
        except Exception:
            log.exception("handling a message failed")
        finally:
            stop_typing()
            self.delivery.track_typing(incoming.message_id, None)
            self.intake.release()

    def _autoreplies_to(self, event: hikari.MessageCreateEvent, parent: int | None) -> bool:
        """A human's ordinary message in an auto-reply channel (or a thread of one)."""
        message = event.message
        return (
            self._autoreplies is not None
            and isinstance(event, hikari.GuildMessageCreateEvent)
            and message.webhook_id is None
            and message.type in (hikari.MessageType.DEFAULT, hikari.MessageType.REPLY)
            and bool((message.content or "").strip() or message.attachments)
            and self._autoreplies(int(message.channel_id), parent, message.content or "")
        )

    def _source_of(self, message: hikari.Message, mark: ChannelMark) -> Source | None:
        """Why a message read by catch-up is for the bot, as `addresses_bot` judges live."""
        author = message.author
        if author is None or author.is_bot or int(author.id) == self.bot_id:
            return None
        return message_source(message, self.bot_id, dm=mark.guild_id is None)

    async def _incoming_of(
        self, message: hikari.Message, mark: ChannelMark, source: Source
    ) -> IncomingMessage:
        """A message read by catch-up as the pipeline's message; REST messages carry no member,
        so a guild author's roles (for the access lists) come from the cache or Discord."""
        roles: frozenset[int] = frozenset()
        name = message.author.username
        if mark.guild_id is not None:
            member = self.bot.cache.get_member(mark.guild_id, message.author.id)
            if member is None:
                try:
                    member = await self.delivery.member(mark.guild_id, int(message.author.id))
                except (hikari.HTTPError, OSError, TimeoutError):
                    log.warning("catch-up could not read a member's roles")
            if member is not None:
                roles = frozenset(int(r) for r in member.role_ids)
                name = member.display_name
        return message_to_incoming(
            message,
            self.bot_id,
            source,
            guild_id=mark.guild_id,
            thread_parent=mark.parent_id,
            roles=roles,
            author_name=name,
            caught_up=True,
        )

    async def _kept_for_restart(self, incoming: IncomingMessage) -> bool:
        """Journalled for the next start, whose resume answers it once, and its user told so
        (`ChatPipeline.keep_for_restart`); False when the journal or the queue after the restart
        cannot take it. `close` waits for these before Discord's session ends."""
        if self._keep_for_restart is None or not isinstance(incoming.target, MessageTarget):
            return False
        task = asyncio.current_task()
        if task is not None:
            self._keeping.add(task)
        try:
            return await self._keep_for_restart(incoming)
        except Exception:
            log.exception("could not keep a message for after the restart")
            return False
        finally:
            if task is not None:
                self._keeping.discard(task)

    async def _while_stopping(self, incoming: IncomingMessage) -> None:
        """Draining for a restart: the message is journalled and answered after it (its user
        told so); only when the journal cannot keep it is the user asked to ask again (a
        caught-up question is then left to the next start's catch-up)."""
        if not isinstance(incoming.target, MessageTarget):
            return
        if await self._kept_for_restart(incoming):
            return
        if incoming.caught_up:
            return
        try:
            await self.delivery.deliver(incoming.target, Reply.text(RESTARTING_TEXT, "refused"))
        except Exception:
            log.warning("could not tell a user that the bot is restarting", exc_info=True)


class _NoCatchupObserver:
    def catchup_message(self, outcome: str) -> None:
        return None

    def catchup_channel_scanned(self) -> None:
        return None

    def catchup_finished(self, seconds: float) -> None:
        return None

    def catchup_tracked(self, channels: int) -> None:
        return None
