"""The heal audit: bounds, persistence through a real store, and what the receiver records for
every decision, including HEAL_ENABLED=false and HEAL_DRY_RUN=true."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bot.healing import receiver as receiver_module
from bot.healing.actions import HEAL_ACTIONS, ActionRegistry
from bot.healing.audit import HealAudit, HealEvent, safe_text
from bot.healing.payload import parse_payload
from bot.healing.receiver import HealReceiver, SubmitSummary
from bot.healing.testing import RecordingAction, sample_alert, sample_body
from bot.store import SqliteStore
from tests.fakes import FakeClock

INSTANCE = "127.0.0.1:9464"


def _entry(n: int, **fields: Any) -> HealEvent:
    return HealEvent(float(n), "memory", "ok", f"fp{n}", f"detail {n}", **fields)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "bot.db") as opened:
        yield opened


# --- safe text ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "limit", "shown"),
    [
        ("4f6a1c2b3d4e5f60", 80, "4f6a1c2b3d4e5f60"),
        ("fp\nheal memory ok (fingerprint forged)", 80, "fp\\nheal memory ok (fingerprint forged)"),
        ("a\rb\tc\x1b[31m", 80, "a\\rb\\tc\\x1b[31m"),
        ("x" * 100, 10, "x" * 9 + "…"),
        ("é ünïcode stays", 80, "é ünïcode stays"),
    ],
)
def test_safe_text_escapes_and_cuts(raw: str, limit: int, shown: str) -> None:
    assert safe_text(raw, limit) == shown
    assert "\n" not in safe_text(raw, limit)


# --- bounds and queries -------------------------------------------------------------------------


def test_the_audit_keeps_the_newest_capacity_entries() -> None:
    audit = HealAudit(3)
    for n in range(1, 6):
        audit.record(_entry(n))
    assert [e.seq for e in audit.entries] == [3, 4, 5]
    assert audit.stats.entries == 3
    assert audit.stats.capacity == 3
    assert audit.stats.recorded_total == 5
    with pytest.raises(ValueError, match="capacity"):
        HealAudit(0)


def test_query_is_newest_first_with_limit_and_since() -> None:
    audit = HealAudit(10)
    for n in range(1, 6):
        audit.record(_entry(n))
    assert [e.seq for e in audit.query()] == [5, 4, 3, 2, 1]
    assert [e.seq for e in audit.query(limit=2)] == [5, 4]
    assert [e.seq for e in audit.query(since=3.0)] == [5, 4]
    assert audit.query(since=9.0) == []


def test_entry_json_round_trip() -> None:
    entry = _entry(
        7,
        alertname="LLMBotHighMemory",
        status="firing",
        kind="apply",
        figures={"bytes_freed": 4096.0},
        by="",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        seq=7,
    )
    shown = entry.to_json()
    assert shown["at"] == "1970-01-01T00:00:07.000Z"
    assert shown["figures"] == {"bytes_freed": 4096.0}
    assert HealEvent.from_json(json.loads(entry.stored())) == entry
    for broken in ({}, {"v": 1}, {"v": 1, "seq": -1, "time": 1}, {"v": 2, "seq": 1, "time": 1}):
        with pytest.raises(ValueError, match=r"format|seq|time"):
            HealEvent.from_json(broken)


# --- persistence --------------------------------------------------------------------------------


async def test_entries_survive_a_restart_and_stay_bounded_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    async with SqliteStore(path) as store:
        audit = HealAudit(3, store=store.namespace("heal_audit"))
        for n in range(1, 6):
            audit.record(_entry(n, alertname="LLMBotHighMemory"))
        await audit.stop()
        # One key per kept entry: the two that fell out were never written or are deleted.
        assert len(await store.namespace("heal_audit").keys()) == 3
        before = [e.to_json() for e in audit.entries]

    async with SqliteStore(path) as store:
        restarted = HealAudit(3, store=store.namespace("heal_audit"))
        assert await restarted.load() == 3
        assert [e.to_json() for e in restarted.entries] == before
        # Numbering goes on after the restored entries.
        assert restarted.record(_entry(6)).seq == 6
        await restarted.flush()
        assert [e.seq for e in restarted.entries] == [4, 5, 6]
        assert len(await store.namespace("heal_audit").keys()) == 3

    async with SqliteStore(path) as store:
        # A smaller cap at the next start: the oldest go, from disk too.
        smaller = HealAudit(2, store=store.namespace("heal_audit"))
        assert await smaller.load() == 2
        assert [e.seq for e in smaller.entries] == [5, 6]
        assert len(await store.namespace("heal_audit").keys()) == 2


async def test_the_background_writer_saves_as_entries_come(store: SqliteStore) -> None:
    audit = HealAudit(10, store=store.namespace("heal_audit"))
    writer = asyncio.create_task(audit.run())
    audit.record(_entry(1))
    namespace = store.namespace("heal_audit")
    for _ in range(200):
        if await namespace.keys():
            break
        await asyncio.sleep(0.01)
    assert await namespace.keys() == ["000000000001"]
    await audit.stop()
    await writer
    assert writer.done()


async def test_an_entry_recorded_during_a_write_is_saved_by_the_next(store: SqliteStore) -> None:
    namespace = store.namespace("heal_audit")
    audit = HealAudit(10, store=namespace)
    audit.record(_entry(1))
    writing = asyncio.create_task(audit.flush())
    await asyncio.sleep(0)  # the write of entry 1 is under way (the store works in a thread)
    audit.record(_entry(2))
    await writing
    await audit.flush()
    assert await namespace.keys() == ["000000000001", "000000000002"]


async def test_unreadable_entries_are_skipped_and_removed(store: SqliteStore) -> None:
    namespace = store.namespace("heal_audit")
    await namespace.set("000000000001", b"not json")
    await namespace.set("000000000002", _entry(2, seq=2).stored())
    audit = HealAudit(10, store=namespace)
    assert await audit.load() == 1
    assert audit.stats.corrupt_total == 1
    assert await namespace.keys() == ["000000000002"]


async def test_a_failing_store_keeps_entries_in_memory_and_retries(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "bot.db")  # not open yet: every write fails
    audit = HealAudit(10, store=store.namespace("heal_audit"))
    audit.record(_entry(1))
    await audit.flush()
    assert audit.stats.persist_errors_total == 1
    assert len(audit) == 1
    async with store:
        await audit.flush()
        assert await store.namespace("heal_audit").keys() == ["000000000001"]


# --- what the receiver records -----------------------------------------------------------------


class Harness:
    def __init__(self, **kwargs: Any) -> None:
        self.clock = FakeClock(1_714_557_600.0)
        self.actions = {name: RecordingAction(name) for name in HEAL_ACTIONS}
        self.receiver = HealReceiver(
            ActionRegistry(self.actions.values()), instance=INSTANCE, clock=self.clock, **kwargs
        )
        self.receiver.start()

    def submit(self, *alerts: dict[str, Any]) -> SubmitSummary:
        return self.receiver.submit(parse_payload(sample_body(*alerts)))

    def entries(self) -> list[tuple[str | None, str, str]]:
        return [(e.action, e.outcome, e.kind) for e in self.receiver.events]

    def ran(self) -> int:
        return sum(len(action.calls) for action in self.actions.values())


async def test_every_decision_is_an_entry_with_alert_and_figures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    tracer = provider.get_tracer("test")
    monkeypatch.setattr(receiver_module, "_tracer", tracer)
    h = Harness(escalate_after=1, cooldown_s=0)
    h.actions["disk"].fail = True
    with tracer.start_as_current_span("POST /alerts") as webhook_span:
        h.submit(
            sample_alert(fingerprint="a"),
            sample_alert(fingerprint="b", instance="10.0.0.7:9464"),
            sample_alert(fingerprint="c", heal="disk", alertname="LLMBotDataDiskAlmostFull"),
        )
    await h.receiver.join()
    h.submit(sample_alert(fingerprint="a"))  # the repeat notification
    h.submit(sample_alert(fingerprint="a", starts_at="2024-05-01T11:00:00Z"))  # fires anew
    h.submit(sample_alert(fingerprint="a", status="resolved"))
    await h.receiver.join()

    assert h.entries() == [
        ("memory", "queued", "apply"),
        (None, "ignored", ""),
        ("disk", "queued", "apply"),
        ("memory", "ok", "apply"),
        ("disk", "failed", "apply"),
        ("memory", "duplicate", ""),
        ("memory", "escalated", ""),
        ("memory", "queued", "revert"),
        ("memory", "reverted", "revert"),
    ]
    events = list(h.receiver.events)
    ok = events[3]
    assert (ok.alertname, ok.fingerprint, ok.status) == ("LLMBotHighMemory", "a", "firing")
    assert ok.figures == {"bytes_freed": 1024.0}
    # Decisions and results of one notification share the webhook's trace.
    trace_id = format(webhook_span.get_span_context().trace_id, "032x")
    assert {events[i].trace_id for i in range(5)} == {trace_id}
    assert events[5].trace_id == ""  # decided outside any span
    assert events[1].detail == "other_instance: instance '10.0.0.7:9464' is not ours"
    assert events[4].alertname == "LLMBotDataDiskAlmostFull"
    assert [e.seq for e in events] == list(range(1, 10))


async def test_payload_text_is_escaped_in_entries_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    h = Harness()
    forged = "fp\nheal memory ok: forged line"
    h.submit(sample_alert(fingerprint=forged, alertname="LLMBot\nX" + "y" * 500))
    await h.receiver.join()
    for entry in h.receiver.events:
        assert entry.fingerprint == "fp\\nheal memory ok: forged line"
        assert entry.alertname.startswith("LLMBot\\nX")
        assert len(entry.alertname) <= 120
    logged = [record.getMessage() for record in caplog.records]
    assert logged and all("\n" not in message for message in logged)
    assert "forged line" in caplog.text  # shown, escaped


async def test_disabled_records_alerts_and_runs_nothing() -> None:
    h = Harness(enabled=False)
    summary = h.submit(sample_alert(fingerprint="a"), sample_alert(heal="disk", fingerprint="b"))
    assert [d.decision for d in summary.decisions] == ["disabled", "disabled"]
    assert summary.http_status == 200
    assert summary.queued == 0
    h.submit(sample_alert(fingerprint="a", status="resolved"))
    await h.receiver.join()
    assert h.ran() == 0
    assert h.entries() == [
        ("memory", "disabled", ""),
        ("disk", "disabled", ""),
        ("memory", "disabled", ""),
    ]
    assert "HEAL_ENABLED=false" in h.receiver.events[0].detail
    assert h.receiver.stats.actions_total[("memory", "disabled")] == 2
    # Other instances' alerts are still told apart.
    other = h.submit(sample_alert(instance="10.0.0.7:9464"))
    assert [d.decision for d in other.decisions] == ["ignored"]


async def test_dry_run_decides_as_usual_and_runs_nothing() -> None:
    exits: list[bool] = []
    h = Harness(
        dry_run=True,
        escalate_after=1,
        cooldown_s=0,
        exit_on_escalation=True,
        on_escalation_exit=lambda: exits.append(True),
    )
    first = h.submit(sample_alert(fingerprint="a"))
    assert [d.decision for d in first.decisions] == ["dry_run"]
    assert first.http_status == 200
    assert first.decisions[0].detail.startswith("would apply memory: ")
    assert h.submit(sample_alert(fingerprint="a")).decisions[0].decision == "duplicate"
    # It "ran" once for this streak: firing anew escalates, as a real run would, but a dry
    # run does not exit.
    again = h.submit(sample_alert(fingerprint="a", starts_at="2024-05-01T11:00:00Z"))
    assert again.decisions[0].decision == "escalated"
    assert exits == []
    resolved = h.submit(sample_alert(fingerprint="a", status="resolved"))
    assert resolved.decisions[0].detail == "would revert memory"
    await h.receiver.join()
    assert h.ran() == 0
    assert h.receiver.stats.active_heals == 0
    assert h.receiver.stats.last_success_timestamp["memory"] == 0.0
    assert h.receiver.stats.actions_total[("memory", "dry_run")] == 2
    assert h.receiver.stats.actions_total[("memory", "ok")] == 0
    assert h.entries() == [
        ("memory", "dry_run", "apply"),
        ("memory", "duplicate", ""),
        ("memory", "escalated", ""),
        ("memory", "dry_run", "revert"),
    ]


async def test_dry_run_by_hand_records_and_runs_nothing() -> None:
    h = Harness(dry_run=True)
    event = await h.receiver.run_by_hand("response_time", by="alice")
    assert (event.outcome, event.kind, event.by) == ("dry_run", "apply", "alice")
    assert event.detail.startswith("would apply response_time by hand (alice)")
    assert h.ran() == 0
    assert h.receiver.active() == []
