"""The story of one message, from a user's words to the bot's reply in Discord.

Read `ChatPipeline.handle` top to bottom: who may ask, what they asked (text, images, the
conversation so far), what the model said (or why it could not), and what goes back. The
machinery lives behind the calls; this module imports no network library.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from bot.chat.access import AccessPolicy, UserCooldown, cooldown_refusal
from bot.chat.context import ContextBuilder, speaker_text
from bot.chat.files import FileLoader
from bot.chat.memory import ConversationMemory, Turn
from bot.chat.models import IncomingMessage, Reply
from bot.chat.ports import DiscordPort
from bot.chat.split import split_message
from bot.llm.errors import CircuitOpen, LLMError, QuotaExhausted
from bot.llm.service import Answer, LLMService
from bot.llm.types import GenerationSettings, LLMRequest, Message

__all__ = ["ChatPipeline", "ChatStats", "Outcome"]

log = logging.getLogger(__name__)

Outcome = Literal["answered", "cached", "fallback", "queued", "rejected", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("answered", "cached", "fallback", "queued", "rejected", "failed")

EMPTY_PROMPT_HINT = (
    "Hi! Ask me something after the mention, for example: `@me what is a monad?` (or use `/chat`)."
)
INTERNAL_ERROR_TEXT = "Sorry, something went wrong on my side. Please try again."
BLOCKED_TEXT = (
    "I can't answer that one: the model declined to respond ({reason}). "
    "Try rephrasing your question."
)


@dataclass
class ChatStats:
    """In-process figures that `/status`, `/health` and `/metrics` all read."""

    outcomes: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    errors: dict[str, int] = field(
        default_factory=lambda: {"gemini": 0, "discord": 0, "store": 0, "internal": 0}
    )
    in_flight: int = 0
    # Recent message-to-reply times, for the percentiles of /status (bounded).
    recent_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=1000))


class ChatPipeline:
    """Answers `IncomingMessage`s; every accepted message ends with exactly one reply."""

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
    ) -> None:
        self.discord = discord
        self.llm = llm
        self.memory = memory
        self.context = context
        self.files = files
        self.access = access
        self.cooldown = cooldown
        self.generation = generation
        self.stats = ChatStats()
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no message is being answered; False if some still are after the timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def handle(self, msg: IncomingMessage) -> None:
        """Answer one message: refuse, answer, or explain why not, and send it."""
        self.stats.in_flight += 1
        self._idle.clear()
        try:
            try:
                reply, remember = await self._think(msg)
            except Exception:
                # A bug of ours must still end in a reply, never in silence.
                self.stats.errors["internal"] += 1
                log.exception("answering a message failed")
                reply, remember = self._count(Reply.text(INTERNAL_ERROR_TEXT, "failed")), None
            sent_ids = await self._send(msg, reply)
            if remember is not None and sent_ids:
                user_turn, answer_text = remember
                model_turn = Turn("model", answer_text, None, sent_ids[0], time.time())
                self.memory.append(msg.conversation_key, user_turn, model_turn)
        finally:
            self.stats.in_flight -= 1
            if self.stats.in_flight == 0:
                self._idle.set()
            self.stats.recent_seconds.append(time.monotonic() - msg.received_at)

    async def _think(self, msg: IncomingMessage) -> tuple[Reply, tuple[Turn, str] | None]:
        refusal = self.access.check(msg.author_id, msg.role_ids, msg.channel_id)
        if refusal is not None:
            return self._count(Reply.text(refusal.message, "refused", ephemeral=True)), None
        wait_s = self.cooldown.try_acquire(msg.author_id)
        if wait_s > 0:
            text = cooldown_refusal(wait_s).message
            return self._count(Reply.text(text, "refused", ephemeral=True)), None
        if not msg.text.strip() and not msg.attachments:
            return self._count(Reply.text(EMPTY_PROMPT_HINT, "notice")), None

        files, refusal = await self.files.load(msg)
        if refusal is not None:
            return self._count(Reply.text(refusal.message, "refused")), None

        history = await self.context.history(msg)
        prompt = Message(role="user", text=speaker_text(msg), files=files)
        request = LLMRequest(self.generation, (*history, prompt))
        try:
            answer = await self.llm.answer(request, tag=msg.conversation_key)
        except LLMError as exc:
            return self._count(self._explain(exc)), None

        if answer.reply.blocked_reason is not None:
            text = BLOCKED_TEXT.format(reason=answer.reply.blocked_reason.lower())
            return self._count(Reply.text(text, "notice")), None
        user_turn = Turn(
            "user",
            prompt.text,
            msg.author_id,
            msg.message_id,
            time.time(),
            tuple(f.digest for f in files),
        )
        return self._count(_answer_reply(answer)), (user_turn, answer.reply.text)

    def _explain(self, exc: LLMError) -> Reply:
        """A clear notice for a model call that could not be made or did not succeed."""
        wait = f" in about {max(1, round(exc.retry_after_s))} s" if exc.retry_after_s else " soon"
        if isinstance(exc, QuotaExhausted):
            text = f"I've hit my {exc.window} limit for the model. Please ask again{wait}."
        elif isinstance(exc, CircuitOpen):
            text = f"The model is having trouble right now, so I paused calls. Try again{wait}."
        else:
            self.stats.errors["gemini"] += 1
            log.warning("model call failed: %s (%s)", exc.kind, exc)
            text = "Sorry, I couldn't get an answer from the model just now. Please try again."
        return Reply.text(text, "failed")

    async def _send(self, msg: IncomingMessage, reply: Reply) -> list[int]:
        try:
            return await self.discord.deliver(msg.target, reply)
        except Exception:
            self.stats.errors["discord"] += 1
            log.exception("could not deliver a reply to Discord")
            return []

    def _count(self, reply: Reply) -> Reply:
        self.stats.outcomes[_OUTCOME_OF_KIND[reply.kind]] += 1
        return reply


_OUTCOME_OF_KIND: dict[str, Outcome] = {
    "answer": "answered",
    "cached": "cached",
    "fallback": "fallback",
    "queued": "queued",
    "notice": "answered",
    "refused": "rejected",
    "failed": "failed",
}


def _answer_reply(answer: Answer) -> Reply:
    chunks = tuple(split_message(answer.reply.text))
    return Reply(chunks, "cached" if answer.cached else "answer")
