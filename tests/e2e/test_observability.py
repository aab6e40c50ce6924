"""Observability of the whole bot, checked against what the emulators saw happen.

* every metric of the catalogue (docs/metrics.md) is on `/metrics`, and the counts
  equal the traffic the emulators recorded (answers, a cache hit, a provider 429, failures
  after retries, a breaker opening, queued questions, tokens);
* `promtool check metrics` accepts the live exposition;
* the set of series does not grow with guilds or users (200 guilds of 50 members);
* in a real `python -m bot run` process: exemplars carry the trace id of the message, the
  OTLP receiver gets that trace with the documented shape and no message text, a real
  Prometheus stores the series and the exemplar, JSON log lines carry the trace id, and
  SIGTERM ends the process with 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bot.app import BotApp
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import Fault, GeminiEmulator, GeminiRequest, default_responder
from bot.emulator.gemini import wire as gemini_wire
from bot.emulator.gemini.records import get_field
from tests.deploy.support import METRICS_MD, local_stack, need_binary
from tests.fakes import FakeClock
from tests.ops.otlp_receiver import OTLPReceiver, ReceivedSpan, otlp_receiver

__all__ = ["otlp_receiver"]  # the fixture, imported so the tests here can use it

MODEL: Final = "gemini-2.5-flash"
# Names from the proto's Span.SpanKind and Status.StatusCode.
SPAN_KIND_CLIENT: Final = 3
SPAN_KIND_CONSUMER: Final = 5
STATUS_ERROR: Final = 2
# A Prometheus target is first scraped a few seconds after start (TESTING.md): poll this long.
PROMETHEUS_TIMEOUT_S: Final = 30.0
SETTING_PREFIXES: Final = (
    "DISCORD_",
    "GEMINI_",
    "GOOGLE_",
    "OTEL_",
    "OPS_",
    "LOG_",
    "DATA_DIR",
    "HEALTH_",
    "TRACE_",
    "RETRY_",
    "SHUTDOWN_",
    "USER_COOLDOWN",
)

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


# --- reading /metrics ----------------------------------------------------------------------------


async def scrape(base_url: str, *, openmetrics: bool = False) -> str:
    """The body of GET /metrics, plain text 0.0.4 or OpenMetrics (as Prometheus asks)."""
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base_url}/metrics", headers=headers) as response,
    ):
        assert response.status == 200
        return await response.text()


def parse_samples(text: str) -> list[Sample]:
    """Every sample of a text-format exposition."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """The value of the one sample called `name` whose labels include `labels`."""
    found = [
        s
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0].value


def series(samples: Iterable[Sample]) -> set[SeriesKey]:
    """Series identities (name and labels), values ignored."""
    return {(s.name, tuple(sorted(s.labels.items()))) for s in samples}


CATALOGUE_NAME: Final = r"`((?:llmbot|process|python|gen_ai_client)_[a-z0-9_]+)`"


def catalogue_names() -> set[str]:
    """Every metric name in the tables of METRICS.md (recording rules use colons: not these)."""
    names: set[str] = set()
    for line in METRICS_MD.read_text(encoding="utf-8").splitlines():
        if line.startswith("|"):
            names.update(re.findall(CATALOGUE_NAME, line))
    assert len(names) > 40, "METRICS.md changed shape: no catalogue tables found"
    return names


def exposed_names(samples: Iterable[Sample]) -> set[str]:
    """Metric names as the catalogue writes them (histograms by their base name)."""
    names: set[str] = set()
    for s in samples:
        names.add(s.name)
        for suffix in ("_bucket", "_count", "_sum"):
            if s.name.endswith(suffix):
                names.add(s.name.removesuffix(suffix))
    return names


# --- the emulators' side of the story ------------------------------------------------------------


@dataclass
class UsageLog:
    """A Gemini responder that also sums the usageMetadata the emulator sends with each answer
    (computed by the emulator's own wire functions from the same request and text).

    Set the emulator's `thoughts_tokens` to `thoughts_per_answer`: it adds them to every
    answer whose request leaves thinking on.
    """

    thoughts_per_answer: int = 0
    answers: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    thoughts_tokens: int = 0
    per_answer: list[tuple[int, int]] = field(default_factory=list)

    def __call__(self, request: GeminiRequest) -> str:
        text = default_responder(request)
        thinking = get_field(request.generation_config, "thinkingConfig")
        thoughts = 0 if get_field(thinking, "thinkingBudget") == 0 else self.thoughts_per_answer
        usage = gemini_wire.usage_metadata(
            gemini_wire.prompt_tokens(request.body), gemini_wire.text_tokens(text), thoughts
        )
        self.answers += 1
        self.input_tokens += usage["promptTokenCount"]
        self.output_tokens += usage["candidatesTokenCount"]
        self.thoughts_tokens += usage.get("thoughtsTokenCount", 0)
        self.per_answer.append((usage["promptTokenCount"], usage["candidatesTokenCount"]))
        return text


async def dm(discord: DiscordEmulator, name: str, text: str) -> int:
    """A new user asks the bot in a DM; returns the message id."""
    user = discord.create_user(name)
    message = await discord.send_message(discord.create_dm(user), author=user, content=text)
    return int(message["id"])


def replies_to(discord: DiscordEmulator, message_id: int) -> list[str]:
    return [m.content for m in discord.sent_messages if m.reply_to == message_id]


def is_model_answer(text: str) -> bool:
    return text.startswith("You said")  # the emulator's echo


@dataclass
class Traffic:
    app: BotApp
    usage: UsageLog
    messages_sent: int
    failing_requests: int  # Gemini requests answered 500
    retry_attempts: int


async def drive_traffic(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> Traffic:
    """Answers, a cache hit, a provider 429 answered later from the queue, then two messages
    whose retries all fail, opening the breaker (threshold 2) and leaving both queued."""
    usage = UsageLog(thoughts_per_answer=3)
    gemini.responder = usage
    gemini.thoughts_tokens = usage.thoughts_per_answer
    clock = FakeClock.in_a_fresh_minute()
    attempts = 2
    app: BotApp = await start_bot(
        clock=clock,
        retry_max_attempts=attempts,
        breaker_failure_threshold=2,
        queue_retry_interval_seconds=60,  # failed questions stay queued for the test
        # Whole answers (tests/e2e/test_streaming.py streams): no time to first chunk below.
        stream_replies=False,
    )

    answered = await dm(discord, "ann", "what is a monad?")
    await discord.wait_for_reply(answered)
    cached = await dm(discord, "ben", "what is a monad?")  # same words, empty history: a hit
    await discord.wait_for_reply(cached)

    gemini.queue_fault(Fault.rate_limited(retry_delay_s=1))
    limited = await dm(discord, "cy", "why is the sky blue?")
    assert "queued" in (await discord.wait_for_reply(limited)).content
    clock.advance(61)  # past the provider's delay and the quota minute
    app.queue.wake()
    await discord.wait_for(lambda: len(replies_to(discord, limited)) == 2, what="queued answer")
    await discord.wait_for(lambda: app.queue.size == 0, what="empty queue")

    before = len(gemini.requests)
    gemini.fail_all(500)
    failing = [await dm(discord, f"dee{i}", f"failing question {i}") for i in range(2)]
    for message_id in failing:
        assert "queued" in (await discord.wait_for_reply(message_id)).content
    assert app.llm.breaker.state == "open"

    # The emulator records a message before the bot has read the answer to its request, and
    # dispatches an event before the bot has read it: let the bot catch up before counting.
    def settled() -> bool:
        events = app.telemetry.registry.get_sample_value(
            "llmbot_discord_gateway_events_total", {"type": "MESSAGE_CREATE"}
        )
        in_flight = app.pipeline.stats.in_flight
        return in_flight == 0 and events == discord.dispatch_count("MESSAGE_CREATE")

    await discord.wait_for(settled, what="the bot to finish its replies")
    return Traffic(
        app=app,
        usage=usage,
        messages_sent=len([answered, cached, limited, *failing]),
        failing_requests=len(gemini.requests) - before,
        retry_attempts=attempts,
    )


# --- a: the catalogue is complete and counts what happened ------------------------------------


async def test_every_catalogue_metric_is_exposed_and_counts_what_the_emulators_saw(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    traffic = await drive_traffic(start_bot, discord, gemini)
    app, usage = traffic.app, traffic.usage
    samples = parse_samples(await scrape(app.ops.url))

    missing = catalogue_names() - exposed_names(samples)
    assert not missing, f"in METRICS.md but not on /metrics: {sorted(missing)}"

    sent = [m.content for m in discord.sent_messages]
    model_answers = [text for text in sent if is_model_answer(text)]
    queued_notices = [text for text in sent if "queued" in text]

    def messages(outcome: str) -> float:
        return value(samples, "llmbot_messages_total", outcome=outcome)

    # Replies by kind: fresh answers are the Gemini answers, the rest of the answers the
    # emulator shows came from the cache; every queued notice is counted once.
    assert messages("answered") == usage.answers == 2
    assert messages("cached") == len(model_answers) - usage.answers == 1
    assert messages("queued") == len(queued_notices) == 3
    for outcome in ("fallback", "rejected", "failed"):
        assert messages(outcome) == 0
    assert value(samples, "llmbot_response_duration_seconds_count") == traffic.messages_sent

    # One error per message that failed after its retries, not one per failed request.
    assert traffic.failing_requests == 4
    errors = traffic.failing_requests / traffic.retry_attempts
    assert value(samples, "llmbot_errors_total", component="gemini") == errors
    for component in ("discord", "store", "internal"):
        assert value(samples, "llmbot_errors_total", component=component) == 0

    # Every request Gemini received is one observation of the LLM histogram, by outcome.
    def llm_calls(outcome: str) -> float:
        return value(
            samples, "llmbot_llm_request_duration_seconds_count", model=MODEL, outcome=outcome
        )

    assert llm_calls("rate_limited") == 1 == gemini.rate_limited_count
    assert llm_calls("ok") == usage.answers
    assert llm_calls("error") == traffic.failing_requests
    assert llm_calls("timeout") == 0
    assert sum(llm_calls(o) for o in ("ok", "error", "timeout", "rate_limited")) == len(
        gemini.requests
    )

    def tokens(kind: str) -> float:
        return value(samples, "llmbot_llm_tokens_total", model=MODEL, type=kind)

    assert tokens("input") == usage.input_tokens > 0
    assert tokens("output") == usage.output_tokens > 0
    assert tokens("thoughts") == usage.thoughts_tokens == 3 * usage.answers
    assert tokens("cached") == 0

    # The same calls on the OpenTelemetry GenAI conventions, and their estimated cost at the
    # default prices (GEMINI_PRICE_*: 0.30 input, 2.50 output and thinking, per million).
    gen_ai = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "gcp.gemini",
        "gen_ai_request_model": MODEL,
    }
    duration = "gen_ai_client_operation_duration_seconds_count"
    assert value(samples, duration, **gen_ai, error_type="") == usage.answers
    assert value(samples, duration, **gen_ai, error_type="error") == traffic.failing_requests
    assert value(samples, duration, **gen_ai, error_type="rate_limited") == 1

    def gen_ai_tokens(kind: str) -> float:
        return value(samples, "gen_ai_client_token_usage_sum", **gen_ai, gen_ai_token_type=kind)

    assert gen_ai_tokens("input") == usage.input_tokens
    assert gen_ai_tokens("output") == usage.output_tokens + usage.thoughts_tokens
    # Whole answers (GEMINI_STREAM=false): no time to first chunk, as the conventions say.
    first_chunk = "gen_ai_client_operation_time_to_first_chunk_seconds_count"
    assert value(samples, first_chunk, **gen_ai) == 0
    cost = (usage.input_tokens * 0.30 + (usage.output_tokens + usage.thoughts_tokens) * 2.50) / 1e6
    assert value(samples, "llmbot_llm_cost_usd_total", model=MODEL) == pytest.approx(cost)

    # Lookups: ann (miss), ben (hit), cy twice (429, then from the queue), two failing ones.
    assert value(samples, "llmbot_cache_requests_total", result="hit") == 1
    assert value(samples, "llmbot_cache_requests_total", result="miss") == 5
    assert value(samples, "llmbot_cache_entries") == app.llm.cache.stats.entries == 2

    for state in ("closed", "open", "half_open"):
        expected = 1 if state == "open" else 0
        assert value(samples, "llmbot_circuit_state", dependency="gemini", state=state) == expected
    assert value(samples, "llmbot_dependency_up", dependency="gemini") == 0
    assert value(samples, "llmbot_dependency_up", dependency="discord") == 1

    # The two failing questions wait in the queue; cy's was answered from it.
    assert value(samples, "llmbot_queue_messages") == app.queue.size == 2
    assert value(samples, "llmbot_queue_capacity") == app.settings.queue_max_size
    assert value(samples, "llmbot_queue_wait_seconds_count") == 1
    assert value(samples, "llmbot_messages_in_flight") == 0
    assert value(samples, "llmbot_active_conversations") == 3  # ann, ben and cy were answered

    # Discord: every reply is a 2xx REST call the emulator answered; so is each typing
    # indicator, except one cancelled mid-request when its reply was done (never read).
    def posts(kind: str) -> int:
        pattern = rf"/channels/\d+/{kind}$"
        return sum(
            1
            for method, path, status in discord.requests
            if method == "POST" and re.search(pattern, path) and 200 <= status < 300
        )

    replies, typing = posts("messages"), posts("typing")
    assert replies == len(sent) == traffic.messages_sent + 1  # cy's later answer
    rest_ok = value(samples, "llmbot_discord_rest_requests_total", status_class="2xx")
    assert replies <= rest_ok <= replies + typing
    for status_class in ("4xx", "429", "5xx", "error"):
        rest = value(samples, "llmbot_discord_rest_requests_total", status_class=status_class)
        assert rest == 0, status_class
    assert value(
        samples, "llmbot_discord_gateway_events_total", type="MESSAGE_CREATE"
    ) == discord.dispatch_count("MESSAGE_CREATE")
    assert value(samples, "llmbot_discord_shard_connected", shard="0") == 1

    assert value(samples, "llmbot_health_snapshots") == len(app.history) >= 1
    build = [s for s in samples if s.name == "llmbot_build_info"]
    assert len(build) == 1 and build[0].value == 1 and build[0].labels["version"]
    assert value(samples, "process_resident_memory_bytes") > 0


# --- b: promtool accepts the exposition ------------------------------------------------------


async def test_promtool_check_metrics_accepts_the_live_exposition(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    promtool = need_binary("promtool")
    traffic = await drive_traffic(start_bot, discord, gemini)
    body = await scrape(traffic.app.ops.url)

    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(body.encode()), timeout=30)

    assert proc.returncode == 0, out.decode()
    assert out.decode().strip() == ""


# --- c: cardinality does not follow guilds or users ------------------------------------------


def answered(app: BotApp) -> int:
    """Messages whose reply has been delivered (a reply is counted as it starts out)."""
    stats = app.pipeline.stats
    return sum(stats.outcomes.values()) - stats.in_flight


GUILDS: Final = 200
USERS_PER_GUILD: Final = 50
# Every 5th member of each guild asks: 2,000 messages from 2,000 distinct users in all 200
# guilds. All 10,000 messages took 45-60 s on 2 cores (about 5 ms of CPU per message for the bot
# and both emulators in this one process), over the time this suite may spend here.
SENDER_EVERY: Final = 5
BATCH: Final = 500


class TestCardinality:
    @pytest.fixture
    async def discord(self) -> AsyncIterator[DiscordEmulator]:
        # No rate limits or schema checks: this measures the bot's series, not Discord's rules.
        async with DiscordEmulator(enforce_limits=False, validate=False) as emu:
            yield emu

    async def test_series_are_the_same_for_one_user_and_for_200_guilds_of_50(
        self,
        start_bot: Callable[..., Any],
        discord: DiscordEmulator,
        gemini: GeminiEmulator,
    ) -> None:
        # Fast: no pacing or quota in the way, short answers, a context of one exchange. Every
        # author is called "member", so a guild message reaches the model as "member: hi" and,
        # after the first exchanges, the cache answers (a google-genai call costs ~5 ms of CPU
        # in this process). User, guild and channel ids are all distinct.
        app: BotApp = await start_bot(
            discord_rest_max_rps=100_000,
            gemini_rate_limit_rpm=10_000_000,
            gemini_rate_limit_daily=100_000_000,
            gemini_max_output_tokens=64,
            max_conversation_messages=2,
        )
        gemini.responder = lambda _request: "ok"

        first = discord.create_guild("guild 0")
        channel = discord.guild_text_channel(first)
        member = discord.create_user("member")
        discord.add_member(first, member)
        await discord.send_message(channel, author=member, content="hi", mention_bot=True)
        await discord.wait_for(lambda: answered(app) == 1, what="the first answer")
        baseline = series(parse_samples(await scrape(app.ops.url)))

        guilds = [first, *(discord.create_guild(f"guild {g}") for g in range(1, GUILDS))]
        members: list[tuple[int, dict[str, Any]]] = [(channel, member)]
        for g, guild in enumerate(guilds):
            for _ in range(1 if g == 0 else 0, USERS_PER_GUILD):
                user = discord.create_user("member")
                discord.add_member(guild, user)
                members.append((discord.guild_text_channel(guild), user))
        assert len({int(user["id"]) for _, user in members}) == GUILDS * USERS_PER_GUILD
        senders = members[SENDER_EVERY - 1 :: SENDER_EVERY]  # the first member asked already
        assert len({c for c, _ in senders}) == GUILDS  # 10 askers in every guild

        started = time.monotonic()
        for start in range(0, len(senders), BATCH):
            batch = senders[start : start + BATCH]
            await asyncio.gather(
                *(
                    discord.send_message(c, author=user, content="hi", mention_bot=True)
                    for c, user in batch
                )
            )
            done = 1 + start + len(batch)

            def delivered(done: int = done) -> bool:
                return answered(app) >= done

            await discord.wait_for(delivered, timeout=60, what="answers")
        elapsed = time.monotonic() - started
        samples = parse_samples(await scrape(app.ops.url))
        after = series(samples)

        assert answered(app) == 1 + len(senders)
        assert value(samples, "llmbot_discord_guilds") == GUILDS
        replies = sum(
            value(samples, "llmbot_messages_total", outcome=o) for o in ("answered", "cached")
        )
        assert replies == 1 + len(senders) == 2001
        assert after == baseline, (
            f"new series: {sorted(after - baseline)[:10]}, gone: {sorted(baseline - after)[:10]}"
        )
        ids = {str(guild) for guild in guilds} | {str(user["id"]) for _, user in members}
        ids |= {str(discord.guild_text_channel(guild)) for guild in guilds}
        label_values = {v for _, labels in after for _, v in labels}
        assert not ids & label_values, "an id became a label value"
        print(
            f"\n{len(baseline)} series with 1 guild x 1 user and with {GUILDS} guilds x "
            f"{USERS_PER_GUILD} users ({len(senders)} more askers answered in {elapsed:.1f} s)"
        )


# --- d, e: the real process: exemplars, traces, Prometheus, logs, SIGTERM -------------------


def _child_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    env.update(settings)
    return env


async def _get_json(http: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with http.get(url, params=params) as response:
        return await response.json()


async def _poll(
    what: str, check: Callable[[], Any], timeout_s: float, interval_s: float = 0.25
) -> Any:
    """Await `check()` until it returns something truthy; fail with `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(interval_s)


def _exemplar_trace_ids(text: str, name: str) -> set[str]:
    """Trace ids of the exemplars on the buckets of histogram `name` (OpenMetrics body)."""
    ids: set[str] = set()
    for family in openmetrics_parser.text_string_to_metric_families(text):  # type: ignore[no-untyped-call]
        for sample in family.samples:
            if sample.name == f"{name}_bucket" and sample.exemplar is not None:
                ids.add(sample.exemplar.labels["trace_id"])
    return ids


def _attribute_texts(span: ReceivedSpan) -> list[str]:
    return [json.dumps(v) for v in (*span.attributes.values(), *span.resource.values())]


GRACE_S: Final = 10.0


@pytest.fixture
def prometheus_binary() -> str:
    """Checked before the bot process starts: missing, it fails in CI and skips elsewhere."""
    return need_binary("prometheus")


@dataclass
class BotProcess:
    process: asyncio.subprocess.Process
    ops_url: str
    stderr_path: Path

    def log_lines(self) -> list[str]:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace").splitlines()


@pytest.fixture
async def bot_process(
    tmp_path: Path,
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
    otlp_receiver: OTLPReceiver,
) -> AsyncIterator[BotProcess]:
    """`python -m bot run` against the emulators, exporting spans to the OTLP receiver."""
    stack = local_stack()
    port = stack.free_port()
    stderr_path = tmp_path / "bot.stderr"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
            env=_child_env(
                DISCORD_REST_URL=discord.rest_url,
                GEMINI_BASE_URL=gemini.base_url,
                DISCORD_TOKEN=discord.token,
                GEMINI_API_KEY=gemini.api_key,
                DATA_DIR=str(tmp_path / "data"),
                OPS_HOST="127.0.0.1",
                OPS_PORT=str(port),
                LOG_FORMAT="json",
                LOG_LEVEL="INFO",
                USER_COOLDOWN_SECONDS="0",
                RETRY_MAX_ATTEMPTS="1",
                SHUTDOWN_GRACE_SECONDS=str(GRACE_S),
                OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.endpoint,
                OTEL_BSP_SCHEDULE_DELAY="100",
            ),
        )
    bot = BotProcess(process, f"http://127.0.0.1:{port}", stderr_path)
    try:
        try:
            await discord.wait_until_ready(timeout=30)
        except TimeoutError:
            raise AssertionError(
                "the bot process never connected:\n" + "\n".join(bot.log_lines()[-20:])
            ) from None
        yield bot
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_exemplars_traces_prometheus_and_logs_of_a_real_bot_process(
    tmp_path: Path,
    prometheus_binary: str,
    discord: DiscordEmulator,
    gemini: GeminiEmulator,
    otlp_receiver: OTLPReceiver,
    bot_process: BotProcess,
) -> None:
    stack = local_stack()
    usage = UsageLog()
    gemini.responder = usage
    secret = "zebra quartz 7781 is my secret"

    # Prometheus first: its first scrape takes seconds, which the rest of the test overlaps.
    token_file = tmp_path / "token"
    token_file.write_text("unused-in-this-test\n", encoding="utf-8")
    target = bot_process.ops_url.removeprefix("http://")
    rendered = stack.render_configs(
        tmp_path / "prometheus-config",
        target,
        f"{bot_process.ops_url}/alerts",
        token_file,
        stack.FAST_INTERVALS,
    )
    prometheus = await asyncio.to_thread(
        stack.start_prometheus,
        rendered.prometheus,
        tmp_path / "prometheus",
        stack.free_port(),
        binary=prometheus_binary,
    )
    try:
        message_id = await dm(discord, "ann", secret)
        reply = await discord.wait_for_reply(message_id, timeout=20)
        assert is_model_answer(reply.content)

        # i. Exemplars: both histograms point at the message's trace.
        body = await scrape(bot_process.ops_url, openmetrics=True)
        response_ids = _exemplar_trace_ids(body, "llmbot_response_duration_seconds")
        llm_ids = _exemplar_trace_ids(body, "llmbot_llm_request_duration_seconds")
        assert len(response_ids) == 1 and response_ids == llm_ids, (response_ids, llm_ids)
        (trace_id,) = response_ids
        assert re.fullmatch(r"[0-9a-f]{32}", trace_id)

        # ii. The trace reached the OTLP receiver, with its documented shape.
        children = (
            "context build",
            "cache lookup",
            "quota",
            f"chat {MODEL}",
            "discord create_message",
        )
        spans = await asyncio.to_thread(
            otlp_receiver.wait_for_spans,
            lambda s: s.trace_id == trace_id,
            1 + len(children),
            15.0,
        )
        (root,) = [s for s in spans if not s.parent_span_id]
        assert root.name == "message" and root.kind == SPAN_KIND_CONSUMER
        assert root.resource["service.name"] == "discord-llm-bot"
        by_name = {s.name: s for s in spans}
        assert sorted(by_name) == sorted(["message", *children]) and len(spans) == len(by_name)
        for name in children:
            assert by_name[name].parent_span_id == root.span_id, name
        chat = by_name[f"chat {MODEL}"]
        assert chat.kind == SPAN_KIND_CLIENT
        ((input_tokens, output_tokens),) = usage.per_answer
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.provider.name"] == "gcp.gemini"
        assert chat.attributes["gen_ai.request.model"] == MODEL
        assert chat.attributes["gen_ai.usage.input_tokens"] == input_tokens
        assert chat.attributes["gen_ai.usage.output_tokens"] == output_tokens
        assert chat.attributes["gen_ai.response.finish_reasons"] == ["STOP"]
        # TRACE_INCLUDE_MESSAGE_TEXT is off: neither the question nor the answer is recorded.
        for span in otlp_receiver.spans:
            for text in _attribute_texts(span):
                assert "zebra" not in text, f"message text on span {span.name!r}: {text}"

        # iii. A real Prometheus stores the series and the exemplar with that trace id.
        async with aiohttp.ClientSession() as http:
            api = f"{prometheus.url}/api/v1"

            async def series_present() -> bool:
                answer = await _get_json(
                    http, f"{api}/query", query="llmbot_response_duration_seconds_count"
                )
                results = answer["data"]["result"]
                return (
                    len(results) == 1
                    and results[0]["metric"]["job"] == "discord-llm-bot"
                    and float(results[0]["value"][1]) >= 1
                )

            async def exemplars_stored() -> bool:
                now = time.time()
                found = []
                for histogram in (
                    "llmbot_response_duration_seconds_bucket",
                    'llmbot_llm_request_duration_seconds_bucket{outcome="ok"}',
                ):
                    answer = await _get_json(
                        http,
                        f"{api}/query_exemplars",
                        query=histogram,
                        start=str(now - 600),
                        end=str(now + 60),
                    )
                    found.append(
                        any(
                            exemplar["labels"].get("trace_id") == trace_id
                            for result in answer["data"]
                            for exemplar in result["exemplars"]
                        )
                    )
                return all(found)

            await _poll("the series in Prometheus", series_present, PROMETHEUS_TIMEOUT_S)
            await _poll("both exemplars in Prometheus", exemplars_stored, PROMETHEUS_TIMEOUT_S)
    finally:
        await asyncio.to_thread(prometheus.stop)

    # e. A failure logged inside the message span carries its trace id (LOG_FORMAT=json).
    gemini.queue_fault(Fault.http(500))
    failing = await dm(discord, "ben", "this one fails")
    assert "queued" in (await discord.wait_for_reply(failing, timeout=20)).content

    async def logged() -> dict[str, Any] | None:
        for line in bot_process.log_lines():
            entry = json.loads(line) if _is_json(line) else {}
            if "model call failed after retries" in entry.get("msg", ""):
                return dict(entry)
        return None

    entry = await _poll("the failure's log line", logged, 10.0)
    assert entry["level"] == "warning"
    assert re.fullmatch(r"[0-9a-f]{32}", entry.get("trace_id", "")), entry
    assert re.fullmatch(r"[0-9a-f]{16}", entry.get("span_id", "")), entry
    failed_trace = await asyncio.to_thread(
        otlp_receiver.wait_for_spans,
        lambda s: s.trace_id == entry["trace_id"] and s.name == f"chat {MODEL}",
        1,
        15.0,
    )
    assert failed_trace[0].status_code == STATUS_ERROR

    # SIGTERM with an answer in flight: the bot finishes it and exits 0 within the grace.
    gemini.latency = 1.0
    calls = len(gemini.requests)
    slow = await dm(discord, "cy", "a slow question")
    await gemini.wait_for_requests(calls + 1)
    bot_process.process.send_signal(signal.SIGTERM)
    returncode = await asyncio.wait_for(bot_process.process.wait(), timeout=GRACE_S)
    assert returncode == 0, "\n".join(bot_process.log_lines()[-20:])
    assert is_model_answer(replies_to(discord, slow)[0])
    lines = bot_process.log_lines()
    assert lines and all(_is_json(line) for line in lines), "a log line was not JSON"
    assert not any("Traceback" in line for line in lines)


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False
