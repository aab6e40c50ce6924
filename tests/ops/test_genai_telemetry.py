"""The OpenTelemetry GenAI telemetry of real model calls: the google-genai client against the
Gemini emulator (streamed and whole answers, thinking and cached tokens, a failing call), seen
as a user of `/metrics` and of the traces sees it: the `gen_ai_client_*` histograms with the
conventions' buckets, the estimated cost, and the span attributes."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bot.emulator.gemini import GeminiEmulator
from bot.emulator.gemini.server import split_for_stream
from bot.llm.cache import ResponseCache
from bot.llm.errors import LLMUnavailable
from bot.llm.gemini import GeminiClient
from bot.llm.quota import QuotaLimiter
from bot.llm.service import LLMService
from bot.llm.types import GenerationSettings, LLMRequest, Message
from bot.ops.llm_telemetry import LLMCallTelemetry
from bot.ops.metrics import LLMPrices, Telemetry
from bot.resilience.breaker import CircuitBreaker
from bot.resilience.retry import RetryPolicy
from tests.deploy.support import need_binary
from tests.ops.fakes import Series, scrape, value
from tests.ops.spans import only_span

MODEL = "gemini-2.5-flash"
GEN_AI = {
    "gen_ai_operation_name": "chat",
    "gen_ai_provider_name": "gcp.gemini",
    "gen_ai_request_model": MODEL,
}
DURATION = "gen_ai_client_operation_duration_seconds"
TOKENS = "gen_ai_client_token_usage"
FIRST_CHUNK = "gen_ai_client_operation_time_to_first_chunk_seconds"
# Round prices, so the expected cost is easy to read: USD per million tokens.
PRICES = LLMPrices(input=1.0, output=10.0, cached_input=0.1)
THOUGHTS = 7
CACHED = 5
LATENCY_S = 0.6  # spread over the stream's chunks by the emulator
QUESTION = "Tell me something about the history of the printing press, please."
STREAMED = "A streamed answer that arrives in several chunks of twenty characters."


@pytest.fixture
async def gemini() -> AsyncIterator[GeminiEmulator]:
    async with GeminiEmulator(
        latency=LATENCY_S, thoughts_tokens=THOUGHTS, cached_tokens=CACHED, stream_chunk_chars=20
    ) as emu:
        yield emu


class Bench:
    """A real GeminiClient behind the LLM service, observed by the ops telemetry."""

    def __init__(
        self, gemini: GeminiEmulator, provider: TracerProvider, *, stream: bool, attempts: int = 1
    ) -> None:
        self.client = GeminiClient(
            api_key=gemini.api_key,
            base_url=gemini.base_url,
            api_version="v1beta",
            timeout_s=10.0,
            stream=stream,
        )
        self.telemetry = Telemetry(models=[MODEL], prices=PRICES)
        self.service = LLMService(
            self.client,
            cache=ResponseCache(),
            quota=QuotaLimiter(1000, 10_000),
            breaker=CircuitBreaker("gemini"),
            retry_policy=RetryPolicy(max_attempts=attempts, initial_backoff_s=0.0, jitter_s=0.0),
            observer=LLMCallTelemetry(self.telemetry, tracer=provider.get_tracer("t")),
        )

    def scrape(self) -> Series:
        return scrape(self.telemetry)


def request(text: str, **settings: int) -> LLMRequest:
    return LLMRequest(GenerationSettings(MODEL, **settings), (Message("user", text),))


async def test_a_streamed_answer_reports_the_conventions_metrics_cost_and_span(
    gemini: GeminiEmulator, recorded: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = recorded
    gemini.queue_answer(STREAMED)
    bench = Bench(gemini, provider, stream=True)
    try:
        reply = (await bench.service.answer(request(QUESTION))).reply
    finally:
        await bench.client.aclose()
    usage = reply.usage
    # What Gemini reported, through the real SDK: thinking and cache reads included.
    assert (usage.thoughts, usage.cached) == (THOUGHTS, CACHED)
    assert usage.input > CACHED and usage.output > 0
    assert reply.finish_reasons == ("STOP",)
    first_chunk = reply.time_to_first_chunk_s
    assert first_chunk is not None

    series = bench.scrape()
    ok = {**GEN_AI, "error_type": ""}
    assert value(series, DURATION + "_count", **ok) == 1
    duration = value(series, DURATION + "_sum", **ok)
    # The emulator waits latency / chunks before the first chunk and as long between the others.
    step = LATENCY_S / len(split_for_stream(STREAMED, 20))
    assert step * 0.9 <= first_chunk < duration
    assert value(series, FIRST_CHUNK + "_count", **GEN_AI) == 1
    assert value(series, FIRST_CHUNK + "_sum", **GEN_AI) == first_chunk
    # Token usage: input is the whole prompt, output the answer plus the thinking.
    output = usage.output + THOUGHTS
    assert value(series, TOKENS + "_sum", **GEN_AI, gen_ai_token_type="input") == usage.input
    assert value(series, TOKENS + "_sum", **GEN_AI, gen_ai_token_type="output") == output
    # Each count sits in the first of the conventions' buckets (1, 4, 16, ...) that holds it.
    first_bucket = next(b for b in (1, 4, 16, 64, 256, 1024, 4096) if output <= b)
    below = {1: None, 4: 1, 16: 4, 64: 16, 256: 64, 1024: 256, 4096: 1024}[first_bucket]
    out_labels = {**GEN_AI, "gen_ai_token_type": "output"}
    assert value(series, TOKENS + "_bucket", **out_labels, le=f"{float(first_bucket)}") == 1
    if below is not None:
        assert value(series, TOKENS + "_bucket", **out_labels, le=f"{float(below)}") == 0
    expected = ((usage.input - CACHED) * 1.0 + CACHED * 0.1 + output * 10.0) / 1e6
    assert value(series, "llmbot_llm_cost_usd_total", model=MODEL) == pytest.approx(expected)

    span = only_span(exporter)
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.response.finish_reasons"] == ("STOP",)
    assert attributes["gen_ai.usage.input_tokens"] == usage.input
    assert attributes["gen_ai.usage.output_tokens"] == output
    assert attributes["gen_ai.usage.reasoning.output_tokens"] == THOUGHTS
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == CACHED
    assert attributes["gen_ai.response.time_to_first_chunk"] == first_chunk


async def test_a_whole_answer_has_no_time_to_first_chunk_and_says_why_it_stopped(
    gemini: GeminiEmulator, recorded: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = recorded
    gemini.latency = 0.0
    gemini.queue_answer("An answer far longer than the two tokens the request allows.")
    bench = Bench(gemini, provider, stream=False)
    try:
        reply = (await bench.service.answer(request("be brief", max_output_tokens=2))).reply
    finally:
        await bench.client.aclose()
    assert reply.time_to_first_chunk_s is None
    series = bench.scrape()
    assert value(series, DURATION + "_count", **GEN_AI, error_type="") == 1
    # The conventions: reported for streaming calls, not otherwise.
    assert value(series, FIRST_CHUNK + "_count", **GEN_AI) == 0
    attributes = dict(only_span(exporter).attributes or {})
    assert attributes["gen_ai.response.finish_reasons"] == ("MAX_TOKENS",)
    assert "gen_ai.response.time_to_first_chunk" not in attributes


async def test_a_failed_call_is_timed_with_its_error_type_and_costs_nothing(
    gemini: GeminiEmulator, recorded: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, _ = recorded
    gemini.latency = 0.0
    gemini.fail_all(503)
    bench = Bench(gemini, provider, stream=True, attempts=2)
    try:
        with pytest.raises(LLMUnavailable):
            await bench.service.answer(request("anyone there?"))
    finally:
        await bench.client.aclose()
    series = bench.scrape()
    assert value(series, DURATION + "_count", **GEN_AI, error_type="error") == 2
    assert value(series, DURATION + "_count", **GEN_AI, error_type="") == 0
    for kind in ("input", "output"):
        assert value(series, TOKENS + "_count", **GEN_AI, gen_ai_token_type=kind) == 0
    assert value(series, FIRST_CHUNK + "_count", **GEN_AI) == 0
    assert value(series, "llmbot_llm_cost_usd_total", model=MODEL) == 0

    # The exposition a scrape of this bot would get passes promtool's checks.
    promtool = need_binary("promtool")
    body, _ = bench.telemetry.render(openmetrics=False)
    result = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=body,
        capture_output=True,
        timeout=30,
        check=False,
    )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0 and output.strip() == "", output
