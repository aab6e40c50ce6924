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
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from bot.chat.access import AccessPolicy, CooldownGate, cooldown_refusal, format_wait
from bot.chat.budget import OVER_BUDGET_REACTION, BudgetGate, BudgetRefusal
from bot.chat.channels import ChannelSettings
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
from bot.store.answered import AnswerLedger, AnswerRecord, Record, State

__all__ = [
    "CAUGHT_UP_NOTE",
    "ChatPipeline",
    "ChatStats",
    "ChatTuning",
    "DropReason",
    "FallbackTexts",
    "Outcome",
    "with_late_note",
]

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
NOT_STORED_TEXT = (
    "{why}, and I couldn't save your question to answer it later. "
    "Please ask again in a few minutes."
)
DROPPED_TEXT: dict[DropReason, str] = {
    "overflow": "Sorry, too many questions are waiting right now; I had to drop yours. "
    "Please ask again later.",
    "expired": "Sorry, I couldn't get to your question in time. Please ask again.",
    "shutdown": "Sorry, I restarted and couldn't keep your question. Please ask again.",
    "failed": "Sorry, I couldn't get an answer from the model after several tries. "
    "Please ask again later.",
}
RESTARTING_NOTICE = (
    "I'm restarting, so your question has to wait a moment: I'll answer here when I'm back."
)

# The first line of every reply to a question found by the restart catch-up (Discord's small
# "subtext" markdown), so the user knows why the answer comes late.
CAUGHT_UP_NOTE = "-# Sorry for the wait: I was offline when you asked."
DISCORD_MAX_CHARS = 2000


def with_late_note(reply: Reply) -> Reply:
    """`reply` opened by `CAUGHT_UP_NOTE` (in its first chunk when that stays within Discord's
    2,000 characters, else as a chunk of its own)."""
    first, *rest = reply.chunks
    if len(CAUGHT_UP_NOTE) + 1 + len(first) <= DISCORD_MAX_CHARS:
        chunks = (f"{CAUGHT_UP_NOTE}\n{first}", *rest)
    else:
        chunks = (CAUGHT_UP_NOTE, first, *rest)
    return replace(reply, chunks=tuple(chunks))


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
    react: str | None = None  # react to the message with this instead of sending `reply`
    silent: bool = False  # count `reply` but send nothing
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
        cooldown: CooldownGate,
        generation: GenerationSettings,
        degradation: DegradationState,
        queue: MessageQueue,
        fallback: FallbackTexts,
        telemetry: ResponseObserver | None = None,
        budgets: BudgetGate | None = None,
        channels: ChannelSettings | None = None,
        answers: AnswerRecord | None = None,
        streaming: StreamingPort | None = None,
    ) -> None:
        self.telemetry: ResponseObserver = telemetry or _NoObserver()
        # Fair use (bot/chat/budget.py, bot/chat/channels.py); None: not wired.
        self.budgets = budgets
        self.channels = channels
        # The idempotency record: each message id gets one final reply, whoever delivers it.
        self.answers: AnswerRecord = answers if answers is not None else AnswerLedger(None)
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
        self._answering: set[asyncio.Task[Any]] = set()  # tasks inside _in_flight (bounded by it)
        # A fleet: told of each /clear so every process forgets it too (bot/chat/fleet_clear.py).
        self.on_forget: Callable[[int, int | None], Awaitable[None]] | None = None

    # -- the story of one message ----------------------------------------------------------

    async def handle(self, msg: IncomingMessage, *, via: str = "gateway") -> None:
        """Answer one message: refuse, answer, queue, or explain why not, and send it.

        The message id is claimed first: a duplicate delivery (a replayed gateway event, a
        catch-up of a message already seen; `via` names the path) gets no reply at all.
        """
        if msg.caught_up:
            via = "catchup"
        # In flight from the claim on, so a shutdown waits for it (or tells it, after the grace).
        async with self._in_flight():
            if not await self.answers.claim(msg.message_id, message_to_payload(msg), via):
                log.info("ignoring a duplicate delivery of a message (%s)", via)
                return
            # One trace per message; no ids or text on it, only what kind of message it was.
            with _tracer.start_as_current_span(
                "message", kind=SpanKind.CONSUMER, attributes={"llmbot.source": msg.source}
            ) as span:
                try:
                    thought = await self._think(msg)
                except Exception:
                    # A bug of ours must still end in a reply, never in silence.
                    self.stats.errors["internal"] += 1
                    log.exception("answering a message failed")
                    thought = _Thought(Reply.text(INTERNAL_ERROR_TEXT, "failed"))
                span.set_attribute("llmbot.reply.kind", thought.reply.kind)
                await self._send(msg, thought, observe=True)

    async def _think(self, msg: IncomingMessage) -> _Thought:
        refusal = self.access.check(
            msg.author_id, msg.role_ids, msg.channel_id, msg.parent_channel_id
        )
        if refusal is not None:
            # In an auto-reply channel the user did not address the bot: no notice there.
            silent = msg.source == "autoreply"
            return _Thought(Reply.text(refusal.message, "refused", ephemeral=True), silent=silent)
        wait_s = await self.cooldown.acquire(msg.author_id)
        if wait_s > 0:
            text = cooldown_refusal(wait_s).message
            return _Thought(Reply.text(text, "refused", ephemeral=True))
        if not msg.text.strip() and not msg.attachments:
            return _Thought(Reply.text(EMPTY_PROMPT_HINT, "notice"))
        if self.budgets is not None and (over := await self.budgets.check(msg)) is not None:
            return _over_budget(msg, over)

        calls_now = level_effects(self.degradation.level).call_model
        request, refusal_text = await self._build_request(msg, for_call=calls_now)
        if request is None:
            return _Thought(Reply.text(refusal_text, "refused"))
        if self.degradation.maintenance:
            return _Thought(await self._fallback(request, "maintenance"))
        if not level_effects(self.degradation.level).call_model:
            # Badly degraded: serve from the cache, or let the queue worker pace the calls.
            cached = await self.llm.cached(request)
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
        if self.budgets is not None and not answer.cached:
            await self.budgets.record(msg, answer.reply.usage)
        return replace(
            self._answer(msg, request, answer.reply, cached=answer.cached), stream=stream
        )

    def _open_stream(self, msg: IncomingMessage) -> ReplyStream | None:
        """A stream for an answer to a channel message or a /chat (None: answered whole)."""
        if self.streaming is None:
            return None
        journal = functools.partial(self.answers.streaming, msg.message_id)
        return self.streaming.open_stream(
            msg.target, msg.author_id, journal, question_id=msg.message_id
        )

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
        if self.channels is not None:  # the channel's persona and model (the cache key has both)
            generation = self.channels.apply(generation, msg.channel_id, msg.parent_channel_id)
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
            return await self._fallback(
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
                await self.answers.queued(msg.message_id)
                trace.get_current_span().add_event(
                    "queued", {"position": pushed.position, "reason": exc.kind}
                )
                text = QUEUED_TEXT.format(
                    why=_why(exc),
                    position=pushed.position,
                    wait=format_wait(max(1.0, pushed.estimated_wait_s)),
                )
                return Reply.text(text, "queued")
            if pushed.refused_reason == "store_error":
                # Nothing was promised: a cached answer, or say it could not be kept.
                return await self._fallback(
                    request, exc.kind, too_long=NOT_STORED_TEXT.format(why=_why(exc))
                )
        return await self._fallback(request, exc.kind)

    async def _fallback(self, request: LLMRequest, reason: str, *, too_long: str = "") -> Reply:
        """A cached answer, the maintenance text or the generic one (`too_long`, when given,
        replaces the generic text: the model is out of reach for longer than the queue waits,
        or the question could not be stored for later)."""
        cached = await self.llm.cached(request)
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
            if self.budgets is not None and not answer.cached:
                await self.budgets.record(msg, answer.reply.usage)
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

    # -- after a restart, and at shutdown (bot.chat.resume) -------------------------------

    async def resend(self, record: Record, *, count: bool = True) -> bool:
        """Send again the final reply a crash or Discord interrupted (the same text under the
        same nonce, so Discord answers the first message if it had got it); False when it
        cannot be. `count=False` when this process counted the reply already."""
        if record.reply is None or record.payload is None:
            return False
        try:
            msg = message_from_payload(record.payload)
        except (KeyError, TypeError, ValueError):
            return False
        chunks, kind = record.reply
        if kind not in _OUTCOME_OF_KIND or not chunks:
            return False
        thought = _Thought(Reply(chunks, kind))  # type: ignore[arg-type]
        await self._send(msg, thought, late=True, count=count)
        return self.answers.is_final(record.message_id)

    async def already_replied(self, record: Record) -> bool:
        """Is the final reply of `record` in Discord already (looked up in the channel)? For a
        re-send older than Discord's nonce window; then the record is finished, nothing sent.
        False when it cannot be known (an interaction, a failed lookup): re-send then."""
        try:
            msg = message_from_payload(record.payload or {})
        except (KeyError, TypeError, ValueError):
            return False
        if not isinstance(msg.target, MessageTarget) or record.reply is None:
            return False
        try:
            found = await self.discord.find_reply(msg.target.channel_id, msg.target.message_id)
        except Exception as exc:
            log.warning("could not look for an earlier reply: %s", exc)
            return False
        if found is None:
            return False
        done: State = "answered" if record.reply[1] in ("answer", "cached") else "notified"
        await self.answers.finish(record.message_id, done)
        return True

    async def notify_restarting(self, records: list[Record]) -> int:
        """Tell the users of questions still being answered at shutdown that the answer comes
        after the restart (their journal entries are resumed then); returns how many."""
        told = 0
        for record in records:
            if record.payload is None or self.answers.is_final(record.message_id):
                continue  # answered meanwhile: no notice after the answer
            try:
                msg = message_from_payload(record.payload)
            except (KeyError, TypeError, ValueError):
                continue
            await self._send(msg, _Thought(Reply.text(RESTARTING_NOTICE, "queued")), late=True)
            told += 1
        return told

    async def keep_for_restart(self, msg: IncomingMessage) -> bool:
        """A message that arrives while the bot stops: journalled for the next start (whose
        resume answers it once) and its user told so, a live one at least; False when the
        journal could not store it, or the queue could not take it after the restart (the
        journal's queued questions fill it), so nothing is promised (the caller refuses it)."""
        if self.answers.stats.open_by_state["queued"] >= self.queue.max_size:
            return False
        via = "catchup" if msg.caught_up else "gateway"
        kept = await self.answers.claim_for_later(msg.message_id, message_to_payload(msg), via)
        if kept == "unstored":
            return False
        if kept == "journalled" and not msg.caught_up:
            await self._send(msg, _Thought(Reply.text(RESTARTING_NOTICE, "queued")))
        return True

    # -- plumbing --------------------------------------------------------------------------

    async def forget(
        self, channel_id: int, user_id: int | None = None, *, tell_fleet: bool = True
    ) -> None:
        """`/clear`: forget one user's turns in a channel (everyone's when `user_id` is None) and
        the cached answers given there, so nothing forgotten comes back from the cache; in a
        fleet, every other process is told to forget them too (`tell_fleet`)."""
        if user_id is None:
            self.memory.clear(channel_id)
        else:
            # In a fleet the turns may be in Redis only (or newer there): read them back first,
            # so that removing them here removes them from Redis too.
            await self.context.refresh(channel_id)
            self.memory.clear_user(channel_id, user_id)
        await self.llm.cache.forget_tag(channel_id)
        if tell_fleet and self.on_forget is not None:
            await self.on_forget(channel_id, user_id)

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no message is being answered; False if some still are after the timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def cancel_in_flight(self, timeout_s: float = 1.0) -> int:
        """At shutdown, after the grace: stop answering what is still in flight (the journal
        keeps each question for the next start); returns how many were cancelled."""
        tasks = [t for t in self._answering if not t.done() and t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        return len(tasks)

    @contextlib.asynccontextmanager
    async def _in_flight(self) -> AsyncIterator[None]:
        """Count a message as in flight, so shutdown can wait for its reply."""
        self.stats.in_flight += 1
        self._idle.clear()
        task = asyncio.current_task()
        if task is not None:
            self._answering.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._answering.discard(task)
            self.stats.in_flight -= 1
            if self.stats.in_flight == 0:
                self._idle.set()

    def record_error(self, component: str) -> None:
        """Count one error of `component` (gemini, discord, store, internal) on the message path,
        for the parts that report through the app (the queue worker, the stores)."""
        self.stats.errors[component] = self.stats.errors.get(component, 0) + 1

    def _observe(self, msg: IncomingMessage) -> None:
        """The message-to-reply time of a live message (once its reply went out or failed)."""
        now = time.monotonic()
        elapsed = now - msg.received_at
        self.stats.recent_seconds.append(elapsed)
        self.stats.recent_replies.append((now, elapsed))
        self.telemetry.observe_response(elapsed)

    async def _send(
        self,
        msg: IncomingMessage,
        thought: _Thought,
        *,
        late: bool = False,
        count: bool = True,
        observe: bool = False,
    ) -> None:
        """Deliver a reply; `observe` (a live message) records its response time as soon as
        Discord has it. The idempotency record is updated last."""
        reply = thought.reply
        if msg.caught_up and reply.chunks:
            reply = with_late_note(reply)
        # Every reply but a "queued" notice is final: recorded (with its text) before it is
        # sent, so a crash re-sends this very reply under the same nonce; never sent twice.
        final = reply.kind != "queued"
        if final and not await self.answers.begin_final(
            msg.message_id, reply.chunks, reply.kind, message_to_payload(msg)
        ):
            self.answers.count_duplicate("queue" if late else "gateway")
            if thought.stream is not None:  # another process answers it: stop editing ours
                thought.stream.close()
            if observe:
                self._observe(msg)
            return
        reply = replace(reply, nonce_key=f"{msg.message_id}{'a' if final else 'q'}")
        outcome = _OUTCOME_OF_KIND[reply.kind]
        if count:  # a re-send of a reply counted when it was first tried is not counted again
            self.stats.outcomes[outcome] += 1
            if late:
                self.stats.late[outcome] += 1
        if thought.silent:
            if final:
                await self.answers.finish(msg.message_id, "notified")
            return
        if thought.react is not None and isinstance(msg.target, MessageTarget):
            try:
                await self.discord.react(
                    msg.target.channel_id, msg.target.message_id, thought.react
                )
            except Exception:
                self.stats.errors["discord"] += 1
                log.warning("could not react to a message", exc_info=True)
            if final:
                await self.answers.finish(msg.message_id, "notified")
            return
        try:
            streamed = self.answers.streamed(msg.message_id) if final else ()
            if thought.stream is not None:
                sent_ids = await thought.stream.finish(reply)
            elif streamed and isinstance(msg.target, MessageTarget):  # a restart cut it short
                sent_ids = await self.discord.replace_messages(msg.target, streamed, reply)
            else:
                sent_ids = await self.discord.deliver(msg.target, reply)
        except Exception:
            if final:
                self.answers.abandon_final(msg.message_id)  # re-sent later (bot.chat.resume)
            self.stats.errors["discord"] += 1
            log.exception("could not deliver a reply to Discord")
            if observe:
                self._observe(msg)
            return
        if observe:
            self._observe(msg)
        if thought.remember is not None and sent_ids:
            user_turn, answer_text = thought.remember
            model_turn = Turn("model", answer_text, None, sent_ids[0], time.time())
            self.memory.append(msg.conversation_key, user_turn, model_turn)
        if final:  # last: what a reader of Discord may look at next is in place before it
            done: State = "answered" if reply.kind in ("answer", "cached") else "notified"
            await self.answers.finish(msg.message_id, done)


def _over_budget(msg: IncomingMessage, over: BudgetRefusal) -> _Thought:
    """The notice naming the used-up budget and its reset, or (within the hour after one) a
    reaction; a slash command always gets the notice, privately (it needs a response)."""
    reply = Reply.text(over.text, "refused", ephemeral=True)
    if not over.notify and isinstance(msg.target, MessageTarget):
        return _Thought(reply, react=OVER_BUDGET_REACTION)
    return _Thought(reply)


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
