"""HealReceiver.run_by_hand (the /heal run and /heal undo commands) and the /heal status text."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from bot.discord.commands import heal_status_text
from bot.healing.actions import ActionRegistry
from bot.healing.payload import parse_payload
from bot.healing.receiver import HealEvent, HealReceiver, ManualRunError, ReceiverClosedError
from bot.healing.testing import RecordingAction, sample_alert, sample_body

INSTANCE = "127.0.0.1:9464"


@dataclass
class OneShot(RecordingAction):
    """A clean-up: nothing stays applied."""

    lasting: bool = False


class Clock:
    def __init__(self) -> None:
        self.now = 1_714_557_600.0

    def __call__(self) -> float:
        return self.now


def _receiver(*actions: RecordingAction, clock: Clock | None = None) -> HealReceiver:
    receiver = HealReceiver(
        ActionRegistry(actions), instance=INSTANCE, clock=clock or Clock(), cooldown_s=300
    )
    receiver.start()
    return receiver


async def test_a_one_shot_run_is_counted_like_an_alerts_and_holds_nothing() -> None:
    memory = OneShot("memory")
    receiver = _receiver(memory)

    event = await receiver.run_by_hand("memory", by="alice")

    assert memory.calls == [("apply", "manual:memory")]
    assert event.outcome == "ok"
    assert event.detail == "apply by hand (alice): fake apply; bytes_freed=1024"
    assert receiver.events[-1] is event
    assert receiver.stats.actions_total[("memory", "ok")] == 1
    assert receiver.stats.last_success_timestamp["memory"] == Clock().now
    assert receiver.active() == []
    assert receiver.cooldowns() == {}  # no alert cooldown started
    with pytest.raises(ManualRunError, match="one-shot clean-up"):
        await receiver.run_by_hand("memory", undo=True)


async def test_a_lasting_run_stays_until_undone_by_hand() -> None:
    reduced = RecordingAction("response_time")
    receiver = _receiver(reduced)

    await receiver.run_by_hand("response_time", by="alice")
    (held,) = receiver.active()
    assert (held.action, held.by_hand, held.fingerprint) == (
        "response_time",
        True,
        "manual:response_time",
    )
    assert receiver.stats.active_heals == 1

    undone = await receiver.run_by_hand("response_time", undo=True, by="bob")
    assert undone.outcome == "reverted"
    assert undone.detail.startswith("revert by hand (bob): fake revert")
    assert reduced.calls == [("apply", "manual:response_time"), ("revert", "manual:response_time")]
    assert receiver.active() == []
    assert receiver.stats.actions_total[("response_time", "reverted")] == 1
    with pytest.raises(ManualRunError, match="was not applied by hand"):
        await receiver.run_by_hand("response_time", undo=True)


async def test_an_alerts_heal_is_not_undone_by_hand() -> None:
    receiver = _receiver(RecordingAction("error_rate"))
    receiver.submit(parse_payload(sample_body(sample_alert(heal="error_rate", fingerprint="fp9"))))
    await receiver.join()

    with pytest.raises(ManualRunError, match="undone when the alert resolves"):
        await receiver.run_by_hand("error_rate", undo=True)
    (active,) = receiver.active()
    assert (active.action, active.fingerprint, active.by_hand) == ("error_rate", "fp9", False)


async def test_a_failed_run_is_counted_as_failed() -> None:
    receiver = _receiver(RecordingAction("disk", fail=True))

    event = await receiver.run_by_hand("disk")

    assert event.outcome == "failed"
    assert "an operator" in event.detail
    assert receiver.stats.actions_total[("disk", "failed")] == 1


async def test_runs_by_hand_wait_for_the_actions_lock() -> None:
    gate = asyncio.Event()
    queue = RecordingAction("queue", gate=gate)
    receiver = _receiver(queue)
    first = asyncio.create_task(receiver.run_by_hand("queue"))
    await queue.started.wait()
    second = asyncio.create_task(receiver.run_by_hand("queue"))
    await asyncio.sleep(0.01)
    assert queue.own.highest == 1
    assert receiver.stats.running_jobs == 1
    assert receiver.stats.queued_jobs == 1
    gate.set()
    await asyncio.gather(first, second)
    assert queue.own.highest == 1
    assert receiver.stats.actions_total[("queue", "ok")] == 2


async def test_refusals_run_nothing() -> None:
    receiver = _receiver(RecordingAction("memory"))
    with pytest.raises(ManualRunError, match="no heal action 'disk'"):
        await receiver.run_by_hand("disk")
    await receiver.stop()
    with pytest.raises(ReceiverClosedError):
        await receiver.run_by_hand("memory")
    assert not receiver.events


async def test_status_text_lists_heals_in_force_cooldowns_and_events() -> None:
    clock = Clock()
    receiver = _receiver(RecordingAction("error_rate"), OneShot("memory"), clock=clock)
    assert "In force: nothing" in heal_status_text(receiver, clock.now)
    assert "no heal events yet" in heal_status_text(receiver, clock.now)

    receiver.submit(
        parse_payload(sample_body(sample_alert(heal="error_rate", fingerprint="abcdef1234567890")))
    )
    await receiver.join()
    clock.now += 60
    await receiver.run_by_hand("memory", by="alice")
    text = heal_status_text(receiver, clock.now)

    assert text.startswith(f"**Self-healing** on `{INSTANCE}` (alert cooldown 5m 00s)")
    assert "• `error_rate` since <t:1714557600:R> (alert abcdef123456, applied 1×)" in text
    assert "Cooldowns: `error_rate` 4m 00s" in text
    lines = text.splitlines()
    heading = "Recent (newest first; 3 of at most 100 kept, all in `GET /heal/audit`):"
    recent = lines[lines.index(heading) + 1 :]
    assert recent == [
        "<t:1714557660:T> `memory` **ok** — apply by hand (alice): fake apply; bytes_freed=1024",
        "<t:1714557600:T> `error_rate` **ok** LLMBotHighMemory — apply: fake apply; "
        "bytes_freed=1024",
    ]  # "queued" decisions are left out: their results follow; an alert's entry names it


async def test_status_text_fits_a_discord_message() -> None:
    receiver = _receiver(OneShot("memory"))
    receiver.events.extend(
        HealEvent(float(n), "memory", "failed", "f", "x" * 500) for n in range(30)
    )
    text = heal_status_text(receiver)
    assert len(text) <= 2000
    assert 1 <= text.count("\n<t:") <= 10
    assert "<t:29:T>" in text  # newest first
