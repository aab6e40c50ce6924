"""Who may talk to the bot and where, and how often: access lists, cooldowns, video budgets."""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

from bot.chat.refusal import Refusal

__all__ = [
    "AccessPolicy",
    "CooldownGate",
    "UserCooldown",
    "VideoGate",
    "VideoLimiter",
    "VideoUsage",
    "cooldown_refusal",
    "format_wait",
]

_HOUR_S = 3600.0
_DAY_S = 86400.0

_USER_BLOCKED = Refusal("user_blocked", "Sorry, you can't use this bot.")
_ROLE_BLOCKED = Refusal("role_blocked", "Sorry, you can't use this bot.")
_USER_NOT_ALLOWED = Refusal("user_not_allowed", "Sorry, you can't use this bot.")
_CHANNEL_BLOCKED = Refusal("channel_blocked", "Sorry, I don't answer in this channel.")
_CHANNEL_NOT_ALLOWED = Refusal("channel_not_allowed", "Sorry, I don't answer in this channel.")


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """Allow and block lists of users, roles and channels; a block always wins.

    An empty allow list allows everyone. Users are allowed when their id is in
    `allowed_user_ids` or one of their roles is in `allowed_role_ids` (if either list is set).
    """

    allowed_user_ids: frozenset[int] = frozenset()
    blocked_user_ids: frozenset[int] = frozenset()
    allowed_role_ids: frozenset[int] = frozenset()
    blocked_role_ids: frozenset[int] = frozenset()
    allowed_channel_ids: frozenset[int] = frozenset()
    blocked_channel_ids: frozenset[int] = frozenset()

    def check(
        self,
        user_id: int,
        role_ids: Collection[int],
        channel_id: int,
        parent_channel_id: int | None = None,
    ) -> Refusal | None:
        """None if the user may talk here, else why not; a thread also obeys its parent channel."""
        channels = (channel_id,) if parent_channel_id is None else (channel_id, parent_channel_id)
        if user_id in self.blocked_user_ids:
            return _USER_BLOCKED
        if not self.blocked_role_ids.isdisjoint(role_ids):
            return _ROLE_BLOCKED
        if not self.blocked_channel_ids.isdisjoint(channels):
            return _CHANNEL_BLOCKED
        if (self.allowed_user_ids or self.allowed_role_ids) and not (
            user_id in self.allowed_user_ids or not self.allowed_role_ids.isdisjoint(role_ids)
        ):
            return _USER_NOT_ALLOWED
        if self.allowed_channel_ids and self.allowed_channel_ids.isdisjoint(channels):
            return _CHANNEL_NOT_ALLOWED
        return None


def format_wait(seconds: float) -> str:
    """A wait for people to read: "1 second", "42 seconds", "3 minutes", "2 hours" (rounded up)."""
    if seconds < 90:
        amount, unit = max(1, math.ceil(seconds)), "second"
    elif seconds < 90 * 60:
        amount, unit = math.ceil(seconds / 60), "minute"
    else:
        amount, unit = math.ceil(seconds / 3600), "hour"
    return f"{amount} {unit}" if amount == 1 else f"{amount} {unit}s"


def cooldown_refusal(wait_s: float) -> Refusal:
    """The refusal for a user still in their cooldown (`wait_s` from `UserCooldown`)."""
    return Refusal("cooldown", f"You're going a bit fast: try again in {format_wait(wait_s)}.")


class UserCooldown:
    """At most one request per user every `cooldown_s` seconds, for at most `max_users` users.

    When more users are cooling down than `max_users`, the one closest to the end of the
    cooldown is forgotten first: memory stays bounded and the cost is one early request.
    """

    def __init__(
        self,
        cooldown_s: float,
        max_users: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must not be negative, got {cooldown_s}")
        if max_users < 1:
            raise ValueError(f"max_users must be at least 1, got {max_users}")
        self.cooldown_s = cooldown_s
        self.max_users = max_users
        self._clock = clock
        # user id -> end of cooldown. Every end is now + cooldown_s with a monotonic clock, so
        # insertion order is expiry order: pruning pops from the front.
        self._until: OrderedDict[int, float] = OrderedDict()

    def __len__(self) -> int:
        """Users currently tracked (some may have expired since the last call)."""
        return len(self._until)

    def remaining(self, user_id: int) -> float:
        """Seconds until `user_id` may send again; 0.0 if now."""
        until = self._until.get(user_id)
        return 0.0 if until is None else max(0.0, until - self._clock())

    def start(self, user_id: int) -> None:
        """Start `user_id`'s cooldown now, whether or not one was running."""
        if self.cooldown_s == 0:
            return
        now = self._clock()
        self._until[user_id] = now + self.cooldown_s
        self._until.move_to_end(user_id)
        while self._until:
            oldest, until = next(iter(self._until.items()))
            if until > now and len(self._until) <= self.max_users:
                break
            del self._until[oldest]

    def try_acquire(self, user_id: int) -> float:
        """0.0 and start the cooldown if `user_id` may send now, else the seconds left to wait."""
        wait = self.remaining(user_id)
        if wait == 0.0:
            self.start(user_id)
        return wait

    async def acquire(self, user_id: int) -> float:
        """`try_acquire`, as the `CooldownGate` the pipeline uses (a fleet's is on Redis)."""
        return self.try_acquire(user_id)


class CooldownGate(Protocol):
    """What the pipeline needs of the per-user cooldown: `UserCooldown` in one process,
    `SharedCooldown` (bot/chat/access_shared.py) in a fleet."""

    async def acquire(self, user_id: int) -> float:
        """0.0 and start the user's cooldown if they may send now, else the seconds left."""
        ...


class VideoGate(Protocol):
    """What the file loader needs of the video budgets: `VideoLimiter` or `SharedVideoLimiter`."""

    async def acquire(self, user_id: int, estimated_tokens: int) -> Refusal | None:
        """None (and the video counted) if it fits now, else why not."""
        ...


@dataclass(frozen=True, slots=True)
class VideoUsage:
    """Video requests and tokens counted in the last hour and the last 24 hours."""

    requests_last_hour: int
    requests_last_day: int
    tokens_last_hour: int
    tokens_last_day: int


class _SlidingWindow:
    """Requests and tokens of the last `span_s` seconds, kept as a log of (time, tokens, n)."""

    def __init__(self, span_s: float, max_entries: int) -> None:
        self.span_s = span_s
        self.max_entries = max(1, max_entries)
        self.entries: deque[tuple[float, int, int]] = deque()
        self.tokens = 0
        self.requests = 0

    def prune(self, now: float) -> None:
        while self.entries and self.entries[0][0] <= now - self.span_s:
            _, tokens, requests = self.entries.popleft()
            self.tokens -= tokens
            self.requests -= requests

    def add(self, now: float, tokens: int) -> None:
        self.entries.append((now, tokens, 1))
        self.tokens += tokens
        self.requests += 1
        if len(self.entries) > self.max_entries:
            # Only reachable by recording past the request cap. Merging the two oldest entries
            # under the later time keeps the log bounded and never under-counts.
            _, tokens_a, requests_a = self.entries.popleft()
            at_b, tokens_b, requests_b = self.entries.popleft()
            self.entries.appendleft((at_b, tokens_a + tokens_b, requests_a + requests_b))

    def wait_for_room(self, now: float, tokens: int, token_cap: int, request_cap: int) -> float:
        """Seconds until one more request of `tokens` fits the caps; inf if it never will."""
        excess_tokens = self.tokens + tokens - token_cap
        excess_requests = self.requests + 1 - request_cap
        if excess_tokens <= 0 and excess_requests <= 0:
            return 0.0
        freed_tokens = freed_requests = 0
        for at, entry_tokens, entry_requests in self.entries:
            freed_tokens += entry_tokens
            freed_requests += entry_requests
            if freed_tokens >= excess_tokens and freed_requests >= excess_requests:
                return at + self.span_s - now
        return math.inf


class VideoLimiter:
    """Bot-wide hourly and daily budgets of video requests and tokens; `cooldown_s` per user.

    Windows slide (the last hour, the last 24 hours) rather than reset on the clock: a fixed
    window lets twice the budget through around a reset (all of it at 12:59, again at 13:00).
    The log behind a sliding window holds one entry per request, and the request caps bound it.
    """

    def __init__(
        self,
        tokens_per_hour: int = 100_000,
        tokens_per_day: int = 500_000,
        requests_per_hour: int = 10,
        requests_per_day: int = 50,
        cooldown_s: float = 60.0,
        max_users: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (
            ("tokens_per_hour", tokens_per_hour),
            ("tokens_per_day", tokens_per_day),
            ("requests_per_hour", requests_per_hour),
            ("requests_per_day", requests_per_day),
        ):
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        self.tokens_per_hour = tokens_per_hour
        self.tokens_per_day = tokens_per_day
        self.requests_per_hour = requests_per_hour
        self.requests_per_day = requests_per_day
        self._clock = clock
        self._cooldown = UserCooldown(cooldown_s, max_users, clock)
        self._hour = _SlidingWindow(_HOUR_S, requests_per_hour)
        self._day = _SlidingWindow(_DAY_S, requests_per_day)

    def check(self, user_id: int, estimated_tokens: int) -> Refusal | None:
        """None if a video of `estimated_tokens` from `user_id` fits now, else why not."""
        if estimated_tokens < 0:
            raise ValueError(f"estimated_tokens must not be negative, got {estimated_tokens}")
        wait = self._cooldown.remaining(user_id)
        return self._judge(wait, estimated_tokens, self._hour, self._day, self._clock())

    def explain(
        self,
        cooldown_s: float,
        estimated_tokens: int,
        hour: Iterable[tuple[float, int]],
        day: Iterable[tuple[float, int]],
        now: float,
    ) -> Refusal:
        """Why the fleet's windows refused a video (`hour`/`day`: (time, tokens) oldest first,
        times on the clock of `now`), in the words this limiter uses."""
        windows = []
        for span_s, cap, log in (
            (_HOUR_S, self.requests_per_hour, hour),
            (_DAY_S, self.requests_per_day, day),
        ):
            window = _SlidingWindow(span_s, cap + 1)
            for at, tokens in log:
                window.entries.append((at, tokens, 1))
                window.tokens += tokens
                window.requests += 1
            windows.append(window)
        refusal = self._judge(cooldown_s, estimated_tokens, windows[0], windows[1], now)
        return refusal or Refusal("video_hourly_requests", "I can't watch videos right now.")

    def _judge(
        self,
        wait: float,
        estimated_tokens: int,
        hour: _SlidingWindow,
        day: _SlidingWindow,
        now: float,
    ) -> Refusal | None:
        if wait > 0:
            return Refusal(
                "video_cooldown", f"Please wait {format_wait(wait)} before sending another video."
            )
        if estimated_tokens > min(self.tokens_per_hour, self.tokens_per_day):
            return Refusal(
                "video_too_long",
                f"That video is too long for me: it would take about {estimated_tokens:,} tokens "
                f"and I can spend {min(self.tokens_per_hour, self.tokens_per_day):,}.",
            )
        windows = (
            (hour, "hourly", self.tokens_per_hour, self.requests_per_hour),
            (day, "daily", self.tokens_per_day, self.requests_per_day),
        )
        reason = None
        for window, name, token_cap, request_cap in windows:
            window.prune(now)
            if reason is None and window.requests + 1 > request_cap:
                reason = f"video_{name}_requests"
            elif reason is None and window.tokens + estimated_tokens > token_cap:
                reason = f"video_{name}_tokens"
        if reason is None:
            return None
        # The video can go once both windows have room, whichever one refused it.
        wait = max(
            window.wait_for_room(now, estimated_tokens, token_cap, request_cap)
            for window, _, token_cap, request_cap in windows
        )
        if math.isinf(wait):
            return Refusal(reason, "I can't watch videos right now.")
        return Refusal(
            reason, f"I've watched all the videos I can for now; try again in {format_wait(wait)}."
        )

    def record(self, user_id: int, tokens: int) -> None:
        """Count a video request of `tokens` and start `user_id`'s cooldown."""
        if tokens < 0:
            raise ValueError(f"tokens must not be negative, got {tokens}")
        now = self._clock()
        for window in (self._hour, self._day):
            window.prune(now)
            window.add(now, tokens)
        self._cooldown.start(user_id)

    def try_acquire(self, user_id: int, estimated_tokens: int) -> Refusal | None:
        """`check`, and `record` the estimate if it passes: no await between, so no race."""
        refusal = self.check(user_id, estimated_tokens)
        if refusal is None:
            self.record(user_id, estimated_tokens)
        return refusal

    async def acquire(self, user_id: int, estimated_tokens: int) -> Refusal | None:
        """`try_acquire`, as the `VideoGate` the file loader uses (a fleet's is on Redis)."""
        return self.try_acquire(user_id, estimated_tokens)

    def usage(self) -> VideoUsage:
        """What the windows hold now, for the metrics."""
        now = self._clock()
        self._hour.prune(now)
        self._day.prune(now)
        return VideoUsage(
            requests_last_hour=self._hour.requests,
            requests_last_day=self._day.requests,
            tokens_last_hour=self._hour.tokens,
            tokens_last_day=self._day.tokens,
        )
