"""Tests for bot.chat.split: Discord-sized chunks that keep code blocks intact."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.chat.split import DISCORD_MESSAGE_LIMIT, split_message

# An independent reading of CommonMark fences, so the tests do not trust the module's parser.
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_BARE_FENCE = re.compile(r"`{3,}|~{3,}")


def open_fence_at_end(chunk: str) -> str | None:
    """The fence still open after rendering `chunk` on its own."""
    open_fence: str | None = None
    for line in chunk.split("\n"):
        match = _FENCE.fullmatch(line)
        if match is None:
            continue
        fence, info = match.group(1), match.group(2)
        if open_fence is None:
            if not (fence[0] == "`" and "`" in info):
                open_fence = fence
        elif fence[0] == open_fence[0] and len(fence) >= len(open_fence) and not info.strip():
            open_fence = None
    return open_fence


def without_markers(chunk: str) -> set[str]:
    """Every reading of `chunk` with an added opening and/or closing fence line removed."""
    readings = {chunk}
    lines = chunk.split("\n")
    opened = len(lines) > 1 and _FENCE.fullmatch(lines[0]) is not None
    closed = len(lines) > 1 and _BARE_FENCE.fullmatch(lines[-1]) is not None
    if opened:
        readings.add("\n".join(lines[1:]))
    if closed:
        readings.add("\n".join(lines[:-1]))
    if opened and closed and len(lines) > 2:
        readings.add("\n".join(lines[1:-1]))
    return {reading for reading in readings if reading}


def reconstructs(original: str, chunks: list[str]) -> bool:
    """True if original == w0 + b1 + w1 + ... + bn + wn, each w whitespace, each b a chunk
    without its markers (the documented guarantee of split_message)."""
    original = original.replace("\r\n", "\n")
    positions = {0}
    for chunk in chunks:
        reached: set[int] = set()
        for pos in positions:
            gap_end = pos
            while gap_end < len(original) and original[gap_end].isspace():
                gap_end += 1
            for start in range(pos, gap_end + 1):
                for body in without_markers(chunk):
                    if original.startswith(body, start):
                        reached.add(start + len(body))
        positions = reached
        if not positions:
            return False
    return any(original[pos:].isspace() or pos == len(original) for pos in positions)


def assert_well_formed(text: str, chunks: list[str], limit: int) -> None:
    for chunk in chunks:
        assert 0 < len(chunk) <= limit, (len(chunk), chunk)
        assert chunk.strip(), chunk
        assert not chunk.startswith("\n"), chunk
        assert open_fence_at_end(chunk) is None, chunk
    assert reconstructs(text, chunks), chunks


# --- generated markdown ---------------------------------------------------------------------

# Each letter of a generated string stands for a token, so hypothesis draws one string per
# block instead of one value per word (ten times faster) and still shrinks well.
_TOKENS = {
    "a": "a",
    "b": "the",
    "c": "Gemini",
    "d": "déjà",
    "e": "漢字",
    "f": "😀",
    "g": "x=1",
    "h": "(yes)",
    "i": "end.",
    "j": "Really?",
    "k": '"quoted."',
    "l": "**bold.**",
    "m": "item,",
    "n": "-",
    "o": "1.",
    "p": "`code`",
    "q": "snake_case",
    " ": " ",
    "_": "  ",
    "t": "\t",
    "/": "\n",
    "|": "\n    ",
    "=": "\n\n",
    "L": "L" * 45,
    "M": "M" * 230,
    "N": "漢" * 90,
}
_block_text = st.text(alphabet="".join(_TOKENS), min_size=1, max_size=120).map(
    lambda letters: "".join(_TOKENS[letter] for letter in letters)
)
_paragraph = _block_text.filter(lambda text: not text.isspace())


@st.composite
def _code_block(draw: st.DrawFn, closed: bool = True) -> str:
    fence = draw(st.sampled_from(["```", "```", "~~~", "````"]))
    info = draw(st.sampled_from(["", "python", "js", "c++", "python title=demo.py"]))
    body = draw(_block_text)
    return f"{fence}{info}\n{body}" + (f"\n{fence}" if closed else "")


@st.composite
def markdown(draw: st.DrawFn) -> str:
    blocks = draw(
        st.lists(st.one_of(_paragraph, _paragraph, _code_block()), min_size=1, max_size=8)
    )
    if draw(st.booleans()):  # an answer cut short inside a code block
        blocks.append(draw(_code_block(closed=False)))
    separator = draw(st.sampled_from(["\n\n", "\n", "\n\n\n", "\n \n"]))
    text = separator.join(blocks)
    if draw(st.booleans()):
        text = text.replace("\n", "\r\n")
    return draw(st.sampled_from(["", "\n", "  "])) + text


_limits = st.one_of(st.integers(20, 120), st.integers(20, 2000))


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(text=markdown(), limit=_limits)
def test_markdown_chunks_fit_stay_balanced_and_rebuild_the_text(text: str, limit: int) -> None:
    chunks = split_message(text, limit)
    assert_well_formed(text, chunks, limit)
    # Fence lines come in pairs: only real fences appear at line starts in this text.
    for chunk in chunks:
        fence_lines = [line for line in chunk.split("\n") if _FENCE.fullmatch(line)]
        assert len(fence_lines) % 2 == 0, chunk


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    text=st.text(alphabet=" \n\t\r`~.!?abc漢😀-", max_size=600),
    limit=st.integers(20, 200),
)
def test_adversarial_text_keeps_the_guarantees(text: str, limit: int) -> None:
    chunks = split_message(text, limit)
    assert_well_formed(text, chunks, limit)


@settings(derandomize=True)
@given(text=st.text(max_size=300), limit=st.integers(1, 50))
def test_any_text_and_any_limit_stay_within_the_limit(text: str, limit: int) -> None:
    chunks = split_message(text, limit)
    assert all(0 < len(chunk) <= limit and chunk.strip() for chunk in chunks)
    if limit >= 20:
        assert reconstructs(text, chunks)


# --- examples --------------------------------------------------------------------------------


def test_limit_constant_is_discords() -> None:
    assert DISCORD_MESSAGE_LIMIT == 2000


@pytest.mark.parametrize("text", ["", " ", "\n\n", " \r\n\t "])
def test_blank_input_gives_no_chunks(text: str) -> None:
    assert split_message(text) == []


def test_short_text_is_one_chunk_without_surrounding_whitespace() -> None:
    assert split_message("\n\n  hello **world**  \n") == ["  hello **world**"]


def test_crlf_becomes_lf() -> None:
    assert split_message("a\r\nb") == ["a\nb"]


def test_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_message("hello", 0)


def test_answer_with_a_long_python_block() -> None:
    prose = "This is how you do it. " * 55  # about 1,260 characters
    code_lines = [f"    value_{i:03d} = compute({i}, factor=2)  # step" for i in range(55)]
    code = "```python\n" + "\n".join(code_lines) + "\n```"
    assert len(code) > 2_500
    text = f"{prose.strip()}\n\n{code}\n\n{prose.strip()}"
    assert len(text) > 5_000

    chunks = split_message(text)

    assert len(chunks) == 3
    assert all(len(chunk) <= 2000 for chunk in chunks)
    assert chunks[0] == prose.strip()  # the blank line before the block is the best cut
    assert chunks[1].startswith("```python\n    value_000")
    assert chunks[1].endswith("\n```")  # the block is cut after the second chunk...
    assert chunks[2].startswith("```python\n    value_")  # ...and reopened with its language
    assert chunks[2].endswith("This is how you do it.")
    assert_well_formed(text, chunks, 2000)


def test_reopened_code_keeps_indentation() -> None:
    code = "```python\n" + "\n".join(f"        line_{i} = {i}" for i in range(40)) + "\n```"
    chunks = split_message(code, 200)
    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.startswith("```python\n        line_"), chunk
        assert chunk.endswith("\n```")


def test_tilde_fences_are_reopened_with_tildes() -> None:
    text = "~~~js\n" + "\n".join(f"let v{i} = {i};" for i in range(30)) + "\n~~~"
    chunks = split_message(text, 100)
    assert len(chunks) > 1
    assert all(c.startswith("~~~js\n") and c.endswith("\n~~~") for c in chunks)


def test_unclosed_block_at_the_end_is_closed() -> None:
    assert split_message("see:\n```python\nprint(1)") == ["see:\n```python\nprint(1)\n```"]


def test_fence_line_longer_than_the_limit_reopens_with_a_bare_fence() -> None:
    text = "```" + "x" * 50 + "\ncode\n```"
    chunks = split_message(text, 20)
    assert all(len(chunk) <= 20 for chunk in chunks)
    assert chunks[0].startswith("```xxx")
    assert all(chunk.startswith("```\n") for chunk in chunks[1:])
    assert_well_formed(text, chunks, 20)


def test_long_info_string_is_shortened_to_the_language() -> None:
    text = "```python " + "attr " * 30 + "\n" + "\n".join(f"x = {i}" for i in range(40)) + "\n```"
    chunks = split_message(text, 200)
    assert all(chunk.startswith("```python") for chunk in chunks)
    assert chunks[1].startswith("```python\n")


def test_prefers_paragraph_breaks() -> None:
    first, second = "a " * 700 + "end.", "b " * 700 + "end."
    assert split_message(f"{first}\n\n{second}") == [first, second]


def test_prefers_cutting_next_to_a_code_block_over_inside_it() -> None:
    prose = ("word " * 24).strip()  # 119 characters, one line
    code = "```python\n" + "x = 1\n" * 30 + "```"
    before = split_message(f"{prose}\n{code}", 200)
    assert before[0] == prose
    assert before[1].startswith("```python\nx = 1")
    short_code = "```python\n" + "x = 1\n" * 18 + "```"  # 123 characters
    lines = "\n".join(["a line of prose"] * 20)
    after = split_message(f"{short_code}\n{lines}", 200)
    assert after[0] == short_code


def test_prefers_line_breaks_over_sentences() -> None:
    lines = [f"Line {i} has a sentence. And another one here." for i in range(100)]
    chunks = split_message("\n".join(lines))
    assert len(chunks) > 1
    for chunk in chunks:
        assert set(chunk.split("\n")) <= set(lines)


def test_prefers_sentence_ends_over_spaces() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    chunks = split_message(text, 500)
    assert all(chunk.endswith(".") for chunk in chunks)


def test_prefers_spaces_over_cutting_words() -> None:
    words = [f"word{i}" for i in range(1000)]
    chunks = split_message(" ".join(words), 300)
    assert [w for chunk in chunks for w in chunk.split(" ")] == words


def test_word_longer_than_the_limit_is_cut_hard() -> None:
    assert split_message("x" * 5_000) == ["x" * 2000, "x" * 2000, "x" * 1000]


def test_early_boundary_is_skipped_when_a_later_one_fills_more() -> None:
    text = "Short intro.\n\n" + "word " * 500
    chunks = split_message(text, 1000)
    assert chunks[0].startswith("Short intro.\n\nword")
    assert len(chunks[0]) > 900


def test_no_empty_code_block_when_cutting_next_to_a_fence() -> None:
    text = "p " * 40 + "\n```\n" + "code line\n" * 30 + "```"
    for chunk in split_message(text, 60):
        assert "```\n```" not in chunk


def test_inline_backticks_are_not_fences() -> None:
    text = "use ```x``` inline " * 20
    chunks = split_message(text, 100)
    assert_well_formed(text, chunks, 100)
    assert not any(chunk.endswith("\n```") for chunk in chunks)


def test_indentation_longer_than_the_limit_is_dropped_not_sent_alone() -> None:
    text = "start\n" + " " * 100 + "end"
    assert split_message(text, 30) == ["start", "end"]
