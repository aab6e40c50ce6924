"""The port through which each model call is observed (tracing and metrics live in `bot.ops`).

`LLMService` opens `observer.call(request)` around every call to the model, retries included,
and tells the record how it ended: `succeeded(reply, seconds)` or `failed(error, seconds)`, from
inside the `with` block. An implementation may make a span current for the block, so whatever
it records then (a histogram exemplar, say) belongs to that call; an exception leaving the block
is the failure already reported through `failed`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from types import TracebackType
from typing import Final, Protocol

from bot.llm.errors import LLMError
from bot.llm.types import LLMReply, LLMRequest

__all__ = ["NO_OBSERVER", "LLMCallObserver", "LLMCallRecord"]


class LLMCallRecord(Protocol):
    """How one model call ended; exactly one of the two is called, inside the `with` block."""

    def succeeded(self, reply: LLMReply, seconds: float) -> None: ...

    def failed(self, error: LLMError, seconds: float) -> None: ...


class LLMCallObserver(Protocol):
    """Opens the observation of one model call (one attempt) for `request`."""

    def call(self, request: LLMRequest) -> AbstractContextManager[LLMCallRecord]: ...


class _NoRecord:
    """Observes nothing; its own context manager, so a call costs no allocation."""

    def __enter__(self) -> _NoRecord:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def succeeded(self, reply: LLMReply, seconds: float) -> None:
        return None

    def failed(self, error: LLMError, seconds: float) -> None:
        return None


class _NoObserver:
    _record: Final = _NoRecord()

    def call(self, request: LLMRequest) -> _NoRecord:
        return self._record


NO_OBSERVER: Final[LLMCallObserver] = _NoObserver()
