"""After a restart: finish what the journal (`bot.store.answered`) says was in flight.

Each unfinished record ends in exactly one way (`llmbot_resumed_questions_total{outcome}`):

- `delivering`: the final reply was recorded but maybe not sent: `resent` with its nonce
  (Discord returns the first message if it had got it), `found` when it is older than the
  nonce window and the channel already holds the bot's reply to the question (nothing sent),
  or `failed` when it cannot be sent now (left in the journal for the next start);
- `accepted` or `queued` but not in the queue (the process died while answering it):
  `requeued` to be answered by the queue worker through the normal pipeline, or `told` ("I
  restarted and couldn't keep your question") when it is older than the queue's maximum age or
  the queue refuses it;
- `queued` and in the queue: nothing to do, the queue answers it (a question that arrived
  while the last run drained is `queued` in the journal only: re-queued as above).

Only the records the last run left (`AnswerLedger.from_last_run`) are resumed: one this process
claimed before the resume ran (a live message, a catch-up's) is being answered already.

A record whose streamed answer had posted messages (`Record.streamed`) gets its final reply in
those messages (edited, `DiscordPort.replace_messages`), never beside them.

While running, `resend_undelivered` does the same for final replies Discord refused for longer
than the hold waits (the app calls it every minute while the Discord breaker is not open).
"""

from __future__ import annotations

import logging

from bot.chat.pipeline import ChatPipeline
from bot.resilience.queue import MessageQueue
from bot.store.answered import AnswerLedger, Record

__all__ = ["resend_undelivered", "resume_unfinished"]

log = logging.getLogger(__name__)

# Discord deduplicates an enforced nonce for "a few minutes": trusted this long; an older
# interrupted reply is looked for in the channel before it is sent again.
NONCE_TRUSTED_S = 120.0


async def resume_unfinished(
    pipeline: ChatPipeline, ledger: AnswerLedger, queue: MessageQueue
) -> int:
    """Resume every unfinished record (after `queue.load()`; it may run beside the queue
    worker, the record's guards keep each reply single); returns how many needed something."""
    in_queue = {_message_id(item.payload) for item in queue.items}
    resumed = 0
    for record in ledger.unfinished():
        if ledger.is_final(record.message_id):
            continue  # finished meanwhile (the queue worker runs beside this)
        if not ledger.from_last_run(record.message_id):
            continue  # claimed by this process (live, or its catch-up): being answered
        if record.state == "delivering" and record.reply is not None:
            resumed += 1
            if await _given_up(ledger, record):
                continue
            if await _found(pipeline, ledger, record):
                ledger.count_resumed("found")
                continue
            sent = await pipeline.resend(record)
            ledger.count_resumed("resent" if sent else "failed")
            continue
        if record.message_id in in_queue:
            await ledger.queued(record.message_id)
            continue
        resumed += 1
        if record.payload is None:
            # Nobody to answer or tell (a record written without its question): close it.
            await ledger.finish(record.message_id, "notified")
            ledger.count_resumed("failed")
            continue
        if queue.now() - record.at < queue.max_age_s:
            pushed = await queue.push(record.payload, reason="restart", delay_s=0)
            if pushed.evicted is not None:
                await pipeline.notify_dropped(pushed.evicted.payload, "overflow")
            if pushed.accepted:
                await ledger.queued(record.message_id)
                ledger.count_resumed("requeued")
                continue
        await pipeline.notify_dropped(record.payload, "shutdown")
        ledger.count_resumed("told" if ledger.is_final(record.message_id) else "failed")
    if resumed:
        log.info("resumed %d questions that were in flight when the bot stopped", resumed)
    return resumed


async def resend_undelivered(pipeline: ChatPipeline, ledger: AnswerLedger) -> int:
    """Send again the final replies Discord refused while the bot runs (a 5xx outlasting the
    hold): the answer was paid for, so it is kept, not thrown away. Returns how many went out."""
    sent = 0
    for record in ledger.undelivered():
        if await _given_up(ledger, record):
            continue
        if await _found(pipeline, ledger, record) or await pipeline.resend(record, count=False):
            sent += 1
    if sent:
        log.info("delivered %d replies that Discord had refused earlier", sent)
    return sent


async def _given_up(ledger: AnswerLedger, record: Record) -> bool:
    """A reply undelivered for longer than answered ids are remembered is given up (counted
    `failed`, logged), so that the journal never keeps one for ever (a deleted channel)."""
    if ledger.now() - record.at <= ledger.ttl_s:
        return False
    log.warning("giving up a reply Discord has not taken for %.0f s", ledger.now() - record.at)
    await ledger.finish(record.message_id, "notified")
    ledger.count_resumed("failed")
    return True


async def _found(pipeline: ChatPipeline, ledger: AnswerLedger, record: Record) -> bool:
    """Past the nonce window a re-send could post a second copy: look in the channel first."""
    if record.streamed:
        return False  # the streamed messages are the reply so far: edited to the final text
    return ledger.now() - record.at > NONCE_TRUSTED_S and await pipeline.already_replied(record)


def _message_id(payload: dict[str, object]) -> int | None:
    value = payload.get("message_id")
    return value if isinstance(value, int) else None
