"""One connection pool to the fleet's Redis (REDIS_URL), timed and counted for the metrics.

With `bot/store/redis_quota.py`, `redis_identify.py`, `redis_pubsub.py`, `redis_rest.py`,
`redis_cache.py` and `redis_limits.py` (and, through this link, `redis_stream.py`,
`redis_answered.py`, `redis_fairuse.py` and `redis_memory.py`), the only users of redis-py (an
import-linter contract keeps it so). Every command goes through `RedisLink.run`, which times it,
counts it under a fixed `op` label, marks Redis up or down and turns any redis-py or socket error
into `RedisUnavailable`, whose message never carries the password.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar, get_args
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.store.stats import LatencyHistogram

__all__ = ["REDIS_OPS", "RedisLink", "RedisOp", "RedisStats", "RedisUnavailable", "redact_url"]

T = TypeVar("T")

RedisOp = Literal[
    "quota",
    "heartbeat",
    "identify",
    "heal",
    "ping",
    "rest",
    "queue",
    "answers",
    "fairuse",
    "memory",
    "cache",
    "limits",
]
# The `op` label values of the Redis metrics: a fixed list, so cardinality stays bounded.
REDIS_OPS: Final[tuple[RedisOp, ...]] = get_args(RedisOp)
# A fleet's Redis is on the local network: a command slower than this is a failure, and the
# caller falls back to its local share instead of keeping a user waiting.
DEFAULT_TIMEOUT_S: Final = 1.0


class RedisUnavailable(Exception):
    """A Redis command failed (refused, timed out, lost connection, script error)."""


def redact_url(url: str) -> str:
    """The URL with its password (and user name) replaced by `***`, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


@dataclass
class RedisStats:
    """Figures of the Redis link, read at scrape time (every op label filled from the start)."""

    url: str  # redacted
    up: bool = False
    commands: dict[RedisOp, int] = field(default_factory=lambda: dict.fromkeys(REDIS_OPS, 0))
    errors: dict[RedisOp, int] = field(default_factory=lambda: dict.fromkeys(REDIS_OPS, 0))
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    last_error: str | None = None


class RedisLink:
    """A redis-py asyncio client with a short timeout, its figures, and one error type."""

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._url = url
        self.stats = RedisStats(url=redact_url(url))
        # No retries inside redis-py: a failed command is reported at once and the caller
        # decides (the quota falls back to its local share).
        self.client: aioredis.Redis = aioredis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
            health_check_interval=0,
        )

    async def run(self, op: RedisOp, command: Callable[[], Awaitable[T]]) -> T:
        """Run one command (or script) as `op`: timed, counted; errors become RedisUnavailable."""
        started = time.perf_counter()
        self.stats.commands[op] += 1
        try:
            result = await command()
        except (RedisError, OSError) as exc:
            self.stats.latency.observe(time.perf_counter() - started)
            self.stats.errors[op] += 1
            self.stats.up = False
            self.stats.last_error = self._describe(exc)
            raise RedisUnavailable(self.stats.last_error) from None
        self.stats.latency.observe(time.perf_counter() - started)
        self.stats.up = True
        return result

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        password = urlsplit(self._url).password
        if password:
            text = text.replace(password, "***")
        return f"Redis at {self.stats.url}: {text}"

    async def ping(self) -> None:
        """One PING; raises RedisUnavailable when Redis does not answer."""
        await self.run("ping", self.client.ping)

    async def aclose(self) -> None:
        await self.client.aclose()
