"""The Gemini adapter: with its `gemini_speedups`, the only modules that import google.genai.

It turns our `LLMRequest` into an SDK call and the SDK's answer (or failure) into `LLMReply` or
one of `bot.llm.errors`. It never retries: the one retry layer is `bot.resilience.retry`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import aiohttp
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from bot.llm import gemini_speedups
from bot.llm.errors import (
    LLMBadRequest,
    LLMConfigurationError,
    LLMError,
    LLMRateLimited,
    LLMTimeout,
    LLMUnavailable,
)
from bot.llm.types import LLMReply, LLMRequest, Message, TokenUsage

__all__ = ["GeminiClient", "parse_retry_delay"]

log = logging.getLogger(__name__)

# Answers that refuse the bot itself (API key, project permissions, model name), not a question.
CONFIGURATION_STATUSES = frozenset({401, 403, 404})

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def parse_retry_delay(details: Any) -> float | None:
    """The `RetryInfo.retryDelay` of a Google error body (for example "12s"), in seconds."""
    stack = [details]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if str(node.get("@type", "")).endswith("RetryInfo"):
                match = _DURATION.match(str(node.get("retryDelay", "")))
                if match:
                    return float(match.group(1))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _to_content(message: Message) -> types.ContentDict:
    # Plain dicts, not `types.Content`: the SDK validates `contents` into its own models anyway,
    # and validating model instances against its wide union types costs about 5x more
    # (6.0 ms against 1.1 ms for 18 turns, measured; see benchmarks/RESULTS.md).
    parts: list[types.PartDict] = [
        {"inline_data": {"data": f.data, "mime_type": f.mime_type}} for f in message.files
    ]
    if message.text:
        parts.append({"text": message.text})
    return {"role": message.role, "parts": parts}


def _http_session() -> aiohttp.ClientSession:
    """The SDK's HTTP session, made by us so that `trust_env` costs nothing when unused.

    The SDK's own session sets `trust_env=True`, so aiohttp looks for a `~/.netrc` on every
    request (about 4 % of the bot's CPU per answer, measured). Proxy variables are still
    honoured when set.
    """
    return aiohttp.ClientSession(trust_env=bool(urllib.request.getproxies()))


class GeminiClient:
    """Calls `generateContent` (or its SSE stream) through the official SDK."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        api_version: str,
        timeout_s: float,
        stream: bool = False,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._api_version = api_version
        self._timeout_s = timeout_s
        self._stream = stream
        gemini_speedups.install()
        # Made on first use, inside the running event loop that the HTTP session belongs to.
        self._client: genai.Client | None = None
        self._session: aiohttp.ClientSession | None = None

    def prepare(self) -> None:
        """Build the SDK client now (at start-up) rather than at the first question: building
        it loads the CA bundle twice (SSL contexts), which held the event loop for 0.1-3 s in
        the middle of the first burst (benchmarks/burst.py)."""
        self._current()

    def _current(self) -> genai.Client:
        if self._client is None:
            self._session = _http_session()
            self._client = self._new_client(self._session)
        return self._client

    def _new_client(self, session: aiohttp.ClientSession) -> genai.Client:
        options = types.HttpOptions(
            base_url=self._base_url,
            api_version=self._api_version,
            # The SDK's own timeout is a backstop; asyncio.timeout below is the one we rely on.
            timeout=int((self._timeout_s + 5) * 1000),
            # Without this the SDK quietly retries dropped connections itself; tenacity in
            # bot.resilience.retry is the one retry layer.
            retry_options=types.HttpRetryOptions(attempts=1),
            aiohttp_client=session,
        )
        return genai.Client(api_key=self._api_key, http_options=options)

    async def reset(self) -> None:
        """Drop the HTTP session; the next call starts a fresh one (self-healing uses this)."""
        await self.aclose()

    async def aclose(self) -> None:
        client, session = self._client, self._session
        self._client = self._session = None
        try:
            if client is not None:
                await client.aio.aclose()
            if session is not None:
                await session.close()
        except Exception:  # a broken session may fail to close; it is being dropped anyway
            log.debug("closing the Gemini client failed", exc_info=True)

    async def generate(
        self,
        request: LLMRequest,
        *,
        timeout_s: float | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> LLMReply:
        """One call to the model; raises an `LLMError` subclass on failure.

        `timeout_s` (at most the configured timeout) bounds this call; None means the configured
        timeout. With `on_text` the answer is streamed (whatever GEMINI_STREAM says) and
        `on_text` gets the answer's text so far after each chunk that adds some; the reply is
        the same `LLMReply` a whole answer would give.
        """
        limit_s = self._timeout_s if timeout_s is None else min(timeout_s, self._timeout_s)
        settings = request.settings
        config = types.GenerateContentConfig(
            system_instruction=settings.system_instruction or None,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            max_output_tokens=settings.max_output_tokens,
        )
        contents: list[types.ContentDict] = [_to_content(m) for m in request.messages]
        try:
            async with asyncio.timeout(limit_s):
                if self._stream or on_text is not None:
                    return await self._generate_stream(settings.model, contents, config, on_text)
                response = await self._current().aio.models.generate_content(
                    model=settings.model, contents=contents, config=config
                )
                return _to_reply(settings.model, [response])
        except LLMError:
            raise
        except Exception as exc:
            raise _map_error(exc) from exc

    async def _generate_stream(
        self,
        model: str,
        contents: Any,
        config: types.GenerateContentConfig,
        on_text: Callable[[str], None] | None = None,
    ) -> LLMReply:
        chunks = []
        # Time to first chunk as the GenAI conventions measure it: from issuing the request to
        # the first chunk of the response stream.
        started = time.perf_counter()
        first_chunk_s: float | None = None
        stream = await self._current().aio.models.generate_content_stream(
            model=model, contents=contents, config=config
        )
        text = ""
        async for chunk in stream:
            if first_chunk_s is None:
                first_chunk_s = time.perf_counter() - started
            chunks.append(chunk)
            if on_text is not None and (added := _chunk_text(chunk)):
                text += added
                on_text(text)
        return _to_reply(model, chunks, time_to_first_chunk_s=first_chunk_s)


def _chunk_text(response: types.GenerateContentResponse) -> str:
    """The answer text one stream chunk adds (thoughts left out), as `_to_reply` joins it."""
    return "".join(
        part.text
        for candidate in response.candidates or []
        for part in (candidate.content.parts if candidate.content else None) or []
        if part.text and not part.thought
    )


def _to_reply(
    model: str,
    responses: list[types.GenerateContentResponse],
    *,
    time_to_first_chunk_s: float | None = None,
) -> LLMReply:
    if not responses:
        raise LLMUnavailable("the model's stream ended without any answer")
    text_parts: list[str] = []
    finish_reason: str | None = None
    blocked: str | None = None
    usage = TokenUsage()
    for response in responses:
        for candidate in response.candidates or []:
            if candidate.finish_reason is not None:
                finish_reason = str(candidate.finish_reason.value)
            for part in (candidate.content.parts if candidate.content else None) or []:
                if part.text and not part.thought:
                    text_parts.append(part.text)
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            blocked = str(feedback.block_reason.value)
        meta = response.usage_metadata
        if meta is not None:
            usage = TokenUsage(
                input=meta.prompt_token_count or 0,
                output=meta.candidates_token_count or 0,
                thoughts=meta.thoughts_token_count or 0,
                cached=meta.cached_content_token_count or 0,
            )
    text = "".join(text_parts)
    if not text.strip() and blocked is None:
        # No text: a safety stop, recitation, or an empty candidate list.
        blocked = finish_reason or "EMPTY"
    return LLMReply(
        text=text,
        model=model,
        finish_reason=finish_reason,
        blocked_reason=blocked,
        usage=usage,
        time_to_first_chunk_s=time_to_first_chunk_s,
    )


def _map_error(exc: Exception) -> LLMError:
    if isinstance(exc, TimeoutError):
        return LLMTimeout("the model did not answer in time")
    if isinstance(exc, genai_errors.APIError):
        code = exc.code or 0
        status = exc.status or ""
        if code == 429 or status == "RESOURCE_EXHAUSTED":
            return LLMRateLimited(
                f"Gemini rate limit ({status or code})",
                retry_after_s=parse_retry_delay(exc.details),
            )
        if code == 408 or code >= 500:
            return LLMUnavailable(f"Gemini answered {code} {status}".strip())
        if code in CONFIGURATION_STATUSES:
            return LLMConfigurationError(
                f"Gemini refused the bot's credentials or model: {code} {status}".strip(),
                status_code=code,
            )
        return LLMBadRequest(
            f"Gemini refused the request: {code} {status}".strip(), status_code=code
        )
    if isinstance(exc, aiohttp.ClientError | ConnectionError | OSError):
        return LLMUnavailable(f"cannot reach Gemini: {type(exc).__name__}")
    return LLMUnavailable(f"unexpected Gemini client failure: {type(exc).__name__}")
