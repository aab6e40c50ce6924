"""Tracing set-up from the environment, GenAI spans, log correlation, and a real OTLP export."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bot.llm.errors import LLMTimeout
from bot.llm.types import TokenUsage
from bot.logs import JsonFormatter
from bot.ops.tracing import (
    DEFAULT_SERVICE_NAME,
    MAX_CONTENT_CHARS,
    TraceContextFilter,
    install_log_correlation,
    llm_span,
    record_llm_result,
    setup_tracing,
)
from tests.ops.otlp_receiver import OTLPReceiver
from tests.ops.spans import only_span

MODEL = "gemini-2.5-flash"
_OTEL_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_TRACES_EXPORTER",
)


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


# --- set-up ------------------------------------------------------------------------------------


def test_without_an_endpoint_there_is_no_exporter_but_spans_have_ids() -> None:
    handle = setup_tracing("1.2.3", set_global=False)
    try:
        assert not handle.exporting
        assert handle.provider._active_span_processor._span_processors == ()
        resource = handle.provider.resource.attributes
        assert resource["service.name"] == DEFAULT_SERVICE_NAME
        assert resource["service.version"] == "1.2.3"
        with handle.tracer("test").start_as_current_span("work") as span:
            context = span.get_span_context()
            assert context.is_valid
            assert context.trace_flags.sampled
            assert span.is_recording()
    finally:
        handle.shutdown()


def test_service_name_and_sampler_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "bot-canary")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    handle = setup_tracing("1.0", set_global=False)
    try:
        assert handle.provider.resource.attributes["service.name"] == "bot-canary"
        with handle.tracer("test").start_as_current_span("work") as span:
            assert not span.get_span_context().trace_flags.sampled
    finally:
        handle.shutdown()


def test_traces_exporter_none_wins_over_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    handle = setup_tracing("1.0", set_global=False)
    assert not handle.exporting
    handle.shutdown()


# --- GenAI spans -------------------------------------------------------------------------------


def test_llm_span_has_the_genai_attributes(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = recorded
    with llm_span(MODEL, tracer=provider.get_tracer("t"), input_messages=[("user", "hi")]) as span:
        record_llm_result(
            span,
            usage=TokenUsage(input=12, output=34, thoughts=5, cached=0),
            finish_reasons=["STOP"],
            response_model="gemini-2.5-flash-001",
            output_text="hello",
        )
    finished = only_span(exporter)
    assert finished.name == f"chat {MODEL}"
    assert finished.kind == SpanKind.CLIENT
    attributes = dict(finished.attributes or {})
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "gcp.gemini",
        "gen_ai.system": "gcp.gemini",
        "gen_ai.request.model": MODEL,
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 39,  # the conventions count the reasoning as output
        "gen_ai.usage.reasoning.output_tokens": 5,
        "gen_ai.response.finish_reasons": ("STOP",),
        "gen_ai.response.model": "gemini-2.5-flash-001",
    }  # no message text unless asked for
    assert finished.status.status_code == StatusCode.UNSET


def test_message_text_only_when_the_setting_says_so(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = recorded
    long_text = "é" * (MAX_CONTENT_CHARS + 10)
    with llm_span(
        MODEL,
        tracer=provider.get_tracer("t"),
        include_message_text=True,
        input_messages=[("user", long_text)],
    ) as span:
        record_llm_result(span, include_message_text=True, output_text="the answer")
    attributes = dict(only_span(exporter).attributes or {})
    assert '"role": "user"' in str(attributes["gen_ai.input.messages"])
    assert str(attributes["gen_ai.input.messages"]).count("é") == MAX_CONTENT_CHARS
    assert "the answer" in str(attributes["gen_ai.output.messages"])


def test_a_failed_call_sets_error_type_and_status(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = recorded
    with (
        pytest.raises(LLMTimeout),
        llm_span(MODEL, tracer=provider.get_tracer("t")),
    ):
        raise LLMTimeout("took too long")
    finished = only_span(exporter)
    assert finished.attributes is not None
    assert finished.attributes["error.type"] == "LLMTimeout"
    assert finished.status.status_code == StatusCode.ERROR
    assert [event.name for event in finished.events] == ["exception"]

    exporter.clear()
    with llm_span(MODEL, tracer=provider.get_tracer("t")) as span:
        record_llm_result(span, error="rate_limited")
    finished = only_span(exporter)
    assert finished.attributes is not None
    assert finished.attributes["error.type"] == "rate_limited"
    assert finished.status.status_code == StatusCode.ERROR


# --- log correlation ---------------------------------------------------------------------------


def test_log_records_carry_the_trace_and_span_ids(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, _ = recorded
    previous = logging.getLogRecordFactory()
    try:
        install_log_correlation()
        install_log_correlation()  # idempotent: one wrapper
        assert logging.getLogRecordFactory() is not previous
        factory = logging.getLogRecordFactory()
        install_log_correlation()
        assert logging.getLogRecordFactory() is factory

        logger = logging.getLogger("test.correlation")
        records: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append(record)

        handler = Keep()
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        try:
            with provider.get_tracer("t").start_as_current_span("message") as span:
                logger.info("inside")
            logger.info("outside")
        finally:
            logger.removeHandler(handler)
    finally:
        logging.setLogRecordFactory(previous)
    context = span.get_span_context()
    inside, outside = records
    assert inside.trace_id == trace.format_trace_id(context.trace_id)  # type: ignore[attr-defined]
    assert inside.span_id == trace.format_span_id(context.span_id)  # type: ignore[attr-defined]
    assert not hasattr(outside, "trace_id")
    line = JsonFormatter().format(inside)
    assert f'"trace_id": "{inside.trace_id}"' in line  # type: ignore[attr-defined]


def test_the_filter_form_adds_the_same_fields(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, _ = recorded
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    with provider.get_tracer("t").start_as_current_span("s") as span:
        assert TraceContextFilter().filter(record)
    assert record.trace_id == trace.format_trace_id(  # type: ignore[attr-defined]
        span.get_span_context().trace_id
    )


# --- a real export -----------------------------------------------------------------------------


def test_spans_reach_an_otlp_grpc_receiver(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "bot-under-test")
    handle = setup_tracing("9.9.9", set_global=False)
    assert handle.exporting
    tracer = handle.tracer("bot.test")
    with (
        tracer.start_as_current_span("message") as parent,
        llm_span(MODEL, tracer=tracer) as span,
    ):
        record_llm_result(span, usage=TokenUsage(input=7, output=3), finish_reasons=["STOP"])
    handle.shutdown()  # flushes the batch

    (chat,) = otlp_receiver.wait_for_spans(lambda s: s.name == f"chat {MODEL}")
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.provider.name"] == "gcp.gemini"
    assert chat.attributes["gen_ai.request.model"] == MODEL
    assert chat.attributes["gen_ai.usage.input_tokens"] == 7
    assert chat.attributes["gen_ai.usage.output_tokens"] == 3
    assert chat.attributes["gen_ai.response.finish_reasons"] == ["STOP"]
    assert chat.kind == 3  # SPAN_KIND_CLIENT
    assert chat.resource["service.name"] == "bot-under-test"
    assert chat.resource["service.version"] == "9.9.9"
    context = parent.get_span_context()
    assert chat.trace_id == trace.format_trace_id(context.trace_id)
    assert chat.parent_span_id == trace.format_span_id(context.span_id)
