"""Helpers for the live ops tests: one Prometheus + Alertmanager pair re-pointed at each test's
bot, async PromQL and /metrics readers, a webhook sink, and traffic from fresh Discord users.

Everything here is async so the bot under test, which runs in the test's event loop, keeps
answering scrapes and webhooks while a test waits.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bot.emulator.discord import DiscordEmulator
from tests.deploy.support import need_binary

T = TypeVar("T")
JSON = dict[str, Any]


def live_intervals(stack: ModuleType) -> dict[str, str]:
    """FAST_INTERVALS plus `alert_for: 0s`: 1 s scrapes, evaluations and group timings, a 5 s
    repeat interval, and every alert firing at its first true evaluation."""
    return {**stack.FAST_INTERVALS, "alert_for": "0s"}


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    what: str,
    within_s: float = 45.0,
    every: float = 0.5,
) -> T:
    """Poll `check` until it returns something other than None (or fail saying `what`)."""
    deadline = time.monotonic() + within_s
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:.0f} s: {what}")
        await asyncio.sleep(every)


# --- Prometheus and Alertmanager ----------------------------------------------------------------


@dataclass
class LiveStack:
    """Prometheus + Alertmanager started once; `point_at` re-renders both configs for a bot and
    reloads them (the launcher starts Prometheus with --web.enable-lifecycle)."""

    stack: ModuleType
    config_dir: Path
    token_file: Path
    prometheus: Any  # local_stack.ManagedProcess
    alertmanager: Any
    alertmanager_target: str
    intervals: Mapping[str, str]

    def render(self, bot_target: str, human_webhook_url: str) -> Any:
        """Render configs for `bot_target`: its /alerts is the heal webhook."""
        return self.stack.render_configs(
            self.config_dir,
            bot_target,
            f"http://{bot_target}/alerts",
            self.token_file,
            self.intervals,
            alertmanager_target=self.alertmanager_target,
            human_webhook_url=human_webhook_url,
        )

    async def point_at(self, bot_target: str, human_webhook_url: str) -> None:
        """Scrape `bot_target`, send heals to it and human notifications to the sink."""
        self.render(bot_target, human_webhook_url)
        async with aiohttp.ClientSession() as http:
            for process in (self.alertmanager, self.prometheus):
                async with http.post(f"{process.url}/-/reload") as response:
                    body = await response.text()
                    assert response.status == 200, f"{process.name} reload: {body}"


@contextmanager
def live_stack(
    stack: ModuleType,
    workdir: Path,
    token_file: Path,
    human_webhook_url: str,
    intervals: Mapping[str, str] | None = None,
) -> Iterator[LiveStack]:
    """Start the pair with a placeholder target; tests call `point_at` with their bot.

    `intervals` as for `render_configs` (default `live_intervals`: fast, every `for:` at 0 s;
    `{}` keeps the committed timings)."""
    need_binary(stack.PROMETHEUS_BINARY)
    need_binary(stack.ALERTMANAGER_BINARY)
    am_port, prom_port = stack.free_port(), stack.free_port()
    live = LiveStack(
        stack=stack,
        config_dir=workdir / "config",
        token_file=token_file,
        prometheus=None,
        alertmanager=None,
        alertmanager_target=f"127.0.0.1:{am_port}",
        intervals=live_intervals(stack) if intervals is None else intervals,
    )
    rendered = live.render("127.0.0.1:9", human_webhook_url)
    with (
        stack.start_alertmanager(rendered.alertmanager, workdir / "alertmanager", am_port) as am,
        stack.start_prometheus(rendered.prometheus, workdir / "prometheus", prom_port) as prom,
    ):
        live.prometheus, live.alertmanager = prom, am
        yield live


class Prometheus:
    """The PromQL query API, from the test's event loop."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self._http = http

    async def answer(self, expr: str) -> JSON:
        """The whole JSON answer of an instant query (errors included)."""
        data = {"query": expr, "time": f"{time.time():.3f}"}
        async with self._http.post(f"{self.url}/api/v1/query", data=data) as response:
            answer: JSON = await response.json()
            return answer

    async def query(self, expr: str) -> list[JSON]:
        """The series of an instant query; an error fails the test."""
        answer = await self.answer(expr)
        assert answer.get("status") == "success", f"{expr}: {answer.get('error')}"
        result: list[JSON] = answer["data"]["result"]
        return result

    async def value(self, expr: str) -> float | None:
        """The value of a query that returns at most one series (None when it returns none)."""
        result = await self.query(expr)
        assert len(result) <= 1, f"{expr} returned {len(result)} series"
        return float(result[0]["value"][1]) if result else None

    async def firing(self, alertname: str, instance: str) -> list[JSON]:
        """The firing ALERTS series of one alert on one instance."""
        return await self.query(
            f'ALERTS{{alertname="{alertname}", instance="{instance}", alertstate="firing"}}'
        )

    async def rules(self) -> list[JSON]:
        """Every rule as /api/v1/rules reports it (with health and lastError)."""
        async with self._http.get(f"{self.url}/api/v1/rules") as response:
            groups = (await response.json())["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]


# --- the bot's own /metrics ---------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    """One read of the bot's /metrics."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    @property
    def names(self) -> set[str]:
        """Sample names (counters with _total, histograms with _bucket/_count/_sum)."""
        return {name for name, _ in self.samples}

    def get(self, name: str, **labels: str) -> float:
        """The value of the one sample with exactly these labels (KeyError when absent)."""
        return self.samples[(name, frozenset(labels.items()))]


async def scrape(http: aiohttp.ClientSession, ops_url: str) -> Scrape:
    """Read the bot's /metrics."""
    async with http.get(f"{ops_url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    samples = {
        (sample.name, frozenset(sample.labels.items())): float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return Scrape(samples)


def finite(result: list[JSON]) -> bool:
    """Whether any series of a query result has a number (not NaN) as its value."""
    return any(not math.isnan(float(series["value"][1])) for series in result)


# --- a webhook sink for the human routes --------------------------------------------------------


@dataclass
class Sink:
    """Records the notifications Alertmanager sends to the pager and chat receivers."""

    url: str = ""
    calls: list[JSON] = field(default_factory=list)

    async def wait_for(
        self, predicate: Callable[[JSON], bool], what: str, within_s: float = 45.0
    ) -> JSON:
        """The first recorded call whose body matches `predicate`."""

        async def found() -> JSON | None:
            return next((call for call in self.calls if predicate(call["body"])), None)

        try:
            return await eventually(found, what, within_s)
        except AssertionError as exc:
            seen = [
                (c["body"].get("receiver"), c["body"].get("status"), c["body"].get("groupLabels"))
                for c in self.calls
            ]
            raise AssertionError(f"{exc}; the sink got {seen}") from None


async def start_sink() -> tuple[Sink, web.AppRunner]:
    """A loopback HTTP server recording every POST; stop it with `runner.cleanup()`."""
    sink = Sink()

    async def record(request: web.Request) -> web.Response:
        sink.calls.append(
            {"path": request.path, "headers": dict(request.headers), "body": await request.json()}
        )
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    sink.url = f"http://{host}:{port}/humans"
    return sink, runner


# --- traffic ------------------------------------------------------------------------------------

_people = itertools.count(1)


async def ask(
    discord: DiscordEmulator, count: int, topic: str, *, concurrency: int = 4
) -> list[tuple[int, str]]:
    """`count` questions, each from a new user in a new DM (so Discord's per-channel limit of
    5 messages per 5 s never slows a reply); returns (DM channel, first reply) per question."""
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> tuple[int, str]:
        async with gate:
            user = discord.create_user(f"{topic}-{next(_people)}")
            dm = discord.create_dm(user)
            msg = await discord.send_message(dm, author=user, content=f"{topic} question {n}")
            reply = await discord.wait_for_reply(int(msg["id"]), timeout=30)
            return dm, reply.content

    return list(await asyncio.gather(*(one(n) for n in range(count))))
