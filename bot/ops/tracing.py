"""OpenTelemetry tracing: SDK set-up from the standard environment, log correlation, GenAI spans.

Environment (the SDK's own names, so any OpenTelemetry guide applies):

* `OTEL_SERVICE_NAME` (default `discord-llm-bot`), `OTEL_RESOURCE_ATTRIBUTES`;
* `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: when set, spans go in
  batches to that OTLP/gRPC endpoint (`http://` means plaintext); headers, timeout and TLS come
  from the other `OTEL_EXPORTER_OTLP_*` variables. When neither is set, or
  `OTEL_TRACES_EXPORTER=none`, no exporter is installed: spans still get ids (for exemplars
  and log lines) at almost no cost, and nothing logs connection errors;
* `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`: read by the SDK itself.

GenAI spans follow the OpenTelemetry GenAI semantic conventions: span `chat {model}`, kind
CLIENT, `gen_ai.provider.name=gcp.gemini`. The deprecated `gen_ai.system` is set too (with its
current value `gcp.gemini`, which replaced `gemini`) for back ends that still group by it.
Message text is recorded only when the caller passes `include_message_text=True`
(TRACE_INCLUDE_MESSAGE_TEXT, off by default): it is user content.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "GEN_AI_PROVIDER",
    "MAX_CONTENT_CHARS",
    "TokenUsageLike",
    "TraceContextFilter",
    "TracingHandle",
    "install_log_correlation",
    "llm_span",
    "record_llm_result",
    "setup_tracing",
]

logger = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME: Final = "discord-llm-bot"
GEN_AI_PROVIDER: Final = "gcp.gemini"
# Recorded message text is cut here: span attributes travel in every export batch.
MAX_CONTENT_CHARS: Final = 4096

_TRACER_NAME: Final = "bot.llm"
# A proxy until the provider is set, then the provider's tracer; `get_tracer` at each call made
# a new Tracer (about 10 µs) per LLM call.
_llm_tracer: Final = trace.get_tracer(_TRACER_NAME)


@dataclass(frozen=True, slots=True)
class TracingHandle:
    """The tracer provider set up for the process; `shutdown()` flushes what is still queued."""

    provider: TracerProvider
    exporting: bool  # True when spans leave the process (an OTLP endpoint is set)

    def tracer(self, name: str) -> Tracer:
        """A tracer of this provider (use `opentelemetry.trace.get_tracer` once it is global)."""
        return self.provider.get_tracer(name)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Export the spans still queued (bounded by `timeout_s`), then stop the provider."""
        self.provider.force_flush(int(timeout_s * 1000))
        self.provider.shutdown()


def setup_tracing(service_version: str, *, set_global: bool = True) -> TracingHandle:
    """Build the tracer provider from the environment; make it the process's if `set_global`."""
    env = os.environ
    service_name = env.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME
    # Explicit attributes win over OTEL_RESOURCE_ATTRIBUTES, which Resource.create merges in.
    resource = Resource.create({"service.name": service_name, "service.version": service_version})
    # No sampler argument: the SDK reads OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG.
    provider = TracerProvider(resource=resource)
    endpoint = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )
    exporting = bool(endpoint) and env.get("OTEL_TRACES_EXPORTER", "").strip().lower() != "none"
    if exporting:
        # Imported only when used: it loads grpc, which a bot without a collector never needs.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # The exporter reads the endpoint, headers, TLS and timeout from the environment.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        logger.info("tracing: exporting spans over OTLP/gRPC to %s", endpoint)
    else:
        logger.debug("tracing: no OTLP endpoint set; spans stay in the process")
    if set_global:
        trace.set_tracer_provider(provider)
    return TracingHandle(provider, exporting)


# --- log correlation ---------------------------------------------------------------------------


def _add_trace_context(record: logging.LogRecord) -> None:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        record.trace_id = trace.format_trace_id(context.trace_id)
        record.span_id = trace.format_span_id(context.span_id)


class TraceContextFilter(logging.Filter):
    """Adds `trace_id` / `span_id` (hex) to records logged while a span is active."""

    def filter(self, record: logging.LogRecord) -> bool:
        _add_trace_context(record)
        return True


class TokenUsageLike(Protocol):
    """Token counts of one call; `thoughts` and `cached` are read when the object has them."""

    @property
    def input(self) -> int: ...

    @property
    def output(self) -> int: ...


class _RecordFactory(Protocol):
    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord: ...


def install_log_correlation() -> None:
    """Give every log record of the process its trace and span ids (idempotent).

    Done in the record factory rather than as a handler filter, so it holds whatever handlers
    `setup_logging` installs later, and for records of every logger.
    """
    previous: _RecordFactory = logging.getLogRecordFactory()
    if getattr(previous, "_adds_trace_context", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _add_trace_context(record)
        return record

    factory._adds_trace_context = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


# --- GenAI spans -------------------------------------------------------------------------------


def _messages_json(messages: Sequence[tuple[str, str]]) -> str:
    """Messages in the semantic conventions' `gen_ai.*.messages` shape, text cut to the limit."""
    return json.dumps(
        [
            {"role": role, "parts": [{"type": "text", "content": text[:MAX_CONTENT_CHARS]}]}
            for role, text in messages
        ],
        ensure_ascii=False,
    )


@contextmanager
def llm_span(
    model: str,
    *,
    tracer: Tracer | None = None,
    include_message_text: bool = False,
    input_messages: Sequence[tuple[str, str]] = (),
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Iterator[Span]:
    """A CLIENT span `chat {model}` around one LLM call; an exception sets `error.type`.

    `input_messages` are (role, text) pairs, recorded only with `include_message_text`.
    """
    span_attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": GEN_AI_PROVIDER,
        "gen_ai.system": GEN_AI_PROVIDER,
        "gen_ai.request.model": model,
        **(attributes or {}),
    }
    if include_message_text and input_messages:
        span_attributes["gen_ai.input.messages"] = _messages_json(input_messages)
    chosen = tracer if tracer is not None else _llm_tracer
    with chosen.start_as_current_span(
        f"chat {model}", kind=SpanKind.CLIENT, attributes=span_attributes
    ) as span:
        try:
            yield span
        except BaseException as exc:
            # The span context manager records the exception and the ERROR status.
            span.set_attribute("error.type", type(exc).__qualname__)
            raise


def record_llm_result(
    span: Span,
    *,
    usage: TokenUsageLike | None = None,
    finish_reasons: Sequence[str] = (),
    response_model: str | None = None,
    error: BaseException | str | None = None,
    include_message_text: bool = False,
    output_text: str | None = None,
    time_to_first_chunk_s: float | None = None,
) -> None:
    """Record the answer (or failure) of an LLM call on its span.

    `usage` has `input`, `output` and optionally `thoughts`, `cached` token counts
    (`bot.llm.types.TokenUsage`); `error` is the exception or a short error identifier;
    `time_to_first_chunk_s` is given for a streamed answer.
    """
    if usage is not None:
        # Input and output always (0 is a real count); reasoning and cache reads when present.
        # As the conventions count them, the reasoning tokens are part of the output tokens and
        # the cache reads part of the input (Gemini's prompt count includes them already).
        thoughts = int(getattr(usage, "thoughts", 0))
        span.set_attribute("gen_ai.usage.input_tokens", int(usage.input))
        span.set_attribute("gen_ai.usage.output_tokens", int(usage.output) + thoughts)
        if thoughts:
            span.set_attribute("gen_ai.usage.reasoning.output_tokens", thoughts)
        cached = int(getattr(usage, "cached", 0))
        if cached:
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", cached)
    if finish_reasons:
        span.set_attribute("gen_ai.response.finish_reasons", [str(r) for r in finish_reasons])
    if response_model:
        span.set_attribute("gen_ai.response.model", response_model)
    if time_to_first_chunk_s is not None:
        span.set_attribute("gen_ai.response.time_to_first_chunk", float(time_to_first_chunk_s))
    if include_message_text and output_text is not None:
        span.set_attribute("gen_ai.output.messages", _messages_json([("assistant", output_text)]))
    if error is not None:
        error_type = error if isinstance(error, str) else type(error).__qualname__
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, str(error)[:200] or error_type))
