"""The Discord side of the bot: the hikari gateway, its listeners and the slash commands."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable

import hikari
import lightbulb

from bot.chat.models import IncomingMessage, MessageTarget, Reply
from bot.config import (
    DEFAULT_DISCORD_REST_URL,
    ConfigError,
    GatewayRefused,
    ServiceUnavailable,
)
from bot.discord.commands import CommandServices, build_commands
from bot.discord.convert import addresses_bot, to_incoming
from bot.discord.delivery import DiscordDelivery, DiscordObserver
from bot.discord.downloads import DEFAULT_CDN_HOSTS, AttachmentFetcher
from bot.resilience.breaker import CircuitBreaker

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
        shard_ids: tuple[int, ...] | None = None,
        shard_count: int | None = None,
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
            http_settings=hikari.impl.HTTPSettings(
                force_close_transports=False,
                timeouts=hikari.impl.HTTPTimeoutSettings(total=rest_timeout_s),
            ),
        )
        self._accepting = True
        self._typing_delay_s = typing_delay_s
        self._handler: Callable[[IncomingMessage], Awaitable[None]] | None = None
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
        )
        self._telemetry = telemetry
        self.lightbulb = lightbulb.client_from_app(self.bot)
        self.bot.subscribe(hikari.StartedEvent, self.lightbulb.start)
        self.bot.subscribe(hikari.StoppingEvent, self.lightbulb.stop)
        self.bot.subscribe(hikari.MessageCreateEvent, self._on_message_create)
        self.bot.subscribe(hikari.ShardPayloadEvent, self._on_payload)

    def attach(
        self,
        handler: Callable[[IncomingMessage], Awaitable[None]],
        services: CommandServices,
    ) -> None:
        self._handler = handler
        for command in build_commands(services):
            self.lightbulb.register(command)

    async def start(self) -> None:
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
        self._accepting = False

    async def close(self) -> None:
        """Close the gateway and REST sessions (idempotent: also after a failed start)."""
        self.delivery.hold.close()  # replies still waiting for Discord give up first
        with contextlib.suppress(hikari.ComponentStateConflictError):  # never started, or closed
            await self.bot.close()
        await self.delivery.aclose()

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

    async def _on_message_create(self, event: hikari.MessageCreateEvent) -> None:
        if event.is_bot or not event.message.author or event.author_id == self.bot_id:
            return
        source = addresses_bot(event, self.bot_id)
        if source is None or self._handler is None:
            return
        thread = self.bot.cache.get_thread(event.message.channel_id)
        parent = int(thread.parent_id) if thread is not None else None
        incoming = to_incoming(event, self.bot_id, source, parent)
        if not self._accepting:
            await self._refuse_while_stopping(incoming)
            return
        typing = asyncio.create_task(
            self.delivery.keep_typing(incoming.channel_id, delay_s=self._typing_delay_s)
        )
        try:
            await self._handler(incoming)
        except Exception:
            log.exception("handling a message failed")
        finally:
            typing.cancel()

    async def _refuse_while_stopping(self, incoming: IncomingMessage) -> None:
        if not isinstance(incoming.target, MessageTarget):
            return
        try:
            await self.delivery.deliver(incoming.target, Reply.text(RESTARTING_TEXT, "refused"))
        except Exception:
            log.warning("could not tell a user that the bot is restarting", exc_info=True)
