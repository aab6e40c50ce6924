"""The line that opens a reply to a question found by the restart catch-up."""

from __future__ import annotations

from bot.chat.models import (
    IncomingMessage,
    MessageTarget,
    Reply,
    message_from_payload,
    message_to_payload,
)
from bot.chat.pipeline import CAUGHT_UP_NOTE, with_late_note


def test_the_note_opens_the_first_chunk() -> None:
    reply = with_late_note(Reply(("answer", "more"), "answer"))
    assert reply.chunks == (f"{CAUGHT_UP_NOTE}\nanswer", "more")
    assert reply.kind == "answer"


def test_a_full_first_chunk_gets_the_note_as_a_chunk_of_its_own() -> None:
    full = "x" * 1990
    reply = with_late_note(Reply((full,), "answer"))
    assert reply.chunks == (CAUGHT_UP_NOTE, full)
    assert all(len(chunk) <= 2000 for chunk in reply.chunks)


def test_a_queued_caught_up_question_stays_caught_up() -> None:
    msg = IncomingMessage(1, 2, 3, 4, "ada", "hi", MessageTarget(2, 1), caught_up=True)
    assert message_from_payload(message_to_payload(msg)).caught_up
    payload = message_to_payload(msg)
    del payload["caught_up"]  # queued by a bot from before catch-up
    assert not message_from_payload(payload).caught_up
