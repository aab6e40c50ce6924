"""The story of one message, from a user's words to the bot's reply in Discord.

Read `ChatPipeline.handle` top to bottom: who may ask, what they asked (text, images, the
conversation so far), what the model said (or why it could not), and what goes back. When the
model cannot be used now, the question is queued with a notice and answered later by
`bot.chat.queue_worker`, or gets a fallback reply. The machinery lives behind the calls; this
module imports no network library.

Outcome counting (`llmbot_messages_total{outcome}`): each reply the pipeline sends is counted
once by its kind. A queued question therefore counts as `queued` when the notice goes out and
once more (`answered` or `failed`) when its later answer or drop notice is sent; that later
reply is also counted in `late` (`llmbot_late_replies_total{outcome}`), so the availability SLO
can judge each message by its first reply alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from bot.chat.access import AccessPolicy, UserCooldown, cooldown_refusal, format_wait
from bot.chat.context import ContextBuilder, speaker_text
from bot.chat.files import FileLoader
from bot.chat.memory import ConversationMemory, Turn
from bot.chat.models import (
    IncomingMessage,
    MessageTarget,
    Reply,
    message_from_payload,
    message_to_payload,
)
from bot.chat.ports import DiscordPort, ReplyStream, StreamingPort, StreamStopped
from bot.chat.split import split_message
from bot.chat.stream_split import with_note
from bot.llm.errors import (
    CircuitOpen,
    Degraded,
    LLMBadRequest,
    LLMConfigurationError,
    LLMError,
    QuotaExhausted,
)
from bot.llm.service import Answer, LLMService
from bot.llm.streaming import INCOMPLETE_FINISH_REASONS
from bot.llm.types import GenerationSettings, LLMReply, LLMRequest, Message
from bot.resilience.degradation import (
    DegradationLevel,
    DegradationState,
    level_effects,
    route,
)
from bot.resilience.queue import MessageQueue

__all__ = ["ChatPipeline", "ChatStats", "ChatTuning", "DropReason", "FallbackTexts", "Outcome"]

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

Outcome = Literal["answered", "cached", "fallback", "queued", "rejected", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("answered", "cached", "fallback", "queued", "rejected", "failed")
DropReason = Literal["overflow", "expired", "shutdown", "failed"]

EMPTY_PROMPT_HINT = (
    "Hi! Ask me something after the mention, for example: `@me what is a monad?` (or use `/chat`)."
)
INTERNAL_ERROR_TEXT = "Sorry, something went wrong on my side. Please try again."
BAD_REQUEST_TEXT = (
    "Sorry, the model refused this request ({status}), so asking again the same way won't help. "
    "{hint}"
)
BAD_REQUEST_FILES_HINT = (
    "An attachment may be too large or of a kind it cannot read: try without it, or a smaller one."
)
BAD_REQUEST_HINT = "Try a shorter or different question."
CONFIGURATION_TEXT = (
    "Sorry, I can't use the model right now because of a configuration problem on my side. "
    "The bot's admins can see what to fix in its logs."
)
STOPPED_NOTE = "(stopped)"
CUT_OFF_NOTE = "(the answer was cut off: {why})"
BLOCKED_TEXT = (
    "I can't answer that one: the model declined to respond ({reason}). "
    "Try rephrasing your question."
)
QUEUED_TEXT = (
    "{why}, so your question is queued (position {position}). I'll answer here in about {wait}."
)
TOO_LONG_TEXT = (
    "{why}, and it frees up in about {wait}: longer than I can keep questions waiting. "
    "Please ask again then."
)
DROPPED_TEXT: dict[DropReason, str] = {
    "overflow": "Sorry, too many questions are waiting right now; I had to drop yours. "
    "Please ask again later.",
    "expired": "Sorry, I couldn't get to your question in time. Please ask again.",
    "shutdown": "Sorry, I restarted and couldn't keep your question. Please ask again.",
    "failed": "Sorry, I couldn't get an answer from the model after several tries. "
    "Please ask again later.",
}


@dataclass(frozen=True, slots=True)
class FallbackTexts:
    maintenance: str
    generic: str  # may use {reason} and {queue}


@dataclass
class ChatTuning:
    """Run-time reductions (self-healing's reduced mode); None means the settings' value.

    The degradation level has limits of its own (`level_effects`); the stricter one wins.
    """

    history_messages: int | None = None
    max_output_tokens: int | None = None


@dataclass
class ChatStats:
    """In-process figures that `/status`, `/health` and `/metrics` all read."""

    outcomes: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    errors: dict[str, int] = field(
        default_factory=lambda: {"gemini": 0, "discord": 0, "store": 0, "internal": 0}
    )
    # Replies to questions that were queued first (their answer, refusal or drop notice);
    # each is in `outcomes` as well.
    late: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    in_flight: int = 0
    # Recent message-to-reply times, for the percentiles of /status (bounded).
    recent_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    # The same with the monotonic time each reply was sent, for windowed percentiles (bounded).
    recent_replies: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=1000))


class ResponseObserver(Protocol):
    """Where reply times are reported (ops.Telemetry: the response-time histogram)."""

    def observe_response(self, seconds: float) -> None: ...


class _NoObserver:
    def observe_response(self, seconds: float) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Thought:
    """The reply to send, and the turns to remember once it is delivered."""

    reply: Reply
    remember: tuple[Turn, str] | None = None
    stream: ReplyStream | None = None  # the streamed messages the reply goes into


class ChatPipeline:
    """Answers `IncomingMessage`s; every accepted message ends with a reply (now or later)."""

    def __init__(
        self,
        *,
        discord: DiscordPort,
        llm: LLMService,
        memory: ConversationMemory,
        context: ContextBuilder,
        files: FileLoader,
        access: AccessPolicy,
        cooldown: UserCooldown,
        generation: GenerationSettings,
        degradation: DegradationState,
        queue: MessageQueue,
        fallback: FallbackTexts,
        telemetry: ResponseObserver | None = None,
        streaming: StreamingPort | None = None,
    ) -> None:
        self.telemetry: ResponseObserver = telemetry or _NoObserver()
        self.streaming = streaming
        self.discord = discord
        self.llm = llm
        self.memory = memory
        self.context = context
        self.files = files
        self.access = access
        self.cooldown = cooldown
        self.generation = generation
        self.degradation = degradation
        self.queue = queue
        self.fallback_texts = fallback
        self.stats = ChatStats()
        self.tuning = ChatTuning()
        self._idle = asyncio.Event()
        self._idle.set()

    # -- the story of one message ----------------------------------------------------------

    async def handle(self, msg: IncomingMessage) -> None:
        """Answer one message: refuse, answer, queue, or explain why not, and send it."""
        # One trace per message; no ids or text on it, only what kind of message it was.
        with _tracer.start_as_current_span(
            "message", kind=SpanKind.CONSUMER, attributes={"llmbot.source": msg.source}
        ) as span:
            async with self._in_flight():
                try:
                    thought = await self._think(msg)
                except Exception:
                    # A bug of ours must still end in a reply, never in silence.
                    self.stats.errors["internal"] += 1
                    log.exception("answering a message failed")
                    thought = _Thought(Reply.text(INTERNAL_ERROR_TEXT, "failed"))
                span.set_attribute("llmbot.reply.kind", thought.reply.kind)
                await self._send(msg, thought)
                now = time.monotonic()
                elapsed = now - msg.received_at
                self.stats.recent_seconds.append(elapsed)
                self.stats.recent_replies.append((now, elapsed))
                self.telemetry.observe_response(elapsed)

    async def _think(self, msg: IncomingMessage) -> _Thought:
        refusal = self.access.check(
            msg.author_id, msg.role_ids, msg.channel_id, msg.parent_channel_id
        )
        if refusal is not None:
            return _Thought(Reply.text(refusal.message, "refused", ephemeral=True))
        wait_s = self.cooldown.try_acquire(msg.author_id)
        if wait_s > 0:
            text = cooldown_refusal(wait_s).message
            return _Thought(Reply.text(text, "refused", ephemeral=True))
        if not msg.text.strip() and not msg.attachments:
            return _Thought(Reply.text(EMPTY_PROMPT_HINT, "notice"))

        calls_now = level_effects(self.degradation.level).call_model
        request, refusal_text = await self._build_request(msg, for_call=calls_now)
        if request is None:
            return _Thought(Reply.text(refusal_text, "refused"))
        if self.degradation.maintenance:
            return _Thought(self._fallback(request, "maintenance"))
        if not level_effects(self.degradation.level).call_model:
            # Badly degraded: serve from the cache, or let the queue worker pace the calls.
            cached = self.llm.cached(request)
            if cached is not None:
                return self._answer(msg, request, cached, cached=True)
            return _Thought(await self._later(msg, request, Degraded(self.degradation.reason)))
        stream = self._open_stream(msg)
        try:
            answer = await self._ask(msg, request, stream)
        except StreamStopped:
            assert stream is not None
            return _Thought(_with_note(stream.text, STOPPED_NOTE, "answer"), stream=stream)
        except LLMBadRequest as exc:
            return _Thought(self._refused_by_model(request, exc), stream=stream)
        except LLMError as exc:
            if stream is not None and stream.shown():
                # Part of the answer is on screen: keep it, say why it ends there.
                self.stats.errors["gemini"] += 1
                log.warning("the model's stream failed after some text: %s", exc.kind)
                note = CUT_OFF_NOTE.format(why="the model stopped responding")
                return _Thought(_with_note(stream.text, note, "failed"), stream=stream)
            return _Thought(await self._later(msg, request, exc), stream=stream)
        except BaseException:
            if stream is not None:
                stream.close()
            raise
        return replace(
            self._answer(msg, request, answer.reply, cached=answer.cached), stream=stream
        )

    def _open_stream(self, msg: IncomingMessage) -> ReplyStream | None:
        """A stream for an answer to a channel message (slash commands answer whole)."""
        if self.streaming is None or not isinstance(msg.target, MessageTarget):
            return None
        return self.streaming.open_stream(msg.target, msg.author_id)

    async def _ask(
        self, msg: IncomingMessage, request: LLMRequest, stream: ReplyStream | None
    ) -> Answer:
        if stream is None:
            return await self.llm.answer(request, tag=msg.conversation_key)
        return await stream.run(self.llm.answer(request, tag=msg.conversation_key, stream=stream))

    async def _build_request(
        self, msg: IncomingMessage, *, for_call: bool = True
    ) -> tuple[LLMRequest | None, str]:
        """What goes to the model: the history and the prompt with its files (or a refusal),
        within the limits of reduced mode and of the degradation level.

        The level's history and output limits shape calls; `for_call=False` (at high, where a
        new question makes no call now) builds the request as at none, so that the cache is
        looked up with what a healthy bot would have asked. In maintenance videos are not
        refused with the load notice: the maintenance text says more.
        """
        effects = level_effects(self.degradation.level)
        video = effects.video or self.degradation.maintenance
        files, refusal = await self.files.load(msg, video=video)
        if refusal is not None:
            return None, refusal.message
        if not for_call:
            effects = level_effects(DegradationLevel.NONE)
        with _tracer.start_as_current_span("context build") as span:
            history = await self.context.history(msg)
            span.set_attribute("llmbot.context.turns", len(history))
        generation = self.generation
        if (keep := _stricter(self.tuning.history_messages, effects.history_messages)) is not None:
            history = history[-keep:] if keep else []
            while history and history[0].role == "model":  # open with the user's turn
                history = history[1:]
        if (cap := _stricter(self.tuning.max_output_tokens, effects.max_output_tokens)) is not None:
            current = generation.max_output_tokens
            generation = replace(generation, max_output_tokens=min(cap, current or cap))
        prompt = Message(role="user", text=speaker_text(msg), files=files)
        return LLMRequest(generation, (*history, prompt)), ""

    def _answer(
        self, msg: IncomingMessage, request: LLMRequest, reply: LLMReply, *, cached: bool
    ) -> _Thought:
        if reply.blocked_reason is not None:
            text = BLOCKED_TEXT.format(reason=reply.blocked_reason.lower())
            return _Thought(Reply.text(text, "notice"))
        prompt = request.messages[-1]
        user_turn = Turn(
            "user",
            prompt.text,
            msg.author_id,
            msg.message_id,
            time.time(),
            tuple(f.digest for f in prompt.files),
        )
        text = reply.text
        if reply.finish_reason in INCOMPLETE_FINISH_REASONS:
            # Stopped part way (a safety stop after some text): say so under what arrived.
            why = f"the model stopped it ({reply.finish_reason.lower()})"
            text = with_note(text, CUT_OFF_NOTE.format(why=why))
        chunks = tuple(split_message(text))
        return _Thought(Reply(chunks, "cached" if cached else "answer"), (user_turn, reply.text))

    def _refused_by_model(self, request: LLMRequest, exc: LLMBadRequest) -> Reply:
        """A final answer for a request the model refused (never queued, never retried)."""
        self.stats.errors["gemini"] += 1
        if isinstance(exc, LLMConfigurationError):
            log.error(
                "Gemini refuses the bot itself (%s): check GEMINI_API_KEY, the key's project and "
                "GEMINI_MODEL",
                exc,
            )
            return Reply.text(CONFIGURATION_TEXT, "failed")
        log.warning("the model refused a request: %s", exc)
        has_files = any(m.files for m in request.messages)
        status = str(exc.status_code) if exc.status_code is not None else "a client error"
        hint = BAD_REQUEST_FILES_HINT if has_files else BAD_REQUEST_HINT
        return Reply.text(BAD_REQUEST_TEXT.format(status=status, hint=hint), "failed")

    # -- when the model cannot answer now --------------------------------------------------

    async def _later(self, msg: IncomingMessage, request: LLMRequest, exc: LLMError) -> Reply:
        """Queue the question with a notice, or send a fallback when it cannot be queued."""
        if not isinstance(exc, QuotaExhausted | CircuitOpen | Degraded):
            self.stats.errors["gemini"] += 1
            log.warning("model call failed after retries: %s (%s)", exc.kind, exc)
        wait_s = exc.retry_after_s or 0.0
        if wait_s >= self.queue.max_age_s:
            # The queue would drop it before then: no promise it cannot keep.
            return self._fallback(
                request,
                exc.kind,
                too_long=TOO_LONG_TEXT.format(why=_why(exc), wait=format_wait(wait_s)),
            )
        priority = 1 if msg.source == "slash" else 0  # an interaction token expires in 15 min
        decision = route(
            self.degradation.level,
            quota_exhausted=isinstance(exc, QuotaExhausted),
            breaker_open=isinstance(exc, CircuitOpen),
            maintenance=False,
            call_failed=True,
            can_queue=self.queue.would_accept(priority),
        )
        if decision == "queue":
            pushed = await self.queue.push(
                message_to_payload(msg),
                priority=priority,
                reason=exc.kind,
                delay_s=exc.retry_after_s,
            )
            if pushed.evicted is not None:
                await self.notify_dropped(pushed.evicted.payload, "overflow")
            if pushed.accepted:
                trace.get_current_span().add_event(
                    "queued", {"position": pushed.position, "reason": exc.kind}
                )
                text = QUEUED_TEXT.format(
                    why=_why(exc),
                    position=pushed.position,
                    wait=format_wait(max(1.0, pushed.estimated_wait_s)),
                )
                return Reply.text(text, "queued")
        return self._fallback(request, exc.kind)

    def _fallback(self, request: LLMRequest, reason: str, *, too_long: str = "") -> Reply:
        """A cached answer, the maintenance text or the generic one (`too_long`, when given,
        replaces the generic text: the model is out of reach for longer than the queue waits)."""
        cached = self.llm.cached(request)
        kind = self.degradation.fallback_kind(cached_available=cached is not None)
        if self.degradation.maintenance and cached is None:
            kind = "maintenance"  # an operator's maintenance always says so
        self.degradation.record_fallback(kind)
        if kind == "cached" and cached is not None:
            return Reply(tuple(split_message(cached.text)), "fallback")
        if kind == "maintenance":
            return Reply.text(self.fallback_texts.maintenance, "fallback")
        if too_long:
            return Reply.text(too_long, "fallback")
        text = self.fallback_texts.generic.format(
            reason=reason.replace("_", " "), queue=self.queue.size
        )
        return Reply.text(text, "fallback")

    # -- queued questions, answered later by the queue worker ------------------------------

    async def answer_queued(self, msg: IncomingMessage, waited_s: float = 0.0) -> None:
        """Answer a question taken from the queue; raises LLMError when it still can't."""
        with _tracer.start_as_current_span(
            "queued message",
            kind=SpanKind.CONSUMER,
            attributes={"llmbot.source": msg.source, "llmbot.queue.wait_seconds": waited_s},
        ):
            await self._answer_queued(msg)

    async def _answer_queued(self, msg: IncomingMessage) -> None:
        async with self._in_flight():
            request, refusal_text = await self._build_request(msg)
            if request is None:
                await self._send(msg, _Thought(Reply.text(refusal_text, "refused")), late=True)
                return
            try:
                answer = await self.llm.answer(request, tag=msg.conversation_key)
            except LLMBadRequest as exc:  # final: answered with the reason, not retried
                await self._send(msg, _Thought(self._refused_by_model(request, exc)), late=True)
                return
            thought = self._answer(msg, request, answer.reply, cached=answer.cached)
            await self._send(msg, thought, late=True)

    async def notify_dropped(self, payload: dict[str, Any], reason: DropReason) -> None:
        """Tell the user their queued question will not be answered, and why."""
        try:
            msg = message_from_payload(payload)
        except (KeyError, TypeError, ValueError):
            log.error("a dropped queue entry was unreadable; its user cannot be told")
            return
        await self._send(msg, _Thought(Reply.text(DROPPED_TEXT[reason], "failed")), late=True)

    # -- plumbing --------------------------------------------------------------------------

    def forget(self, channel_id: int, user_id: int | None = None) -> None:
        """`/clear`: forget one user's turns in a channel (everyone's when `user_id` is None) and
        the cached answers given there, so nothing forgotten comes back from the cache."""
        if user_id is None:
            self.memory.clear(channel_id)
        else:
            self.memory.clear_user(channel_id, user_id)
        self.llm.cache.clear_tag(channel_id)

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no message is being answered; False if some still are after the timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    @contextlib.asynccontextmanager
    async def _in_flight(self) -> AsyncIterator[None]:
        """Count a message as in flight, so shutdown can wait for its reply."""
        self.stats.in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.stats.in_flight -= 1
            if self.stats.in_flight == 0:
                self._idle.set()

    def record_error(self, component: str) -> None:
        """Count one error of `component` (gemini, discord, store, internal) on the message path,
        for the parts that report through the app (the queue worker, the stores)."""
        self.stats.errors[component] = self.stats.errors.get(component, 0) + 1

    async def _send(self, msg: IncomingMessage, thought: _Thought, *, late: bool = False) -> None:
        reply = thought.reply
        outcome = _OUTCOME_OF_KIND[reply.kind]
        self.stats.outcomes[outcome] += 1
        if late:
            self.stats.late[outcome] += 1
        try:
            if thought.stream is not None:
                sent_ids = await thought.stream.finish(reply)
            else:
                sent_ids = await self.discord.deliver(msg.target, reply)
        except Exception:
            self.stats.errors["discord"] += 1
            log.exception("could not deliver a reply to Discord")
            return
        if thought.remember is not None and sent_ids:
            user_turn, answer_text = thought.remember
            model_turn = Turn("model", answer_text, None, sent_ids[0], time.time())
            self.memory.append(msg.conversation_key, user_turn, model_turn)


def _with_note(text: str, note: str, kind: Literal["answer", "failed"]) -> Reply:
    return Reply(tuple(split_message(with_note(text, note))), kind)


def _stricter(a: int | None, b: int | None) -> int | None:
    """The smaller of two optional limits (None: no limit)."""
    if a is None:
        return b
    return a if b is None else min(a, b)


def _why(exc: LLMError) -> str:
    if isinstance(exc, QuotaExhausted):
        window = "daily" if exc.window == "day" else exc.window
        return f"I've reached my {window} request limit for the model"
    if isinstance(exc, CircuitOpen):
        return "The model is having trouble right now"
    if isinstance(exc, Degraded):
        return "I'm running in a reduced mode right now"
    return "The model didn't answer just now"


_OUTCOME_OF_KIND: dict[str, Outcome] = {
    "answer": "answered",
    "cached": "cached",
    "fallback": "fallback",
    "queued": "queued",
    "notice": "answered",
    "refused": "rejected",
    "failed": "failed",
}
