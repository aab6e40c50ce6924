"""BreakerHold: calls wait while the breaker is open or the dependency fails, within bounds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from bot.resilience.breaker import CircuitBreaker
from bot.resilience.hold import BreakerHold, HoldAbandoned


class Outage(Exception):
    """The dependency is down (what `is_outage` accepts)."""


class ClientError(Exception):
    """The dependency answered "no" (not an outage)."""


class Dependency:
    """A dependency that fails with `Outage` while `down`; records every call it receives."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.calls = 0
        self.served: list[str] = []
        self.failed = 0

    def request(self, what: str) -> asyncio.Future[str]:
        async def run() -> str:
            self.calls += 1
            await asyncio.sleep(0)
            if self.down:
                self.failed += 1
                raise Outage(what)
            self.served.append(what)
            return what

        return asyncio.ensure_future(run())


def make_hold(
    *, threshold: int = 2, reset_s: float = 0.05, max_held: int = 10, max_wait_s: float = 5.0
) -> BreakerHold:
    breaker = CircuitBreaker(
        "dep", failure_threshold=threshold, reset_timeout_s=reset_s, success_threshold=1
    )
    return BreakerHold(
        breaker,
        max_held=max_held,
        max_wait_s=max_wait_s,
        is_outage=lambda exc: isinstance(exc, Outage),
    )


async def wait_for(condition: Callable[[], bool]) -> None:
    """Until `condition()` holds (the hold's figures change inside tasks), at most 5 s."""
    async with asyncio.timeout(5.0):
        while not condition():  # noqa: ASYNC110 - polling figures the tasks bump
            await asyncio.sleep(0.005)


async def test_a_healthy_dependency_is_called_once_and_nothing_is_held() -> None:
    hold, dep = make_hold(), Dependency()

    assert await hold.call(lambda: dep.request("a")) == "a"

    assert dep.calls == 1
    assert (hold.stats.held, hold.stats.held_total, hold.stats.retries_total) == (0, 0, 0)


async def test_a_client_error_is_raised_at_once_and_is_no_failure() -> None:
    hold = make_hold(threshold=1)
    calls = 0

    async def refused() -> str:
        nonlocal calls
        calls += 1
        raise ClientError("404")

    with pytest.raises(ClientError):
        await hold.call(refused)

    assert calls == 1
    assert hold.breaker.state == "closed"
    assert hold.breaker.stats.failures_total == 0
    assert hold.stats.held_total == 0


async def test_failures_below_the_threshold_are_retried_after_a_backoff() -> None:
    hold = make_hold(threshold=5)
    failures = 2
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls <= failures:
            raise Outage("5xx")
        return "ok"

    assert await hold.call(flaky) == "ok"

    assert calls == 3
    assert hold.breaker.state == "closed"
    assert (hold.stats.held, hold.stats.held_total, hold.stats.retries_total) == (0, 1, 2)


async def test_an_outage_holds_every_call_and_each_is_served_once_after_recovery() -> None:
    hold, dep = make_hold(threshold=2, reset_s=0.05), Dependency(down=True)

    calls = [asyncio.create_task(hold.call(lambda i=i: dep.request(f"r{i}"))) for i in range(6)]
    await wait_for(lambda: hold.stats.held == 6 and hold.breaker.state == "open")
    # While open, only the probe after each reset timeout reaches the dependency.
    await wait_for(lambda: hold.breaker.stats.transitions_total["half_open"] >= 3)
    assert all(not task.done() for task in calls)
    failed_while_open = dep.failed
    dep.down = False

    results = await asyncio.gather(*calls)

    assert sorted(results) == [f"r{i}" for i in range(6)]
    assert sorted(dep.served) == sorted(results)  # each exactly once
    # 6 first tries (2 opened the breaker, the rest were refused or failed late) + the probes.
    probes = hold.breaker.stats.transitions_total["half_open"]
    assert failed_while_open <= 6 + probes
    assert hold.breaker.state == "closed"
    assert (hold.stats.held, hold.stats.held_total) == (0, 6)
    assert hold.stats.abandoned_total == {"overflow": 0, "expired": 0, "shutdown": 0}


async def test_no_room_to_wait_abandons_the_call_at_once() -> None:
    hold, dep = make_hold(threshold=1, reset_s=10.0, max_held=1), Dependency(down=True)
    first = asyncio.create_task(hold.call(lambda: dep.request("first")))
    await wait_for(lambda: hold.stats.held == 1)

    with pytest.raises(HoldAbandoned) as raised:
        await hold.call(lambda: dep.request("second"))

    assert raised.value.reason == "overflow"
    assert dep.calls == 1  # the second never reached the dependency: the breaker was open
    assert hold.stats.abandoned_total["overflow"] == 1
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert hold.stats.held == 0
    assert hold.stats.abandoned_total["shutdown"] == 1


async def test_a_call_waits_at_most_max_wait_then_is_abandoned_with_the_last_error() -> None:
    hold, dep = make_hold(threshold=1, reset_s=0.02, max_wait_s=0.2), Dependency(down=True)

    with pytest.raises(HoldAbandoned) as raised:
        await hold.call(lambda: dep.request("late"))

    assert raised.value.reason == "expired"
    assert isinstance(raised.value.last_error, Outage)
    assert raised.value.waited_s == pytest.approx(0.2, abs=0.1)
    assert hold.stats.abandoned_total["expired"] == 1
    assert hold.stats.held == 0


async def test_close_releases_every_waiter_as_shutdown() -> None:
    hold, dep = make_hold(threshold=1, reset_s=10.0), Dependency(down=True)
    calls = [asyncio.create_task(hold.call(lambda: dep.request("x"))) for _ in range(3)]
    await wait_for(lambda: hold.stats.held == 3)

    hold.close()
    results = await asyncio.gather(*calls, return_exceptions=True)

    assert all(isinstance(r, HoldAbandoned) and r.reason == "shutdown" for r in results)
    assert hold.stats.abandoned_total["shutdown"] == 3
    assert hold.stats.held == 0


async def test_an_open_breaker_past_its_reset_timeout_reads_half_open() -> None:
    hold, dep = make_hold(threshold=1, reset_s=0.05, max_wait_s=0.01), Dependency(down=True)
    with pytest.raises(HoldAbandoned):
        await hold.call(lambda: dep.request("x"))
    assert hold.state == "open"

    await wait_for(lambda: hold.breaker.retry_after_s() == 0)

    assert hold.breaker.state == "open"  # nobody asked since
    assert hold.state == "half_open"  # but the next call would be let through


def test_bounds_are_validated() -> None:
    breaker = CircuitBreaker("dep")
    with pytest.raises(ValueError, match="max_held"):
        BreakerHold(breaker, max_held=-1, max_wait_s=1, is_outage=lambda e: True)
    with pytest.raises(ValueError, match="max_wait_s"):
        BreakerHold(breaker, max_held=1, max_wait_s=0, is_outage=lambda e: True)
