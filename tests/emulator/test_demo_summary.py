"""The demo's closing line counts a queued notice as queued, not answered, and names the users
who were told their question could not be answered (issue #17 part 4)."""

from __future__ import annotations

from bot.demo import summarise
from bot.emulator.traffic import TurnRecord

QUEUED = (
    "I've reached my minute request limit for the model, so your question is queued (position 1)."
)
EXPIRED = "Sorry, I couldn't get to your question in time. Please ask again."
COOLDOWN = "You're going a bit fast: try again in 3 seconds."


def _turn(message_id: int | None, first: str | None, user: str = "u") -> TurnRecord:
    return TurnRecord("dm", "DM", user, "q", first, 1, 0.5, message_id)


def test_queued_answered_later_expired_and_still_waiting_are_told_apart() -> None:
    replies = {
        1: ["You said: q"],
        2: [QUEUED, "You said: q"],
        3: [QUEUED, EXPIRED],
        4: [QUEUED],
        6: [COOLDOWN],
        7: [QUEUED, "You said: q"],  # the first reply came after the turn's timeout
    }
    turns = [
        _turn(1, "You said: q"),
        _turn(2, QUEUED),
        _turn(3, QUEUED, user="carol"),
        _turn(4, QUEUED),
        _turn(None, "You said: a slash question"),
        _turn(5, None),
        _turn(6, COOLDOWN, user="dave"),
        _turn(7, None),
    ]

    summary = summarise(turns, lambda mid: replies.get(mid, []))

    assert (summary.answered, summary.answered_later) == (4, 2)
    assert (summary.queued, summary.notices, summary.unanswered) == (1, 2, 1)
    assert summary.told == ["carol in DM: " + EXPIRED, "dave in DM: " + COOLDOWN]
    assert summary.text() == (
        "4 answered, 2 of them later from the queue; 1 still queued; "
        "2 told they could not be answered; 1 without a reply"
    )
