"""The Gemini API emulator: an aiohttp server the real google-genai client can talk to."""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import inspect
import itertools
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from google import genai
from google.genai import types

from bot.emulator.gemini import wire
from bot.emulator.gemini.answers import default_responder
from bot.emulator.gemini.faults import Fault, FaultKind
from bot.emulator.gemini.records import GeminiRequest, get_field
from bot.emulator.local_server import LocalServer

__all__ = ["GeminiEmulator", "Latency", "Responder"]

log = logging.getLogger(__name__)

Responder = Callable[[GeminiRequest], str | Awaitable[str]]
Latency = float | Callable[[], float]

# The real API accepts up to 20 MB of inline data per request.
MAX_REQUEST_BYTES = 20 * 1024 * 1024
_JSON = "application/json; charset=UTF-8"
_VALID_ROLES = frozenset({"user", "model"})
_METHODS = frozenset({"generateContent", "streamGenerateContent", "countTokens"})


_REFUSALS: dict[FaultKind, Callable[[str, str, wire.PromptTokens], dict[str, Any]]] = {
    FaultKind.SAFETY_BLOCK: wire.blocked_prompt_response,
    FaultKind.FINISH_SAFETY: wire.safety_stopped_response,
    FaultKind.EMPTY: wire.empty_response,
}
_CUTS = frozenset({FaultKind.BROKEN_STREAM, FaultKind.STALLED_STREAM})


class _Stopping(Exception):
    """The emulator is shutting down while a handler waits."""


def _json_response(status: int, body: dict[str, Any]) -> web.Response:
    # The real API pretty-prints non-streamed bodies; the SDK copes with either.
    return web.Response(
        status=status, body=json.dumps(body, indent=2).encode(), headers={"Content-Type": _JSON}
    )


def _sse_event(chunk: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(chunk, separators=(',', ':'))}\r\n\r\n".encode()


def _sent_key(request: web.Request) -> str:
    return request.headers.get("x-goog-api-key") or request.query.get("key") or ""


def _parse_object(raw: bytes) -> dict[str, Any] | str:
    """The JSON object in a request body, or Google's message for why it is not one."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"Invalid JSON payload received. {error}."
    if not isinstance(body, dict):
        return "Invalid JSON payload received. Expected an object."
    return body


def _contents_error(body: dict[str, Any]) -> str | None:
    """Google's message for a malformed `contents`, or None when it is acceptable."""
    contents = get_field(body, "contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified\n"
    for index, content in enumerate(contents):
        if not isinstance(content, dict):
            return f"Invalid value at 'contents[{index}]': expected a Content object."
        # A missing role means "user"; alternation is not required by the API.
        if content.get("role", "user") not in _VALID_ROLES:
            return "Please use a valid role: user, model."
        parts = get_field(content, "parts")
        if not isinstance(parts, list) or not parts:
            return (
                f"* GenerateContentRequest.contents[{index}].parts: "
                "contents.parts must not be empty.\n"
            )
    return None


def split_for_stream(text: str, chunk_chars: int) -> list[str]:
    """Cut an answer into stream pieces: at least three when the text allows it."""
    if not text:
        return [""]
    count = min(max(3, math.ceil(len(text) / max(chunk_chars, 1))), len(text))
    bounds = [len(text) * index // count for index in range(count + 1)]
    return [text[start:end] for start, end in itertools.pairwise(bounds)]


@dataclass
class _QueuedFault:
    fault: Fault
    remaining: int


@dataclass(frozen=True)
class _Configuration:
    """Constructor settings, kept so that `reset()` can restore them."""

    api_key: str
    latency: Latency
    responder: Responder
    rpm_limit: int | None
    seed: int
    clock: Callable[[], float]
    thoughts_tokens: int
    stream_chunk_chars: int
    stream_chunks: int | None
    stream_first_chunk_s: float | None
    stream_chunk_interval_s: float | None
    cached_tokens: int = 0


class GeminiEmulator(LocalServer):
    """A local Gemini API: scripted or derived answers, latency, faults, quotas and recording."""

    _name = "the Gemini emulator"
    # A client that gives up frees its hung or slow handler at once.
    _runner_options = {"handler_cancellation": True}  # noqa: RUF012

    def __init__(
        self,
        api_key: str = "emulator-key",
        latency: Latency = 0.0,
        responder: Responder | None = None,
        rpm_limit: int | None = None,
        seed: int = 0,
        *,
        clock: Callable[[], float] = time.time,
        max_recorded: int = 10_000,
        thoughts_tokens: int = 0,
        stream_chunk_chars: int = 200,
        cached_tokens: int = 0,
        stream_chunks: int | None = None,
        stream_first_chunk_s: float | None = None,
        stream_chunk_interval_s: float | None = None,
    ) -> None:
        super().__init__()
        self._initial = _Configuration(
            api_key=api_key,
            latency=latency,
            responder=responder or default_responder,
            rpm_limit=rpm_limit,
            seed=seed,
            clock=clock,
            thoughts_tokens=thoughts_tokens,
            stream_chunk_chars=stream_chunk_chars,
            cached_tokens=cached_tokens,
            stream_chunks=stream_chunks,
            stream_first_chunk_s=stream_first_chunk_s,
            stream_chunk_interval_s=stream_chunk_interval_s,
        )
        self._max_recorded = max_recorded
        self._requests: list[GeminiRequest] = []
        self._arrived = asyncio.Condition()
        self._answers: collections.deque[str] = collections.deque()
        self._faults: collections.deque[_QueuedFault] = collections.deque()
        self._quota_used: dict[str, int] = {}
        self._stopping = asyncio.Event()
        self._apply(self._initial)

    def _apply(self, initial: _Configuration) -> None:
        self.api_key = initial.api_key
        self.latency = initial.latency
        self.responder: Responder = initial.responder
        self.rpm_limit = initial.rpm_limit
        self.clock = initial.clock
        # Added to usage when the request leaves thinking on (thinkingBudget != 0).
        self.thoughts_tokens = initial.thoughts_tokens
        self.stream_chunk_chars = initial.stream_chunk_chars
        # (prompt, candidates) tokens every answer reports instead of counting its text;
        # None: counted (about four characters a token).
        self.fixed_usage: tuple[int, int] | None = None
        # Reported as read from the context cache (at most the prompt), like implicit caching.
        self.cached_tokens = initial.cached_tokens
        # Streams: this many chunks (None: by stream_chunk_chars), the first after
        # stream_first_chunk_s and the next ones stream_chunk_interval_s apart (None for both:
        # the latency spread evenly over the chunks).
        self.stream_chunks = initial.stream_chunks
        self.stream_first_chunk_s = initial.stream_first_chunk_s
        self.stream_chunk_interval_s = initial.stream_chunk_interval_s
        self._random = random.Random(initial.seed)
        self._error_rate = 0.0
        self._fail_status: int | None = None
        self._quota_window = -1
        self._responses = 0
        self.rate_limited_count = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=MAX_REQUEST_BYTES + 1024 * 1024)
        app.router.add_post("/{version}/models/{target}", self._handle_post)
        app.router.add_get("/{version}/models/{model}", self._handle_model_info)
        return app

    async def _before_stop(self) -> None:
        self._stopping.set()  # hung and slow handlers drop their connections first

    def client(
        self, *, timeout_ms: int | None = 30_000, api_version: str = "v1beta"
    ) -> genai.Client:
        """A real google-genai client pointed at this emulator (close it with `aio.aclose()`)."""
        return genai.Client(
            api_key=self.api_key,
            http_options=types.HttpOptions(
                base_url=self.base_url, api_version=api_version, timeout=timeout_ms
            ),
        )

    # -- scripting ---------------------------------------------------------------------------

    def queue_answer(self, text: str) -> None:
        """Answer the next successful generation with `text` (FIFO, before the responder)."""
        self._answers.append(text)

    def queue_fault(self, fault: Fault) -> None:
        """Apply `fault` to the next `fault.count` generation requests (FIFO)."""
        self._faults.append(_QueuedFault(fault, fault.count))

    @property
    def pending_faults(self) -> int:
        """How many requests the queued faults will still hit."""
        return sum(queued.remaining for queued in self._faults)

    @property
    def latency(self) -> Latency:
        """Seconds before an answer, or a callable drawing them per request."""
        return self._latency

    @latency.setter
    def latency(self, value: Latency) -> None:
        if not callable(value) and value < 0:
            raise ValueError(f"latency must not be negative, got {value}")
        self._latency = value

    @property
    def error_rate(self) -> float:
        """Share of generation requests answered with 500, drawn from the seeded random."""
        return self._error_rate

    @error_rate.setter
    def error_rate(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"error_rate must be between 0 and 1, got {value}")
        self._error_rate = value

    def fail_all(self, status: int = 503) -> None:
        """Answer every generation request with `status` until `heal()`."""
        if not 400 <= status <= 599:
            raise ValueError(f"fail_all needs a 4xx or 5xx status, got {status}")
        self._fail_status = status

    def heal(self) -> None:
        """Back to healthy: no fail_all, error_rate 0, no queued faults."""
        self._fail_status = None
        self._error_rate = 0.0
        self._faults.clear()

    def reset(self) -> None:
        """Back to the state right after construction, still listening on the same port."""
        self._answers.clear()
        self._faults.clear()
        self._requests.clear()
        self._quota_used.clear()
        self._apply(self._initial)

    # -- recording ---------------------------------------------------------------------------

    @property
    def requests(self) -> list[GeminiRequest]:
        """Recorded requests, oldest first; only the newest `max_recorded` (about) are kept."""
        return self._requests

    # The timeout parameter is part of the public contract tests are written against.
    async def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[GeminiRequest]:  # noqa: ASYNC109
        """Wait until at least `n` requests are recorded; raise TimeoutError otherwise."""
        if n > self._max_recorded:
            raise ValueError(f"cannot wait for {n} requests: only {self._max_recorded} are kept")
        try:
            async with asyncio.timeout(timeout), self._arrived:
                await self._arrived.wait_for(lambda: len(self._requests) >= n)
        except TimeoutError:
            raise TimeoutError(
                f"expected {n} Gemini requests within {timeout}s, got {len(self._requests)}"
            ) from None
        return list(self._requests)

    async def _record(self, entry: GeminiRequest) -> None:
        self._requests.append(entry)
        # Trim in batches so appends stay O(1) on average; memory stays under 1.1 x the cap.
        if len(self._requests) > self._max_recorded + self._max_recorded // 10:
            del self._requests[: len(self._requests) - self._max_recorded]
        async with self._arrived:
            self._arrived.notify_all()

    # -- HTTP handlers -----------------------------------------------------------------------

    def _key_error(self, key: str) -> web.Response | None:
        if not key:
            return _json_response(403, wire.api_key_missing())
        if key != self.api_key:
            return _json_response(400, wire.api_key_invalid())
        return None

    async def _handle_model_info(self, request: web.Request) -> web.Response:
        return self._key_error(_sent_key(request)) or _json_response(
            200, wire.model_info(request.match_info["model"])
        )

    async def _handle_post(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["target"].rpartition(":")
        if method not in _METHODS:
            return _json_response(404, wire.error_body(404, f"Method not found: {method!r}."))
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _json_response(
                400,
                wire.invalid_argument(
                    f"Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes."
                ),
            )
        body = _parse_object(raw)
        key = _sent_key(request)
        if isinstance(body, str):
            return self._key_error(key) or _json_response(400, wire.invalid_argument(body))
        if method == "countTokens":
            return self._key_error(key) or self._count_tokens(body)

        # Recorded before the key check, so tests can see what a misconfigured bot sent.
        entry = GeminiRequest(
            model=model,
            api_version=request.match_info["version"],
            stream=method == "streamGenerateContent",
            body=body,
            api_key=key,
            received_at=self.clock(),
        )
        await self._record(entry)
        rejected = self._key_error(key)
        if rejected is not None:
            return rejected
        problem = _contents_error(body)
        if problem is not None:
            return _json_response(400, wire.invalid_argument(problem))
        try:
            return await self._generate(request, entry, sse=request.query.get("alt") == "sse")
        except _Stopping:
            # The server is going away: drop the connection as a real outage would.
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503)
        except ConnectionError:
            # The client left mid-answer (its timeout, or it stopped reading a stream).
            # aiohttp ignores a response it cannot send, so this one only ends the handler.
            return web.Response(status=499)

    def _count_tokens(self, body: dict[str, Any]) -> web.Response:
        # countTokens takes either bare `contents` or a whole `generateContentRequest`.
        inner = get_field(body, "generateContentRequest")
        prompt = wire.prompt_tokens(inner if isinstance(inner, dict) else body)
        return _json_response(
            200, {"totalTokens": prompt.total, "promptTokensDetails": prompt.details()}
        )

    # -- generation --------------------------------------------------------------------------

    def _quota_delay(self, model: str) -> float | None:
        """Seconds until the next minute window when `model` used up this one, else None."""
        if self.rpm_limit is None:
            return None
        now = self.clock()
        window = math.floor(now / 60)
        if window != self._quota_window:
            # Only the current window matters, so old counts are dropped (bounded memory).
            self._quota_window = window
            self._quota_used.clear()
        used = self._quota_used.get(model, 0)
        if used >= self.rpm_limit:
            return (window + 1) * 60 - now
        self._quota_used[model] = used + 1
        return None

    def _next_fault(self) -> Fault | None:
        if self._faults:
            head = self._faults[0]
            head.remaining -= 1
            if head.remaining <= 0:
                self._faults.popleft()
            return head.fault
        if self._fail_status is not None:
            return Fault.http(self._fail_status)
        if self._error_rate and self._random.random() < self._error_rate:
            return Fault.http(500)
        return None

    def _latency_s(self) -> float:
        value = self._latency() if callable(self._latency) else self._latency
        return max(0.0, float(value))

    async def _pause(self, seconds: float) -> None:
        """Sleep, but give up at once when the emulator stops."""
        if seconds <= 0:
            return
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return
        raise _Stopping

    async def _hang(self) -> None:
        await self._stopping.wait()
        raise _Stopping

    def _next_response_id(self) -> str:
        self._responses += 1
        # Deterministic per seed, shaped like the API's 22-character URL-safe ids.
        digest = hashlib.sha256(f"{self._initial.seed}:{self._responses}".encode()).digest()
        return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")

    def _error(self, status: int, model: str, retry_delay_s: float) -> web.Response:
        if status == 429:
            self.rate_limited_count += 1
            return _json_response(429, wire.rate_limited(retry_delay_s, model, self.rpm_limit))
        return _json_response(status, wire.error_body(status))

    async def _answer_text(self, entry: GeminiRequest) -> str:
        if self._answers:
            return self._answers.popleft()
        result = self.responder(entry)
        if inspect.isawaitable(result):
            result = await result
        return str(result)

    async def _generate(
        self, request: web.Request, entry: GeminiRequest, *, sse: bool
    ) -> web.StreamResponse:
        """Decide what one generation request gets (quota, fault or answer), then send it."""
        quota_delay = self._quota_delay(entry.model)
        if quota_delay is not None:
            return self._error(429, entry.model, quota_delay)
        fault = self._next_fault()
        kind = fault.kind if fault is not None else None
        if fault is not None and fault.status >= 400:
            return self._error(fault.status, entry.model, fault.retry_delay_s)
        if kind is FaultKind.HANG:
            await self._hang()
        prompt = wire.prompt_tokens(entry.body)
        response_id = self._next_response_id()
        refusal = _REFUSALS.get(kind) if kind is not None else None
        if refusal is not None:
            chunks = [refusal(entry.model, response_id, prompt)]
        else:
            try:
                chunks = await self._answer_chunks(entry, prompt, response_id, kind)
            except Exception:
                log.exception("Gemini emulator responder failed; answering 500")
                return _json_response(500, wire.error_body(500))
        cut = kind if kind in _CUTS else None
        after = fault.after_chunks if fault is not None else 1
        return await self._send(request, entry, chunks, sse=sse, cut=cut, cut_after=after)

    async def _answer_chunks(
        self,
        entry: GeminiRequest,
        prompt: wire.PromptTokens,
        response_id: str,
        kind: FaultKind | None = None,
    ) -> list[dict[str, Any]]:
        """The answer as GenerateContentResponse chunks; usage and finishReason on the last."""
        text = await self._answer_text(entry)
        finish = "STOP"
        max_tokens = get_field(entry.generation_config, "maxOutputTokens")
        if isinstance(max_tokens, int) and wire.text_tokens(text) > max_tokens:
            text = text[: max_tokens * wire.CHARS_PER_TOKEN]
            finish = "MAX_TOKENS"
        thinking = get_field(entry.generation_config, "thinkingConfig")
        thoughts = 0 if get_field(thinking, "thinkingBudget") == 0 else self.thoughts_tokens
        usage = wire.usage_metadata(
            prompt, wire.text_tokens(text), thoughts, cached=self.cached_tokens
        )
        if self.fixed_usage is not None:
            fixed_prompt, fixed_candidates = self.fixed_usage
            usage = wire.usage_metadata(
                wire.PromptTokens(fixed_prompt, 0), fixed_candidates, thoughts
            )
        pieces = [text]
        if entry.stream and self.stream_chunks is not None:
            pieces = split_for_stream(text, max(1, -(-len(text) // self.stream_chunks)))
        elif entry.stream:
            pieces = split_for_stream(text, self.stream_chunk_chars)
        if kind is FaultKind.SAFETY_MID_STREAM:
            # What was said so far stays; the rest is withheld with a safety stop.
            pieces = [*pieces[: max(1, len(pieces) // 2)], ""]
            finish = "SAFETY"
        last = len(pieces) - 1
        return [
            wire.generate_response(
                model=entry.model,
                response_id=response_id,
                text=None if kind is FaultKind.SAFETY_MID_STREAM and index == last else piece,
                finish_reason=finish if index == last else None,
                usage=usage if index == last else None,
            )
            for index, piece in enumerate(pieces)
        ]

    async def _send(
        self,
        request: web.Request,
        entry: GeminiRequest,
        chunks: list[dict[str, Any]],
        *,
        sse: bool,
        cut: FaultKind | None,
        cut_after: int = 1,
    ) -> web.StreamResponse:
        """Send the chunks after the latency; `cut` stops after the first chunk or half body."""
        latency = self._latency_s()
        if entry.stream and sse:
            # Streaming spreads the latency over the chunks, like tokens arriving.
            step = latency / len(chunks)
            first = self.stream_first_chunk_s
            await self._pause(step if first is None else first)
            if self.stream_chunk_interval_s is not None:
                step = self.stream_chunk_interval_s
            stream = web.StreamResponse(
                status=200,
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
            )
            await stream.prepare(request)
            await stream.write(_sse_event(chunks[0]))
            for index, chunk in enumerate(chunks[1:], start=1):
                if cut is not None and index >= cut_after:
                    return await self._cut(request, stream, cut)
                await self._pause(step)
                await stream.write(_sse_event(chunk))
            if cut is not None:
                return await self._cut(request, stream, cut)
            await stream.write_eof()
            return stream
        # One JSON document: the response, or the chunk array of a stream without alt=sse.
        payload = json.dumps(chunks if entry.stream else chunks[0], indent=2).encode()
        await self._pause(latency)
        if cut is None:
            return web.Response(status=200, body=payload, headers={"Content-Type": _JSON})
        partial = web.StreamResponse(
            status=200, headers={"Content-Type": _JSON, "Content-Length": str(len(payload))}
        )
        await partial.prepare(request)
        await partial.write(payload[: len(payload) // 2])
        return await self._cut(request, partial, cut)

    async def _cut(
        self, request: web.Request, response: web.StreamResponse, kind: FaultKind
    ) -> web.StreamResponse:
        """After a partial answer: go silent (stalled) or hang up (broken)."""
        if kind is FaultKind.STALLED_STREAM:
            await self._hang()
        # close() flushes what was written, then ends the connection mid-body.
        if request.transport is not None:
            request.transport.close()
        return response
