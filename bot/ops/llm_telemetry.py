"""The ops side of `bot.llm.observer`: each model call as a GenAI span and in the metrics.

`LLMCallTelemetry.call(request)` makes the `chat {model}` span current for the call; the record
then writes the result on the span and reports the call to the metrics while that span is still
current, so the duration histogram's exemplar is the call's own trace. Message text goes on the
span only with `include_message_text` (TRACE_INCLUDE_MESSAGE_TEXT, off by default): it is user
content.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from opentelemetry.trace import Span, Tracer

from bot.llm.errors import LLMError, call_outcome
from bot.llm.types import LLMReply, LLMRequest, TokenUsage
from bot.ops.tracing import llm_span, record_llm_result

__all__ = ["LLMCallMetrics", "LLMCallTelemetry"]


class LLMCallMetrics(Protocol):
    """Where each call's duration, outcome and tokens are counted (`bot.ops.metrics.Telemetry`)."""

    def observe_llm_call(
        self,
        model: str,
        outcome: str,
        seconds: float,
        usage: TokenUsage | None = None,
        *,
        time_to_first_chunk_s: float | None = None,
    ) -> None: ...


class LLMCallTelemetry:
    """An `LLMCallObserver` that traces each call and reports it to the metrics."""

    def __init__(
        self,
        metrics: LLMCallMetrics,
        *,
        include_message_text: bool = False,
        tracer: Tracer | None = None,
    ) -> None:
        self.metrics = metrics
        self.include_message_text = include_message_text
        self._tracer = tracer  # None: the GenAI spans' own tracer (bot.ops.tracing)

    @contextmanager
    def call(self, request: LLMRequest) -> Iterator[_TracedCall]:
        model = request.settings.model
        include = self.include_message_text
        # Listed only when they will be recorded: the texts can be long.
        messages = [(m.role, m.text) for m in request.messages] if include else []
        with llm_span(
            model, tracer=self._tracer, include_message_text=include, input_messages=messages
        ) as span:
            yield _TracedCall(self, span, model)


class _TracedCall:
    """The record of one call: its span is current while either method runs."""

    __slots__ = ("_model", "_owner", "_span")

    def __init__(self, owner: LLMCallTelemetry, span: Span, model: str) -> None:
        self._owner = owner
        self._span = span
        self._model = model

    def succeeded(self, reply: LLMReply, seconds: float) -> None:
        include = self._owner.include_message_text
        record_llm_result(
            self._span,
            usage=reply.usage,
            finish_reasons=reply.finish_reasons,
            response_model=reply.model,
            include_message_text=include,
            output_text=reply.text,
            time_to_first_chunk_s=reply.time_to_first_chunk_s,
        )
        self._owner.metrics.observe_llm_call(
            self._model,
            "ok",
            seconds,
            reply.usage,
            time_to_first_chunk_s=reply.time_to_first_chunk_s,
        )

    def failed(self, error: LLMError, seconds: float) -> None:
        record_llm_result(self._span, error=error)
        self._owner.metrics.observe_llm_call(self._model, call_outcome(error), seconds)
