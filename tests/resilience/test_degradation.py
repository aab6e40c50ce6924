"""Degradation scoring, the state that owns the level, and the routing/fallback tables."""

from __future__ import annotations

import pytest

from bot.resilience.degradation import (
    LIGHT_HISTORY_MESSAGES,
    LIGHT_MAX_OUTPUT_TOKENS,
    Assessment,
    DegradationLevel,
    DegradationPolicy,
    DegradationState,
    HealthSignals,
    LevelEffects,
    choose_fallback,
    level_effects,
    route,
)
from tests.fakes import FakeClock

NONE, LOW, MEDIUM, HIGH = (
    DegradationLevel.NONE,
    DegradationLevel.LOW,
    DegradationLevel.MEDIUM,
    DegradationLevel.HIGH,
)
MIB = 1024 * 1024
BUSY = 50  # messages in the window: enough traffic to judge ratios and percentiles


def level_of(**signals: object) -> DegradationLevel:
    return DegradationPolicy().assess(HealthSignals(**signals)).level  # type: ignore[arg-type]


def make_state(
    **kwargs: object,
) -> tuple[DegradationState, FakeClock, list[tuple[DegradationLevel, DegradationLevel, str]]]:
    clock = FakeClock(1000.0)
    seen: list[tuple[DegradationLevel, DegradationLevel, str]] = []
    state = DegradationState(
        clock=clock,
        on_change=lambda old, new, reason: seen.append((old, new, reason)),
        **kwargs,  # type: ignore[arg-type]
    )
    return state, clock, seen


# -- policy ------------------------------------------------------------------------------------


def test_healthy_signals_give_none() -> None:
    assessment = DegradationPolicy().assess(HealthSignals(messages_in_window=BUSY))
    assert assessment == Assessment(NONE, "healthy")


@pytest.mark.parametrize(
    ("rss_mib", "expected"),
    [(400, NONE), (401, MEDIUM), (599, MEDIUM), (600, HIGH), (2000, HIGH)],
)
def test_memory_is_medium_above_threshold_and_high_at_one_and_a_half(
    rss_mib: int, expected: DegradationLevel
) -> None:
    assert level_of(rss_bytes=rss_mib * MIB) == expected


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [(0.10, NONE), (0.11, MEDIUM), (0.19, MEDIUM), (0.20, HIGH), (1.0, HIGH)],
)
def test_error_ratio_is_medium_above_threshold_and_high_at_double(
    ratio: float, expected: DegradationLevel
) -> None:
    assert level_of(error_ratio=ratio, messages_in_window=BUSY) == expected


@pytest.mark.parametrize(
    ("p95_s", "expected"),
    [(10.0, NONE), (10.5, LOW), (19.9, LOW), (20.0, MEDIUM), (90.0, MEDIUM)],
)
def test_p95_is_low_above_threshold_and_medium_at_double(
    p95_s: float, expected: DegradationLevel
) -> None:
    assert level_of(p95_s=p95_s, messages_in_window=BUSY) == expected


@pytest.mark.parametrize(
    ("pressure", "expected"),
    [(0.8, NONE), (0.81, MEDIUM), (0.99, MEDIUM), (1.0, HIGH)],
)
def test_queue_pressure_is_medium_above_threshold_and_high_when_full(
    pressure: float, expected: DegradationLevel
) -> None:
    assert level_of(queue_pressure=pressure) == expected


def test_open_breaker_is_high_even_without_traffic() -> None:
    assert level_of(breaker_open=True) == HIGH


def test_ratio_and_percentile_are_not_judged_on_too_few_messages() -> None:
    policy = DegradationPolicy(min_messages=10)
    few = HealthSignals(error_ratio=0.5, p95_s=60.0, messages_in_window=9)
    enough = HealthSignals(error_ratio=0.5, p95_s=60.0, messages_in_window=10)
    assert policy.assess(few).level == NONE
    assert policy.assess(enough).level == HIGH
    # Memory, queue and breaker do not depend on traffic.
    quiet_but_full = HealthSignals(rss_bytes=500 * MIB, messages_in_window=0)
    assert policy.assess(quiet_but_full).level == MEDIUM


def test_level_is_the_worst_signal_and_the_reason_lists_every_trigger() -> None:
    signals = HealthSignals(
        rss_bytes=450 * MIB,
        error_ratio=0.234,
        p95_s=12.3,
        breaker_open=True,
        queue_pressure=0.85,
        messages_in_window=BUSY,
    )
    assessment = DegradationPolicy().assess(signals)
    assert assessment.level == HIGH
    assert assessment.reason == (
        "memory 450 MiB > 400 MiB; error ratio 23% > 10%; p95 12.3s > 10.0s; "
        "queue 85% full > 80%; breaker open"
    )


def test_custom_thresholds_are_used() -> None:
    policy = DegradationPolicy(memory_bytes=100 * MIB, error_ratio=0.5, p95_s=1.0, min_messages=1)
    assert policy.assess(HealthSignals(rss_bytes=101 * MIB)).level == MEDIUM
    assert policy.assess(HealthSignals(error_ratio=0.4, messages_in_window=1)).level == NONE
    assert policy.assess(HealthSignals(p95_s=1.5, messages_in_window=1)).level == LOW


@pytest.mark.parametrize(
    "kwargs",
    [{"memory_bytes": 0}, {"error_ratio": 0.0}, {"error_ratio": 1.5}, {"queue_pressure": 0.0}],
)
def test_nonsense_thresholds_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="threshold"):
        DegradationPolicy(**kwargs)  # type: ignore[arg-type]


def test_levels_parse_from_names_and_numbers() -> None:
    assert DegradationLevel.parse("Medium") == MEDIUM
    assert DegradationLevel.parse(" 3 ") == HIGH
    assert HIGH.label == "high"
    with pytest.raises(ValueError, match="none, low, medium, high"):
        DegradationLevel.parse("severe")
    with pytest.raises(ValueError, match="unknown degradation level"):
        DegradationLevel.parse("7")


# -- state -------------------------------------------------------------------------------------


def test_state_starts_healthy_at_construction_time() -> None:
    state, clock, seen = make_state()
    assert (state.level, state.reason, state.since) == (NONE, "healthy", clock.now)
    assert state.stats.changes_total == 0
    assert not state.maintenance
    assert seen == []


def test_assess_stores_the_assessment_and_reports_each_change_once() -> None:
    state, clock, seen = make_state()
    clock.now = 1010.0
    result = state.assess(HealthSignals(error_ratio=0.15, messages_in_window=BUSY))
    assert result.level == MEDIUM
    # The same reading again changes nothing.
    clock.now = 1020.0
    state.assess(HealthSignals(error_ratio=0.15, messages_in_window=BUSY))
    assert seen == [(NONE, MEDIUM, "error ratio 15% > 10%")]
    assert (state.level, state.since, state.stats.changes_total) == (MEDIUM, 1010.0, 1)
    assert state.stats.assessments_total == 2

    clock.now = 1030.0
    state.assess(HealthSignals(messages_in_window=BUSY))
    assert seen[-1] == (MEDIUM, NONE, "healthy")
    assert (state.level, state.reason, state.since) == (NONE, "healthy", 1030.0)
    assert state.stats.changes_total == 2


def test_overrides_raise_the_level_and_each_source_undoes_only_its_own() -> None:
    state, _, seen = make_state()
    state.assess(HealthSignals(p95_s=15.0, messages_in_window=BUSY))  # LOW
    state.set_override("heal:HighErrorRate", MEDIUM, "error-rate alert firing")
    state.set_override("operator", LOW, "watching")
    assert state.level == MEDIUM
    assert state.reason == "error-rate alert firing"
    assert state.overrides == {
        "heal:HighErrorRate": Assessment(MEDIUM, "error-rate alert firing"),
        "operator": Assessment(LOW, "watching"),
    }

    assert state.clear_override("heal:HighErrorRate")
    assert not state.clear_override("heal:HighErrorRate")
    # Back to LOW, held by both the assessment and the operator.
    assert state.level == LOW
    assert state.reason == "watching; p95 15.0s > 10.0s"
    assert [(old, new) for old, new, _ in seen] == [(NONE, LOW), (LOW, MEDIUM), (MEDIUM, LOW)]


def test_an_override_below_the_assessment_does_not_lower_the_level() -> None:
    state, _, _ = make_state()
    state.assess(HealthSignals(breaker_open=True))
    state.set_override("operator", NONE, "all good, trust me")
    assert state.level == HIGH
    assert state.reason == "breaker open"


def test_replacing_an_override_of_the_same_source() -> None:
    state, _, seen = make_state()
    state.set_override("heal", HIGH, "first")
    state.set_override("heal", MEDIUM, "second")
    assert (state.level, state.reason) == (MEDIUM, "second")
    assert len(seen) == 2


def test_maintenance_holds_high_until_exited() -> None:
    state, _, seen = make_state()
    state.enter_maintenance("deploying v2")
    assert state.maintenance
    assert (state.level, state.reason) == (HIGH, "deploying v2")
    assert "maintenance" not in state.overrides
    state.exit_maintenance()
    assert not state.maintenance
    assert not state.exit_maintenance()
    assert state.level == NONE
    assert seen == [(NONE, HIGH, "deploying v2"), (HIGH, NONE, "healthy")]


def test_maintenance_is_not_an_ordinary_override_source() -> None:
    state, _, _ = make_state()
    with pytest.raises(ValueError, match="enter_maintenance"):
        state.set_override("maintenance", HIGH, "sneaky")
    with pytest.raises(ValueError, match="non-empty"):
        state.set_override("", HIGH, "nameless")


def test_a_failing_hook_does_not_break_the_state(caplog: pytest.LogCaptureFixture) -> None:
    def broken(old: DegradationLevel, new: DegradationLevel, reason: str) -> None:
        raise RuntimeError("metrics are down")

    state = DegradationState(on_change=broken)
    state.set_override("operator", HIGH, "test")
    assert state.level == HIGH
    assert state.stats.changes_total == 1
    assert "on_change hook" in caplog.text


def test_fallbacks_are_chosen_and_counted_per_kind() -> None:
    state, _, _ = make_state()
    assert state.fallback_kind(cached_available=True) == "cached"
    assert state.fallback_kind(cached_available=False) == "generic"
    state.enter_maintenance("upgrade")
    assert state.fallback_kind(cached_available=False) == "maintenance"
    state.maintenance_mode_enabled = False
    assert state.fallback_kind(cached_available=False) == "generic"

    state.record_fallback("generic")
    state.record_fallback("generic")
    state.record_fallback("cached")
    assert state.stats.fallbacks_total == {"cached": 1, "maintenance": 0, "generic": 2}


@pytest.mark.parametrize(
    ("level", "cached", "enabled", "expected"),
    [
        (HIGH, True, True, "cached"),
        (HIGH, False, True, "maintenance"),
        (HIGH, False, False, "generic"),
        (MEDIUM, False, True, "generic"),
        (NONE, True, False, "cached"),
    ],
)
def test_choose_fallback_table(
    level: DegradationLevel, cached: bool, enabled: bool, expected: str
) -> None:
    assert (
        choose_fallback(level, cached_available=cached, maintenance_mode_enabled=enabled)
        == expected
    )


# -- routing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("level", list(DegradationLevel))
@pytest.mark.parametrize("can_queue", [True, False])
def test_maintenance_wins_over_everything(level: DegradationLevel, can_queue: bool) -> None:
    decision = route(
        level,
        quota_exhausted=True,
        breaker_open=True,
        maintenance=True,
        call_failed=True,
        can_queue=can_queue,
    )
    assert decision == "maintenance"


@pytest.mark.parametrize("level", [NONE, LOW, MEDIUM])
def test_below_high_a_usable_model_is_called(level: DegradationLevel) -> None:
    assert route(level, quota_exhausted=False, breaker_open=False, maintenance=False) == "call"
    # Even when the queue could not take it: calling is still the best option.
    assert (
        route(level, quota_exhausted=False, breaker_open=False, maintenance=False, can_queue=False)
        == "call"
    )


@pytest.mark.parametrize(
    ("level", "quota_exhausted", "breaker_open", "call_failed"),
    [
        (NONE, True, False, False),
        (NONE, False, True, False),
        (LOW, False, False, True),
        (HIGH, False, False, False),
        (MEDIUM, True, True, True),
    ],
)
def test_unusable_model_queues_or_falls_back_when_the_queue_cannot_take_it(
    level: DegradationLevel, quota_exhausted: bool, breaker_open: bool, call_failed: bool
) -> None:
    def decide(can_queue: bool) -> str:
        return route(
            level,
            quota_exhausted=quota_exhausted,
            breaker_open=breaker_open,
            maintenance=False,
            call_failed=call_failed,
            can_queue=can_queue,
        )

    assert decide(True) == "queue"
    assert decide(False) == "fallback"


# -- what each level changes -------------------------------------------------------------------


def test_none_changes_nothing() -> None:
    assert level_effects(NONE) == LevelEffects(
        history_messages=None, max_output_tokens=None, video=True, call_model=True
    )


def test_low_refuses_videos_and_nothing_else() -> None:
    assert level_effects(LOW) == LevelEffects(video=False)


def test_medium_sends_shorter_requests_without_video() -> None:
    effects = level_effects(MEDIUM)
    assert (effects.history_messages, effects.max_output_tokens) == (10, 512)
    assert (LIGHT_HISTORY_MESSAGES, LIGHT_MAX_OUTPUT_TOKENS) == (10, 512)
    assert not effects.video
    assert effects.call_model


def test_high_makes_no_call_for_a_new_question() -> None:
    effects = level_effects(HIGH)
    assert not effects.call_model
    assert (effects.history_messages, effects.max_output_tokens, effects.video) == (10, 512, False)


@pytest.mark.parametrize(("lower", "higher"), [(NONE, LOW), (LOW, MEDIUM), (MEDIUM, HIGH)])
def test_each_level_keeps_the_limits_of_the_one_below(
    lower: DegradationLevel, higher: DegradationLevel
) -> None:
    def tighter_or_equal(a: int | None, b: int | None) -> bool:
        return b is not None and (a is None or b <= a)

    low, high = level_effects(lower), level_effects(higher)
    assert low.video or not high.video
    assert low.call_model or not high.call_model
    for name in ("history_messages", "max_output_tokens"):
        a, b = getattr(low, name), getattr(high, name)
        assert (a is None and b is None) or tighter_or_equal(a, b), name
    assert low != high  # every level changes something


@pytest.mark.parametrize("level", list(DegradationLevel))
def test_route_queues_exactly_where_the_level_makes_no_call(level: DegradationLevel) -> None:
    decision = route(level, quota_exhausted=False, breaker_open=False, maintenance=False)
    assert decision == ("call" if level_effects(level).call_model else "queue")


@pytest.mark.parametrize(
    ("signals", "expected"),
    [
        # The original thresholds (400 MB, 10 % errors, p95 10 s), as the defaults.
        ({"p95_s": 10.5, "messages_in_window": BUSY}, LOW),
        ({"rss_bytes": 401 * MIB}, MEDIUM),
        ({"error_ratio": 0.11, "messages_in_window": BUSY}, MEDIUM),
        ({"breaker_open": True}, HIGH),
    ],
)
def test_the_original_thresholds_change_behaviour(
    signals: dict[str, object], expected: DegradationLevel
) -> None:
    level = level_of(**signals)
    assert level == expected
    assert level_effects(level) != level_effects(NONE)
