"""The messages a streamed answer occupies: whatever the chunking, the end is the whole split."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.chat.split import _unclosed_fence, split_message
from bot.chat.stream_split import Change, StreamLayout, with_note

# Answers made of the pieces that matter to the splitter: words, sentence ends, line and
# paragraph breaks, and code fences with a language.
_PIECES = st.sampled_from(
    ["word", "longerword", " ", ". ", "! ", "\n", "\n\n", "```python\n", "\n```\n", "~~~\n", "é"]
)
ANSWERS = st.lists(_PIECES, min_size=1, max_size=400).map("".join)


def _stream(answer: str, cuts: list[int], limit: int) -> tuple[StreamLayout, list[str]]:
    """Feed `answer` in pieces ending at `cuts`; return the layout and everything shown."""
    layout = StreamLayout(limit)
    shown: list[str] = []
    for end in [*sorted(set(cuts)), len(answer)]:
        for change in layout.changes(answer[:end]):
            assert change.kind in ("post", "edit")  # a stream never deletes while it runs
            layout.applied(change)
            shown.append(change.content)
    return layout, shown


@settings(max_examples=300, deadline=None)
@given(answer=ANSWERS, data=st.data(), limit=st.sampled_from([40, 120, 2000]))
def test_any_chunking_ends_in_exactly_the_non_streamed_split(
    answer: str, data: st.DataObject, limit: int
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(answer)), max_size=30))
    layout, shown = _stream(answer, cuts, limit)
    for change in layout.final_changes(split_message(answer, limit)):
        layout.applied(change)
        shown.append(change.content)

    assert layout.shown == split_message(answer, limit)
    for content in shown:  # every intermediate message fits and has its code blocks closed
        if content:
            assert len(content) <= limit
            assert _unclosed_fence(content) is None


def test_final_changes_delete_messages_the_final_split_does_not_need() -> None:
    layout = StreamLayout(10)
    for change in [Change("post", 0, "aaaa"), Change("post", 1, "bbbb"), Change("post", 2, "c")]:
        layout.applied(change)
    changes = layout.final_changes(["aaaa", "bbbbbbb"])
    assert changes == [Change("edit", 1, "bbbbbbb"), Change("delete", 2)]


def test_a_note_goes_after_a_code_block_left_open() -> None:
    assert with_note("Look:\n```py\nx = 1", "(stopped)") == "Look:\n```py\nx = 1\n```\n\n(stopped)"
    assert with_note("Done.  ", "(stopped)") == "Done.\n\n(stopped)"
    assert with_note("", "(stopped)") == "(stopped)"
