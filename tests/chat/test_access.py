"""Tests for bot.chat.access: allow/block lists, per-user cooldown, video budgets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.chat.access import (
    AccessPolicy,
    UserCooldown,
    VideoLimiter,
    cooldown_refusal,
    format_wait,
)
from bot.chat.refusal import REFUSAL_REASONS, Refusal
from tests.fakes import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(5_000.0)


def reason(refusal: Refusal | None) -> str | None:
    if refusal is not None:
        assert refusal.reason in REFUSAL_REASONS
        assert refusal.message
    return refusal.reason if refusal else None


# --- AccessPolicy ----------------------------------------------------------------------------


def test_empty_policy_allows_everyone() -> None:
    assert AccessPolicy().check(1, [], 10) is None


@pytest.mark.parametrize(
    ("policy", "user", "roles", "channel", "expected"),
    [
        (AccessPolicy(blocked_user_ids=frozenset({1})), 1, [], 10, "user_blocked"),
        (AccessPolicy(blocked_user_ids=frozenset({1})), 2, [], 10, None),
        (AccessPolicy(blocked_role_ids=frozenset({7})), 1, [6, 7], 10, "role_blocked"),
        (AccessPolicy(blocked_channel_ids=frozenset({10})), 1, [], 10, "channel_blocked"),
        (AccessPolicy(allowed_user_ids=frozenset({1})), 1, [], 10, None),
        (AccessPolicy(allowed_user_ids=frozenset({1})), 2, [], 10, "user_not_allowed"),
        (AccessPolicy(allowed_role_ids=frozenset({7})), 2, [7], 10, None),
        (AccessPolicy(allowed_role_ids=frozenset({7})), 2, [8], 10, "user_not_allowed"),
        (AccessPolicy(allowed_channel_ids=frozenset({10})), 1, [], 11, "channel_not_allowed"),
        (AccessPolicy(allowed_channel_ids=frozenset({10})), 1, [], 10, None),
        # Allowed users or roles: either admits.
        (
            AccessPolicy(allowed_user_ids=frozenset({1}), allowed_role_ids=frozenset({7})),
            2,
            [7],
            10,
            None,
        ),
        # Blocks win over allows.
        (
            AccessPolicy(allowed_user_ids=frozenset({1}), blocked_role_ids=frozenset({7})),
            1,
            [7],
            10,
            "role_blocked",
        ),
        (
            AccessPolicy(allowed_channel_ids=frozenset({10}), blocked_user_ids=frozenset({1})),
            1,
            [],
            10,
            "user_blocked",
        ),
    ],
)
def test_policy(
    policy: AccessPolicy, user: int, roles: list[int], channel: int, expected: str | None
) -> None:
    assert reason(policy.check(user, roles, channel)) == expected


def test_thread_follows_its_parent_channel() -> None:
    allowed = AccessPolicy(allowed_channel_ids=frozenset({10}))
    assert allowed.check(1, [], 99, parent_channel_id=10) is None
    assert reason(allowed.check(1, [], 99, parent_channel_id=11)) == "channel_not_allowed"
    blocked = AccessPolicy(blocked_channel_ids=frozenset({10}))
    assert reason(blocked.check(1, [], 99, parent_channel_id=10)) == "channel_blocked"


@settings(derandomize=True)
@given(
    user=st.integers(1, 5),
    roles=st.frozensets(st.integers(1, 5), max_size=3),
    channel=st.integers(1, 5),
    lists=st.lists(st.frozensets(st.integers(1, 5), max_size=3), min_size=6, max_size=6),
)
def test_block_lists_always_win(
    user: int, roles: frozenset[int], channel: int, lists: list[frozenset[int]]
) -> None:
    policy = AccessPolicy(*lists)
    refusal = policy.check(user, roles, channel)
    blocked = (
        user in policy.blocked_user_ids
        or bool(roles & policy.blocked_role_ids)
        or channel in policy.blocked_channel_ids
    )
    if blocked:
        assert reason(refusal) in {"user_blocked", "role_blocked", "channel_blocked"}
    user_ok = not (policy.allowed_user_ids or policy.allowed_role_ids) or (
        user in policy.allowed_user_ids or bool(roles & policy.allowed_role_ids)
    )
    channel_ok = not policy.allowed_channel_ids or channel in policy.allowed_channel_ids
    assert (refusal is None) == (not blocked and user_ok and channel_ok)


# --- UserCooldown ----------------------------------------------------------------------------


def test_cooldown_per_user(clock: FakeClock) -> None:
    cooldown = UserCooldown(10.0, clock=clock)
    assert cooldown.try_acquire(1) == 0.0
    assert cooldown.try_acquire(2) == 0.0
    clock.advance(4)
    assert cooldown.try_acquire(1) == pytest.approx(6.0)
    clock.advance(6)
    assert cooldown.try_acquire(1) == 0.0
    assert cooldown.try_acquire(1) == pytest.approx(10.0)


def test_refused_attempt_does_not_extend_the_cooldown(clock: FakeClock) -> None:
    cooldown = UserCooldown(10.0, clock=clock)
    cooldown.try_acquire(1)
    clock.advance(9)
    assert cooldown.try_acquire(1) == pytest.approx(1.0)
    clock.advance(1)
    assert cooldown.try_acquire(1) == 0.0


def test_zero_cooldown_allows_everything_and_stores_nothing(clock: FakeClock) -> None:
    cooldown = UserCooldown(0.0, clock=clock)
    assert [cooldown.try_acquire(1) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert len(cooldown) == 0


def test_cooldown_map_is_bounded(clock: FakeClock) -> None:
    cooldown = UserCooldown(100.0, max_users=3, clock=clock)
    for user in range(10):
        cooldown.try_acquire(user)
        clock.advance(1)
        assert len(cooldown) <= 3
    # The three most recent users are still cooling down; the first were forgotten.
    assert cooldown.remaining(9) > 0 and cooldown.remaining(7) > 0
    assert cooldown.remaining(0) == 0.0


def test_expired_entries_are_dropped(clock: FakeClock) -> None:
    cooldown = UserCooldown(5.0, clock=clock)
    for user in range(100):
        cooldown.try_acquire(user)
    clock.advance(5)
    cooldown.try_acquire(1000)
    assert len(cooldown) == 1


def test_cooldown_refusal_message() -> None:
    refusal = cooldown_refusal(4.2)
    assert reason(refusal) == "cooldown"
    assert "5 seconds" in refusal.message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "1 second"),
        (1.0, "1 second"),
        (41.5, "42 seconds"),
        (89.0, "89 seconds"),
        (90.0, "2 minutes"),
        (600.0, "10 minutes"),
        (5399.0, "90 minutes"),
        (5400.0, "2 hours"),
        (86400.0, "24 hours"),
    ],
)
def test_format_wait(seconds: float, text: str) -> None:
    assert format_wait(seconds) == text


@pytest.mark.parametrize("kwargs", [{"cooldown_s": -1.0}, {"cooldown_s": 1.0, "max_users": 0}])
def test_cooldown_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        UserCooldown(**kwargs)  # type: ignore[arg-type]


# --- VideoLimiter ----------------------------------------------------------------------------


def test_video_defaults() -> None:
    limiter = VideoLimiter()
    assert (limiter.tokens_per_hour, limiter.tokens_per_day) == (100_000, 500_000)
    assert (limiter.requests_per_hour, limiter.requests_per_day) == (10, 50)


def test_video_user_cooldown(clock: FakeClock) -> None:
    limiter = VideoLimiter(cooldown_s=60, clock=clock)
    assert limiter.try_acquire(1, 1_000) is None
    refusal = limiter.check(1, 1_000)
    assert reason(refusal) == "video_cooldown"
    assert refusal is not None and "60 seconds" in refusal.message
    assert limiter.check(2, 1_000) is None  # another user is not held back
    clock.advance(60)
    assert limiter.check(1, 1_000) is None


def test_check_alone_records_nothing(clock: FakeClock) -> None:
    limiter = VideoLimiter(requests_per_hour=1, clock=clock)
    assert limiter.check(1, 10) is None
    assert limiter.check(1, 10) is None
    assert limiter.usage().requests_last_hour == 0


def test_video_too_long_for_any_window(clock: FakeClock) -> None:
    limiter = VideoLimiter(tokens_per_hour=100_000, clock=clock)
    refusal = limiter.check(1, 100_001)
    assert reason(refusal) == "video_too_long"
    assert refusal is not None and "100,001" in refusal.message
    assert limiter.check(1, 100_000) is None


def test_hourly_requests_slide(clock: FakeClock) -> None:
    limiter = VideoLimiter(requests_per_hour=2, cooldown_s=0, clock=clock)
    limiter.record(1, 10)
    clock.advance(1800)
    limiter.record(2, 10)
    clock.advance(1000)
    refusal = limiter.check(3, 10)
    assert reason(refusal) == "video_hourly_requests"
    # The first request leaves the window 3600 s after it was made: 800 s from now.
    assert refusal is not None and "14 minutes" in refusal.message
    clock.advance(800)
    assert limiter.check(3, 10) is None


def test_hourly_tokens(clock: FakeClock) -> None:
    limiter = VideoLimiter(tokens_per_hour=1_000, cooldown_s=0, clock=clock)
    limiter.record(1, 600)
    clock.advance(10)
    limiter.record(2, 300)
    assert limiter.check(3, 100) is None
    assert reason(limiter.check(3, 101)) == "video_hourly_tokens"
    clock.advance(3590)  # the 600-token request leaves the window
    assert limiter.check(3, 700) is None


def test_daily_budgets(clock: FakeClock) -> None:
    limiter = VideoLimiter(
        tokens_per_hour=1_000,
        tokens_per_day=1_500,
        requests_per_day=3,
        cooldown_s=0,
        clock=clock,
    )
    limiter.record(1, 900)
    clock.advance(3600)
    limiter.record(1, 500)
    clock.advance(3600)
    assert reason(limiter.check(1, 200)) == "video_daily_tokens"
    assert limiter.check(1, 100) is None
    limiter.record(1, 100)
    assert reason(limiter.check(1, 0)) == "video_daily_requests"
    clock.advance(86400 - 7200)  # the first request is a day old
    assert limiter.check(1, 0) is None
    usage = limiter.usage()
    assert (usage.requests_last_day, usage.tokens_last_day) == (2, 600)
    assert (usage.requests_last_hour, usage.tokens_last_hour) == (0, 0)


def test_wait_accounts_for_both_windows(clock: FakeClock) -> None:
    limiter = VideoLimiter(requests_per_hour=1, requests_per_day=1, cooldown_s=0, clock=clock)
    limiter.record(1, 0)
    refusal = limiter.check(2, 0)
    assert reason(refusal) == "video_hourly_requests"
    assert refusal is not None and "24 hours" in refusal.message


def test_zero_budget_disables_videos(clock: FakeClock) -> None:
    refusal = VideoLimiter(requests_per_day=0, clock=clock).check(1, 0)
    assert reason(refusal) == "video_daily_requests"
    assert refusal is not None and refusal.message == "I can't watch videos right now."


def test_recording_past_the_cap_stays_bounded_and_never_undercounts(clock: FakeClock) -> None:
    limiter = VideoLimiter(requests_per_hour=3, requests_per_day=3, cooldown_s=0, clock=clock)
    for _ in range(50):
        limiter.record(1, 10)
        clock.advance(1)
    usage = limiter.usage()
    assert (usage.requests_last_hour, usage.tokens_last_hour) == (50, 500)
    assert len(limiter._hour.entries) <= 3
    assert len(limiter._day.entries) <= 3


def test_negative_tokens_are_refused(clock: FakeClock) -> None:
    limiter = VideoLimiter(clock=clock)
    with pytest.raises(ValueError, match="negative"):
        limiter.record(1, -1)
    with pytest.raises(ValueError, match="negative"):
        limiter.check(1, -1)
    with pytest.raises(ValueError, match="negative"):
        VideoLimiter(tokens_per_day=-1)


@settings(derandomize=True)
@given(
    steps=st.lists(
        st.tuples(st.integers(1, 3), st.integers(0, 400), st.floats(0, 2_000)), max_size=60
    )
)
def test_admitted_videos_never_exceed_any_window(steps: list[tuple[int, int, float]]) -> None:
    clock = FakeClock(5_000.0)
    limiter = VideoLimiter(
        tokens_per_hour=1_000,
        tokens_per_day=3_000,
        requests_per_hour=4,
        requests_per_day=10,
        cooldown_s=30,
        clock=clock,
    )
    admitted: list[tuple[float, int]] = []
    for user, tokens, pause in steps:
        clock.advance(pause)
        if limiter.try_acquire(user, tokens) is None:
            admitted.append((clock.now, tokens))
        for span, token_cap, request_cap in ((3600, 1_000, 4), (86400, 3_000, 10)):
            recent = [t for at, t in admitted if at > clock.now - span]
            assert len(recent) <= request_cap
            assert sum(recent) <= token_cap
