"""The composition root: builds every service from the settings, starts them in order and stops
them in reverse, letting in-flight replies finish first."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot.app.controls import AppControls
from bot.app.fleet_fairuse import adopt_local, fair_use_store, follow_fleet, shared_memory
from bot.app.fleet_shared import FleetFollowers, SharedState
from bot.app.fleet_state import FleetState
from bot.app.rest_pace import fleet_rest_pace
from bot.app.signals import run_until_signal
from bot.app.tokens import JsonState, admin_token, webhook_token
from bot.chat.access import AccessPolicy
from bot.chat.budget import BudgetGate, BudgetPolicy
from bot.chat.channels import ChannelSettings
from bot.chat.context import ContextBuilder
from bot.chat.files import FileLoader
from bot.chat.memory import ConversationMemory
from bot.chat.memory_store import MemoryPersistence
from bot.chat.pipeline import ChatPipeline, FallbackTexts
from bot.chat.pipeline import DropReason as PipelineDropReason
from bot.chat.queue_worker import QueueWorker
from bot.chat.resume import resend_undelivered, resume_unfinished
from bot.config import ConfigError, GatewayRefused, ServiceUnavailable, Settings
from bot.discord.commands import CommandServices
from bot.discord.gateway import DiscordGateway
from bot.healing.actions import ActionRegistry
from bot.healing.audit import HealAudit
from bot.healing.fanout import HealFanOut
from bot.healing.http import alerts_handler, audit_handler
from bot.healing.receiver import HealReceiver
from bot.healing.remedies import build_remedies
from bot.llm.gemini import GeminiClient
from bot.llm.quota import Quota, QuotaLimiter, QuotaPersister
from bot.llm.quota_shared import SharedQuota
from bot.llm.service import LLMService
from bot.llm.types import GenerationSettings
from bot.ops.diagnostics import MemoryTracer, debug_routes
from bot.ops.health import take_snapshot
from bot.ops.heap import freeze_startup_heap
from bot.ops.history import HealthHistory
from bot.ops.llm_telemetry import LLMCallTelemetry
from bot.ops.metrics import AlertThresholds, LLMPrices, ShardFigures, Telemetry
from bot.ops.metrics.fair_use import FairUseFigures
from bot.ops.report import StatusReport
from bot.ops.server import OpsServer, readiness
from bot.ops.signals import SignalProbe
from bot.ops.view import BotView
from bot.resilience.breaker import CircuitBreaker
from bot.resilience.degradation import DegradationPolicy, DegradationState
from bot.resilience.fleet_maintenance import FleetMaintenance
from bot.resilience.queue import MessageQueue
from bot.resilience.retry import RetryPolicy
from bot.resilience.timeout import AdaptiveTimeout
from bot.store import SqliteStore
from bot.store.answered import AnswerLedger
from bot.store.redis_identify import IdentifyTurns
from bot.store.redis_link import RedisLink, RedisUnavailable
from bot.store.redis_pubsub import RedisChannels
from bot.store.redis_quota import RedisQuotaCounters

__all__ = ["BotApp", "run_until_signal"]

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 60.0
ASSESS_INTERVAL_S = 5.0
# The degradation level judges errors and reply times over this window: back to none within
# DEGRADATION_WINDOW_S + ASSESS_INTERVAL_S of a recovery (docs/runbooks.md, degradation levels).
DEGRADATION_WINDOW_S = 30.0
STORE_HEALTH_INTERVAL_S = 10.0  # a probe is one small write, a stat and 16 bytes read
EXIT_ESCALATED = 70  # EX_SOFTWARE: "restart me"
EXIT_GATEWAY_CLOSED = GatewayRefused.exit_code  # Discord will not take the session back


class BotApp:
    """The whole bot, wired. `start()` then `stop()`; or `run()` until SIGINT/SIGTERM."""

    def __init__(
        self,
        settings: Settings,
        *,
        discord_token: str,
        gemini_api_key: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = s = settings
        self.started_at = time.time()
        # First, so that TRACEMALLOC_FRAMES sees what building the bot allocates.
        self.tracer = MemoryTracer(s.tracemalloc_frames)
        self.telemetry = Telemetry(
            models=[s.gemini_model],
            block_threshold_s=s.event_loop_block_threshold_ms / 1000 or None,
            prices=LLMPrices.from_settings(s),
        )
        self.store = SqliteStore(
            s.data_dir / "bot.db", cleanup_interval_s=s.store_cleanup_interval_seconds
        )
        self.gemini = GeminiClient(
            api_key=gemini_api_key,
            base_url=s.gemini_base_url,
            api_version=s.gemini_api_version,
            timeout_s=s.gemini_timeout_seconds,
            stream=s.gemini_stream,
        )
        # REDIS_URL: the fleet's shared state (the quota); unset, everything stays in-process.
        self.redis = RedisLink(s.redis_url.get_secret_value()) if s.redis_url else None
        self.local_quota = QuotaLimiter(
            s.gemini_rate_limit_rpm,
            s.gemini_rate_limit_daily,
            s.gemini_rate_limit_safety_margin,
            s.gemini_rate_limit_tpm,
            clock=clock,
            max_provider_hold_s=s.gemini_provider_hold_max_seconds,
        )
        self.shared_quota = (
            SharedQuota(
                RedisQuotaCounters(self.redis),
                instance=s.heal_instance_label,
                rpm=s.gemini_rate_limit_rpm,
                daily=s.gemini_rate_limit_daily,
                safety_margin=s.gemini_rate_limit_safety_margin,
                tpm=s.gemini_rate_limit_tpm,
                clock=clock,
                max_provider_hold_s=s.gemini_provider_hold_max_seconds,
            )
            if self.redis is not None
            else None
        )
        quota: Quota = self.shared_quota or self.local_quota
        # The response cache, cooldowns and video budgets: on Redis in a fleet.
        self.shared = SharedState(s, self.redis)
        self.identify_turns: IdentifyTurns | None = None
        self.llm = LLMService(
            self.gemini,
            cache=self.shared.cache,
            quota=quota,
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
            observer=LLMCallTelemetry(
                self.telemetry, include_message_text=s.trace_include_message_text
            ),
            timeout=AdaptiveTimeout(
                s.gemini_timeout_seconds,
                floor_s=min(s.gemini_timeout_min_seconds, s.gemini_timeout_seconds),
                enabled=s.gemini_adaptive_timeout,
            ),
        )
        self.quota_persister = QuotaPersister(
            self.local_quota,
            JsonState(self.store.namespace("quota"), "state"),
            interval_s=s.quota_flush_interval_seconds,
            on_store_error=self._count_store_error,
        )
        self.queue = MessageQueue(
            self.store.namespace("queue"),
            max_size=s.queue_max_size,
            max_age_s=s.queue_max_age_seconds,
            max_attempts=s.queue_max_attempts,
            retry_interval_s=s.queue_retry_interval_seconds,
            batch_size=s.queue_batch_size,
            clock=clock,
            on_store_error=self._count_store_error,
        )
        self.answers = AnswerLedger(
            self.store.namespace("answered"),
            ttl_s=s.idempotency_ttl_seconds,
            max_records=s.idempotency_max_records,
            clock=clock,
            on_store_error=self._count_store_error,
        )
        # REDIS_URL: the queue is the fleet's stream and the record guarded in Redis.
        self.fleet_state = (
            FleetState(
                s, self.store, self.redis, clock=clock, on_store_error=self._count_store_error
            )
            if self.redis is not None
            else None
        )
        if self.fleet_state is not None:
            self.queue, self.answers = self.fleet_state.queue, self.fleet_state.answers
        self.degradation = DegradationState(
            DegradationPolicy(
                memory_bytes=int(s.degradation_memory_threshold_mb * 1024 * 1024),
                error_ratio=s.degradation_error_rate_threshold / 100,
                p95_s=s.degradation_response_time_threshold_ms / 1000,
            ),
            maintenance_mode_enabled=s.degradation_enable_maintenance_mode,
        )
        if s.maintenance_mode:
            self.degradation.enter_maintenance("MAINTENANCE_MODE is set")
        self.memory = ConversationMemory(
            max_messages=s.max_conversation_messages,
            max_chars=s.max_context_chars,
            session_timeout_s=s.conversation_timeout_minutes * 60,
            max_conversations=s.max_conversations,
        )
        self.memory_persistence = (
            MemoryPersistence(
                self.memory,
                self.store.namespace("conversations"),
                ttl_s=s.conversation_timeout_minutes * 60,
                on_store_error=self._count_store_error,
            )
            if s.persist_conversations and self.redis is None
            else None
        )
        # A fleet paces Discord REST calls on one schedule in Redis (bot/app/rest_pace.py).
        self.rest_pace = fleet_rest_pace(s, self.redis, self.shared_quota)
        # A fleet with PERSIST_CONVERSATIONS: conversations live in Redis (app/fleet_fairuse.py).
        self.shared_memory = shared_memory(
            self.redis if s.persist_conversations else None,
            self.memory,
            s.conversation_timeout_minutes * 60,
            self._count_store_error,
        )
        self.gateway = DiscordGateway(
            token=discord_token,
            rest_url=s.discord_rest_url,
            max_rps=s.discord_rest_max_rps,
            typing_delay_s=s.discord_typing_delay_seconds,
            telemetry=self.telemetry,
            cdn_hosts=s.discord_cdn_hosts,
            # Replies wait behind this breaker while Discord's REST API fails: one probe at a
            # time, and one success closes it (the held replies are paced like any others).
            breaker=CircuitBreaker(
                "discord",
                failure_threshold=s.discord_breaker_failure_threshold,
                reset_timeout_s=s.discord_breaker_reset_timeout_seconds,
                success_threshold=1,
            ),
            hold_max_replies=s.discord_hold_max_replies,
            hold_max_seconds=s.discord_hold_max_seconds,
            rest_max_retries=s.discord_rest_max_retries,
            rest_timeout_s=s.discord_rest_timeout_seconds,
            max_concurrent_messages=s.max_concurrent_messages,
            intake_max_waiting=s.intake_max_waiting,
            shed_notice_interval_s=s.intake_shed_notice_interval_seconds,
            catchup_window_s=s.catchup_window_minutes * 60,
            catchup_max_channels=s.catchup_max_channels,
            catchup_store=self.store.namespace("catchup"),
            catchup_observer=self.telemetry,
            clock=clock,
            on_store_error=self._count_store_error,
            shard_ids=s.shard_ids,
            shard_count=s.discord_shard_count,
            rest_pace=self.rest_pace,
        )
        delivery = self.gateway.delivery
        # Fair use: token budgets and channel settings, kept in the durable store.
        self.fair_use = fair_use = fair_use_store(
            self.redis,
            self.store.namespace("budgets"),
            self.store.namespace("channels"),
            self.store.namespace("budget_audit"),
        )
        self.budgets = BudgetGate(
            fair_use,
            BudgetPolicy(
                user_daily=s.user_daily_token_budget,
                guild_daily=s.guild_daily_token_budget,
                role_daily=s.role_budgets,
                timezone=s.budget_reset_timezone,
                apply_to_admins=s.budgets_apply_to_admins,
                admin_user_ids=s.admin_user_ids,
            ),
            clock=clock,
        )
        self.channels = ChannelSettings(
            fair_use,
            ignore_prefix=s.autoreply_ignore_prefix,
            allowed_models=s.allowed_models,
            persona_max_chars=s.channel_persona_max_chars,
        )
        self.pipeline = ChatPipeline(
            discord=delivery,
            llm=self.llm,
            memory=self.memory,
            context=ContextBuilder(
                self.memory,
                delivery,
                s.reply_chain_max_depth,
                refresh=self.shared_memory.refresh if self.shared_memory else None,
            ),
            files=FileLoader(
                delivery,
                image_max_bytes=s.image_max_bytes,
                video_max_bytes=s.video_max_bytes,
                total_max_bytes=s.attachments_max_total_bytes,
                video_limiter=self.shared.video,
            ),
            access=AccessPolicy(
                allowed_user_ids=s.allowed_user_ids,
                blocked_user_ids=s.blocked_user_ids,
                allowed_role_ids=s.allowed_role_ids,
                blocked_role_ids=s.blocked_role_ids,
                allowed_channel_ids=s.allowed_channel_ids,
                blocked_channel_ids=s.blocked_channel_ids,
            ),
            cooldown=self.shared.cooldown,
            generation=GenerationSettings(
                model=s.gemini_model,
                system_instruction=s.gemini_system_instruction or None,
                temperature=s.gemini_temperature,
                top_p=s.gemini_top_p,
                top_k=s.gemini_top_k,
                max_output_tokens=s.gemini_max_output_tokens,
            ),
            degradation=self.degradation,
            queue=self.queue,
            fallback=FallbackTexts(s.fallback_maintenance_text, s.fallback_generic_text),
            telemetry=self.telemetry,
            budgets=self.budgets,
            channels=self.channels,
            answers=self.answers,
            streaming=(
                self.gateway.stream_replies(
                    self.telemetry,
                    edit_interval_s=s.stream_edit_interval_seconds,
                    first_post_s=s.stream_first_post_seconds,
                )
                if s.stream_replies
                else None
            ),
        )
        delivery.on_first_visible = self.telemetry.first_visible
        if self.fleet_state is not None:
            pipeline = self.pipeline
            self.fleet_state.on_unqueued = lambda p: pipeline.notify_dropped(p, "overflow")
        self.queue_worker = QueueWorker(self.queue, self.pipeline)
        self.signals = SignalProbe(
            self.pipeline.stats,
            calls=lambda: self.llm.stats,
            breaker_open=lambda: self.llm.breaker.state == "open",
            queue_pressure=lambda: self.queue.stats.pressure,
            window_s=DEGRADATION_WINDOW_S,
        )
        self.view = self._build_view()
        self.controls = AppControls(self)
        self.report = StatusReport(self.view)
        self.history = HealthHistory(
            lambda: take_snapshot(self.view),
            store=self.store.namespace("history"),
            interval_s=s.health_snapshot_interval_seconds,
            retention_s=s.health_history_retention_days * 86_400,
        )
        self.heal_audit = HealAudit(
            s.heal_audit_max_entries, store=self.store.namespace("heal_audit")
        )
        self.healer = HealReceiver(
            ActionRegistry(build_remedies(self.controls)),
            instance=s.heal_instance_label,
            cooldown_s=s.heal_cooldown_seconds,
            max_concurrency=s.heal_max_concurrency,
            escalate_after=s.heal_escalate_after,
            exit_on_escalation=s.heal_exit_on_escalation,
            on_escalation_exit=self._exit_after_escalation,
            enabled=s.heal_enabled,
            dry_run=s.heal_dry_run,
            audit=self.heal_audit,
        )
        # A fleet: an alert posted to this instance but naming another runs there (pub/sub).
        self.heal_channels = RedisChannels(self.redis) if self.redis is not None else None
        self.heal_fanout = (
            HealFanOut(self.healer, self.heal_channels) if self.heal_channels is not None else None
        )
        # A fleet: /maintenance on any process acts on every process.
        self.fleet_maintenance = (
            FleetMaintenance(self.degradation, self.heal_channels, s.heal_instance_label)
            if self.heal_channels is not None
            else None
        )
        # A fleet: /clear and fleet-wide degradation overrides act on every process.
        self.fleet = (
            FleetFollowers(
                self.heal_channels, self.pipeline, self.degradation, s.heal_instance_label
            )
            if self.heal_channels is not None
            else None
        )
        self.fleet_overrides = self.fleet.overrides if self.fleet is not None else None
        self.gateway.attach(
            self.pipeline.handle,
            CommandServices(
                self.pipeline, self.report, self.controls, s.admin_user_ids, healer=self.healer
            ),
        )
        self.exit_code = 0
        self.telemetry.bind(self.view.metric_sources())
        alerts_token = webhook_token(s)
        self.ops = OpsServer(
            s.ops_host,
            s.ops_port,
            telemetry=self.telemetry,
            snapshot=lambda: take_snapshot(self.view),
            readiness=readiness(self.view),
            history=self.history,
            max_connections=s.ops_max_connections,
            idle_timeout_s=s.ops_idle_timeout_seconds,
            extra_routes=[
                (
                    "POST",
                    "/alerts",
                    alerts_handler(
                        self.healer,
                        token=alerts_token,
                        allow_insecure_loopback=s.alert_webhook_allow_insecure_loopback,
                        is_shutting_down=lambda: self._stopping,
                        route=self.heal_fanout.route if self.heal_fanout is not None else None,
                    ),
                ),
                (
                    "GET",
                    "/heal/audit",
                    audit_handler(
                        self.healer,
                        token=alerts_token,
                        allow_insecure_loopback=s.alert_webhook_allow_insecure_loopback,
                    ),
                ),
                *debug_routes(
                    self.tracer,
                    token=admin_token(s),
                    default_frames=s.tracemalloc_frames or 10,
                ),
            ],
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stopped = False
        self.stopped = asyncio.Event()
        self._exit_requested = asyncio.Event()

    def _count_store_error(self) -> None:
        """A store write of the message path failed (queue, quota, conversations):
        `llmbot_errors_total{component="store"}`."""
        self.pipeline.record_error("store")

    def _build_view(self) -> BotView:
        """What ops may read of this bot: each figure from the component that owns it."""
        s, llm, gateway = self.settings, self.llm, self.gateway
        degradation = self.degradation
        return BotView(
            model=s.gemini_model,
            started_at=self.started_at,
            data_dir=s.data_dir,
            thresholds=AlertThresholds.from_settings(s),
            chat=lambda: self.pipeline.stats,
            cache=lambda: llm.cache.stats,
            quota=llm.quota.snapshot,
            llm_timeout=lambda: llm.timeout.current() if llm.timeout else None,
            llm_calls=lambda: llm.stats,
            breakers=lambda: {
                llm.breaker.name: llm.breaker.state,
                "discord": gateway.delivery.hold.state,
            },
            memory=self.memory.stats,
            gateway_connected=lambda: gateway.connected,
            guilds=gateway.guild_count,
            shards=lambda: {i: ShardFigures(*f) for i, f in gateway.shard_figures().items()},
            store=lambda: self.store.stats,
            queue=lambda: self.queue.stats,
            degradation=lambda: degradation.stats,
            maintenance=lambda: degradation.reason if degradation.maintenance else None,
            heal=lambda: self.healer.stats,
            health_snapshots=lambda: len(self.history),
            discord_hold=lambda: gateway.delivery.hold.stats,
            intake=lambda: gateway.intake.stats,
            typing=lambda: {
                "sent": gateway.typing.stats.sent,
                "skipped": gateway.typing.stats.skipped,
            },
            fair_use=lambda: FairUseFigures(
                self.budgets.stats, self.channels.stats(), getattr(self.fair_use, "fallback", None)
            ),
            answers=lambda: self.answers.stats,
            redis=_attr(self.redis, "stats"),
            fleet=_attr(self.shared_quota, "fleet"),
            rest_pace=_attr(self.rest_pace, "stats"),
            fleet_parts=self.shared.fallback_stats if self.redis is not None else None,
        )

    async def start(self) -> None:
        """Serve /metrics and /healthz first, open state, start background work, then connect
        to Discord (returns once up)."""
        await self.telemetry.start()
        try:
            await self.ops.start()
        except OSError as exc:
            await self.telemetry.stop()
            where = f"OPS_HOST:OPS_PORT = {self.settings.ops_host}:{self.settings.ops_port}"
            if exc.errno == errno.EADDRINUSE:
                fix = "set OPS_PORT to a free port (0 picks one)"
            elif exc.errno == errno.EACCES:
                fix = "set OPS_PORT to 1024 or above (or run with the right to bind it)"
            else:  # an unknown name, or an address this machine does not have
                fix = "set OPS_HOST to an address of this machine (127.0.0.1, or 0.0.0.0 for all)"
            raise ConfigError(f"cannot listen on {where} ({exc.strerror}): {fix}") from None
        if self.settings.heal_instance is None:
            # With OPS_PORT=0 the real port is known only now; it is what Prometheus scrapes.
            self.healer.instance = self.ops.host_port
        log.info(
            "ops server on %s (/metrics /healthz /readyz /status /alerts /heal/audit /debug "
            "/openapi.json)",
            self.ops.url,
        )
        await self.store.open()
        await self._start_quota()
        await self.history.load()
        if self.memory_persistence is not None:
            restored = await self.memory_persistence.load()
            log.info("%d conversations restored", restored)
        if self.fleet_state is not None:  # named before the queue reads its entries back
            await self.fleet_state.prepare(self.healer.instance)
            self._tasks.append(
                asyncio.create_task(self.fleet_state.keep_alive(), name="fleet heartbeat")
            )
        expired = await self.queue.load()
        await adopt_local(self.fair_use)  # a fleet: a former single process's settings
        await self.budgets.load()
        await self.channels.load()
        await self.answers.load()
        await self.heal_audit.load()
        self._tasks.append(asyncio.create_task(self.heal_audit.run(), name="heal audit writer"))
        self.healer.start()
        self.gemini.prepare()  # its one-off cost (SSL contexts) before any message, not during
        tracked = await self.gateway.seen.load()  # before READY, which starts the catch-up
        if self.gateway.catchup.enabled:
            log.info("catch-up: %d channels tracked", tracked)
        self._tasks.append(asyncio.create_task(self.gateway.seen.run(), name="catch-up marks"))
        if self.heal_fanout is not None and self.heal_channels is not None:
            self._tasks.append(
                asyncio.create_task(
                    self.heal_channels.listen(self.heal_fanout.channels, self.heal_fanout.deliver),
                    name="heal fan-out listener",
                )
            )
        self._tasks += follow_fleet(
            self.fair_use, self.budgets, self.channels, self.heal_channels, self.shared_memory
        )
        if self.fleet_maintenance is not None and self.heal_channels is not None:
            self.fleet_maintenance.instance = self.healer.instance
            await self.fleet_maintenance.restore()
            self._tasks.append(
                asyncio.create_task(
                    self.heal_channels.listen(["maintenance"], self.fleet_maintenance.deliver),
                    name="fleet maintenance listener",
                )
            )
        if self.fleet is not None:
            self._tasks.extend(await self.fleet.start(self.healer.instance))
        await self._start_gateway()
        for dropped in expired:  # only now can their users be told
            reason: PipelineDropReason = "expired" if dropped.reason == "expired" else "overflow"
            await self.pipeline.notify_dropped(dropped.item.payload, reason)
        # Questions in flight when the bot last stopped: re-sent, re-queued or told (in the
        # background: a re-send may wait for Discord).
        self._tasks.append(asyncio.create_task(self._resume(), name="resume"))
        if self.queue.size:
            log.info("%d queued questions restored; they will be answered", self.queue.size)
        self._tasks.append(asyncio.create_task(self.queue_worker.run(), name="queue worker"))
        if self.fleet_state is not None:
            self._tasks.append(asyncio.create_task(self.fleet_state.run(), name="fleet queue"))
        self._tasks.append(
            asyncio.create_task(self._exit_on_fatal_gateway_close(), name="gateway watch")
        )
        self._every(SWEEP_INTERVAL_S, self._sweep, "sweep memory and cache")
        self._every(ASSESS_INTERVAL_S, self._assess, "assess degradation")
        self._every(STORE_HEALTH_INTERVAL_S, self.store.health_check, "store health check")
        self._every(SWEEP_INTERVAL_S, self._resend_undelivered, "re-send undelivered replies")
        self._tasks.append(asyncio.create_task(self.history.run(), name="health history"))
        log.info("bot started as user %s", self.gateway.bot_id)

    async def _start_quota(self) -> None:
        """The in-process quota (restored from the store), or the fleet's on Redis: Redis
        unreachable at start is a one-line error (a fleet process must not guess its share)."""
        if self.shared_quota is None or self.redis is None:
            ids, count = self.settings.shard_ids, self.settings.discord_shard_count
            if ids is not None and count is not None and len(ids) < count:
                log.warning(
                    "running shards %s of %d without REDIS_URL: the Gemini quota is not shared "
                    "with the processes running the other shards",
                    ",".join(map(str, ids)),
                    count,
                )
            await self.quota_persister.load()
            self.quota_persister.start()
            return
        if self.settings.heal_instance is None:
            self.shared_quota.instance = self.ops.host_port
        try:
            await self.redis.ping()
        except RedisUnavailable as exc:
            raise ServiceUnavailable(
                f"cannot reach {exc}: start Redis, or fix REDIS_URL (unset it to run one "
                "process without Redis)"
            ) from None
        await self.shared_quota.heartbeat()
        self.shared_quota.start()
        log.info("fleet quota shared through Redis at %s", self.redis.stats.url)

    async def _start_gateway(self) -> None:
        """Connect to Discord; in a fleet, in turn with the other processes (identify rule)."""
        if self.redis is None:
            await self.gateway.start()
            return
        self.identify_turns = IdentifyTurns(self.redis, self.healer.instance)
        async with self.identify_turns.turn():
            await self.gateway.start()
        if self.identify_turns.waited_s >= 1:
            log.info("waited %.1f s for the fleet's identify turn", self.identify_turns.waited_s)

    async def stop(self) -> None:
        """Stop taking messages, let in-flight replies finish (bounded), then close in reverse."""
        if self._stopped:
            return
        self._stopped = self._stopping = True
        self.gateway.stop_accepting()
        await self._drain(self.settings.shutdown_grace_seconds)
        await self._tell_unfinished(min(5.0, self.settings.shutdown_grace_seconds / 2))
        await self.pipeline.cancel_in_flight()  # journalled: resumed at the next start
        await self.healer.stop(grace_s=self.settings.shutdown_grace_seconds)
        await self.heal_audit.stop()  # the last decisions and results, to disk
        await self.history.stop()
        for task in self._tasks:
            task.cancel()
        # A background task that died of an error must not cut the shutdown short.
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for task, result in zip(self._tasks, results, strict=True):
            if isinstance(result, Exception):
                log.error("background task %r had failed: %r", task.get_name(), result)
        await self.gateway.close()
        await self.quota_persister.stop()
        if self.identify_turns is not None:
            await self.identify_turns.close()
        if self.fleet_maintenance is not None:
            await self.fleet_maintenance.join()
        if self.fleet is not None:
            await self.fleet.join()
        if self.shared_quota is not None:
            await self.shared_quota.stop()
        if self.fleet_state is not None:  # while Redis is open: the others take its questions
            await self.fleet_state.flush()
            for item in await self.queue.close():
                log.warning("queued question %s could not be kept across the restart", item.id)
        if self.shared_memory is not None:
            await self.shared_memory.flush()
        if self.redis is not None:
            await self.redis.aclose()
        if self.memory_persistence is not None:
            await self.memory_persistence.save()
        for item in await self.queue.close():  # only those the store never held
            log.warning("queued question %s could not be kept across the restart", item.id)
        await self.store.close()
        await self.gemini.aclose()
        await self.ops.stop()
        await self.telemetry.stop()
        self.stopped.set()
        log.info("bot stopped")

    async def run(self) -> int:
        """Run until SIGINT or SIGTERM (or an escalation that asks for a restart). A signal
        during the start stops it there: the start is cancelled and what did start is closed."""

        started = False

        async def start_and_serve() -> None:
            nonlocal started
            await self.start()
            started = True
            freeze_startup_heap()  # the process is ours alone (tests call start(), not run())
            await self._exit_requested.wait()

        try:
            await run_until_signal(start_and_serve())
        finally:
            log.info("stopping: finishing replies in flight" if started else "stopping the start")
            await self.stop()  # after a failed start: closes what did start, then it is raised
        return self.exit_code

    @property
    def exit_requested(self) -> bool:
        """The bot asked to be stopped (and restarted or fixed): see `exit_code`."""
        return self._exit_requested.is_set()

    async def _exit_on_fatal_gateway_close(self) -> None:
        """A shard closed for good leaves no working bot: say why in one line and exit non-zero
        (so a restart policy or an operator notices), instead of idling as a zombie."""
        reason = await self.gateway.wait_for_fatal_close()
        if reason and not self._stopping:
            log.error("%s; stopping", reason)
            self.exit_code = EXIT_GATEWAY_CLOSED
            self._exit_requested.set()

    def _exit_after_escalation(self) -> None:
        """HEAL_EXIT_ON_ESCALATION: drain and exit non-zero so an orchestrator restarts us."""
        log.error("a heal action escalated; exiting for a restart after draining")
        self.exit_code = EXIT_ESCALATED
        self._exit_requested.set()

    async def _drain(self, timeout_s: float) -> None:
        if not await self.pipeline.wait_idle(timeout_s):
            log.warning("%d replies still in flight at shutdown", self.pipeline.stats.in_flight)

    async def _tell_unfinished(self, budget_s: float) -> None:
        """Questions still being answered after the grace: tell their users the answer comes
        after the restart (the journal resumes them), as many as fit in `budget_s`."""
        waiting = [r for r in self.answers.unfinished() if r.state == "accepted"]
        if not waiting:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(1.0, budget_s)):
                await self.pipeline.notify_restarting(waiting)
        log.warning("%d questions unfinished at shutdown; resumed at the next start", len(waiting))

    async def _resume(self) -> None:
        await resume_unfinished(self.pipeline, self.answers, self.queue)

    async def _resend_undelivered(self) -> None:
        if self.gateway.delivery.hold.state != "open":
            await resend_undelivered(self.pipeline, self.answers)

    def _assess(self) -> None:
        self.degradation.assess(self.signals.sample())

    async def _sweep(self) -> None:
        expired = self.memory.sweep()
        evicted = await self.llm.cache.expire()
        log.debug("swept %d conversations and %d cache entries", expired, evicted)
        if self.memory_persistence is not None:
            await self.memory_persistence.save()

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


def _attr(owner: Any, name: str) -> Callable[[], Any] | None:
    """A view callable reading `owner.name`, or None (absent) when there is no owner."""
    return None if owner is None else lambda: getattr(owner, name)
