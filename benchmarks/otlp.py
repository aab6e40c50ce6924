"""A minimal OTLP/gRPC trace receiver that counts what it is sent (the bot's tracing target)."""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any

import grpc  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

__all__ = ["SpanCounter"]


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, counter: SpanCounter) -> None:
        self._counter = counter

    def Export(self, request: Any, context: Any) -> Any:
        spans = sum(
            len(scope.spans)
            for resource in request.resource_spans
            for scope in resource.scope_spans
        )
        self._counter.add(spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class SpanCounter:
    """A TraceService on 127.0.0.1 (random port); `spans` is how many it has received."""

    def __init__(self) -> None:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        servicer = _Servicer(self)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            servicer, self._server
        )
        self.port: int = self._server.add_insecure_port("127.0.0.1:0")
        self._lock = threading.Lock()
        self.spans = 0
        self.exports = 0

    @property
    def endpoint(self) -> str:
        """The value for OTEL_EXPORTER_OTLP_ENDPOINT (http:// means plaintext gRPC)."""
        return f"http://127.0.0.1:{self.port}"

    def add(self, spans: int) -> None:
        """Count one export request."""
        with self._lock:
            self.exports += 1
            self.spans += spans

    def start(self) -> None:
        """Start serving."""
        self._server.start()

    def stop(self) -> None:
        """Stop at once."""
        self._server.stop(grace=None).wait()
