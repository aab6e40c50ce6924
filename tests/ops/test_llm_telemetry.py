"""The ops observer of model calls: a GenAI span per call, current while the metrics record it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bot.llm.cache import ResponseCache
from bot.llm.errors import (
    CircuitOpen,
    LLMError,
    LLMRateLimited,
    LLMTimeout,
    LLMUnavailable,
    QuotaExhausted,
)
from bot.llm.quota import QuotaLimiter
from bot.llm.service import LLMService
from bot.llm.types import GenerationSettings, LLMReply, LLMRequest, Message, TokenUsage
from bot.ops.llm_telemetry import LLMCallTelemetry
from bot.resilience.breaker import CircuitBreaker
from bot.resilience.retry import RetryPolicy
from tests.ops.spans import only_span

MODEL = "gemini-2.5-flash"
REQUEST = LLMRequest(GenerationSettings(MODEL), (Message("user", "hello there"),))
REPLY = LLMReply(
    "general kenobi",
    model="gemini-2.5-flash-001",
    finish_reason="STOP",
    usage=TokenUsage(input=7, output=3),
)


@dataclass(frozen=True, slots=True)
class Observed:
    model: str
    outcome: str
    seconds: float
    usage: TokenUsage | None
    span_id: int  # of the span current while the call was reported (the exemplar's)
    first_chunk_s: float | None = None


class RecordingMetrics:
    def __init__(self) -> None:
        self.calls: list[Observed] = []

    def observe_llm_call(
        self,
        model: str,
        outcome: str,
        seconds: float,
        usage: TokenUsage | None = None,
        *,
        time_to_first_chunk_s: float | None = None,
    ) -> None:
        span_id = trace.get_current_span().get_span_context().span_id
        self.calls.append(Observed(model, outcome, seconds, usage, span_id, time_to_first_chunk_s))


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def test_an_answered_call_is_traced_and_counted_inside_its_span(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = recorded
    metrics = RecordingMetrics()
    observer = LLMCallTelemetry(metrics, tracer=provider.get_tracer("t"))
    with observer.call(REQUEST) as record:
        record.succeeded(REPLY, 0.4)
    finished = only_span(exporter)
    assert finished.name == f"chat {MODEL}"
    assert finished.kind == SpanKind.CLIENT
    assert dict(finished.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "gcp.gemini",
        "gen_ai.system": "gcp.gemini",
        "gen_ai.request.model": MODEL,
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 3,
        "gen_ai.response.finish_reasons": ("STOP",),
        "gen_ai.response.model": "gemini-2.5-flash-001",
    }  # no message text unless asked for
    assert metrics.calls == [Observed(MODEL, "ok", 0.4, REPLY.usage, span_id(finished))]


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (LLMTimeout("slow"), "timeout"),
        (LLMRateLimited("429"), "rate_limited"),
        (LLMUnavailable("503"), "error"),
    ],
)
def test_a_failed_call_marks_its_span_and_counts_its_outcome(
    recorded: tuple[TracerProvider, InMemorySpanExporter], error: LLMError, outcome: str
) -> None:
    provider, exporter = recorded
    metrics = RecordingMetrics()
    observer = LLMCallTelemetry(metrics, tracer=provider.get_tracer("t"))

    def failing_call() -> None:
        with observer.call(REQUEST) as record:
            record.failed(error, 2.0)
            raise error

    with pytest.raises(LLMError):
        failing_call()
    finished = only_span(exporter)
    assert finished.attributes is not None
    assert finished.attributes["error.type"] == type(error).__qualname__
    assert finished.status.status_code == StatusCode.ERROR
    assert metrics.calls == [Observed(MODEL, outcome, 2.0, None, span_id(finished))]


def test_message_text_is_recorded_only_when_asked_for(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = recorded
    observer = LLMCallTelemetry(
        RecordingMetrics(), include_message_text=True, tracer=provider.get_tracer("t")
    )
    with observer.call(REQUEST) as record:
        record.succeeded(REPLY, 0.1)
    attributes = dict(only_span(exporter).attributes or {})
    assert "hello there" in str(attributes["gen_ai.input.messages"])
    assert "general kenobi" in str(attributes["gen_ai.output.messages"])


class ScriptedClient:
    def __init__(self, *outcomes: LLMReply | LLMError) -> None:
        self.outcomes = list(outcomes)

    async def generate(self, request: LLMRequest, *, timeout_s: float | None = None) -> LLMReply:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, LLMError):
            raise outcome
        return outcome

    async def reset(self) -> None:
        return None


async def test_the_service_observes_every_attempt(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = recorded
    metrics = RecordingMetrics()
    service = LLMService(
        ScriptedClient(LLMUnavailable("503"), REPLY),
        cache=ResponseCache(),
        quota=QuotaLimiter(100, 1000),
        breaker=CircuitBreaker("gemini"),
        retry_policy=RetryPolicy(initial_backoff_s=0.0, jitter_s=0.0),
        observer=LLMCallTelemetry(metrics, tracer=provider.get_tracer("t")),
    )
    answer = await service.answer(REQUEST)
    assert (answer.reply, answer.attempts) == (REPLY, 2)
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [f"chat {MODEL}"] * 2
    assert [s.status.status_code for s in spans] == [StatusCode.ERROR, StatusCode.UNSET]
    assert [(c.outcome, c.usage) for c in metrics.calls] == [("error", None), ("ok", REPLY.usage)]
    assert [c.span_id for c in metrics.calls] == [span_id(s) for s in spans]


async def test_the_service_counts_calls_and_breaker_refusals_for_the_error_ratio() -> None:
    # The in-process counts behind /status error_rate count the same calls as the metrics.
    metrics = RecordingMetrics()
    service = LLMService(
        ScriptedClient(LLMUnavailable("503"), REPLY, LLMTimeout("slow"), LLMTimeout("slow")),
        cache=ResponseCache(),
        quota=QuotaLimiter(100, 1000),
        breaker=CircuitBreaker("gemini", failure_threshold=1),
        retry_policy=RetryPolicy(max_attempts=2, initial_backoff_s=0.0, jitter_s=0.0),
        observer=LLMCallTelemetry(metrics),
    )
    await service.answer(REQUEST)  # a 503, then an answer
    with pytest.raises(LLMTimeout):
        await service.answer(REQUEST, use_cache=False)  # two timeouts: the breaker opens
    with pytest.raises(CircuitOpen):
        await service.answer(REQUEST, use_cache=False)  # no call: refused
    stats = service.stats
    assert stats.outcomes == {
        "ok": 1,
        "error": 1,
        "timeout": 2,
        "rate_limited": 0,
        "bad_request": 0,
        "configuration": 0,
    }
    assert [c.outcome for c in metrics.calls] == ["error", "ok", "timeout", "timeout"]
    assert stats.circuit_rejections == 1
    assert (stats.calls, stats.failed_calls, stats.wanted, stats.failed) == (4, 3, 5, 4)
    assert stats.error_ratio == pytest.approx(0.8)


async def test_a_provider_429_is_a_call_but_not_a_failure() -> None:
    service = LLMService(
        ScriptedClient(LLMRateLimited("429", retry_after_s=30)),
        cache=ResponseCache(),
        quota=QuotaLimiter(100, 1000),
        breaker=CircuitBreaker("gemini", failure_threshold=1),
        retry_policy=RetryPolicy(max_attempts=1, initial_backoff_s=0.0, jitter_s=0.0),
    )
    with pytest.raises(QuotaExhausted):
        await service.answer(REQUEST)
    assert service.stats.outcomes["rate_limited"] == 1
    assert (service.stats.wanted, service.stats.failed, service.stats.error_ratio) == (1, 0, 0.0)
    assert service.breaker.state == "closed"
