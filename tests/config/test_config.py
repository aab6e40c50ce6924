"""Settings: defaults, the .env.example contract, and errors that say what to set."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.config import (
    SETTING_PREFIXES,
    ConfigError,
    Settings,
    known_setting_names,
    load_settings,
    unknown_settings,
)

ROOT = Path(__file__).resolve().parents[2]


COMPOSE_ONLY_MARKER = "# --- docker compose only"


def _example() -> dict[str, str]:
    """The bot's part of .env.example (the compose-only section at the end is not the bot's)."""
    entries = {}
    text = (ROOT / ".env.example").read_text().split(COMPOSE_ONLY_MARKER)[0]
    for line in text.splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            entries[match.group(1)] = match.group(2).strip('"')
    return entries


def _env_name(field: str) -> str:
    return "GEMINI_API_KEY" if field == "gemini_api_key" else field.upper()


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    assert set(_example()) == {_env_name(name) for name in Settings.model_fields}


def test_env_example_shows_the_real_defaults() -> None:
    example = _example()
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = example[_env_name(name)]
        if default is None or (isinstance(default, frozenset) and not default):
            assert shown == "", name
        elif isinstance(default, bool):
            assert shown == str(default).lower(), name
        elif isinstance(default, int | float):
            assert float(shown) == float(default), name
        elif isinstance(default, Path):
            assert Path(shown) == default, name
        else:
            assert shown == str(default), name


def test_id_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKED_USER_IDS", "1, 2,3")
    assert load_settings(_env_file=None).blocked_user_ids == frozenset({1, 2, 3})


def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKED_USER_IDS", "alice")
    monkeypatch.setenv("GEMINI_RATE_LIMIT_SAFETY_MARGIN", "2")
    with pytest.raises(ConfigError) as err:
        load_settings(_env_file=None)
    assert "BLOCKED_USER_IDS" in str(err.value)
    assert "GEMINI_RATE_LIMIT_SAFETY_MARGIN" in str(err.value)


def test_missing_credentials_say_what_to_set() -> None:
    with pytest.raises(ConfigError, match="DISCORD_TOKEN and GEMINI_API_KEY"):
        load_settings(_env_file=None).require_credentials()


def test_google_api_key_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "abc")
    monkeypatch.setenv("DISCORD_TOKEN", "MTIz.a.b")
    assert load_settings(_env_file=None).require_credentials() == ("MTIz.a.b", "abc")


def test_secret_values_are_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "SECRET-but-not-a-token")
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    with pytest.raises(ConfigError) as err:
        load_settings(_env_file=None).require_credentials()
    assert "SECRET" not in str(err.value)


def test_env_example_copied_to_env_loads_as_the_defaults() -> None:
    from_example = load_settings(_env_file=ROOT / ".env.example")
    assert from_example == load_settings(_env_file=None)


def test_every_setting_is_covered_by_the_typo_check() -> None:
    """A new setting with a new first word must get its prefix in SETTING_PREFIXES (or be one
    of the generic names deliberately left to the `.env` check)."""
    generic = {"DATA_DIR", "LOG_LEVEL", "LOG_FORMAT", "USER_COOLDOWN_SECONDS", "GOOGLE_API_KEY"}
    uncovered = {
        name
        for name in known_setting_names()
        if not name.startswith(SETTING_PREFIXES)
        and name not in generic
        and not name.startswith("MAX_")
    }
    assert not uncovered, f"add their prefixes to bot.config.SETTING_PREFIXES: {uncovered}"


def test_unknown_settings_name_the_nearest_known_one() -> None:
    lines = unknown_settings(
        {"GEMINI_RATE_LIMT_RPM": "5", "GEMINI_MODEL": "x", "PATH": "/bin", "OTEL_X": "1"},
        dotenv_keys=["CACHE_TTL_SECOND", "OTEL_SERVICE_NAME", "FOO"],
    )
    assert lines == [
        "unknown setting GEMINI_RATE_LIMT_RPM in the environment: "
        "did you mean GEMINI_RATE_LIMIT_RPM?",
        "unknown setting CACHE_TTL_SECOND in .env: did you mean CACHE_TTL_SECONDS?",
        "unknown setting FOO in .env: no such setting (see .env.example)",
    ]


def test_heal_enabled_takes_the_original_name_too(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(_env_file=None).heal_enabled is True
    monkeypatch.setenv("HEALTH_ALERTS_ENABLED", "false")
    assert load_settings(_env_file=None).heal_enabled is False
    monkeypatch.setenv("HEAL_ENABLED", "true")  # the new name wins when both are set
    assert load_settings(_env_file=None).heal_enabled is True
    monkeypatch.setenv("HEAL_ENABLED", "perhaps")
    with pytest.raises(ConfigError, match="HEAL_ENABLED"):
        load_settings(_env_file=None)


@pytest.mark.parametrize("value", ["0", "100001", "many"])
def test_heal_audit_size_is_bounded(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HEAL_AUDIT_MAX_ENTRIES", value)
    with pytest.raises(ConfigError, match="HEAL_AUDIT_MAX_ENTRIES"):
        load_settings(_env_file=None)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("EVENT_LOOP_BLOCK_THRESHOLD_MS", "5", "0 (off) or at least 10 ms"),
        ("TRACEMALLOC_FRAMES", "101", "less than or equal to 100"),
        ("DISCORD_REST_MAX_RETRIES", "6", "less than or equal to 5"),
        ("DISCORD_HOLD_MAX_SECONDS", "0", "greater than 0"),
        ("DISCORD_HOLD_MAX_REPLIES", "-1", "greater than or equal to 0"),
    ],
)
def test_diagnostics_and_discord_hold_settings_are_checked(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name) as err:
        load_settings(_env_file=None)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IDEMPOTENCY_MAX_RECORDS": "10"}, "IDEMPOTENCY_MAX_RECORDS"),
        ({"IDEMPOTENCY_TTL_SECONDS": "0"}, "IDEMPOTENCY_TTL_SECONDS"),
        (
            {"IDEMPOTENCY_TTL_SECONDS": "600", "QUEUE_MAX_AGE_SECONDS": "900"},
            "set IDEMPOTENCY_TTL_SECONDS above QUEUE_MAX_AGE_SECONDS (900)",
        ),
    ],
)
def test_the_idempotency_record_settings_are_checked(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_settings(_env_file=None)
    assert "\n" not in str(err.value)


def test_env_example_copied_to_env_has_no_unknown_settings() -> None:
    """`cp .env.example .env` (the README's first step) must not make `check` fail."""
    example = Path(__file__).resolve().parents[2] / ".env.example"
    keys = [
        line.split("=", 1)[0].strip()
        for line in example.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    ]
    assert len(keys) > 50
    assert unknown_settings({}, dotenv_keys=keys) == []


def test_other_programs_variables_in_the_environment_are_left_alone() -> None:
    environ = {
        "DISCORD_WEBHOOK_URL": "https://ci.example/hook",  # a CI job's, not ours
        "QUEUE_URL": "sqs://x",
        "HEALTH_CHECK_URL": "http://x",
        "DISCORD_LLM_BOT_SERVICE_HOST": "10.0.0.1",  # Kubernetes service variables
        "DISCORD_LLM_BOT_PORT_9464_TCP": "tcp://10.0.0.1:9464",
        "ALERT_DISCORD_WEBHOOK_URL": "https://discord.example/hook",  # make stack's
    }
    assert unknown_settings(environ, dotenv_keys=[]) == []


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ROLE_TOKEN_BUDGETS", "123:lots", "expected role_id:tokens pairs"),
        ("ROLE_TOKEN_BUDGETS", "123", "expected role_id:tokens pairs"),
        ("ROLE_TOKEN_BUDGETS", "123:-5", "must not be negative"),
        ("BUDGET_RESET_TIMEZONE", "Mars/Olympus", "IANA time zone"),
        ("GEMINI_ALLOWED_MODELS", "gemini-2.5-pro, bad model", "expected model names"),
        ("USER_DAILY_TOKEN_BUDGET", "-1", "greater than or equal to 0"),
        ("CHANNEL_PERSONA_MAX_CHARS", "5000", "less than or equal to 4000"),
    ],
)
def test_fair_use_mistakes_say_what_to_set(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name) as err:
        load_settings(_env_file=None)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_fair_use_settings_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLE_TOKEN_BUDGETS", "11:500, 12:0")
    monkeypatch.setenv("GEMINI_ALLOWED_MODELS", "gemini-2.5-pro,gemini-2.5-flash")
    settings = load_settings(_env_file=None)
    assert settings.role_budgets == {11: 500, 12: 0}
    assert settings.allowed_models == ("gemini-2.5-flash", "gemini-2.5-pro")


def test_shard_ids_take_ranges_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_SHARD_COUNT", "8")
    monkeypatch.setenv("DISCORD_SHARD_IDS", "0-2, 5,7")
    assert load_settings(_env_file=None).shard_ids == (0, 1, 2, 5, 7)
    monkeypatch.delenv("DISCORD_SHARD_IDS")
    # A count without ids: every shard in this process.
    assert load_settings(_env_file=None).shard_ids == tuple(range(8))
    monkeypatch.delenv("DISCORD_SHARD_COUNT")
    assert load_settings(_env_file=None).shard_ids is None  # hikari's default


@pytest.mark.parametrize(
    ("ids", "count", "message"),
    [
        ("0-3", None, "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT"),
        ("0-3", "2", "DISCORD_SHARD_IDS has shard 3, but DISCORD_SHARD_COUNT = 2 allows 0-1"),
        ("3-1", "4", 'DISCORD_SHARD_IDS: .*expected shard ids like "0-3" or "0,2"'),
        ("a", "4", 'DISCORD_SHARD_IDS: .*expected shard ids like "0-3" or "0,2"'),
        (None, "0", "DISCORD_SHARD_COUNT: .*greater than or equal to 1"),
    ],
)
def test_bad_shard_settings_are_one_line(
    monkeypatch: pytest.MonkeyPatch, ids: str | None, count: str | None, message: str
) -> None:
    for name, value in (("DISCORD_SHARD_IDS", ids), ("DISCORD_SHARD_COUNT", count)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(_env_file=None)
    assert "\n" not in str(caught.value)


def test_redis_url_is_checked_and_its_password_never_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://:pa55word@redis.example:6380/0")
    settings = load_settings(_env_file=None)
    assert settings.redis_url is not None
    assert "pa55word" not in repr(settings) and "pa55word" not in str(settings.redis_url)
    monkeypatch.setenv("REDIS_URL", "http://:pa55word@redis.example:6380/0")
    with pytest.raises(ConfigError, match=r"REDIS_URL: .*redis://, rediss:// or unix://") as caught:
        load_settings(_env_file=None)
    assert "pa55word" not in str(caught.value)
