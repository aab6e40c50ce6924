"""The way to the model: cache, then circuit breaker, then (per attempt) quota, then Gemini.

Order matters: a cache hit costs no quota and works while the breaker is open; the breaker is
recorded once per retry chain, so one user message counts as one failure, not four; every attempt,
retries included, takes quota, because the provider counts them all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from opentelemetry import trace

from bot.llm.cache import AnswerCache, make_cache_key
from bot.llm.call_stats import LLMCallStats
from bot.llm.errors import (
    CircuitOpen,
    LLMBadRequest,
    LLMError,
    LLMRateLimited,
    LLMTimeout,
    QuotaExhausted,
    call_outcome,
    is_retryable,
    retry_after_hint,
)
from bot.llm.observer import NO_OBSERVER, LLMCallObserver
from bot.llm.quota import Quota
from bot.llm.streaming import TextSink, is_complete
from bot.llm.types import LLMReply, LLMRequest
from bot.resilience.breaker import CircuitBreaker
from bot.resilience.retry import RetryPolicy, call_with_retry
from bot.resilience.timeout import AdaptiveTimeout

__all__ = ["Answer", "LLMClient", "LLMService"]

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)


class LLMClient(Protocol):
    async def generate(
        self,
        request: LLMRequest,
        *,
        timeout_s: float | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> LLMReply:
        """One call; `timeout_s` None means the client's own (the configured ceiling); with
        `on_text`, the answer is streamed and its text so far reported after each chunk."""
        ...

    async def reset(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Answer:
    reply: LLMReply
    cached: bool
    attempts: int


class LLMService:
    """Answers an `LLMRequest`, or raises an `LLMError` saying why it could not."""

    def __init__(
        self,
        client: LLMClient,
        *,
        cache: AnswerCache,
        quota: Quota,
        breaker: CircuitBreaker,
        retry_policy: RetryPolicy,
        observer: LLMCallObserver = NO_OBSERVER,
        timeout: AdaptiveTimeout | None = None,
    ) -> None:
        self.observer = observer
        self.client = client
        self.cache = cache
        self.quota = quota
        self.breaker = breaker
        self.retry_policy = retry_policy
        self.timeout = timeout
        # Calls by outcome and breaker rejections: the model-call error ratio of /status.
        self.stats = LLMCallStats()

    async def cached(self, request: LLMRequest) -> LLMReply | None:
        """A cached answer for exactly this request, if there is one (used for fallbacks too)."""
        if not self.cache.enabled:
            return None
        return await self.cache.lookup(make_cache_key(request))

    async def answer(
        self,
        request: LLMRequest,
        *,
        tag: object = None,
        use_cache: bool = True,
        stream: TextSink | None = None,
    ) -> Answer:
        """The answer (cached, or from the model with retries), or an `LLMError` saying why not.

        With `stream`, each attempt streams its text to `stream.partial`; once some was shown,
        a failure is final (no retry), and only complete answers are cached.
        """
        use_cache = use_cache and self.cache.enabled
        key = make_cache_key(request) if use_cache else ""
        # Leaf spans: `start_span` (child of the current span, not made current) costs less.
        with _tracer.start_span("cache lookup") as span:
            hit = await self.cache.lookup(key) if use_cache else None
            span.set_attribute("llmbot.cache.hit", hit is not None)
        if hit is not None:
            return Answer(hit, cached=True, attempts=0)
        if not self.breaker.allow():
            self.stats.reject()
            raise CircuitOpen(
                "Gemini is failing; calls are paused", retry_after_s=self.breaker.retry_after_s()
            )
        attempts = 0
        failed_calls = 0  # calls the provider failed (a 429 is the quota's business, not this)
        timed_out = False  # the retry after a timeout gets the full (ceiling) timeout

        async def attempt() -> LLMReply:
            nonlocal attempts, failed_calls, timed_out
            with _tracer.start_span("quota") as span:
                decision = await self.quota.acquire()
                span.set_attribute("llmbot.quota.allowed", decision.allowed)
            if not decision.allowed:
                raise QuotaExhausted(
                    f"the {decision.window} quota is used up",
                    window=decision.window or "minute",
                    retry_after_s=decision.retry_after_s,
                )
            attempts += 1
            timeout_s = self.timeout.current(after_timeout=timed_out) if self.timeout else None
            try:
                reply = await self._call(request, timeout_s, stream)
            except LLMRateLimited as exc:
                # The provider said stop: the limiter now holds calls until its retry delay and
                # the window end, so waiting here would only keep the user in silence.
                hold = await self.quota.provider_rate_limited(exc.retry_after_s)
                raise QuotaExhausted(
                    f"Gemini said the {hold.window} quota is used up",
                    window=hold.window or "minute",
                    retry_after_s=hold.retry_after_s,
                ) from exc
            except LLMError as exc:
                failed_calls += 1
                timed_out = isinstance(exc, LLMTimeout)
                raise
            self.quota.record_tokens(reply.usage.input, reply.usage.output)
            return reply

        def retryable(error: BaseException) -> bool:
            return is_retryable(error) and (stream is None or not stream.shown())

        try:
            reply = await call_with_retry(
                attempt,
                self.retry_policy,
                retryable=retryable,
                retry_after=retry_after_hint,
                on_retry=_note_retry,
            )
        except QuotaExhausted:
            if failed_calls:
                # Retries ran into the quota: the provider was still failing before that.
                self.breaker.record_failure()
            else:
                self.breaker.release()
            raise
        except LLMBadRequest:
            # The request's fault (or the bot's configuration), not a failing provider: it
            # neither counts against the breaker nor uses up a half-open probe. Attempts the
            # provider failed before it (a 503, then the 400) still count once, as below.
            if failed_calls > 1:
                self.breaker.record_failure()
            else:
                self.breaker.release()
            raise
        except LLMError:
            self.breaker.record_failure()
            raise
        except asyncio.CancelledError:
            # Stopped by the user (or shut down): the provider did nothing wrong.
            self.breaker.release()
            raise
        self.breaker.record_success()
        if use_cache and is_complete(reply):
            await self.cache.store(key, reply, tag=tag)
        return Answer(reply, cached=False, attempts=attempts)

    async def _call(
        self, request: LLMRequest, timeout_s: float | None, stream: TextSink | None = None
    ) -> LLMReply:
        """One model call, observed (in ops: a GenAI span, current while the metrics record)."""
        started = time.monotonic()
        with self.observer.call(request) as record:
            try:
                if stream is None:
                    reply = await self.client.generate(request, timeout_s=timeout_s)
                else:
                    stream.partial("")  # a retry starts the text again
                    reply = await self.client.generate(
                        request, timeout_s=timeout_s, on_text=stream.partial
                    )
            except LLMError as exc:
                self.stats.record(call_outcome(exc))
                record.failed(exc, time.monotonic() - started)
                raise
            elapsed = time.monotonic() - started
            self.stats.record("ok")
            record.succeeded(reply, elapsed)
            if self.timeout is not None:
                self.timeout.observe(elapsed)
        return reply


def _note_retry(attempt: int, error: BaseException, wait_s: float) -> None:
    """Retries show on the message's trace as events, with the wait chosen."""
    # Only LLM errors are retried (is_retryable); the fallback keeps the event well-formed.
    kind = error.kind if isinstance(error, LLMError) else type(error).__qualname__
    trace.get_current_span().add_event(
        "retry", {"attempt": attempt, "error.type": kind, "wait_seconds": wait_s}
    )
