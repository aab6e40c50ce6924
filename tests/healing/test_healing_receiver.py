"""HealReceiver decisions and background jobs, with fake actions and a fake clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from bot.healing import receiver as receiver_module
from bot.healing.actions import HEAL_ACTIONS, ActionRegistry, ActionResult
from bot.healing.payload import Alert, WebhookPayload, parse_payload
from bot.healing.receiver import (
    HEAL_OUTCOMES,
    IGNORE_REASONS,
    HealReceiver,
    ReceiverClosedError,
    SubmitSummary,
)
from bot.healing.testing import ConcurrencyProbe, RecordingAction, sample_alert, sample_body
from tests.fakes import FakeClock

INSTANCE = "127.0.0.1:9464"


class Harness:
    def __init__(self, **kwargs: Any) -> None:
        self.clock = FakeClock(1_714_557_600.0)
        self.actions = {name: RecordingAction(name) for name in HEAL_ACTIONS}
        self.receiver = HealReceiver(
            ActionRegistry(self.actions.values()), instance=INSTANCE, clock=self.clock, **kwargs
        )
        self.receiver.start()

    def submit(self, *alerts: dict[str, Any]) -> SubmitSummary:
        return self.receiver.submit(payload(*alerts))

    def count(self, action: str, outcome: str) -> int:
        return self.receiver.stats.actions_total[(action, outcome)]


def payload(*alerts: dict[str, Any]) -> WebhookPayload:
    return parse_payload(sample_body(*alerts))


def firing(fingerprint: str = "fp1", heal: str | None = "memory", **kwargs: Any) -> dict[str, Any]:
    return sample_alert(fingerprint=fingerprint, heal=heal, **kwargs)


def resolved(fingerprint: str = "fp1", heal: str = "memory", **kwargs: Any) -> dict[str, Any]:
    return sample_alert(fingerprint=fingerprint, heal=heal, status="resolved", **kwargs)


def decisions(summary: SubmitSummary) -> list[str]:
    return [d.decision for d in summary.decisions]


async def settle() -> None:
    # Lets freshly created job tasks reach their first await; no wall-clock waiting.
    for _ in range(10):
        await asyncio.sleep(0)


async def test_all_label_combinations_start_at_zero() -> None:
    stats = Harness().receiver.stats
    assert set(stats.actions_total) == {(a, o) for a in HEAL_ACTIONS for o in HEAL_OUTCOMES}
    assert set(stats.actions_total.values()) == {0}
    assert stats.alerts_ignored_total == dict.fromkeys(IGNORE_REASONS, 0)
    assert stats.last_success_timestamp == dict.fromkeys(HEAL_ACTIONS, 0.0)
    assert stats.webhook_requests_total[202] == 0
    assert (stats.active_heals, stats.queued_jobs, stats.running_jobs) == (0, 0, 0)


async def test_firing_alert_applies_its_action() -> None:
    h = Harness()
    summary = h.submit(firing())
    assert decisions(summary) == ["apply"]
    assert summary.http_status == 202
    assert summary.queued == 1
    await h.receiver.join()
    assert h.actions["memory"].calls == [("apply", "fp1")]
    assert h.count("memory", "ok") == 1
    assert h.receiver.stats.last_success_timestamp["memory"] == h.clock.now
    assert h.receiver.stats.active_heals == 1
    assert [(e.action, e.outcome) for e in h.receiver.events] == [
        ("memory", "queued"),
        ("memory", "ok"),
    ]
    assert "bytes_freed=1024" in h.receiver.events[-1].detail


async def test_summary_json() -> None:
    h = Harness()
    data = h.submit(firing(), firing("fp2", heal=None)).to_json()
    assert data == {
        "queued": 1,
        "decisions": [
            {"fingerprint": "fp1", "status": "firing", "action": "memory", "decision": "apply",
             "detail": ""},
            {"fingerprint": "fp2", "status": "firing", "action": None, "decision": "ignored",
             "detail": "no_heal_label"},
        ],
    }  # fmt: skip
    await h.receiver.join()


async def test_scope_other_instances_and_unlabelled_alerts() -> None:
    h = Harness()
    summary = h.submit(
        firing("a", instance="10.0.0.7:9464"),
        firing("b", heal=None),
        firing("c", heal="reboot"),
        firing("d", heal="disk", instance=None),
        firing("e", heal="queue"),
    )
    assert decisions(summary) == ["ignored", "ignored", "ignored", "apply", "apply"]
    assert [d.detail for d in summary.decisions[:3]] == [
        "other_instance",
        "no_heal_label",
        "unknown_action",
    ]
    await h.receiver.join()
    ignored = h.receiver.stats.alerts_ignored_total
    assert ignored == {
        "other_instance": 1,
        "no_heal_label": 1,
        "unknown_action": 1,
        "not_applied": 0,
    }
    assert h.actions["memory"].calls == []
    assert h.actions["disk"].calls == [("apply", "d")]
    assert h.actions["queue"].calls == [("apply", "e")]


async def test_duplicate_deliveries_run_the_action_once() -> None:
    h = Harness(cooldown_s=0)
    for _ in range(3):
        h.submit(firing())
    # A later group notification repeats the alert alongside a new one.
    summary = h.submit(firing(), firing("fp2", heal="disk"))
    assert decisions(summary) == ["duplicate", "apply"]
    await h.receiver.join()
    assert h.actions["memory"].calls == [("apply", "fp1")]
    assert h.count("memory", "duplicate") == 3
    assert h.count("memory", "ok") == 1


async def test_cooldown_per_action() -> None:
    h = Harness(cooldown_s=300)
    h.submit(firing("fp1"))
    h.clock.now += 299
    summary = h.submit(firing("fp2"), firing("fp3", heal="disk"))
    assert decisions(summary) == ["cooldown", "apply"]
    assert "cooldown is 300s" in summary.decisions[0].detail
    h.clock.now += 1
    assert decisions(h.submit(firing("fp2"))) == ["apply"]
    await h.receiver.join()
    assert h.actions["memory"].calls == [("apply", "fp1"), ("apply", "fp2")]
    assert h.count("memory", "cooldown") == 1


async def test_a_cooled_down_alert_is_applied_on_its_next_notification() -> None:
    h = Harness(cooldown_s=60)
    h.submit(firing("fp1"))
    assert decisions(h.submit(firing("fp2"))) == ["cooldown"]
    h.clock.now += 60
    # The same notification again (Alertmanager's repeat): not a duplicate, it never ran.
    assert decisions(h.submit(firing("fp2"))) == ["apply"]
    await h.receiver.join()


async def test_resolved_reverts_exactly_once() -> None:
    h = Harness()
    h.submit(firing())
    await h.receiver.join()
    assert decisions(h.submit(resolved())) == ["revert"]
    assert decisions(h.submit(resolved())) == ["duplicate"]
    # A different resolved notification for the same alert: nothing active any more.
    assert decisions(h.submit(resolved(starts_at="2024-05-01T11:00:00Z"))) == ["ignored"]
    await h.receiver.join()
    assert h.actions["memory"].calls == [("apply", "fp1"), ("revert", "fp1")]
    assert h.count("memory", "reverted") == 1
    assert h.receiver.stats.active_heals == 0
    assert h.receiver.stats.alerts_ignored_total["not_applied"] == 1


async def test_resolved_without_apply_is_ignored() -> None:
    h = Harness()
    summary = h.submit(resolved())
    assert decisions(summary) == ["ignored"]
    assert summary.decisions[0].detail == "not_applied"
    await h.receiver.join()
    assert h.actions["memory"].calls == []


async def test_resolve_while_apply_runs_reverts_after_it() -> None:
    h = Harness()
    gate = h.actions["memory"].gate = asyncio.Event()
    h.submit(firing())
    await h.actions["memory"].started.wait()
    assert decisions(h.submit(resolved())) == ["revert"]
    await settle()
    assert h.actions["memory"].calls == [("apply", "fp1")]
    gate.set()
    await h.receiver.join()
    assert h.actions["memory"].calls == [("apply", "fp1"), ("revert", "fp1")]
    assert h.actions["memory"].own.highest == 1


async def test_failed_apply_is_counted_and_retried_on_repeat() -> None:
    h = Harness(cooldown_s=0)
    h.actions["memory"].fail = True
    h.submit(firing())
    await h.receiver.join()
    assert h.count("memory", "failed") == 1
    assert h.receiver.stats.last_success_timestamp["memory"] == 0.0
    assert h.receiver.events[-1].detail == "apply: fake failure"
    h.actions["memory"].fail = False
    assert decisions(h.submit(firing())) == ["apply"]
    await h.receiver.join()
    assert h.count("memory", "ok") == 1
    # Still reverted on resolve: a failed apply may have half-applied.
    assert decisions(h.submit(resolved())) == ["revert"]
    await h.receiver.join()


class BrokenAction:
    name = "disk"

    async def apply(self, alert: Alert) -> ActionResult:
        raise OSError("disk is read-only")

    async def revert(self, alert: Alert) -> ActionResult:
        return ActionResult.success()


class HangingAction:
    name = "queue"

    async def apply(self, alert: Alert) -> ActionResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def revert(self, alert: Alert) -> ActionResult:
        return ActionResult.success()


async def test_exceptions_and_timeouts_are_failures() -> None:
    receiver = HealReceiver(
        ActionRegistry([BrokenAction(), HangingAction()]), instance=INSTANCE, action_timeout_s=0.05
    )
    receiver.start()
    receiver.submit(payload(firing("a", heal="disk"), firing("b", heal="queue")))
    await receiver.join()
    assert receiver.stats.actions_total[("disk", "failed")] == 1
    assert receiver.stats.actions_total[("queue", "failed")] == 1
    details = {e.action: e.detail for e in receiver.events if e.outcome == "failed"}
    assert details == {
        "disk": "apply: OSError: disk is read-only",
        "queue": "apply: timed out after 0.05s",
    }


async def test_escalation_after_n_applications_without_resolve() -> None:
    exits: list[None] = []
    h = Harness(cooldown_s=0, escalate_after=3, on_escalation_exit=lambda: exits.append(None))
    for minute in range(3):
        # The alert resolves and fires again inside one group interval: new startsAt, no resolve.
        summary = h.submit(firing(starts_at=f"2024-05-01T10:0{minute}:00Z"))
        assert decisions(summary) == ["apply"]
        await h.receiver.join()
    for minute in range(3, 5):
        summary = h.submit(firing(starts_at=f"2024-05-01T10:0{minute}:00Z"))
        assert decisions(summary) == ["escalated"]
        assert "ran 3 times" in summary.decisions[0].detail
    await h.receiver.join()
    assert len(h.actions["memory"].calls) == 3
    assert h.count("memory", "escalated") == 2
    assert exits == []  # exit_on_escalation is off by default
    # Resolving ends the streak: the next firing runs again.
    assert decisions(h.submit(resolved(starts_at="2024-05-01T10:02:00Z"))) == ["revert"]
    assert decisions(h.submit(firing(starts_at="2024-05-01T10:09:00Z"))) == ["apply"]
    await h.receiver.join()


async def test_escalation_exit_is_requested_once_when_enabled() -> None:
    exits: list[None] = []
    h = Harness(
        cooldown_s=0,
        escalate_after=1,
        exit_on_escalation=True,
        on_escalation_exit=lambda: exits.append(None),
    )
    h.submit(firing(starts_at="2024-05-01T10:00:00Z"))
    assert exits == []
    h.submit(firing(starts_at="2024-05-01T10:01:00Z"))
    h.submit(firing(starts_at="2024-05-01T10:02:00Z"))
    h.submit(firing("fp2", starts_at="2024-05-01T10:00:00Z"))
    h.submit(firing("fp2", starts_at="2024-05-01T10:01:00Z"))
    assert exits == [None]
    await h.receiver.join()


async def test_escalation_exit_needs_a_callback() -> None:
    with pytest.raises(ValueError, match="on_escalation_exit"):
        HealReceiver(ActionRegistry(), instance=INSTANCE, exit_on_escalation=True)


async def test_global_concurrency_limit() -> None:
    probe = ConcurrencyProbe()
    gate = asyncio.Event()
    h = Harness(max_concurrency=2)
    names = ["memory", "disk", "queue", "api_health"]
    for name in names:
        h.actions[name].gate = gate
        h.actions[name].probe = probe
    summary = h.submit(*(firing(f"fp-{name}", heal=name) for name in names))
    assert summary.queued == 4
    await h.actions["memory"].started.wait()
    await h.actions["disk"].started.wait()
    await settle()
    assert probe.current == 2
    assert h.receiver.stats.running_jobs == 2
    assert h.receiver.stats.queued_jobs == 2
    gate.set()
    await h.receiver.join()
    assert probe.highest == 2
    assert all(h.actions[name].calls for name in names)


async def test_same_action_never_runs_twice_at_once() -> None:
    gate = asyncio.Event()
    h = Harness(cooldown_s=0, max_concurrency=4)
    memory = h.actions["memory"]
    memory.gate = gate
    h.submit(firing("fp1"), firing("fp2"), firing("fp3"), firing("fp4", heal="disk"))
    await memory.started.wait()
    await h.actions["disk"].started.wait()  # another action still gets a slot
    await settle()
    assert memory.own.current == 1
    gate.set()
    await h.receiver.join()
    assert memory.own.highest == 1
    assert [fp for _, fp in memory.calls] == ["fp1", "fp2", "fp3"]


async def test_full_backlog_rejects_without_remembering() -> None:
    gate = asyncio.Event()
    h = Harness(max_pending=1)
    h.actions["memory"].gate = gate
    summary = h.submit(firing("fp1"), firing("fp2", heal="disk"))
    assert decisions(summary) == ["apply", "rejected"]
    assert summary.http_status == 503
    assert h.count("disk", "rejected") == 1
    gate.set()
    await h.receiver.join()
    # Alertmanager's retry of the same notification: fp1 is a duplicate, fp2 runs now.
    summary = h.submit(firing("fp1"), firing("fp2", heal="disk"))
    assert decisions(summary) == ["duplicate", "apply"]
    assert summary.http_status == 202
    await h.receiver.join()
    assert h.actions["disk"].calls == [("apply", "fp2")]


async def test_dedup_memory_is_bounded() -> None:
    h = Harness(cooldown_s=0, dedup_capacity=2)
    for fingerprint in ("fp1", "fp2", "fp3"):
        h.submit(firing(fingerprint))
    await h.receiver.join()
    assert len(h.receiver._seen) == 2
    assert len(h.receiver._alerts) == 2
    assert decisions(h.submit(firing("fp3"))) == ["duplicate"]
    assert decisions(h.submit(firing("fp1"))) == ["apply"]  # forgotten, so seen as new
    await h.receiver.join()


async def test_events_are_bounded() -> None:
    h = Harness(events_capacity=3, cooldown_s=0)
    for fingerprint in ("a", "b", "c", "d"):
        h.submit(firing(fingerprint))
    await h.receiver.join()
    assert len(h.receiver.events) == 3


async def test_submit_refused_before_start_and_after_stop() -> None:
    receiver = HealReceiver(ActionRegistry([RecordingAction("memory")]), instance=INSTANCE)
    with pytest.raises(ReceiverClosedError):
        receiver.submit(payload(firing()))
    receiver.start()
    receiver.submit(payload(firing()))
    await receiver.stop()
    assert not receiver.accepting
    with pytest.raises(ReceiverClosedError):
        receiver.submit(payload(firing("fp2", heal="disk")))


async def test_stop_waits_then_cancels_stuck_jobs() -> None:
    h = Harness()
    h.actions["memory"].gate = asyncio.Event()  # never set
    h.submit(firing(), firing("fp2", heal="disk"))
    await h.actions["memory"].started.wait()
    await h.receiver.stop(grace_s=0.05)
    assert h.count("disk", "ok") == 1
    assert h.count("memory", "failed") == 1
    assert h.receiver.events[-1].detail == "apply: cancelled at shutdown"
    assert h.receiver.stats.running_jobs == 0


async def test_a_span_per_action_run(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(receiver_module, "_tracer", provider.get_tracer("test"))
    h = Harness()
    h.actions["disk"].fail = True
    h.submit(firing(), firing("fp2", heal="disk"))
    await h.receiver.join()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"heal apply memory", "heal apply disk"}
    memory = spans["heal apply memory"]
    assert memory.attributes is not None
    assert memory.attributes["heal.outcome"] == "ok"
    assert memory.attributes["heal.bytes_freed"] == 1024.0
    assert spans["heal apply disk"].status.status_code is StatusCode.ERROR


async def test_registry_refuses_unknown_and_duplicate_names() -> None:
    registry = ActionRegistry([RecordingAction("memory")])
    with pytest.raises(ValueError, match="not one of"):
        registry.register(RecordingAction("reboot"))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(RecordingAction("memory"))
    assert "memory" in registry
    assert registry.names() == ("memory",)
    assert len(registry) == 1


async def test_streaks_count_recoveries_and_escalations_once_each() -> None:
    # The recovery rate's counts (llmbot_heal_streaks_total): one per streak, by how it ended.
    h = Harness(cooldown_s=0, escalate_after=2)
    assert set(h.receiver.stats.streaks_total.values()) == {0}
    streaks = h.receiver.stats.streaks_total

    # Applied twice (a repeat after the cooldown), then resolved: one recovery.
    h.submit(firing("fp1", starts_at="2024-05-01T10:00:00Z"))
    h.submit(firing("fp1", starts_at="2024-05-01T10:01:00Z"))
    await h.receiver.join()
    assert decisions(h.submit(resolved("fp1", starts_at="2024-05-01T10:01:00Z"))) == ["revert"]
    await h.receiver.join()
    assert streaks[("memory", "recovered")] == 1

    # Escalated (counted once, at the first refusal), then resolved: no recovery.
    for minute in range(4):
        h.submit(firing("fp2", heal="error_rate", starts_at=f"2024-05-01T11:0{minute}:00Z"))
        await h.receiver.join()
    assert h.count("error_rate", "escalated") == 2
    assert streaks[("error_rate", "escalated")] == 1
    h.submit(resolved("fp2", heal="error_rate", starts_at="2024-05-01T11:03:00Z"))
    await h.receiver.join()
    assert streaks[("error_rate", "recovered")] == 0

    # A resolve of an alert nothing was applied for is no streak.
    h.submit(resolved("fp3", starts_at="2024-05-01T12:00:00Z"))
    assert streaks[("memory", "recovered")] == 1
    assert streaks[("memory", "escalated")] == 0
