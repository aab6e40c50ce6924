"""Calls through a circuit breaker that wait while the dependency is down, within bounds.

`BreakerHold.call(make)` runs one operation through a `CircuitBreaker`. When the breaker
refuses it, or the dependency fails it with an outage (`is_outage`: a 5xx, a timeout, a lost
connection, never a client error), the caller is *held*: it waits until the breaker lets a
probe through (its reset timeout) or another caller's success shows the dependency is back,
then tries again with a fresh call from `make`. A factory, so that a retry sends the same
request again: an idempotency key the factory closes over (Discord's message `nonce`) goes
out unchanged, and the dependency can recognise a request it already carried out.

Outcomes go to the breaker once per try: an outage is a failure, an answer a success; a
client error or a cancelled call gives its half-open probe slot back without an outcome.

Bounds: at most `max_held` callers wait at once (the next one is refused at once:
`overflow`), a caller waits at most `max_wait_s` from its first try (`expired`), and `close()`
releases every waiter (`shutdown`; so does a cancelled waiter). Each ends in `HoldAbandoned`
with its reason, counted in `HoldStats.abandoned_total` for the caller to log: nothing waiting
is ever dropped silently. Retries after an outage while the breaker is still closed back off
(doubling from `min(1 s, reset timeout)` up to the reset timeout), so a few failing callers
do not hammer the dependency before the breaker opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar

from bot.resilience.breaker import BreakerState, CircuitBreaker

__all__ = ["ABANDON_REASONS", "AbandonReason", "BreakerHold", "HoldAbandoned", "HoldStats"]

AbandonReason = Literal["overflow", "expired", "shutdown"]
ABANDON_REASONS: Final[tuple[AbandonReason, ...]] = ("overflow", "expired", "shutdown")

T = TypeVar("T")


def _zero_per_reason() -> dict[AbandonReason, int]:
    return dict.fromkeys(ABANDON_REASONS, 0)


@dataclass(slots=True)
class HoldStats:
    """Figures read at scrape time: waiting now, and what happened to those that waited."""

    capacity: int
    held: int = 0  # callers waiting now
    held_total: int = 0  # callers that had to wait at least once
    retries_total: int = 0  # tries after a caller's first
    abandoned_total: dict[AbandonReason, int] = field(default_factory=_zero_per_reason)


class HoldAbandoned(Exception):
    """A held call given up: no room to wait, waited too long, or shutting down."""

    def __init__(
        self, name: str, reason: AbandonReason, waited_s: float, last_error: BaseException | None
    ) -> None:
        cause = f"; last error: {type(last_error).__name__}: {last_error}" if last_error else ""
        super().__init__(f"{name}: call abandoned after {waited_s:.1f} s held ({reason}){cause}")
        self.reason: AbandonReason = reason
        self.waited_s = waited_s
        self.last_error = last_error


class BreakerHold:
    """Holds calls while `breaker` is open or the dependency fails them; see the module doc."""

    def __init__(
        self,
        breaker: CircuitBreaker,
        *,
        max_held: int,
        max_wait_s: float,
        is_outage: Callable[[BaseException], bool],
    ) -> None:
        if max_held < 0:
            raise ValueError("max_held must not be negative")
        if max_wait_s <= 0:
            raise ValueError("max_wait_s must be positive")
        self.breaker = breaker
        self.max_wait_s = max_wait_s
        self.stats = HoldStats(capacity=max_held)
        self._is_outage = is_outage
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def state(self) -> BreakerState:
        """The breaker's state as callers would find it: an open breaker whose reset timeout
        has passed admits the next call, so it reads half-open (even with nobody calling)."""
        state = self.breaker.state
        if state == "open" and self.breaker.retry_after_s() <= 0:
            return "half_open"
        return state

    def probe_now(self) -> bool:
        """Let the open breaker admit a probe now and wake the waiters to make it (self-healing);
        True when it was open."""
        opened = self.breaker.force_half_open()
        self._notify()
        return opened

    def close(self) -> None:
        """Release every waiter with `shutdown`; later calls that would wait fail at once."""
        self._closed = True
        self._notify()

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """The result of `make()`, tried until it succeeds, fails otherwise, or is abandoned."""
        started = time.monotonic()
        held = False
        tries = 0
        last_error: BaseException | None = None
        backoff = min(1.0, self.breaker.reset_timeout_s)
        try:
            while True:
                if self.breaker.allow():
                    if tries:
                        self.stats.retries_total += 1
                    tries += 1
                    try:
                        result = await make()
                    except asyncio.CancelledError:
                        self.breaker.release()
                        self._notify()
                        raise
                    except Exception as exc:
                        if not self._is_outage(exc):
                            self.breaker.release()
                            self._notify()
                            raise
                        self.breaker.record_failure()
                        last_error = exc
                        wait = max(backoff, self.breaker.retry_after_s())
                        backoff = min(backoff * 2, max(self.breaker.reset_timeout_s, 0.001))
                    else:
                        self.breaker.record_success()
                        self._notify()
                        return result
                elif self.breaker.state == "open":
                    wait = self.breaker.retry_after_s()
                else:  # half-open, its probe slots taken: until a probe ends (or is reclaimed)
                    wait = self.breaker.reset_timeout_s
                if not held:
                    if self._closed or self.stats.held >= self.stats.capacity:
                        reason: AbandonReason = "shutdown" if self._closed else "overflow"
                        raise self._abandon(reason, started, last_error)
                    held = True
                    self.stats.held += 1
                    self.stats.held_total += 1
                remaining = started + self.max_wait_s - time.monotonic()
                if remaining <= 0:
                    raise self._abandon("expired", started, last_error)
                await self._wait(min(wait, remaining))
                if self._closed:
                    raise self._abandon("shutdown", started, last_error)
        except asyncio.CancelledError:
            if held:
                self.stats.abandoned_total["shutdown"] += 1
            raise
        finally:
            if held:
                self.stats.held -= 1

    def _abandon(
        self, reason: AbandonReason, started: float, last_error: BaseException | None
    ) -> HoldAbandoned:
        self.stats.abandoned_total[reason] += 1
        return HoldAbandoned(self.breaker.name, reason, time.monotonic() - started, last_error)

    def _notify(self) -> None:
        """Wake the waiters: the dependency answered, a probe slot is free, or closing."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self, seconds: float) -> None:
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await changed.wait()
