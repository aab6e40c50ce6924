"""Typed settings from the environment (and an optional `.env`), with errors that say what to set.

Every setting is listed with its default and a one-line explanation in `.env.example`; a test
keeps the two in step.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "SETTING_PREFIXES",
    "ConfigError",
    "GatewayRefused",
    "ServiceUnavailable",
    "Settings",
    "ensure_data_dir",
    "known_setting_names",
    "load_settings",
    "unknown_settings",
]

IdSet = Annotated[frozenset[int], NoDecode]
ShardIds = Annotated[tuple[int, ...] | None, NoDecode]
HostSet = Annotated[frozenset[str], NoDecode]
ModelSet = Annotated[frozenset[str], NoDecode]
RoleBudgets = Annotated[frozenset[tuple[int, int]], NoDecode]  # (role id, tokens)

DEFAULT_DISCORD_REST_URL = "https://discord.com/api/v10"
DEFAULT_GEMINI_BASE_URL = "https://generativelanguage.googleapis.com"


class ConfigError(Exception):
    """A configuration mistake, phrased as what the operator should set."""

    exit_code = 2


class GatewayRefused(ConfigError):
    """Discord closed the gateway for good (a rejected token or intents): fix a setting."""

    exit_code = 78  # EX_CONFIG


class ServiceUnavailable(ConfigError):
    """A service the bot needs at start (Discord) cannot be reached: say which, and where."""

    exit_code = 69  # EX_UNAVAILABLE


class Settings(BaseSettings):
    """All of the bot's settings. Names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

    # --- secrets -------------------------------------------------------------------------------
    discord_token: SecretStr | None = None
    gemini_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("GEMINI_API_KEY", "GOOGLE_API_KEY")
    )

    # --- endpoints -----------------------------------------------------------------------------
    discord_rest_url: str = DEFAULT_DISCORD_REST_URL
    discord_rest_max_rps: float = Field(default=45.0, gt=0)
    discord_typing_delay_seconds: float = Field(default=1.0, ge=0)
    discord_rest_timeout_seconds: float = Field(default=10.0, gt=0)
    discord_rest_max_retries: int = Field(default=3, ge=0, le=5)
    discord_breaker_failure_threshold: int = Field(default=5, ge=1)
    discord_breaker_reset_timeout_seconds: float = Field(default=15.0, gt=0)
    discord_hold_max_replies: int = Field(default=100, ge=0)
    discord_hold_max_seconds: float = Field(default=120.0, gt=0)
    gemini_base_url: str = DEFAULT_GEMINI_BASE_URL
    gemini_api_version: str = "v1beta"

    # --- the model -----------------------------------------------------------------------------
    gemini_model: str = "gemini-2.5-flash"
    gemini_system_instruction: str = (
        "You are a helpful assistant in a Discord chat. Answer concisely and use Discord markdown."
    )
    gemini_temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    gemini_top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    gemini_top_k: int | None = Field(default=None, ge=1)
    gemini_max_output_tokens: int | None = Field(default=None, ge=1)
    gemini_timeout_seconds: float = Field(default=30.0, gt=0)
    gemini_adaptive_timeout: bool = True
    gemini_timeout_min_seconds: float = Field(default=10.0, gt=0)
    gemini_stream: bool = False
    # Estimated cost (llmbot_llm_cost_usd_total): USD per million tokens, Google's published
    # paid-tier prices for gemini-2.5-flash; set your model's and tier's.
    gemini_price_input_usd_per_million: float = Field(default=0.30, ge=0)
    gemini_price_output_usd_per_million: float = Field(default=2.50, ge=0)
    gemini_price_cached_input_usd_per_million: float = Field(default=0.03, ge=0)

    # --- streamed replies ----------------------------------------------------------------------
    stream_replies: bool = True
    stream_edit_interval_seconds: float = Field(default=1.0, ge=0.2, le=60)
    stream_first_post_seconds: float = Field(default=0.03, ge=0, le=10)

    # --- quota, retries, circuit breaker, cache -------------------------------------------------
    gemini_rate_limit_rpm: int = Field(default=10, ge=1)
    gemini_rate_limit_daily: int = Field(default=500, ge=1)
    gemini_rate_limit_tpm: int | None = Field(default=None, ge=1)
    gemini_rate_limit_safety_margin: float = Field(default=0.9, gt=0, le=1.0)
    gemini_provider_hold_max_seconds: float = Field(default=300.0, gt=0)
    retry_max_attempts: int = Field(default=4, ge=1)
    retry_initial_backoff_seconds: float = Field(default=1.0, ge=0)
    retry_max_backoff_seconds: float = Field(default=20.0, ge=0)
    retry_total_budget_seconds: float = Field(default=60.0, gt=0)
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_reset_timeout_seconds: float = Field(default=60.0, gt=0)
    breaker_half_open_max_calls: int = Field(default=1, ge=1)
    breaker_success_threshold: int = Field(default=3, ge=1)
    cache_max_entries: int = Field(default=1000, ge=0)
    cache_max_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    cache_ttl_seconds: float = Field(default=3600.0, gt=0)

    # --- graceful degradation, queue, fallbacks -------------------------------------------------
    degradation_memory_threshold_mb: float = Field(default=400.0, gt=0)
    degradation_error_rate_threshold: float = Field(default=10.0, gt=0, le=100)
    degradation_response_time_threshold_ms: float = Field(default=10_000.0, gt=0)
    degradation_enable_maintenance_mode: bool = True
    maintenance_mode: bool = False
    queue_max_size: int = Field(default=100, ge=1)
    queue_max_age_seconds: float = Field(default=300.0, gt=0)
    queue_retry_interval_seconds: float = Field(default=30.0, gt=0)
    queue_batch_size: int = Field(default=5, ge=1)
    queue_max_attempts: int = Field(default=3, ge=1)
    # The idempotency record (one per incoming message id): answered ids are remembered this
    # long (a replay or re-delivery within it gets no second reply), at most this many.
    idempotency_ttl_seconds: float = Field(default=3600.0, gt=0)
    idempotency_max_records: int = Field(default=50_000, ge=100)
    # Backpressure for new messages (bot.chat.intake, bot.discord.shed).
    max_concurrent_messages: int = Field(default=100, ge=1)
    intake_max_waiting: int = Field(default=5_000, ge=0)
    intake_shed_notice_interval_seconds: float = Field(default=10.0, gt=0)
    # Restart catch-up: questions asked while the bot was down, answered late (0 turns it off).
    catchup_window_minutes: float = Field(default=15.0, ge=0, le=1440)
    catchup_max_channels: int = Field(default=1000, ge=1, le=100_000)
    fallback_maintenance_text: str = (
        "I'm in maintenance right now and can't answer. Please try again later."
    )
    fallback_generic_text: str = (
        "I can't reach the model right now ({reason}); {queue} questions are waiting. "
        "Please try again in a few minutes."
    )

    # --- durable state -------------------------------------------------------------------------
    quota_flush_interval_seconds: float = Field(default=10.0, gt=0)
    store_cleanup_interval_seconds: float = Field(default=300.0, gt=0)
    persist_conversations: bool = False

    # --- conversation memory -------------------------------------------------------------------
    conversation_timeout_minutes: float = Field(default=30.0, gt=0)
    max_conversation_messages: int = Field(default=100, ge=2)
    max_context_chars: int = Field(default=50_000, ge=100)
    max_conversations: int = Field(default=10_000, ge=1)
    reply_chain_max_depth: int = Field(default=10, ge=0)

    # --- who may talk to the bot ---------------------------------------------------------------
    admin_user_ids: IdSet = frozenset()
    user_cooldown_seconds: float = Field(default=2.0, ge=0)
    allowed_user_ids: IdSet = frozenset()
    blocked_user_ids: IdSet = frozenset()
    allowed_role_ids: IdSet = frozenset()
    blocked_role_ids: IdSet = frozenset()
    allowed_channel_ids: IdSet = frozenset()
    blocked_channel_ids: IdSet = frozenset()

    # --- attachments ---------------------------------------------------------------------------
    image_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    video_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    # Gemini takes at most 20 MB per request, and inline files travel base64-encoded (4/3).
    attachments_max_total_bytes: int = Field(default=14 * 1024 * 1024, ge=1, le=15 * 1024 * 1024)
    discord_cdn_hosts: HostSet = frozenset()
    video_tokens_per_hour: int = Field(default=100_000, ge=0)
    video_tokens_per_day: int = Field(default=500_000, ge=0)
    video_requests_per_hour: int = Field(default=10, ge=0)
    video_requests_per_day: int = Field(default=50, ge=0)
    video_user_cooldown_seconds: float = Field(default=60.0, ge=0)

    # --- fair use: token budgets, auto-reply channels, per-channel persona and model -----------
    user_daily_token_budget: int = Field(default=0, ge=0)
    guild_daily_token_budget: int = Field(default=0, ge=0)
    role_token_budgets: RoleBudgets = frozenset()
    budget_reset_timezone: str = "America/Los_Angeles"
    budgets_apply_to_admins: bool = False
    autoreply_ignore_prefix: str = "//"
    gemini_allowed_models: ModelSet = frozenset()
    channel_persona_max_chars: int = Field(default=1000, ge=1, le=4000)

    # --- health thresholds (exported as llmbot_alert_threshold_*; the alert rules use them) ----
    health_memory_threshold_mb: float = Field(default=500.0, gt=0)
    health_error_rate_threshold: float = Field(default=5.0, gt=0, le=100)
    health_response_time_threshold_ms: float = Field(default=5000.0, gt=0)
    health_disk_space_threshold: float = Field(default=85.0, gt=0, le=100)
    health_snapshot_interval_seconds: float = Field(default=30.0, gt=0)
    health_history_retention_days: float = Field(default=7.0, gt=0)
    trace_include_message_text: bool = False

    # --- self-healing (Alertmanager calls POST /alerts) ----------------------------------------
    alert_webhook_token: SecretStr | None = None
    alert_webhook_token_file: Path | None = None
    alert_webhook_allow_insecure_loopback: bool = False
    heal_instance: str | None = None
    heal_cooldown_seconds: float = Field(default=300.0, ge=0)
    heal_escalate_after: int = Field(default=3, ge=1)
    heal_exit_on_escalation: bool = False
    heal_max_concurrency: int = Field(default=2, ge=1)
    # Off: alerts still fire and reach people; the webhook records them and runs nothing.
    # HEALTH_ALERTS_ENABLED is the original bot's name (HEAL_ENABLED wins when both are set).
    heal_enabled: bool = Field(
        default=True, validation_alias=AliasChoices("HEAL_ENABLED", "HEALTH_ALERTS_ENABLED")
    )
    heal_dry_run: bool = False
    heal_audit_max_entries: int = Field(default=1000, ge=1, le=100_000)

    # --- process -------------------------------------------------------------------------------
    data_dir: Path = Path("./data")
    ops_host: str = "127.0.0.1"
    ops_port: int = Field(default=9464, ge=0, le=65535)
    ops_max_connections: int = Field(default=256, ge=1, le=10_000)
    ops_idle_timeout_seconds: float = Field(default=30.0, ge=1, le=3600)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)

    # --- a fleet: several processes sharing state through Redis (README "Running a fleet") ---
    # Unset: one process with its state in SQLite. The URL may carry a password; it is shown
    # as *** in logs and errors, and never in /status or the metrics.
    redis_url: SecretStr | None = None
    # Which shards this process runs ("0-3" or "0,2"); needs DISCORD_SHARD_COUNT.
    discord_shard_ids: ShardIds = None
    # The bot's total number of shards (unset: Discord's recommendation, all in this process).
    discord_shard_count: int | None = Field(default=None, ge=1, le=10_000)
    # With REDIS_URL: pace Discord REST calls on one schedule shared by the fleet through Redis
    # (false: each process its own DISCORD_REST_MAX_RPS, for a REST proxy that paces instead).
    discord_rest_shared_limit: bool = True
    # Queued questions held by a process that stopped touching them for this long (it died)
    # are reclaimed by the others (Redis Streams XAUTOCLAIM); a live one touches every third.
    fleet_queue_claim_idle_seconds: float = Field(default=60.0, ge=1, le=3600)

    # --- diagnostics on demand (GET /debug/tasks, /debug/memory) and slow-operation logging ---
    ops_admin_token: SecretStr | None = None
    ops_admin_token_file: Path | None = None
    tracemalloc_frames: int = Field(default=0, ge=0, le=100)
    event_loop_block_threshold_ms: float = Field(default=100.0, ge=0)

    @field_validator(
        "admin_user_ids",
        "allowed_user_ids",
        "blocked_user_ids",
        "allowed_role_ids",
        "blocked_role_ids",
        "allowed_channel_ids",
        "blocked_channel_ids",
        mode="before",
    )
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [p.strip() for p in value.replace(";", ",").split(",")]
            try:
                return frozenset(int(p) for p in parts if p)
            except ValueError:
                raise ValueError("expected comma-separated numeric Discord ids") from None
        return value

    @field_validator("discord_shard_ids", mode="before")
    @classmethod
    def _split_shards(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        ids: list[int] = []
        try:
            for part in (p.strip() for p in value.split(",")):
                if not part:
                    continue
                first, _, last = part.partition("-")
                low, high = int(first), int(last) if last else int(first)
                if low < 0 or high < low:
                    raise ValueError
                ids.extend(range(low, high + 1))
        except ValueError:
            raise ValueError('expected shard ids like "0-3" or "0,2"') from None
        if not ids:
            raise ValueError('expected shard ids like "0-3" or "0,2"')
        return tuple(dict.fromkeys(ids))

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    @model_validator(mode="after")
    def _shards_fit(self) -> Settings:
        ids, count = self.discord_shard_ids, self.discord_shard_count
        if ids is not None and count is None:
            raise ValueError("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT (the bot's total shards)")
        if ids is not None and count is not None and max(ids) >= count:
            raise ValueError(
                f"DISCORD_SHARD_IDS has shard {max(ids)}, but DISCORD_SHARD_COUNT = {count} "
                f"allows 0-{count - 1}"
            )
        return self

    @property
    def shard_ids(self) -> tuple[int, ...] | None:
        """The shards this process runs (None: all of them, hikari's default)."""
        if self.discord_shard_count is None:
            return None
        return self.discord_shard_ids or tuple(range(self.discord_shard_count))

    @field_validator("discord_cdn_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            hosts = [p.strip().lower() for p in value.replace(";", ",").split(",") if p.strip()]
            for host in hosts:
                if "/" in host or ":" in host or " " in host or host.replace(".", "").isdigit():
                    # An IP address would skip the resolver's private-address check.
                    raise ValueError(f"expected host names like cdn.discordapp.com, got {host!r}")
            return frozenset(hosts)
        return value

    @field_validator("role_token_budgets", mode="before")
    @classmethod
    def _role_budgets(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        budgets: dict[int, int] = {}
        for part in value.replace(";", ",").split(","):
            if not part.strip():
                continue
            role, sep, tokens = part.partition(":")
            try:
                if not sep:
                    raise ValueError
                role_id, amount = int(role.strip()), int(tokens.strip())
            except ValueError:
                raise ValueError(
                    f"expected role_id:tokens pairs like 123456789:50000, got {part.strip()!r}"
                ) from None
            if amount < 0:
                raise ValueError(f"a role's budget must not be negative, got {part.strip()!r}")
            budgets[role_id] = amount
        return frozenset(budgets.items())

    @field_validator("budget_reset_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("expected an IANA time zone name like UTC or Europe/Berlin") from None
        return value

    @field_validator("gemini_allowed_models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            models = [p.strip() for p in value.replace(";", ",").split(",") if p.strip()]
            for model in models:
                if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", model):
                    raise ValueError(f"expected model names like gemini-2.5-flash, got {model!r}")
            if len(models) > 25:
                raise ValueError("at most 25 models (a slash command offers 25 choices)")
            return frozenset(models)
        return value

    @property
    def role_budgets(self) -> dict[int, int]:
        """ROLE_TOKEN_BUDGETS as role id -> daily tokens (0: unlimited)."""
        return dict(self.role_token_budgets)

    @property
    def allowed_models(self) -> tuple[str, ...]:
        """The models `/channel model` offers: GEMINI_MODEL first, then GEMINI_ALLOWED_MODELS."""
        others = sorted(self.gemini_allowed_models - {self.gemini_model})
        return (self.gemini_model, *others)[:25]

    @field_validator("event_loop_block_threshold_ms")
    @classmethod
    def _block_threshold(cls, value: float) -> float:
        # The watchdog ticks five times per threshold: below 10 ms it would cost real CPU.
        if 0 < value < 10:
            raise ValueError("expected 0 (off) or at least 10 ms")
        return value

    @model_validator(mode="after")
    def _idempotency_outlives_the_queue(self) -> Settings:
        if self.idempotency_ttl_seconds <= self.queue_max_age_seconds:
            raise ValueError(
                "set IDEMPOTENCY_TTL_SECONDS above QUEUE_MAX_AGE_SECONDS "
                f"({self.queue_max_age_seconds:g}): a queued question must stay recorded as "
                "answered for longer than it can wait"
            )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("discord_rest_url", "gemini_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value.rstrip("/")

    @property
    def heal_instance_label(self) -> str:
        """The `instance` label of alerts about this bot (what Prometheus scrapes)."""
        return self.heal_instance or f"{self.ops_host}:{self.ops_port}"

    def require_credentials(self) -> tuple[str, str]:
        """The Discord token and Gemini key, or a ConfigError saying what to set."""
        missing = []
        if self.discord_token is None or not self.discord_token.get_secret_value().strip():
            missing.append("DISCORD_TOKEN")
        if self.gemini_api_key is None or not self.gemini_api_key.get_secret_value().strip():
            missing.append("GEMINI_API_KEY (or GOOGLE_API_KEY)")
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} not set: put it in .env or the environment "
                "(see .env.example), or run `python -m bot demo` to try the bot locally"
            )
        assert self.discord_token is not None and self.gemini_api_key is not None
        token = self.discord_token.get_secret_value().strip()
        if token.count(".") != 2:
            raise ConfigError(
                "DISCORD_TOKEN does not look like a bot token (three dot-separated parts): copy it "
                "from the Bot page of your application in the Discord developer portal"
            )
        return token, self.gemini_api_key.get_secret_value().strip()


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        name = ".".join(str(p) for p in item["loc"]).upper() or "settings"
        raw = item.get("input")
        secret = "key" in name.lower() or "token" in name.lower() or name == "REDIS_URL"
        shown = "" if secret or isinstance(raw, dict) else f" (got {raw!r})"
        lines.append(f"{name}: {item['msg']}{shown}")
    return "invalid settings: " + "; ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment and `.env`; a mistake raises ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


# Variables starting with one of these are taken to be meant for the bot, so an unknown one is
# reported (with the nearest known name) instead of silently ignored. Generic words some other
# program might use (DATA_, LOG_, MAX_, USER_, GOOGLE_) are left out: a typo there is only
# caught in `.env`, which is the bot's own file. tests/config keeps this list complete.
SETTING_PREFIXES = (
    "ADMIN_",
    "ALERT_",
    "ALLOWED_",
    "ATTACHMENTS_",
    "AUTOREPLY_",
    "BLOCKED_",
    "BREAKER_",
    "BUDGET_",
    "BUDGETS_",
    "CACHE_",
    "CHANNEL_",
    "CATCHUP_",
    "CONVERSATION_",
    "DEGRADATION_",
    "DISCORD_",
    "EVENT_LOOP_",
    "FALLBACK_",
    "FLEET_",
    "GEMINI_",
    "GUILD_",
    "HEAL_",
    "HEALTH_",
    "IDEMPOTENCY_",
    "IMAGE_",
    "INTAKE_",
    "MAINTENANCE_",
    "OPS_",
    "PERSIST_",
    "QUEUE_",
    "QUOTA_",
    "REDIS_",
    "REPLY_",
    "RETRY_",
    "ROLE_",
    "SHUTDOWN_",
    "STORE_",
    "STREAM_",
    "TRACE_",
    "TRACEMALLOC_",
    "USER_DAILY_",
    "VIDEO_",
)


def known_setting_names() -> frozenset[str]:
    """Every environment variable `Settings` reads (aliases included), upper-cased."""
    names: set[str] = set()
    for name, info in Settings.model_fields.items():
        names.add(name.upper())
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias.upper())
    return frozenset(names)


# Read by docker-compose.yml or deploy/local_stack.py, not by the bot: never "unknown".
OTHER_TOOLS_SETTINGS = frozenset(
    {"BOT_MODE", "ALERT_DISCORD_WEBHOOK_URL", "RUNBOOK_BASE_URL", "DASHBOARD_BASE_URL"}
)
OTHER_TOOLS_PREFIXES = ("OTEL_", "GRAFANA_", "COMPOSE_")
# Variables an orchestrator sets for a service named like the bot (Kubernetes: DISCORD_LLM_BOT_
# SERVICE_HOST, ..._PORT_9464_TCP): they share a prefix by accident.
_ORCHESTRATOR_PARTS = ("_SERVICE_HOST", "_SERVICE_PORT", "_PORT_")


def unknown_settings(
    environ: Mapping[str, str] | None = None, dotenv_keys: Iterable[str] | None = None
) -> list[str]:
    """One line per variable that looks meant for the bot but is no setting.

    In `.env` (the bot's own file) every key is checked but those of OpenTelemetry and of the
    compose/stack tools. In the environment, which other programs share, a variable with one of
    the bot's prefixes is reported only when it is close to a real setting (a typo), so a
    `DISCORD_WEBHOOK_URL` some CI job sets is left alone.
    """
    known = known_setting_names()
    environ = os.environ if environ is None else environ
    if dotenv_keys is None:
        dotenv_keys = _dotenv_keys(Path(".env"))
    lines = []
    seen: set[str] = set()
    candidates = [
        (key, "the environment", False)
        for key in environ
        if key.upper().startswith(SETTING_PREFIXES)
        and not any(part in key.upper() for part in _ORCHESTRATOR_PARTS)
    ]
    candidates += [(key, ".env", True) for key in dotenv_keys]
    for key, where, report_all in candidates:
        name = key.upper()
        if (
            name in known
            or name in seen
            or name in OTHER_TOOLS_SETTINGS
            or name.startswith(OTHER_TOOLS_PREFIXES)
        ):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        if not close and not report_all:
            continue
        seen.add(name)
        hint = f": did you mean {close[0]}?" if close else ": no such setting (see .env.example)"
        lines.append(f"unknown setting {key} in {where}{hint}")
    return lines


def _dotenv_keys(path: Path) -> list[str]:
    if not path.is_file():
        return []
    from dotenv import dotenv_values  # python-dotenv, which pydantic-settings reads .env with

    try:
        return [key for key in dotenv_values(path) if key]
    except (OSError, UnicodeDecodeError):
        return []  # pydantic-settings reports an unreadable .env itself


def ensure_data_dir(settings: Settings) -> Path:
    """Create DATA_DIR if needed and prove it writable, or say in one line what to set."""
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"DATA_DIR = {path} cannot be used ({reason}): set DATA_DIR to a folder the bot can "
            "create and write"
        ) from None
    return path
