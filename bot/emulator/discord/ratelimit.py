"""Discord's REST rate limits: a global per-bot limit and fixed-window buckets per route."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_BUCKET",
    "GLOBAL_LIMIT",
    "MESSAGE_CREATE_BUCKET",
    "MESSAGE_EDIT_BUCKET",
    "BucketSpec",
    "RateLimiter",
    "Verdict",
]

JSON = dict[str, Any]


@dataclass(frozen=True)
class BucketSpec:
    """A route bucket: ``limit`` requests per ``period`` seconds per major parameter."""

    name: str
    limit: int
    period: float


# Discord's documented figures: 50 requests/s per bot, 5 messages per 5 s per channel.
GLOBAL_LIMIT = BucketSpec("global", 50, 1.0)
MESSAGE_CREATE_BUCKET = BucketSpec("channel-message-create", 5, 5.0)
MESSAGE_EDIT_BUCKET = BucketSpec("channel-message-edit", 5, 5.0)
# Other routes get a generous bucket, so only the global limit bites, but still carry headers.
DEFAULT_BUCKET = BucketSpec("default", 50, 1.0)

# Windows are dropped once this many are tracked and they have expired.
_MAX_WINDOWS = 10_000


@dataclass
class _Window:
    ends_at: float
    used: int = 0


@dataclass(frozen=True)
class Verdict:
    """The outcome of one request: allowed or not, headers to send, and the 429 body."""

    allowed: bool
    headers: dict[str, str] = field(default_factory=dict)
    body: JSON | None = None


def _ceil_ms(value: float) -> float:
    # Round up: a client that waits until the advertised reset must find the window over.
    return math.ceil(value * 1000) / 1000


class RateLimiter:
    """Counts requests in fixed windows and answers like Discord when one is exhausted."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}
        self.limited = 0

    def _window(self, key: tuple[str, str], spec: BucketSpec, now: float) -> _Window:
        window = self._windows.get(key)
        if window is None or now >= window.ends_at:
            if len(self._windows) >= _MAX_WINDOWS:
                self._windows = {k: w for k, w in self._windows.items() if w.ends_at > now}
            window = self._windows[key] = _Window(ends_at=now + spec.period)
        return window

    def check(self, bucket: BucketSpec | None, major: str, *, counts_globally: bool) -> Verdict:
        """Count one request; return whether it may proceed and the headers to send."""
        now = self._clock()
        global_window = self._window(("global", ""), GLOBAL_LIMIT, now) if counts_globally else None
        if global_window is not None and global_window.used >= GLOBAL_LIMIT.limit:
            return self._too_many(global_window.ends_at - now, None, None)
        headers: dict[str, str] = {}
        if bucket is not None:
            window = self._window((bucket.name, major), bucket, now)
            if window.used >= bucket.limit:
                return self._too_many(window.ends_at - now, bucket, window)
            window.used += 1
            headers = _bucket_headers(bucket, window, now)
        if global_window is not None:
            global_window.used += 1
        return Verdict(True, headers)

    def _too_many(
        self, retry_after: float, bucket: BucketSpec | None, window: _Window | None
    ) -> Verdict:
        self.limited += 1
        retry_after = max(_ceil_ms(retry_after), 0.001)
        is_global = bucket is None
        headers = {"Retry-After": str(math.ceil(retry_after))}
        if bucket is not None and window is not None:
            headers.update(_bucket_headers(bucket, window, window.ends_at - retry_after))
            headers["X-RateLimit-Scope"] = "user"
        else:
            headers.update({"X-RateLimit-Global": "true", "X-RateLimit-Scope": "global"})
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": is_global,
        }
        return Verdict(False, headers, body)


def _bucket_headers(bucket: BucketSpec, window: _Window, now: float) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(bucket.limit),
        "X-RateLimit-Remaining": str(max(bucket.limit - window.used, 0)),
        "X-RateLimit-Reset": f"{_ceil_ms(window.ends_at):.3f}",
        "X-RateLimit-Reset-After": f"{_ceil_ms(window.ends_at - now):.3f}",
        "X-RateLimit-Bucket": bucket.name,
    }
