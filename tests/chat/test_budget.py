"""BudgetGate and ChannelSettings over the real key-value store (in memory, and SQLite for the
restart): which budget applies, the budget day, notices, bounds and the audit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.chat.budget import BudgetGate, BudgetPolicy, budget_day
from bot.chat.channels import ChannelConfig, ChannelSettings
from bot.chat.models import IncomingMessage, MessageTarget
from bot.llm.types import GenerationSettings, TokenUsage
from bot.store import MemoryStore, SqliteStore
from bot.store.fairuse import KeyValueFairUseStore
from tests.fakes import FakeClock

LA = ZoneInfo("America/Los_Angeles")


def _store(kv: MemoryStore | SqliteStore, clock: FakeClock | None = None) -> KeyValueFairUseStore:
    return KeyValueFairUseStore(
        kv.namespace("budgets"),
        kv.namespace("channels"),
        kv.namespace("budget_audit"),
        **({"clock": clock} if clock else {}),
    )


@pytest.fixture
async def kv() -> AsyncIterator[MemoryStore]:
    async with MemoryStore() as store:
        yield store


def msg(
    user: int = 1,
    guild: int | None = 10,
    roles: frozenset[int] = frozenset(),
    *,
    manages_guild: bool = False,
) -> IncomingMessage:
    return IncomingMessage(
        message_id=99,
        channel_id=5,
        guild_id=guild,
        author_id=user,
        author_name="u",
        text="hi",
        target=MessageTarget(5, 99),
        role_ids=roles,
        manages_guild=manages_guild,
    )


def test_the_budget_day_ends_at_midnight_in_its_time_zone() -> None:
    # 2026-03-08 is the spring DST switch in Los Angeles: midnight is still midnight.
    now = datetime(2026, 3, 8, 23, 30, tzinfo=LA).timestamp()
    day, reset = budget_day(now, LA)
    assert day == "2026-03-08"
    assert datetime.fromtimestamp(reset, LA) == datetime(2026, 3, 9, 0, 0, tzinfo=LA)
    day_utc, reset_utc = budget_day(now, ZoneInfo("UTC"))
    assert day_utc == "2026-03-09"
    assert datetime.fromtimestamp(reset_utc, UTC).hour == 0


async def test_the_largest_role_budget_wins_and_a_users_override_beats_all(
    kv: MemoryStore,
) -> None:
    gate = BudgetGate(_store(kv), BudgetPolicy(user_daily=100, role_daily={7: 500, 8: 300}))
    assert gate.user_limit(1, ()) == (100, "user")
    assert gate.user_limit(1, {7, 8}) == (500, "role")
    await gate.set_override("role", 8, 0, by_user_id=2, guild_id=10)  # 0: unlimited
    assert gate.user_limit(1, {7, 8}) == (0, "role")
    await gate.set_override("user", 1, 50, by_user_id=2, guild_id=10)
    assert gate.user_limit(1, {7, 8}) == (50, "user")
    await gate.set_override("user", 1, None, by_user_id=2, guild_id=10)
    assert gate.user_limit(1, {7, 8}) == (0, "role")


async def test_usage_counts_per_day_and_dms_count_for_the_user_only(kv: MemoryStore) -> None:
    clock = FakeClock(datetime(2026, 12, 4, 23, 0, tzinfo=LA).timestamp())
    gate = BudgetGate(_store(kv), BudgetPolicy(user_daily=100, guild_daily=100), clock=clock)
    await gate.record(msg(guild=None), TokenUsage(input=40, output=30, thoughts=10))
    await gate.record(msg(), TokenUsage(input=5, output=5))
    status = await gate.status(msg())
    assert (status.user_used, status.guild_used) == (90, 10)
    assert status.over() is None
    await gate.record(msg(), TokenUsage(input=5, output=5))
    assert (await gate.status(msg())).over() == "user"
    clock.advance(3600)  # past midnight in Los Angeles: a new day
    fresh = await gate.status(msg())
    assert (fresh.user_used, fresh.guild_used) == (0, 0)


async def test_one_notice_an_hour_then_silence_and_admins_are_exempt(kv: MemoryStore) -> None:
    clock = FakeClock()
    gate = BudgetGate(
        _store(kv), BudgetPolicy(user_daily=10, admin_user_ids=frozenset({3})), clock=clock
    )
    for user in (1, 3, 4):
        await gate.record(msg(user), TokenUsage(input=20))
    first = await gate.check(msg())
    second = await gate.check(msg())
    assert first is not None and first.notify and "your daily token budget" in first.text
    assert second is not None and not second.notify
    clock.advance(3600)
    third = await gate.check(msg())
    assert third is not None and third.notify
    assert await gate.check(msg(3)) is None  # ADMIN_USER_IDS
    assert await gate.check(msg(4, manages_guild=True)) is None  # Manage Server
    assert gate.stats.refusals == {"user": 3, "guild": 0, "role": 0}
    assert gate.stats.usage_count == 3 and gate.stats.usage_sum == 60

    strict = BudgetGate(_store(kv), BudgetPolicy(user_daily=10, apply_to_admins=True), clock=clock)
    assert await strict.check(msg(4, manages_guild=True)) is not None


async def test_the_notice_map_is_bounded(kv: MemoryStore) -> None:
    clock = FakeClock()
    gate = BudgetGate(_store(kv), BudgetPolicy(user_daily=1), clock=clock, max_notice_users=3)
    for user in range(10):
        await gate.record(msg(user), TokenUsage(input=5))
        assert await gate.check(msg(user)) is not None
    assert gate.stats.notices_tracked == 3


async def test_a_store_failure_lets_the_question_through(kv: MemoryStore) -> None:
    gate = BudgetGate(_store(kv), BudgetPolicy(user_daily=1))
    await kv.close()
    assert await gate.check(msg()) is None
    await gate.record(msg(), TokenUsage(input=5))  # logged and counted, never raised
    assert gate.stats.store_errors == 2


async def test_overrides_and_the_audit_survive_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    async with SqliteStore(tmp_path / "bot.db") as kv:
        gate = BudgetGate(_store(kv, clock), BudgetPolicy(guild_daily=100), clock=clock)
        await gate.set_override("guild", 10, 5000, by_user_id=42, guild_id=10)
        await gate.record(msg(), TokenUsage(input=70))
    async with SqliteStore(tmp_path / "bot.db") as kv:
        gate = BudgetGate(_store(kv, clock), BudgetPolicy(guild_daily=100), clock=clock)
        await gate.load()
        status = await gate.status(msg())
        audit = await gate.audit()
    assert (status.guild_used, status.guild_limit) == (70, 5000)
    assert audit == [
        {
            "at": clock.now,
            "by": 42,
            "guild": 10,
            "scope": "guild",
            "target": 10,
            "before": None,
            "after": 5000,
        }
    ]


async def test_concurrent_counts_are_not_lost(kv: MemoryStore) -> None:
    import asyncio

    store = _store(kv)
    await asyncio.gather(*(store.add_usage("d", ["user:1", "guild:2"], 3) for _ in range(50)))
    assert await store.usage("d", ["user:1", "guild:2"]) == {"user:1": 150, "guild:2": 150}


async def test_threads_inherit_what_they_do_not_set(kv: MemoryStore) -> None:
    channels = ChannelSettings(_store(kv), allowed_models=("flash", "pro"))
    await channels.update(1, autoreply=True, persona="pirate", model="pro")
    await channels.update(2, persona="robot")  # a thread of channel 1
    assert channels.resolve(2, 1) == ChannelConfig(autoreply=True, persona="robot", model="pro")
    assert channels.autoreplies(2, 1, "hello")
    assert not channels.autoreplies(2, 1, "  // aside")
    assert not channels.autoreplies(3, None, "hello")
    generation = channels.apply(GenerationSettings(model="flash", system_instruction="x"), 2, 1)
    assert (generation.model, generation.system_instruction) == ("pro", "robot")
    assert channels.stats().autoreply_channels == 1

    reloaded = ChannelSettings(_store(kv), allowed_models=("flash", "pro"))
    assert await reloaded.load() == 2
    assert reloaded.resolve(2, 1) == channels.resolve(2, 1)
    assert await reloaded.reset(1)
    assert reloaded.resolve(2, 1) == ChannelConfig(persona="robot")


async def test_channel_settings_refuse_bad_values_and_are_bounded(kv: MemoryStore) -> None:
    channels = ChannelSettings(
        _store(kv), allowed_models=("flash",), persona_max_chars=10, max_channels=2
    )
    with pytest.raises(ValueError, match="at most 10 characters"):
        await channels.update(1, persona="x" * 11)
    with pytest.raises(ValueError, match="not an allowed model"):
        await channels.update(1, model="pro")
    await channels.update(1, autoreply=True)
    await channels.update(2, autoreply=True)
    with pytest.raises(ValueError, match="at most 2 channels"):
        await channels.update(3, autoreply=True)
    await channels.update(2, autoreply=False)  # a channel already kept may change
    assert channels.stats() == channels.stats().__class__(2, 1, 2)


async def test_the_audit_keeps_the_newest_entries(kv: MemoryStore) -> None:
    clock = FakeClock()
    store = KeyValueFairUseStore(
        kv.namespace("budgets"),
        kv.namespace("channels"),
        kv.namespace("budget_audit"),
        max_audit_entries=3,
        clock=clock,
    )
    for n in range(5):
        clock.advance(1)
        await store.add_audit({"n": n})
    assert [e["n"] for e in await store.audit(10)] == [2, 3, 4]
