"""Faults the emulator can inject into the next generation requests."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Fault", "FaultKind"]


class FaultKind(enum.Enum):
    """What goes wrong."""

    HTTP = "http"
    RATE_LIMITED = "rate_limited"
    HANG = "hang"
    SAFETY_BLOCK = "safety_block"
    FINISH_SAFETY = "finish_safety"
    EMPTY = "empty"
    BROKEN_STREAM = "broken_stream"
    STALLED_STREAM = "stalled_stream"
    SAFETY_MID_STREAM = "safety_mid_stream"


@dataclass(frozen=True)
class Fault:
    """One fault applied to the next `count` generation requests; build it with the classmethods."""

    kind: FaultKind
    count: int = 1
    status: int = 200
    retry_delay_s: float = 0.0
    after_chunks: int = 1  # broken/stalled streams: chunks sent before the cut

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"Fault count must be at least 1, got {self.count}")
        if self.kind is FaultKind.HTTP and not 400 <= self.status <= 599:
            raise ValueError(f"Fault.http needs a 4xx or 5xx status, got {self.status}")
        if self.retry_delay_s < 0:
            raise ValueError(f"retry_delay_s must not be negative, got {self.retry_delay_s}")

    @classmethod
    def http(cls, status: int = 500, count: int = 1) -> Fault:
        """Answer with Google's error JSON for `status` (429 carries a 10 s RetryInfo)."""
        return cls(FaultKind.HTTP, count=count, status=status, retry_delay_s=10.0)

    @classmethod
    def rate_limited(cls, retry_delay_s: float = 10.0, count: int = 1) -> Fault:
        """429 RESOURCE_EXHAUSTED with QuotaFailure and `RetryInfo.retryDelay`."""
        return cls(FaultKind.RATE_LIMITED, count=count, status=429, retry_delay_s=retry_delay_s)

    @classmethod
    def hang(cls, count: int = 1) -> Fault:
        """Never answer: the client's timeout fires (or the emulator stops)."""
        return cls(FaultKind.HANG, count=count)

    @classmethod
    def safety_block(cls, count: int = 1) -> Fault:
        """HTTP 200 with `promptFeedback.blockReason = SAFETY` and no candidates."""
        return cls(FaultKind.SAFETY_BLOCK, count=count)

    @classmethod
    def finish_safety(cls, count: int = 1) -> Fault:
        """HTTP 200 with one candidate stopped by `finishReason = SAFETY` and no text."""
        return cls(FaultKind.FINISH_SAFETY, count=count)

    @classmethod
    def empty(cls, count: int = 1) -> Fault:
        """HTTP 200 with `candidates: []`."""
        return cls(FaultKind.EMPTY, count=count)

    @classmethod
    def broken_stream(cls, count: int = 1, after_chunks: int = 1) -> Fault:
        """Send the first `after_chunks` chunks (or half the JSON body), then drop the
        connection."""
        return cls(FaultKind.BROKEN_STREAM, count=count, after_chunks=after_chunks)

    @classmethod
    def safety_mid_stream(cls, count: int = 1) -> Fault:
        """Stream the first half of the answer, then stop it with `finishReason = SAFETY`."""
        return cls(FaultKind.SAFETY_MID_STREAM, count=count)

    @classmethod
    def stalled_stream(cls, count: int = 1) -> Fault:
        """Send the first chunk (or half the JSON body), then go silent until timeout or stop."""
        return cls(FaultKind.STALLED_STREAM, count=count)
