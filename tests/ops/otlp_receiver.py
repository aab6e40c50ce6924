"""A small OTLP/gRPC trace receiver for tests: the real TraceService protocol, spans kept in memory.

Use the `otlp_receiver` fixture (import it into a conftest), point the bot at
`receiver.endpoint` through OTEL_EXPORTER_OTLP_ENDPOINT, and wait for spans with
`receiver.wait_for_spans(...)`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["OTLPReceiver", "ReceivedSpan", "otlp_receiver"]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if kind is None:
        return None
    return getattr(value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, decoded: ids in hex, attributes as plain Python values."""

    name: str
    kind: int  # opentelemetry.proto.trace.v1 Span.SpanKind
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    status_code: int  # 0 unset, 1 ok, 2 error
    events: list[str] = field(default_factory=list)


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OTLPReceiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receiver._record(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class OTLPReceiver:
    """A TraceService on 127.0.0.1 (random port) that records every export request."""

    def __init__(self) -> None:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Servicer(self), self._server)
        self.port: int = self._server.add_insecure_port("127.0.0.1:0")
        self._lock = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self.requests = 0

    @property
    def endpoint(self) -> str:
        """The value for OTEL_EXPORTER_OTLP_ENDPOINT (http:// means plaintext gRPC)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None).wait()

    @property
    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order."""
        with self._lock:
            return list(self._spans)

    def wait_for_spans(
        self,
        predicate: Callable[[ReceivedSpan], bool] = lambda _span: True,
        count: int = 1,
        timeout_s: float = 10.0,
    ) -> list[ReceivedSpan]:
        """Block until `count` received spans satisfy `predicate`; AssertionError on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                matching = [span for span in self._spans if predicate(span)]
                if len(matching) >= count:
                    return matching
                left = deadline - time.monotonic()
                if left <= 0:
                    names = [span.name for span in self._spans]
                    raise AssertionError(f"wanted {count} matching spans, received {names}")
                self._lock.wait(left)

    def _record(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        decoded: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    decoded.append(
                        ReceivedSpan(
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                            resource=resource,
                            scope=scope_spans.scope.name,
                            status_code=span.status.code,
                            events=[event.name for event in span.events],
                        )
                    )
        with self._lock:
            self.requests += 1
            self._spans.extend(decoded)
            self._lock.notify_all()


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    """A running OTLP/gRPC trace receiver, stopped after the test."""
    receiver = OTLPReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
