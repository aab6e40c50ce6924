"""What a streamed answer needs from the LLM layer: where its text goes, and when it is whole.

The chat pipeline passes a `TextSink` to `LLMService.answer`; each attempt's text so far goes to
`partial` (a retry starts again from ""), and once `shown()` is true, text has reached the user
and a failed attempt is not retried (a retry could not continue it without repeating words).
"""

from __future__ import annotations

from typing import Final, Protocol

from bot.llm.types import LLMReply

__all__ = ["INCOMPLETE_FINISH_REASONS", "TextSink", "is_complete"]

# Gemini's finish reasons that cut an answer short for a reason other than its length.
INCOMPLETE_FINISH_REASONS: Final = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "MALFORMED_FUNCTION_CALL",
        "OTHER",
    }
)


class TextSink(Protocol):
    def partial(self, text: str) -> None:
        """The current attempt's answer text so far (not a delta)."""
        ...

    def shown(self) -> bool:
        """Has any of it been shown to the user?"""
        ...


def is_complete(reply: LLMReply) -> bool:
    """A whole answer: not blocked and not cut off by a safety (or similar) stop."""
    return reply.blocked_reason is None and reply.finish_reason not in INCOMPLETE_FINISH_REASONS
