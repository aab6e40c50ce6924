"""Split a markdown answer into Discord-sized messages without breaking code blocks."""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

__all__ = ["DISCORD_MESSAGE_LIMIT", "split_message"]

DISCORD_MESSAGE_LIMIT = 2000
"""Longest message content Discord accepts from a bot, in characters."""

# Fences follow CommonMark: a line of three or more backticks or tildes, indented by at most
# three spaces; a backtick fence's info string cannot contain a backtick.
_OPENER = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_CLOSER = re.compile(r" {0,3}(`{3,}|~{3,})[ \t]*")
_WHITESPACE = re.compile(r"\s+")
_SENTENCE_END = frozenset(".!?…")
# Closing quotes, brackets and emphasis may follow the full stop: `he said "no."` ends a sentence.
_AFTER_SENTENCE_END = frozenset("\"')]*_”’»")

# Split-point classes, best first.
_PARAGRAPH, _LINE, _SENTENCE, _WORD = range(4)


@dataclass(frozen=True, slots=True)
class _Fence:
    fence: str  # the run of backticks or tildes that opened the block
    info: str  # the info string, usually a language tag


@dataclass(frozen=True, slots=True)
class _Line:
    start: int
    before: _Fence | None  # block open when the line starts
    inside: _Fence | None  # block open for a position strictly inside the line
    opens: bool
    closes: bool


def _scan(text: str) -> list[_Line]:
    """Describe each line of `text` with the code block it is in."""
    lines: list[_Line] = []
    open_fence: _Fence | None = None
    start = 0
    for raw in text.split("\n"):
        if open_fence is None:
            opened = _opener(raw)
            lines.append(_Line(start, None, opened, opens=opened is not None, closes=False))
            open_fence = opened
        else:
            closes = _is_closer(raw, open_fence)
            lines.append(_Line(start, open_fence, open_fence, opens=False, closes=closes))
            if closes:
                open_fence = None
        start += len(raw) + 1
    return lines


def _opener(line: str) -> _Fence | None:
    match = _OPENER.fullmatch(line)
    if match is None:
        return None
    fence, info = match.group(1), match.group(2).strip()
    if fence[0] == "`" and "`" in info:
        return None
    return _Fence(fence, info)


def _is_closer(line: str, fence: _Fence) -> bool:
    match = _CLOSER.fullmatch(line)
    return (
        match is not None
        and match.group(1)[0] == fence.fence[0]
        and len(match.group(1)) >= len(fence.fence)
    )


def _unclosed_fence(text: str) -> _Fence | None:
    """The code block still open at the end of `text`, if any."""
    last = _scan(text)[-1]
    if last.opens:
        return last.inside
    return None if last.closes else last.before


def _reopen_marker(fence: _Fence, limit: int) -> str:
    """The line that reopens `fence` in the next chunk, shortened so markers leave room for text."""
    room = limit * 3 // 4 - (1 + len(fence.fence))  # the closing marker comes out of the same room
    words = fence.info.split()
    for info in (fence.info, words[0] if words else "", ""):
        marker = f"{fence.fence}{info}\n"
        if len(marker) <= room:
            return marker
    return ""


class _Splitter:
    def __init__(self, text: str, limit: int) -> None:
        self.text = text
        self.limit = limit
        self.lines = _scan(text)
        self.line_starts = [line.start for line in self.lines]
        # Every possible split point, classified once: per kind, the sorted positions where a
        # body can end and where the next body would then start.
        self.cuts: list[list[int]] = [[] for _ in range(4)]
        self.next_starts: list[list[int]] = [[] for _ in range(4)]
        for match in _WHITESPACE.finditer(text):
            candidate = self._classify(*match.span())
            if candidate is not None and match.start() > 0:
                kind, next_start = candidate
                self.cuts[kind].append(match.start())
                self.next_starts[kind].append(next_start)

    def chunks(self, start: int) -> list[str]:
        text = self.text
        chunks: list[str] = []
        while start < len(text):
            prefix, end, next_start, suffix = self._fit(start)
            body = text[start:end]
            if body.isspace():
                # Only an indentation longer than the whole budget gets here: drop it.
                match = _WHITESPACE.match(text, start)
                start = match.end() if match else end
                continue
            chunks.append(prefix + body + suffix)
            start = next_start
        return chunks

    def _line_at(self, pos: int) -> _Line:
        return self.lines[bisect_right(self.line_starts, pos) - 1]

    def _fit(self, start: int) -> tuple[str, int, int, str]:
        """Choose (prefix, body end, next start, suffix) for the chunk that starts at `start`."""
        line = self._line_at(start)
        fence = line.before if start == line.start else line.inside
        prefix = _reopen_marker(fence, self.limit) if fence else ""
        reserve = 0
        # The closing marker depends on where the body ends, so shrink the budget until it fits;
        # `reserve` only grows, so this ends.
        while (budget := self.limit - len(prefix) - reserve) >= 1:
            end, next_start = self._find_cut(start, budget)
            still_open = _unclosed_fence(prefix + self.text[start:end])
            suffix = f"\n{still_open.fence}" if still_open else ""
            if len(suffix) <= reserve:
                return prefix, end, next_start, suffix
            reserve = len(suffix)
        # The markers cannot fit in this limit: a plain cut keeps at least the size guarantee.
        end, next_start = self._find_cut(start, self.limit)
        return "", end, next_start, ""

    def _find_cut(self, start: int, budget: int) -> tuple[int, int]:
        """Where the body starting at `start` ends and where the next body starts."""
        if len(self.text) - start <= budget:
            return len(self.text), len(self.text)
        window_end = start + budget
        # A boundary in the first half of the window would waste most of a message; take the
        # best kind that falls in the second half, else the best kind anywhere, else cut hard.
        half = start + budget // 2
        fallback: tuple[int, int] | None = None
        for cuts, next_starts in zip(self.cuts, self.next_starts, strict=True):
            index = bisect_right(cuts, window_end) - 1
            if index < 0 or cuts[index] <= start:
                continue  # none in the window (a cut at `start` would leave an empty body)
            if cuts[index] >= half:
                return cuts[index], next_starts[index]
            fallback = fallback or (cuts[index], next_starts[index])
        return fallback or (window_end, window_end)

    def _classify(self, cut: int, run_end: int) -> tuple[int, int] | None:
        """Kind of the split at whitespace text[cut:run_end] and where the next body starts."""
        text = self.text
        last_newline = text.rfind("\n", cut, run_end)
        if last_newline == -1:
            if self._ends_sentence(cut) and self._line_at(cut).inside is None:
                return _SENTENCE, run_end
            return _WORD, run_end
        # Keep the next line's indentation: it matters in code and in nested lists.
        next_start = last_newline + 1
        before, after = self._line_at(cut), self._line_at(next_start)
        if before.opens or after.closes:
            return None  # would leave an empty code block on one side
        if before.closes or after.opens:
            return _PARAGRAPH, next_start
        if after.before is None and text.count("\n", cut, run_end) >= 2:
            return _PARAGRAPH, next_start
        return _LINE, next_start

    def _ends_sentence(self, cut: int) -> bool:
        pos = cut - 1
        while pos > 0 and self.text[pos] in _AFTER_SENTENCE_END:
            pos -= 1
        return self.text[pos] in _SENTENCE_END


def split_message(text: str, limit: int = DISCORD_MESSAGE_LIMIT) -> list[str]:
    """Split `text` into non-blank chunks of at most `limit` characters, preferring to cut at a
    blank line, then a line end, a sentence end, a space, and only then inside a word.

    A code block that has to be cut is closed at the end of one chunk ("\\n```") and reopened at
    the start of the next ("```python\\n"); these markers count toward the limit. Fences are
    CommonMark's (``` or ~~~, three or more, on their own line); a block left open at the end of
    the text is closed. Markers are only added while they take at most three quarters of
    `limit`; a longer info string is shortened to its first word, then dropped.

    Guarantee: "\\r\\n" becomes "\\n"; then, with the added markers removed, the chunks in order
    are the text with only whitespace removed, and only at the split points and at the two ends
    of the text. Precisely, the normalized text equals w0 + b1 + w1 + b2 + ... + bn + wn where
    b_i is chunk i without its markers and every w_i is whitespace (possibly empty). A split
    drops the whitespace run it falls in except the indentation of the next line; a split inside
    a word drops nothing. Lengths are in code points, as `len` counts them.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    text = text.replace("\r\n", "\n").rstrip()
    first = _WHITESPACE.match(text)
    if not text:
        return []
    # Leading blank lines go; the first line keeps its indentation.
    start = text.rfind("\n", 0, first.end()) + 1 if first else 0
    if len(text) - start <= limit and _unclosed_fence(text) is None:
        return [text[start:]]  # the usual short answer: skip classifying split points
    return _Splitter(text, limit).chunks(start)
