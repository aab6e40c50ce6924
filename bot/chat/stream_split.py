"""The messages a streamed answer occupies, as it grows: which to post, edit or delete.

While the answer streams, its text so far is split with the same rules as a whole answer
(`split_message`: paragraph, line, sentence, word; code fences closed and reopened in their
language), so a message that outgrows 2,000 characters rolls over into a new one with balanced
fences. When the answer ends, `final_changes` makes the messages exactly the chunks a
non-streamed answer would get: edits where a chunk differs, posts for missing ones, deletes for
any extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bot.chat.split import DISCORD_MESSAGE_LIMIT, _unclosed_fence, split_message

__all__ = ["Change", "StreamLayout", "with_note"]


@dataclass(frozen=True, slots=True)
class Change:
    """One REST call to make: post message `index`, edit it, or delete it."""

    kind: Literal["post", "edit", "delete"]
    index: int
    content: str = ""


class StreamLayout:
    """What is shown (`shown`, one string per message) and what to change to show more."""

    def __init__(self, limit: int = DISCORD_MESSAGE_LIMIT) -> None:
        self.limit = limit
        self.shown: list[str] = []

    def changes(self, text: str) -> list[Change]:
        """Changes that show `text` (the answer so far); never deletes a message."""
        return self._diff(split_message(text, self.limit), delete=False)

    def final_changes(self, chunks: Sequence[str]) -> list[Change]:
        """Changes that leave exactly `chunks` shown, in order."""
        return self._diff(chunks, delete=True)

    def _diff(self, chunks: Sequence[str], *, delete: bool) -> list[Change]:
        out: list[Change] = []
        for index, chunk in enumerate(chunks):
            if index >= len(self.shown):
                out.append(Change("post", index, chunk))
            elif self.shown[index] != chunk:
                out.append(Change("edit", index, chunk))
        if delete:
            out.extend(
                Change("delete", index) for index in range(len(self.shown) - 1, len(chunks) - 1, -1)
            )
        return out

    def applied(self, change: Change) -> None:
        """Record a change Discord carried out."""
        if change.kind == "post":
            if change.index != len(self.shown):
                raise ValueError(f"post {change.index} after {len(self.shown)} messages")
            self.shown.append(change.content)
        elif change.kind == "edit":
            self.shown[change.index] = change.content
        else:
            del self.shown[change.index]


def with_note(text: str, note: str) -> str:
    """`text` followed by a note on its own paragraph, outside any code block left open."""
    text = text.replace("\r\n", "\n").rstrip()
    fence = _unclosed_fence(text) if text else None
    if fence is not None:
        text += f"\n{fence.fence}"
    return f"{text}\n\n{note}" if text else note
