"""The composition root: builds every service from the settings, starts them in order and stops
them in reverse, letting in-flight replies finish first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from bot.chat.access import AccessPolicy, UserCooldown, VideoLimiter
from bot.chat.context import ContextBuilder
from bot.chat.files import FileLoader
from bot.chat.memory import ConversationMemory
from bot.chat.pipeline import ChatPipeline
from bot.config import Settings
from bot.discord.commands import CommandServices
from bot.discord.gateway import DiscordGateway
from bot.llm.cache import ResponseCache
from bot.llm.gemini import GeminiClient
from bot.llm.quota import QuotaLimiter
from bot.llm.service import LLMService
from bot.llm.types import GenerationSettings
from bot.ops.report import StatusReport
from bot.resilience.breaker import CircuitBreaker
from bot.resilience.retry import RetryPolicy

__all__ = ["BotApp"]

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 60.0


class BotApp:
    """The whole bot, wired. `start()` then `stop()`; or `run()` until SIGINT/SIGTERM."""

    def __init__(self, settings: Settings, *, discord_token: str, gemini_api_key: str) -> None:
        self.settings = s = settings
        self.started_at = time.time()
        self.gemini = GeminiClient(
            api_key=gemini_api_key,
            base_url=s.gemini_base_url,
            api_version=s.gemini_api_version,
            timeout_s=s.gemini_timeout_seconds,
            stream=s.gemini_stream,
        )
        self.llm = LLMService(
            self.gemini,
            cache=ResponseCache(s.cache_max_entries, s.cache_max_bytes, s.cache_ttl_seconds),
            quota=QuotaLimiter(
                s.gemini_rate_limit_rpm,
                s.gemini_rate_limit_daily,
                s.gemini_rate_limit_safety_margin,
                s.gemini_rate_limit_tpm,
            ),
            breaker=CircuitBreaker(
                "gemini",
                failure_threshold=s.breaker_failure_threshold,
                reset_timeout_s=s.breaker_reset_timeout_seconds,
                half_open_max_calls=s.breaker_half_open_max_calls,
                success_threshold=s.breaker_success_threshold,
            ),
            retry_policy=RetryPolicy(
                max_attempts=s.retry_max_attempts,
                initial_backoff_s=s.retry_initial_backoff_seconds,
                max_backoff_s=s.retry_max_backoff_seconds,
                total_budget_s=s.retry_total_budget_seconds,
            ),
        )
        self.memory = ConversationMemory(
            max_messages=s.max_conversation_messages,
            max_chars=s.max_context_chars,
            session_timeout_s=s.conversation_timeout_minutes * 60,
            max_conversations=s.max_conversations,
        )
        self.gateway = DiscordGateway(token=discord_token, rest_url=s.discord_rest_url)
        delivery = self.gateway.delivery
        self.pipeline = ChatPipeline(
            discord=delivery,
            llm=self.llm,
            memory=self.memory,
            context=ContextBuilder(self.memory, delivery, s.reply_chain_max_depth),
            files=FileLoader(
                delivery,
                image_max_bytes=s.image_max_bytes,
                video_max_bytes=s.video_max_bytes,
                video_limiter=VideoLimiter(
                    tokens_per_hour=s.video_tokens_per_hour,
                    tokens_per_day=s.video_tokens_per_day,
                    requests_per_hour=s.video_requests_per_hour,
                    requests_per_day=s.video_requests_per_day,
                    cooldown_s=s.video_user_cooldown_seconds,
                ),
            ),
            access=AccessPolicy(
                allowed_user_ids=s.allowed_user_ids,
                blocked_user_ids=s.blocked_user_ids,
                allowed_role_ids=s.allowed_role_ids,
                blocked_role_ids=s.blocked_role_ids,
                allowed_channel_ids=s.allowed_channel_ids,
                blocked_channel_ids=s.blocked_channel_ids,
            ),
            cooldown=UserCooldown(s.user_cooldown_seconds),
            generation=GenerationSettings(
                model=s.gemini_model,
                system_instruction=s.gemini_system_instruction or None,
                temperature=s.gemini_temperature,
                top_p=s.gemini_top_p,
                top_k=s.gemini_top_k,
                max_output_tokens=s.gemini_max_output_tokens,
            ),
        )
        self.report = StatusReport(self)
        self.gateway.attach(self.pipeline.handle, CommandServices(self.pipeline, self.report))
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start background work, then connect to Discord (returns once the gateway is up)."""
        self._every(SWEEP_INTERVAL_S, self._sweep, "sweep memory and cache")
        await self.gateway.start()
        log.info("bot started as user %s", self.gateway.bot_id)

    async def stop(self) -> None:
        """Stop taking messages, let in-flight replies finish (bounded), then close in reverse."""
        self.gateway.stop_accepting()
        await self._drain(self.settings.shutdown_grace_seconds)
        await self.gateway.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.gemini.aclose()
        log.info("bot stopped")

    async def run(self) -> None:
        """Run until SIGINT or SIGTERM."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            log.info("stopping: finishing replies in flight")
            await self.stop()

    async def _drain(self, timeout_s: float) -> None:
        if not await self.pipeline.wait_idle(timeout_s):
            log.warning("%d replies still in flight at shutdown", self.pipeline.stats.in_flight)

    def _sweep(self) -> None:
        expired = self.memory.sweep()
        evicted = self.llm.cache.sweep()
        log.debug("swept %d conversations and %d cache entries", expired, evicted)

    def _every(
        self, interval_s: float, fn: Callable[[], object | Awaitable[object]], name: str
    ) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    result = fn()
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:
                    log.exception("periodic task %r failed", name)

        self._tasks.append(asyncio.create_task(loop(), name=name))
