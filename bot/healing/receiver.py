"""Decides what to do with each alert of a webhook notification; runs the heals in the background.

`submit()` is synchronous and fast: the webhook answers 202 as soon as the decisions are made,
while each accepted job runs in its own task, one at a time per action and at most
`max_concurrency` at once. Decisions, in order:

- ignored: another instance's alert, no `heal` label, an unknown action, or a resolved alert
  whose action never ran here;
- duplicate: the same fingerprint + startsAt + action + status was seen (a repeat notification,
  an Alertmanager retry, or the other member of an HA pair);
- escalated: the action already ran `escalate_after` times for this alert without a resolve;
- cooldown: the action was applied less than `cooldown_s` ago (firing alerts only);
- rejected: the job backlog is full; the webhook answers 503 so that Alertmanager retries, and
  nothing about the alert is remembered, so the retry is decided afresh;
- disabled: self-healing is off (HEAL_ENABLED=false): the alert is recorded, nothing runs;
- apply / revert: queued; with `dry_run` (HEAL_DRY_RUN) recorded as `dry_run` with what would
  have run instead, the receiver's own bookkeeping (dedup, cooldown, escalation) kept as if it
  had, so the audit shows what a real run would decide.

Every decision and job result goes to the audit (`bot.healing.audit`), with the alert's name,
fingerprint, the trace id, and the action's figures.

`run_by_hand()` runs an action once for an operator (the `/heal run` slash command) through
the same locks, slots, timeout, counters and events. A lasting action applied by hand stays
in force until `run_by_hand(..., undo=True)`; alerts resolving never undo it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

from opentelemetry import trace
from opentelemetry.trace import StatusCode

from bot.healing.actions import HEAL_ACTIONS, ActionRegistry, ActionResult, HealAction
from bot.healing.audit import (
    DETAIL_CHARS,
    FINGERPRINT_CHARS,
    NAME_CHARS,
    HealAudit,
    HealEvent,
    bounded_figures,
    safe_text,
)
from bot.healing.payload import Alert, AlertStatus, WebhookPayload

__all__ = [
    "HAND_FINGERPRINT_PREFIX",
    "HEAL_LABEL",
    "HEAL_OUTCOMES",
    "HEAL_STREAK_RESULTS",
    "IGNORE_REASONS",
    "INSTANCE_LABEL",
    "WEBHOOK_CODES",
    "ActiveHeal",
    "AlertDecision",
    "Decision",
    "HealEvent",
    "HealReceiver",
    "HealStats",
    "ManualRunError",
    "ReceiverClosedError",
    "SubmitSummary",
    "is_lasting",
]

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

HEAL_LABEL: Final = "heal"
INSTANCE_LABEL: Final = "instance"

Decision = Literal[
    "apply",
    "revert",
    "ignored",
    "duplicate",
    "cooldown",
    "escalated",
    "rejected",
    "disabled",
    "dry_run",
]

# `llmbot_heal_actions_total{outcome}`: ok / failed / reverted are job results (a failed revert
# counts as failed), the others are decisions that ran nothing.
HEAL_OUTCOMES: Final[tuple[str, ...]] = (
    "ok",
    "failed",
    "reverted",
    "cooldown",
    "duplicate",
    "escalated",
    "rejected",
    "disabled",
    "dry_run",
)
# `llmbot_heal_streaks_total{result}`: how each streak ended (an alert's applications of its
# action, from the first apply until the alert resolves): `recovered` = the alert resolved before
# escalation, `escalated` = the action ran `escalate_after` times and the alert still fired. The
# recovery rate (llmbot:heal_recovery_ratio:rate1d) is recovered / both.
HEAL_STREAK_RESULTS: Final[tuple[str, ...]] = ("recovered", "escalated")
# `llmbot_heal_alerts_ignored_total{reason}`: kept apart from the actions counter because an
# ignored alert often has no valid action to label it with.
IGNORE_REASONS: Final[tuple[str, ...]] = (
    "other_instance",
    "no_heal_label",
    "unknown_action",
    "not_applied",
)
# `llmbot_webhook_requests_total{code}`: every status the alerts handler answers with.
WEBHOOK_CODES: Final[tuple[int, ...]] = (202, 400, 401, 403, 404, 408, 413, 415, 500, 503)

# Runs by hand carry this fingerprint prefix (then the action name) in events and logs.
HAND_FINGERPRINT_PREFIX: Final = "manual:"

_DedupKey = tuple[str, str, str, str]


def is_lasting(action: HealAction) -> bool:
    """Whether the action's change stays until reverted (reduced mode, an override) rather than
    being a one-shot clean-up; actions without a `lasting` attribute count as lasting."""
    return bool(getattr(action, "lasting", True))


class ReceiverClosedError(RuntimeError):
    """`submit()` was called before `start()` or after `stop()`; the webhook answers 503."""


class ManualRunError(ValueError):
    """A run by hand was refused before anything ran; the message says why, for the operator."""


@dataclass(frozen=True, slots=True)
class AlertDecision:
    """What the receiver decided for one alert of a notification."""

    fingerprint: str
    status: AlertStatus
    action: str | None
    decision: Decision
    detail: str = ""

    def to_json(self) -> dict[str, str | None]:
        """The decision as a JSON object for the webhook answer (the fingerprint as the audit
        shows it: escaped and cut, so a huge one is not echoed back)."""
        return {
            "fingerprint": safe_text(self.fingerprint, FINGERPRINT_CHARS),
            "status": self.status,
            "action": None if self.action is None else safe_text(self.action, NAME_CHARS),
            "decision": self.decision,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class SubmitSummary:
    """The decisions for one notification; `http_status` is 503 when any job was rejected."""

    decisions: tuple[AlertDecision, ...]

    @property
    def queued(self) -> int:
        """How many jobs (apply or revert) were queued."""
        return sum(d.decision in ("apply", "revert") for d in self.decisions)

    @property
    def http_status(self) -> int:
        """202; 200 when healing is off or rehearsing and nothing was queued; 503 so that
        Alertmanager retries what could not be queued."""
        if any(d.decision == "rejected" for d in self.decisions):
            return 503
        if not self.queued and any(d.decision in ("disabled", "dry_run") for d in self.decisions):
            return 200
        return 202

    def to_json(self) -> dict[str, object]:
        """The summary as a JSON object for the webhook answer."""
        return {"queued": self.queued, "decisions": [d.to_json() for d in self.decisions]}

    def counts(self) -> str:
        """How many alerts got each decision, e.g. `2 apply, 298 ignored`, for one log line."""
        tally: dict[str, int] = {}
        for decision in self.decisions:
            tally[decision.decision] = tally.get(decision.decision, 0) + 1
        return ", ".join(f"{n} {name}" for name, n in tally.items()) or "no alerts"


@dataclass(frozen=True, slots=True)
class ActiveHeal:
    """A heal in force: an alert's apply not yet reverted, or a lasting action run by hand."""

    action: str
    fingerprint: str
    since: float  # wall-clock time of the first apply of this streak
    applications: int
    escalated: bool = False
    by_hand: bool = False


def _zero_actions() -> dict[tuple[str, str], int]:
    return {(action, outcome): 0 for action in HEAL_ACTIONS for outcome in HEAL_OUTCOMES}


def _zero_streaks() -> dict[tuple[str, str], int]:
    return {(action, result): 0 for action in HEAL_ACTIONS for result in HEAL_STREAK_RESULTS}


@dataclass(slots=True)
class HealStats:
    """Counters and gauges read at scrape time; every label combination starts at 0."""

    webhook_requests_total: dict[int, int] = field(
        default_factory=lambda: dict.fromkeys(WEBHOOK_CODES, 0)
    )
    actions_total: dict[tuple[str, str], int] = field(default_factory=_zero_actions)
    streaks_total: dict[tuple[str, str], int] = field(default_factory=_zero_streaks)
    alerts_ignored_total: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(IGNORE_REASONS, 0)
    )
    # Wall-clock time of the last successful apply; 0 means never (Prometheus convention).
    last_success_timestamp: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(HEAL_ACTIONS, 0.0)
    )
    active_heals: int = 0
    queued_jobs: int = 0  # accepted, waiting for the action's lock or a global slot
    running_jobs: int = 0
    audit_entries: int = 0  # held by the heal audit, at most audit_capacity
    audit_capacity: int = 0


@dataclass(slots=True)
class _AlertState:
    action: str
    applications: int = 0
    active: bool = False
    escalated: bool = False
    since: float = 0.0


@dataclass(frozen=True, slots=True)
class _Job:
    kind: Literal["apply", "revert"]
    action: HealAction
    alert: Alert
    key: _DedupKey
    by: str | None = None  # who ran it by hand; None for an alert's job


class HealReceiver:
    """Turns webhook notifications into heal jobs, with dedup, cooldown and escalation."""

    def __init__(
        self,
        registry: ActionRegistry,
        *,
        instance: str,
        cooldown_s: float = 300.0,
        max_concurrency: int = 2,
        escalate_after: int = 3,
        exit_on_escalation: bool = False,
        dedup_capacity: int = 4096,
        max_pending: int = 64,
        action_timeout_s: float = 120.0,
        events_capacity: int = 100,
        clock: Callable[[], float] = time.time,
        on_escalation_exit: Callable[[], None] | None = None,
        enabled: bool = True,
        dry_run: bool = False,
        audit: HealAudit | None = None,
    ) -> None:
        if cooldown_s < 0:
            raise ValueError("cooldown_s must not be negative")
        if min(max_concurrency, escalate_after, dedup_capacity, max_pending, events_capacity) < 1:
            raise ValueError(
                "max_concurrency, escalate_after, dedup_capacity, max_pending and "
                "events_capacity must be at least 1"
            )
        if action_timeout_s <= 0:
            raise ValueError("action_timeout_s must be positive")
        if exit_on_escalation and on_escalation_exit is None:
            raise ValueError("exit_on_escalation needs on_escalation_exit to start the drain")
        self.instance = instance
        self.cooldown_s = cooldown_s
        self.max_concurrency = max_concurrency
        self.escalate_after = escalate_after
        self.exit_on_escalation = exit_on_escalation
        self.max_pending = max_pending
        self.action_timeout_s = action_timeout_s
        self.enabled = enabled
        self.dry_run = dry_run
        # The audit holds the recent events (`events`); without one, a memory-only one.
        self.audit = audit if audit is not None else HealAudit(events_capacity, clock=clock)
        self._registry = registry
        self._dedup_capacity = dedup_capacity
        self._clock = clock
        self._on_escalation_exit = on_escalation_exit
        self._stats = HealStats()
        self._seen: OrderedDict[_DedupKey, None] = OrderedDict()
        self._alerts: OrderedDict[str, _AlertState] = OrderedDict()
        self._last_applied: dict[str, float] = {}
        self._by_hand: dict[str, float] = {}  # lasting action applied by hand -> when
        self._slots = asyncio.Semaphore(max_concurrency)
        self._locks = {name: asyncio.Lock() for name in HEAL_ACTIONS}
        self._tasks: set[asyncio.Task[HealEvent]] = set()
        self._running = 0
        self._accepting = False
        self._exit_requested = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """True between `start()` and `stop()`."""
        return self._accepting

    def start(self) -> None:
        """Accept notifications; jobs run as tasks of the running event loop."""
        self._accepting = True

    async def join(self) -> None:
        """Wait until every queued job has finished (jobs queued meanwhile included)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def stop(self, grace_s: float = 10.0) -> None:
        """Refuse new notifications, give queued jobs `grace_s` s to finish, then cancel them."""
        self._accepting = False
        tasks = set(self._tasks)
        if not tasks:
            return
        _done, late = await asyncio.wait(tasks, timeout=grace_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        if late:
            logger.warning("heal: cancelled %d job(s) unfinished after %.1fs", len(late), grace_s)

    # -- figures -----------------------------------------------------------------------------

    @property
    def events(self) -> deque[HealEvent]:
        """The recent decisions and results, oldest first (the audit's entries)."""
        return self.audit.entries

    @property
    def stats(self) -> HealStats:
        """Counters by label, with the gauges brought up to date."""
        in_force = sum(state.active for state in self._alerts.values()) + len(self._by_hand)
        # A dry run keeps its bookkeeping, but nothing it decided is in force.
        self._stats.active_heals = 0 if self.dry_run else in_force
        self._stats.queued_jobs = len(self._tasks) - self._running
        self._stats.running_jobs = self._running
        self._stats.audit_entries = len(self.audit)
        self._stats.audit_capacity = self.audit.capacity
        return self._stats

    def active(self) -> list[ActiveHeal]:
        """The heals in force, oldest first: applied alerts, then lasting runs by hand."""
        found = [
            ActiveHeal(state.action, fingerprint, state.since, state.applications, state.escalated)
            for fingerprint, state in self._alerts.items()
            if state.active
        ]
        found.sort(key=lambda heal: heal.since)
        found.extend(
            ActiveHeal(name, HAND_FINGERPRINT_PREFIX + name, since, 1, by_hand=True)
            for name, since in sorted(self._by_hand.items(), key=lambda item: item[1])
        )
        return found

    def cooldowns(self) -> dict[str, float]:
        """Seconds left before an alert may apply each action again (only those still waiting)."""
        now = self._clock()
        left = {name: at + self.cooldown_s - now for name, at in self._last_applied.items()}
        return {name: seconds for name, seconds in left.items() if seconds > 0}

    @property
    def action_names(self) -> tuple[str, ...]:
        """The registered actions, in registration order."""
        return self._registry.names()

    def lasting(self, name: str) -> bool:
        """Whether the registered action `name` stays in force until reverted."""
        action = self._registry.get(name)
        return action is not None and is_lasting(action)

    def record_request(self, code: int) -> None:
        """Count one webhook answer by HTTP status."""
        counts = self._stats.webhook_requests_total
        counts[code] = counts.get(code, 0) + 1

    # -- decisions ---------------------------------------------------------------------------

    def submit(self, payload: WebhookPayload) -> SubmitSummary:
        """Decide for every alert and queue the accepted jobs; never waits for an action."""
        if not self._accepting:
            raise ReceiverClosedError("the heal receiver is not accepting notifications")
        now = self._clock()
        return SubmitSummary(tuple(self._decide(alert, now) for alert in payload.alerts))

    def _decide(self, alert: Alert, now: float) -> AlertDecision:
        instance = alert.labels.get(INSTANCE_LABEL)
        name = alert.labels.get(HEAL_LABEL)
        # No instance label: a rule on a bot-wide aggregate (sum without instance) is ours too.
        if instance is not None and instance != self.instance:
            shown = safe_text(instance, NAME_CHARS)
            return self._ignore(alert, name, "other_instance", f"instance {shown!r} is not ours")
        if name is None:
            return self._ignore(alert, None, "no_heal_label", "alert has no heal label")
        action = self._registry.get(name)
        if action is None:
            shown = safe_text(name, NAME_CHARS)
            return self._ignore(alert, name, "unknown_action", f"no heal action {shown!r}")
        if not self.enabled:
            verb = "revert" if alert.status == "resolved" else "apply"
            detail = f"self-healing is off (HEAL_ENABLED=false): did not {verb} {name}"
            return self._refuse(alert, name, "disabled", detail)
        key: _DedupKey = (alert.fingerprint, alert.starts_at.isoformat(), name, alert.status)
        if key in self._seen:
            self._seen.move_to_end(key)
            return self._refuse(alert, name, "duplicate", "already handled this notification")
        if alert.status == "resolved":
            return self._decide_resolved(alert, action, key)
        return self._decide_firing(alert, action, key, now)

    def _decide_resolved(self, alert: Alert, action: HealAction, key: _DedupKey) -> AlertDecision:
        state = self._alerts.get(alert.fingerprint)
        if state is None or not state.active:
            # Resolving also ends an escalation: the count is per firing streak.
            self._alerts.pop(alert.fingerprint, None)
            return self._ignore(alert, action.name, "not_applied", "nothing was applied here")
        if len(self._tasks) >= self.max_pending:
            return self._refuse(alert, action.name, "rejected", "job backlog is full")
        del self._alerts[alert.fingerprint]
        if not state.escalated:  # an escalated streak was counted when it escalated
            self._count_streak(state.action, "recovered")
        self._remember(key)
        return self._queue(_Job("revert", action, alert, key))

    def _decide_firing(
        self, alert: Alert, action: HealAction, key: _DedupKey, now: float
    ) -> AlertDecision:
        name = action.name
        state = self._alerts.get(alert.fingerprint)
        if state is not None:
            self._alerts.move_to_end(alert.fingerprint)
        if state is not None and state.applications >= self.escalate_after:
            return self._escalate(alert, state)
        since = now - self._last_applied.get(name, float("-inf"))
        if since < self.cooldown_s:
            detail = f"{name} ran {since:.0f}s ago; cooldown is {self.cooldown_s:.0f}s"
            return self._refuse(alert, name, "cooldown", detail)
        if len(self._tasks) >= self.max_pending:
            return self._refuse(alert, name, "rejected", "job backlog is full")
        if state is None:
            state = self._track(alert.fingerprint, name)
        if not state.active:
            state.since = now
        state.applications += 1
        # Active from now on, even if the apply fails: it may have half-applied, and a revert
        # is harmless when nothing was applied.
        state.active = True
        self._last_applied[name] = now
        self._remember(key)
        return self._queue(_Job("apply", action, alert, key))

    def _escalate(self, alert: Alert, state: _AlertState) -> AlertDecision:
        detail = f"{state.action} ran {state.applications} times and the alert still fires"
        first = not state.escalated
        state.escalated = True
        if first:
            self._count_streak(state.action, "escalated")
        decision = self._refuse(alert, state.action, "escalated", detail, log=not first)
        if first:
            logger.error(
                "heal %s escalated: %s (fingerprint %s); not running it again until it resolves",
                state.action,
                detail,
                _fingerprint(alert),
            )
            # A dry run acts on nothing, exiting included.
            if self.exit_on_escalation and not self.dry_run and not self._exit_requested:
                self._exit_requested = True
                self._request_exit()
        return decision

    def _request_exit(self) -> None:
        logger.error("heal: exit on escalation is on; asking for a graceful drain and exit")
        if self._on_escalation_exit is None:  # excluded by __init__; keeps mypy informed
            return
        try:
            self._on_escalation_exit()
        except Exception:
            logger.exception("heal: the escalation exit callback failed")

    # -- by hand -----------------------------------------------------------------------------

    async def run_by_hand(self, name: str, *, undo: bool = False, by: str = "") -> HealEvent:
        """Apply (or with `undo`, revert) action `name` once now, for an operator.

        The run shares the alert jobs' action lock, concurrency slots, timeout, counters
        (`llmbot_heal_actions_total` ok / failed / reverted) and events, and is logged with
        `by`. It ignores the alert cooldown and does not start one. A lasting action stays in
        force until undone by hand; only a run by hand can be undone by hand (an alert's heal
        is undone when the alert resolves), and undoing leaves alone whatever firing alerts
        still hold. Returns the outcome event (with HEAL_DRY_RUN the `dry_run` entry, and
        nothing runs); raises `ManualRunError` when nothing ran.
        """
        if not self._accepting:
            raise ReceiverClosedError("the heal receiver is not accepting runs")
        action = self._registry.get(name)
        if action is None:
            known = ", ".join(self._registry.names()) or "none"
            raise ManualRunError(f"there is no heal action {name!r} (known: {known})")
        lasting = is_lasting(action)
        if undo and not lasting:
            raise ManualRunError(f"{name} is a one-shot clean-up: there is nothing to undo")
        if undo and name not in self._by_hand:
            raise ManualRunError(
                f"{name} was not applied by hand; a heal an alert started is undone when the "
                "alert resolves"
            )
        if len(self._tasks) >= self.max_pending:
            raise ManualRunError("the heal job backlog is full; try again in a moment")
        now = self._clock()
        status: AlertStatus = "resolved" if undo else "firing"
        fingerprint = HAND_FINGERPRINT_PREFIX + name
        alert = Alert.model_validate(
            {
                "status": status,
                "labels": {
                    "alertname": "ManualHeal",
                    HEAL_LABEL: name,
                    INSTANCE_LABEL: self.instance,
                },
                "annotations": {"summary": f"{name} run by hand by {by or 'an operator'}"},
                "startsAt": datetime.fromtimestamp(now, UTC),
                "fingerprint": fingerprint,
            }
        )
        key: _DedupKey = (fingerprint, alert.starts_at.isoformat(), name, status)
        job = _Job("revert" if undo else "apply", action, alert, key, by or "an operator")
        if self.dry_run:
            # Recorded like an alert's dry run; nothing is in force, so nothing to undo later.
            self._queue(job)
            return self.events[-1]
        if undo:
            del self._by_hand[name]
        elif lasting:
            # In force from now on, even if the apply fails: it may have half-applied.
            self._by_hand.setdefault(name, now)
        logger.warning("heal %s %s by hand by %s", name, job.kind, safe_text(job.by or "", 120))
        task = asyncio.create_task(self._run(job), name=f"heal-hand-{job.kind}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # Shielded: an operator's run, once started, finishes even if the command is cancelled.
        return await asyncio.shield(task)

    # -- state -------------------------------------------------------------------------------

    def _count_streak(self, action: str, result: str) -> None:
        counts = self._stats.streaks_total
        counts[(action, result)] = counts.get((action, result), 0) + 1

    def _remember(self, key: _DedupKey) -> None:
        self._seen[key] = None
        if len(self._seen) > self._dedup_capacity:
            self._seen.popitem(last=False)

    def _track(self, fingerprint: str, action: str) -> _AlertState:
        state = self._alerts[fingerprint] = _AlertState(action)
        if len(self._alerts) > self._dedup_capacity:
            old_fingerprint, old = self._alerts.popitem(last=False)
            if old.active:
                logger.warning(
                    "heal: forgetting the %s heal of fingerprint %s (too many alerts tracked); "
                    "it will not be reverted",
                    old.action,
                    safe_text(old_fingerprint, FINGERPRINT_CHARS),
                )
        return state

    # -- records -----------------------------------------------------------------------------

    def _event(
        self,
        action: str | None,
        outcome: str,
        alert: Alert,
        detail: str,
        *,
        kind: str = "",
        figures: Mapping[str, float] | None = None,
        by: str | None = None,
    ) -> HealEvent:
        span = trace.get_current_span()
        context = span.get_span_context()
        event = self.audit.record(
            HealEvent(
                time=self._clock(),
                action=action,
                outcome=outcome,
                fingerprint=_fingerprint(alert),
                detail=safe_text(detail, DETAIL_CHARS),
                alertname=safe_text(alert.labels.get("alertname", ""), NAME_CHARS),
                status=alert.status,
                kind=kind,
                figures=bounded_figures(figures or {}),
                by=safe_text(by or "", NAME_CHARS),
                trace_id=trace.format_trace_id(context.trace_id) if context.is_valid else "",
            )
        )
        span.add_event(
            "heal.decision",
            {"heal.action": action or "", "heal.outcome": outcome, "heal.detail": event.detail},
        )
        return event

    def _ignore(self, alert: Alert, name: str | None, reason: str, detail: str) -> AlertDecision:
        self._stats.alerts_ignored_total[reason] += 1
        self._event(None, "ignored", alert, f"{reason}: {detail}")
        # Per alert at DEBUG: the webhook logs one line per notification with the counts.
        logger.debug("heal ignored (%s): %s (fingerprint %s)", reason, detail, _fingerprint(alert))
        return AlertDecision(alert.fingerprint, alert.status, name, "ignored", reason)

    def _refuse(
        self, alert: Alert, name: str, decision: Decision, detail: str, *, log: bool = True
    ) -> AlertDecision:
        self._stats.actions_total[(name, decision)] += 1
        self._event(name, decision, alert, detail)
        if log:
            # Per alert at DEBUG: the webhook logs one line per notification with the counts
            # (a rejected one answers 503, logged as a WARNING there).
            logger.debug(
                "heal %s %s: %s (fingerprint %s)",
                name,
                decision,
                detail,
                _fingerprint(alert),
            )
        return AlertDecision(alert.fingerprint, alert.status, name, decision, detail)

    def _queue(self, job: _Job) -> AlertDecision:
        name = job.action.name
        if self.dry_run:
            detail = _would(job)
            self._stats.actions_total[(name, "dry_run")] += 1
            event = self._event(name, "dry_run", job.alert, detail, kind=job.kind, by=job.by)
            logger.debug(
                "heal %s dry run: %s (fingerprint %s)", name, event.detail, event.fingerprint
            )
            return AlertDecision(job.alert.fingerprint, job.alert.status, name, "dry_run", detail)
        task = asyncio.create_task(self._run(job), name=f"heal-{job.kind}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._event(name, "queued", job.alert, job.kind, kind=job.kind, by=job.by)
        logger.debug("heal %s queued %s (fingerprint %s)", name, job.kind, _fingerprint(job.alert))
        return AlertDecision(job.alert.fingerprint, job.alert.status, name, job.kind)

    # -- jobs --------------------------------------------------------------------------------

    async def _run(self, job: _Job) -> HealEvent:
        # The action lock first: a job waiting for its action must not hold a global slot.
        async with self._locks[job.action.name], self._slots:
            self._running += 1
            try:
                return await self._execute(job)
            finally:
                self._running -= 1

    async def _execute(self, job: _Job) -> HealEvent:
        name = job.action.name
        attributes: dict[str, str | bool] = {
            "heal.action": name,
            "heal.kind": job.kind,
            "heal.fingerprint": _fingerprint(job.alert),
            "heal.by_hand": job.by is not None,
        }
        with _tracer.start_as_current_span(
            f"heal {job.kind} {name}", attributes=attributes
        ) as span:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.action_timeout_s):
                    if job.kind == "apply":
                        result = await job.action.apply(job.alert)
                    else:
                        result = await job.action.revert(job.alert)
            except asyncio.CancelledError:
                self._finish(job, ActionResult.failure("cancelled at shutdown"), started)
                raise
            except TimeoutError:
                result = ActionResult.failure(f"timed out after {self.action_timeout_s:g}s")
            except Exception as exc:
                logger.debug("heal %s %s raised", name, job.kind, exc_info=True)
                result = ActionResult.failure(f"{type(exc).__name__}: {exc}")
            event = self._finish(job, result, started)
            span.set_attribute("heal.outcome", event.outcome)
            for figure, value in result.figures.items():
                span.set_attribute(f"heal.{figure}", value)
            if not result.ok:
                span.set_status(StatusCode.ERROR, result.detail)
            return event

    def _finish(self, job: _Job, result: ActionResult, started: float) -> HealEvent:
        name = job.action.name
        elapsed = time.perf_counter() - started
        if result.ok:
            outcome = "ok" if job.kind == "apply" else "reverted"
            if job.kind == "apply":
                self._stats.last_success_timestamp[name] = self._clock()
        else:
            outcome = "failed"
            if job.kind == "apply":
                # Let a later repeat notification try again (cooldown and escalation still apply).
                self._seen.pop(job.key, None)
        self._stats.actions_total[(name, outcome)] += 1
        figures = ", ".join(f"{key}={value:g}" for key, value in result.figures.items())
        detail = "; ".join(part for part in (result.detail, figures) if part)
        kind = job.kind if job.by is None else f"{job.kind} by hand ({job.by})"
        event = self._event(
            name,
            outcome,
            job.alert,
            f"{kind}: {detail}".rstrip(": "),
            kind=job.kind,
            figures=result.figures,
            by=job.by,
        )
        logger.log(
            logging.INFO if result.ok else logging.WARNING,
            "heal %s %s %s in %.2fs%s (fingerprint %s)",
            name,
            safe_text(kind, NAME_CHARS),
            outcome,
            elapsed,
            f": {event.detail}" if detail else "",
            event.fingerprint,
        )
        return event


def _fingerprint(alert: Alert) -> str:
    """The alert's fingerprint as logs, spans and the audit show it (escaped, bounded)."""
    return safe_text(alert.fingerprint, FINGERPRINT_CHARS)


def _would(job: _Job) -> str:
    """What a dry run would have done: the kind, the action and the first line of its doc."""
    doc = (type(job.action).__doc__ or "").strip().splitlines()
    what = f": {doc[0].rstrip('.')}" if doc and job.kind == "apply" else ""
    by = f" by hand ({job.by})" if job.by is not None else ""
    return f"would {job.kind} {job.action.name}{by}{what}"
