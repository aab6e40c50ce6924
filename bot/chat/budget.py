"""Fair use: daily token budgets per user, role and server, checked before the model is called.

Usage is what Gemini reports for each answer (input + output tokens, thinking included as
the output it is billed as), counted per user and per
server per budget day; the day ends at midnight in `BUDGET_RESET_TIMEZONE` (by default the
provider's own day, Pacific time). A question from a user or server over budget is not sent to
the model: the user is told which budget is used up and when it resets, at most once an hour;
later questions in that hour get a reaction instead. DMs count against the user's budget only.
Admins are exempt unless the settings say otherwise.

The budget that applies to a user is, first to last: their own override (`/quota-set`), the
largest budget of their roles (overrides and `ROLE_TOKEN_BUDGETS`; 0 is unlimited, so the
largest), `USER_DAILY_TOKEN_BUDGET`. A server's is its override, else
`GUILD_DAILY_TOKEN_BUDGET`.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as wall_time
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from bot.chat.models import IncomingMessage
from bot.llm.types import TokenUsage
from bot.store.fairuse import FairUseStore

__all__ = [
    "BUDGET_SCOPES",
    "USAGE_BUCKETS",
    "BudgetGate",
    "BudgetPolicy",
    "BudgetRefusal",
    "BudgetStats",
    "BudgetStatus",
    "Scope",
    "budget_day",
]

log = logging.getLogger(__name__)

Scope = Literal["user", "guild", "role"]
BUDGET_SCOPES: Final[tuple[Scope, ...]] = ("user", "guild", "role")
# Buckets of the per-user daily usage at refusal (tokens).
USAGE_BUCKETS: Final = (1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1e6)
NOTICE_INTERVAL_S: Final = 3600.0
MAX_NOTICE_USERS: Final = 50_000
MAX_OVERRIDES: Final = 10_000
OVER_BUDGET_REACTION: Final = "⏳"

_SCOPE_WORDS: Final[dict[Scope, str]] = {
    "user": "your daily token budget",
    "role": "your role's daily token budget",
    "guild": "this server's daily token budget",
}


def budget_day(now: float, tz: ZoneInfo) -> tuple[str, float]:
    """The budget day containing `now`: (id like "2026-12-04", epoch of the next midnight)."""
    today = datetime.fromtimestamp(now, tz).date()
    midnight = datetime.combine(today + timedelta(days=1), wall_time(0), tzinfo=tz)
    return today.isoformat(), midnight.timestamp()


@dataclass(frozen=True, slots=True)
class BudgetPolicy:
    """The settings' budgets (0: unlimited)."""

    user_daily: int = 0
    guild_daily: int = 0
    role_daily: Mapping[int, int] = field(default_factory=dict)
    timezone: str = "America/Los_Angeles"
    apply_to_admins: bool = False
    admin_user_ids: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One caller's budgets today, for `/quota` and the refusal."""

    user_used: int
    user_limit: int  # 0: unlimited
    user_scope: Scope  # where user_limit comes from: "user" or "role"
    guild_used: int | None  # None in DMs
    guild_limit: int
    resets_at: float
    exempt: bool

    def over(self) -> Scope | None:
        """Which budget is used up, if any (the user's first)."""
        if self.exempt:
            return None
        if self.user_limit and self.user_used >= self.user_limit:
            return self.user_scope
        if self.guild_used is not None and self.guild_limit and self.guild_used >= self.guild_limit:
            return "guild"
        return None


@dataclass(frozen=True, slots=True)
class BudgetRefusal:
    """A question refused for its budget; `notify` False: the user was told less than an hour
    ago, so a reaction says it instead of `text` (where there is a message to react to)."""

    scope: Scope
    text: str
    notify: bool = True


@dataclass
class BudgetStats:
    """Figures for `/metrics` (no ids: scopes and counts only)."""

    refusals: dict[Scope, int] = field(default_factory=lambda: dict.fromkeys(BUDGET_SCOPES, 0))
    # Per-user daily usage at refusal: cumulative counts per bucket of USAGE_BUCKETS, sum, count.
    usage_buckets: list[int] = field(default_factory=lambda: [0] * len(USAGE_BUCKETS))
    usage_sum: float = 0.0
    usage_count: int = 0
    notices_tracked: int = 0
    notices_capacity: int = MAX_NOTICE_USERS
    overrides: int = 0
    overrides_capacity: int = MAX_OVERRIDES
    store_errors: int = 0

    def observe_usage(self, tokens: int) -> None:
        index = bisect.bisect_left(USAGE_BUCKETS, tokens)
        for i in range(index, len(self.usage_buckets)):
            self.usage_buckets[i] += 1
        self.usage_sum += tokens
        self.usage_count += 1


class BudgetGate:
    """Checks a question against its budgets before the model call, and counts the answer."""

    def __init__(
        self,
        store: FairUseStore,
        policy: BudgetPolicy,
        *,
        clock: Callable[[], float] = time.time,
        notice_interval_s: float = NOTICE_INTERVAL_S,
        max_notice_users: int = MAX_NOTICE_USERS,
    ) -> None:
        self._store = store
        self.policy = policy
        self._tz = ZoneInfo(policy.timezone)
        self._clock = clock
        self._notice_interval_s = notice_interval_s
        self._max_notice_users = max_notice_users
        # user id -> time of their last over-budget notice; oldest first (bounded).
        self._noticed: OrderedDict[int, float] = OrderedDict()
        self._overrides: dict[str, int] = {}
        self.stats = BudgetStats(notices_capacity=max_notice_users)

    @property
    def enabled(self) -> bool:
        """Some budget is set (in the settings or by an admin)."""
        p = self.policy
        return bool(p.user_daily or p.guild_daily or p.role_daily or self._overrides)

    async def load(self) -> None:
        """Read the admins' overrides from the store (at start)."""
        self._overrides = dict(list((await self._store.overrides()).items())[:MAX_OVERRIDES])
        self.stats.overrides = len(self._overrides)

    def day(self) -> tuple[str, float]:
        return budget_day(self._clock(), self._tz)

    def is_exempt(self, user_id: int, manages_guild: bool) -> bool:
        """Admins (ADMIN_USER_IDS, Manage Server) are exempt unless BUDGETS_APPLY_TO_ADMINS."""
        if self.policy.apply_to_admins:
            return False
        return user_id in self.policy.admin_user_ids or manages_guild

    def user_limit(self, user_id: int, role_ids: Collection[int]) -> tuple[int, Scope]:
        """The daily budget of a user with these roles, and where it comes from."""
        own = self._overrides.get(f"user:{user_id}")
        if own is not None:
            return own, "user"
        role_limits = []
        for role in role_ids:
            limit = self._overrides.get(f"role:{role}", self.policy.role_daily.get(role))
            if limit is not None:
                role_limits.append(limit)
        if role_limits:
            return (0 if 0 in role_limits else max(role_limits)), "role"
        return self.policy.user_daily, "user"

    def guild_limit(self, guild_id: int) -> int:
        return self._overrides.get(f"guild:{guild_id}", self.policy.guild_daily)

    async def status(self, msg: IncomingMessage) -> BudgetStatus:
        """The budgets of the message's author (and server) today."""
        return await self.status_of(msg.author_id, msg.guild_id, msg.role_ids, msg.manages_guild)

    async def status_of(
        self,
        user_id: int,
        guild_id: int | None,
        role_ids: Collection[int] = (),
        manages_guild: bool = False,
    ) -> BudgetStatus:
        """A user's budgets (and their server's, outside DMs) today."""
        day, resets_at = self.day()
        keys = [f"user:{user_id}"]
        if guild_id is not None:
            keys.append(f"guild:{guild_id}")
        used = await self._store.usage(day, keys)
        limit, scope = self.user_limit(user_id, role_ids)
        return BudgetStatus(
            user_used=used[keys[0]],
            user_limit=limit,
            user_scope=scope,
            guild_used=used[keys[1]] if guild_id is not None else None,
            guild_limit=self.guild_limit(guild_id) if guild_id is not None else 0,
            resets_at=resets_at,
            exempt=self.is_exempt(user_id, manages_guild),
        )

    async def check(self, msg: IncomingMessage) -> BudgetRefusal | None:
        """None when the question may go to the model; else the refusal (a notice, or None
        text when the user was told less than an hour ago)."""
        if not self.enabled or self.is_exempt(msg.author_id, msg.manages_guild):
            return None
        try:
            status = await self.status(msg)
        except Exception:
            # Budgets are fairness, not safety: a store failure lets the question through.
            self.stats.store_errors += 1
            log.warning("could not read token budgets; answering without them", exc_info=True)
            return None
        scope = status.over()
        if scope is None:
            return None
        self.stats.refusals[scope] += 1
        self.stats.observe_usage(status.user_used)
        log.info("question refused: the %s budget is used up", scope)
        return BudgetRefusal(
            scope, refusal_text(scope, status), notify=self._should_notify(msg.author_id)
        )

    async def record(self, msg: IncomingMessage, usage: TokenUsage) -> None:
        """Count an answer's tokens against its user (and server, outside DMs)."""
        tokens = usage.input + usage.output + usage.thoughts  # thinking is billed as output
        if tokens <= 0:
            return
        keys = [f"user:{msg.author_id}"]
        if msg.guild_id is not None:
            keys.append(f"guild:{msg.guild_id}")
        try:
            await self._store.add_usage(self.day()[0], keys, tokens)
        except Exception:
            self.stats.store_errors += 1
            log.warning("could not count an answer's tokens", exc_info=True)

    async def set_override(
        self,
        scope: Scope,
        target_id: int,
        tokens: int | None,
        *,
        by_user_id: int,
        guild_id: int | None,
    ) -> None:
        """An admin's override of a budget (None removes it): persisted and audited."""
        key = f"{scope}:{target_id}"
        if (
            tokens is not None
            and key not in self._overrides
            and len(self._overrides) >= (MAX_OVERRIDES)
        ):
            raise OverflowError(f"at most {MAX_OVERRIDES} budget overrides; remove some first")
        before = self._overrides.get(key)
        await self._store.set_override(key, tokens)
        if tokens is None:
            self._overrides.pop(key, None)
        else:
            self._overrides[key] = tokens
        self.stats.overrides = len(self._overrides)
        entry: dict[str, Any] = {
            "at": self._clock(),
            "by": by_user_id,
            "guild": guild_id,
            "scope": scope,
            "target": target_id,
            "before": before,
            "after": tokens,
        }
        # The audit trail: who changed which budget from what to what, and when.
        log.warning(
            "budget override: %s %s set from %s to %s by user %s",
            scope,
            target_id,
            "default" if before is None else before,
            "default" if tokens is None else tokens,
            by_user_id,
        )
        await self._store.add_audit(entry)

    async def audit(self, limit: int = 20) -> list[dict[str, Any]]:
        return await self._store.audit(limit)

    def _should_notify(self, user_id: int) -> bool:
        now = self._clock()
        last = self._noticed.get(user_id)
        if last is not None and now - last < self._notice_interval_s:
            return False
        self._noticed[user_id] = now
        self._noticed.move_to_end(user_id)
        while self._noticed:
            oldest, at = next(iter(self._noticed.items()))
            if now - at < self._notice_interval_s and len(self._noticed) <= self._max_notice_users:
                break
            del self._noticed[oldest]
        self.stats.notices_tracked = len(self._noticed)
        return True


def refusal_text(scope: Scope, status: BudgetStatus) -> str:
    """The notice for an over-budget question: which budget, and when it resets."""
    used, limit = (
        (status.guild_used or 0, status.guild_limit)
        if scope == "guild"
        else (status.user_used, status.user_limit)
    )
    reset = int(status.resets_at)
    utc = datetime.fromtimestamp(reset, ZoneInfo("UTC")).strftime("%H:%M UTC")
    return (
        f"Sorry, {_SCOPE_WORDS[scope]} is used up ({used:,} of {limit:,} tokens today), so I "
        f"won't ask the model for now. It resets <t:{reset}:R> (at <t:{reset}:t>, {utc}). "
        "`/quota` shows your numbers."
    )
