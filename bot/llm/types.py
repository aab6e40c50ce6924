"""Plain data crossing the LLM boundary: what the chat domain asks and what it gets back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["GenerationSettings", "InlineFile", "LLMReply", "LLMRequest", "Message", "TokenUsage"]

Role = Literal["user", "model"]


@dataclass(frozen=True, slots=True)
class InlineFile:
    """An image or video sent to the model as an inline part."""

    mime_type: str
    data: bytes
    digest: str  # sha256 hex of data; part of the cache key


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of the conversation as sent to the model."""

    role: Role
    text: str
    files: tuple[InlineFile, ...] = ()


@dataclass(frozen=True, slots=True)
class GenerationSettings:
    """Everything besides the conversation that determines the model's answer."""

    model: str
    system_instruction: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """A whole request: the settings plus the turns, the last one being the user's prompt."""

    settings: GenerationSettings
    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Gemini's `usage_metadata`: `input` is the whole prompt (cached tokens included), `output`
    the answer's tokens without the thinking, `thoughts` the thinking (billed as output) and
    `cached` the part of the prompt read from Gemini's context cache."""

    input: int = 0
    output: int = 0
    thoughts: int = 0
    cached: int = 0


@dataclass(frozen=True, slots=True)
class LLMReply:
    """The model's answer. `text` is empty only when `blocked_reason` says why.

    `time_to_first_chunk_s` is how long after the request the first chunk of a streamed answer
    arrived (None when the answer was not streamed).
    """

    text: str
    model: str
    finish_reason: str | None = None
    blocked_reason: str | None = None
    usage: TokenUsage = field(default_factory=TokenUsage)
    time_to_first_chunk_s: float | None = None

    @property
    def finish_reasons(self) -> tuple[str, ...]:
        """Why the model stopped, per candidate (the bot asks for one candidate)."""
        return (self.finish_reason,) if self.finish_reason else ()
