"""The way to the model: cache, then circuit breaker, then (per attempt) quota, then Gemini.

Order matters: a cache hit costs no quota and works while the breaker is open; the breaker is
recorded once per retry chain, so one user message counts as one failure, not four; every attempt,
retries included, takes quota, because the provider counts them all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from bot.llm.cache import ResponseCache, make_cache_key
from bot.llm.errors import CircuitOpen, LLMError, LLMRateLimited, QuotaExhausted
from bot.llm.quota import QuotaLimiter
from bot.llm.types import LLMReply, LLMRequest
from bot.resilience.breaker import CircuitBreaker
from bot.resilience.retry import RetryPolicy, call_with_retry

__all__ = ["Answer", "LLMClient", "LLMService"]

log = logging.getLogger(__name__)


class LLMClient(Protocol):
    async def generate(self, request: LLMRequest) -> LLMReply: ...

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
        cache: ResponseCache,
        quota: QuotaLimiter,
        breaker: CircuitBreaker,
        retry_policy: RetryPolicy,
    ) -> None:
        self.client = client
        self.cache = cache
        self.quota = quota
        self.breaker = breaker
        self.retry_policy = retry_policy

    def cached(self, request: LLMRequest) -> LLMReply | None:
        """A cached answer for exactly this request, if there is one (used for fallbacks too)."""
        return self.cache.get(make_cache_key(request))

    async def answer(
        self, request: LLMRequest, *, tag: object = None, use_cache: bool = True
    ) -> Answer:
        key = make_cache_key(request)
        if use_cache and (hit := self.cache.get(key)) is not None:
            return Answer(hit, cached=True, attempts=0)
        if not self.breaker.allow():
            raise CircuitOpen(
                "Gemini is failing; calls are paused", retry_after_s=self.breaker.retry_after_s()
            )
        attempts = 0

        async def attempt() -> LLMReply:
            nonlocal attempts
            decision = self.quota.try_acquire()
            if not decision.allowed:
                raise QuotaExhausted(
                    f"the {decision.window} quota is used up",
                    window=decision.window or "minute",
                    retry_after_s=decision.retry_after_s,
                )
            attempts += 1
            try:
                reply = await self.client.generate(request)
            except LLMRateLimited as exc:
                # The provider said stop: the limiter now holds calls until its retry delay and
                # the window end, so waiting here would only keep the user in silence.
                wait_s = self.quota.on_provider_rate_limited(exc.retry_after_s)
                raise QuotaExhausted(
                    "Gemini said the quota is used up", window="minute", retry_after_s=wait_s
                ) from exc
            self.quota.record_tokens(reply.usage.input, reply.usage.output)
            return reply

        try:
            reply = await call_with_retry(attempt, self.retry_policy)
        except QuotaExhausted:
            if attempts:
                # Retries ran into our own quota: the provider was still failing before that.
                self.breaker.record_failure()
            else:
                self.breaker.release()
            raise
        except LLMError:
            self.breaker.record_failure()
            raise
        self.breaker.record_success()
        if use_cache and reply.blocked_reason is None:
            self.cache.put(key, reply, tag=tag)
        return Answer(reply, cached=False, attempts=attempts)
