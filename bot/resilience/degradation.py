"""How degraded the bot is (none, low, medium, high), why, and what each level changes.

`DegradationPolicy` turns health signals into a level with a reason. `DegradationState` owns the
one effective level: the latest health assessment, raised by overrides (self-healing, operators)
and by maintenance mode. `level_effects()`, `route()` and `choose_fallback()` are the pure
decisions the chat pipeline takes from it. Nothing here imports prometheus: `stats` is read at
scrape time.

What each level does to a new question (each level keeps the changes of the levels below it;
the triggers are those of `DegradationPolicy` with the default `DEGRADATION_*` settings):

| level  | entered when (defaults)                     | what changes for users                    |
|--------|---------------------------------------------|-------------------------------------------|
| none   | every signal under its threshold            | nothing: the configured context, output   |
|        |                                             | and attachments                           |
| low    | p95 reply time > 10 s (under 20 s)          | videos are refused with a notice (the     |
|        |                                             | heaviest, slowest requests); text and     |
|        |                                             | images as usual                           |
| medium | RSS > 400 MB, error ratio > 10 %, p95 >=    | + shorter requests: at most 10 history    |
|        | 20 s, queue > 80 % full, or the `error_rate`| messages and 512 output tokens            |
|        | heal's override                             | (`LEVEL_EFFECTS`)                         |
| high   | breaker open, RSS >= 600 MB, error ratio >= | + no model call for a new question: a     |
|        | 20 %, queue full, or maintenance            | cached answer, else queued with a notice  |
|        |                                             | (fallback text when the queue is full);   |
|        |                                             | in maintenance the maintenance text       |

The same limits apply to queued questions when the queue worker answers them. Self-healing's
reduced mode (`response_time`) sets the medium limits too; the stricter of the two wins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, Literal

__all__ = [
    "FALLBACK_KINDS",
    "HEALTHY_REASON",
    "LEVEL_EFFECTS",
    "LIGHT_HISTORY_MESSAGES",
    "LIGHT_MAX_OUTPUT_TOKENS",
    "MAINTENANCE_SOURCE",
    "ROUTES",
    "Assessment",
    "DegradationLevel",
    "DegradationPolicy",
    "DegradationState",
    "DegradationStats",
    "FallbackKind",
    "HealthSignals",
    "LevelEffects",
    "Route",
    "choose_fallback",
    "level_effects",
    "route",
]

logger = logging.getLogger(__name__)

_MIB: Final = 1024 * 1024

# The name maintenance mode uses among the overrides, in reasons and logs.
MAINTENANCE_SOURCE: Final = "maintenance"

HEALTHY_REASON: Final = "healthy"


class DegradationLevel(IntEnum):
    """Severity; the int is what `llmbot_degradation_level` exports."""

    NONE = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @property
    def label(self) -> str:
        """Lower-case name ("none", "low", ...), as settings, commands and logs spell it."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> DegradationLevel:
        """The level named by `text` (case-insensitive name or its number)."""
        cleaned = text.strip()
        try:
            return cls(int(cleaned)) if cleaned.isdigit() else cls[cleaned.upper()]
        except (KeyError, ValueError):
            names = ", ".join(level.label for level in cls)
            raise ValueError(f"unknown degradation level {text!r}: use one of {names}") from None


@dataclass(frozen=True, slots=True)
class HealthSignals:
    """One reading of the figures the level is judged on, taken over a recent window."""

    rss_bytes: int = 0
    error_ratio: float = 0.0  # failed / made model calls in the window, 0..1 (bot.ops.signals)
    p95_s: float = 0.0  # 95th percentile message-to-reply time in the window
    breaker_open: bool = False
    queue_pressure: float = 0.0  # queued / capacity, 0..1
    messages_in_window: int = 0


@dataclass(frozen=True, slots=True)
class Assessment:
    """A level and the human-readable reason for it."""

    level: DegradationLevel
    reason: str


@dataclass(frozen=True, slots=True)
class DegradationPolicy:
    """Thresholds, and the scoring that turns `HealthSignals` into an `Assessment`.

    Each signal over its threshold ("above" is strict) contributes a severity; the level is the
    highest contribution:

    | signal          | over threshold | escalates to          | guarded by min_messages |
    |-----------------|----------------|-----------------------|-------------------------|
    | breaker open    | HIGH           |                       | no                      |
    | memory (RSS)    | MEDIUM         | HIGH at >= 1.5x       | no                      |
    | error ratio     | MEDIUM         | HIGH at >= 2x         | yes                     |
    | p95 reply time  | LOW            | MEDIUM at >= 2x       | yes                     |
    | queue pressure  | MEDIUM         | HIGH at >= 100 %      | no                      |

    Error ratio and p95 are statistics of the window's messages: with fewer than `min_messages`
    they say more about chance than health (1 failure in 2 is "50 %"), so they are not judged.
    """

    memory_bytes: int = 400 * _MIB
    error_ratio: float = 0.10
    p95_s: float = 10.0
    queue_pressure: float = 0.8
    min_messages: int = 10

    def __post_init__(self) -> None:
        if self.memory_bytes <= 0 or self.p95_s <= 0:
            raise ValueError("memory_bytes and p95_s thresholds must be positive")
        if not 0 < self.error_ratio <= 1 or not 0 < self.queue_pressure <= 1:
            raise ValueError("error_ratio and queue_pressure thresholds must be in (0, 1]")
        if self.min_messages < 0:
            raise ValueError("min_messages must not be negative")

    def assess(self, signals: HealthSignals) -> Assessment:
        """Score `signals`; the reason lists every triggering signal with its value."""
        found: list[tuple[DegradationLevel, str]] = []
        if signals.rss_bytes > self.memory_bytes:
            level = _escalate(signals.rss_bytes >= 1.5 * self.memory_bytes, DegradationLevel.MEDIUM)
            found.append((level, f"memory {_mib(signals.rss_bytes)} > {_mib(self.memory_bytes)}"))
        enough_traffic = signals.messages_in_window >= self.min_messages
        if enough_traffic and signals.error_ratio > self.error_ratio:
            level = _escalate(signals.error_ratio >= 2 * self.error_ratio, DegradationLevel.MEDIUM)
            found.append(
                (level, f"error ratio {_pct(signals.error_ratio)} > {_pct(self.error_ratio)}")
            )
        if enough_traffic and signals.p95_s > self.p95_s:
            level = _escalate(signals.p95_s >= 2 * self.p95_s, DegradationLevel.LOW)
            found.append((level, f"p95 {signals.p95_s:.1f}s > {self.p95_s:.1f}s"))
        if signals.queue_pressure > self.queue_pressure:
            level = _escalate(signals.queue_pressure >= 1.0, DegradationLevel.MEDIUM)
            found.append(
                (level, f"queue {_pct(signals.queue_pressure)} full > {_pct(self.queue_pressure)}")
            )
        if signals.breaker_open:
            found.append((DegradationLevel.HIGH, "breaker open"))
        if not found:
            return Assessment(DegradationLevel.NONE, HEALTHY_REASON)
        return Assessment(max(level for level, _ in found), "; ".join(text for _, text in found))


FallbackKind = Literal["cached", "maintenance", "generic"]
FALLBACK_KINDS: Final[tuple[FallbackKind, ...]] = ("cached", "maintenance", "generic")


@dataclass(slots=True)
class DegradationStats:
    """Figures read at scrape time; `fallbacks_total` has every kind from the start."""

    level: DegradationLevel
    level_entered_at: float  # epoch seconds of the last level change (or of start)
    changes_total: int = 0
    assessments_total: int = 0
    fallbacks_total: dict[FallbackKind, int] = field(
        default_factory=lambda: dict.fromkeys(FALLBACK_KINDS, 0)
    )


class DegradationState:
    """The single owner of the current degradation level.

    Effective level = max(health assessment, every override, HIGH while in maintenance); the
    reason is that of the sources at the effective level. Overrides are keyed by source (for
    example "heal:HighErrorRate" or "operator") so one source's undo never clears another's.
    """

    def __init__(
        self,
        policy: DegradationPolicy | None = None,
        *,
        maintenance_mode_enabled: bool = True,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[DegradationLevel, DegradationLevel, str], None] | None = None,
    ) -> None:
        self.policy = policy if policy is not None else DegradationPolicy()
        # DEGRADATION_ENABLE_MAINTENANCE_MODE: may a HIGH level answer with maintenance text.
        self.maintenance_mode_enabled = maintenance_mode_enabled
        self.on_change = on_change  # (old, new, reason); may be set after construction
        self._clock = clock
        self._assessment = Assessment(DegradationLevel.NONE, HEALTHY_REASON)
        self._overrides: dict[str, Assessment] = {}
        self._maintenance_reason: str | None = None
        self._reason = HEALTHY_REASON
        self.stats = DegradationStats(level=DegradationLevel.NONE, level_entered_at=clock())

    # -- reading ---------------------------------------------------------------------------

    @property
    def level(self) -> DegradationLevel:
        """The effective level."""
        return self.stats.level

    @property
    def reason(self) -> str:
        """Why the bot is at the effective level ("healthy" at NONE)."""
        return self._reason

    @property
    def since(self) -> float:
        """Epoch seconds of the last level change (construction time if none yet)."""
        return self.stats.level_entered_at

    @property
    def assessment(self) -> Assessment:
        """The latest health-based assessment, before overrides."""
        return self._assessment

    @property
    def overrides(self) -> dict[str, Assessment]:
        """A copy of the overrides in force, by source (maintenance not included)."""
        return dict(self._overrides)

    @property
    def maintenance(self) -> bool:
        """True while an operator (or self-healing) has put the bot in maintenance mode."""
        return self._maintenance_reason is not None

    # -- changing --------------------------------------------------------------------------

    def assess(self, signals: HealthSignals) -> Assessment:
        """Judge `signals` with the policy, keep the result and return it."""
        self._assessment = self.policy.assess(signals)
        self.stats.assessments_total += 1
        self._update()
        return self._assessment

    def set_override(self, source: str, level: DegradationLevel | int, reason: str) -> None:
        """Hold the level at least at `level` until `clear_override(source)`; replaces any
        earlier override of the same source."""
        if not source or source == MAINTENANCE_SOURCE:
            raise ValueError(
                f"override source must be a non-empty name other than {MAINTENANCE_SOURCE!r}: "
                "use enter_maintenance() for maintenance mode"
            )
        self._overrides[source] = Assessment(DegradationLevel(level), reason or source)
        self._update()

    def clear_override(self, source: str) -> bool:
        """Drop the override of `source`; True if there was one."""
        removed = self._overrides.pop(source, None) is not None
        if removed:
            self._update()
        return removed

    def enter_maintenance(self, reason: str = "maintenance") -> None:
        """Hold the level at HIGH and make `route()` answer with maintenance text."""
        self._maintenance_reason = reason or "maintenance"
        self._update()

    def exit_maintenance(self) -> bool:
        """Leave maintenance mode; True if the bot was in it."""
        was = self._maintenance_reason is not None
        self._maintenance_reason = None
        if was:
            self._update()
        return was

    # -- decisions -------------------------------------------------------------------------

    def fallback_kind(self, *, cached_available: bool) -> FallbackKind:
        """`choose_fallback` at the current level with this state's maintenance setting."""
        return choose_fallback(
            self.level,
            cached_available=cached_available,
            maintenance_mode_enabled=self.maintenance_mode_enabled,
        )

    def record_fallback(self, kind: FallbackKind) -> None:
        """Count one fallback reply sent (`llmbot_fallback_responses_total{kind}`)."""
        self.stats.fallbacks_total[kind] += 1

    def _update(self) -> None:
        sources: list[Assessment] = []
        if self._maintenance_reason is not None:
            sources.append(Assessment(DegradationLevel.HIGH, self._maintenance_reason))
        sources.extend(self._overrides.values())
        sources.append(self._assessment)
        new = max(source.level for source in sources)
        if new == DegradationLevel.NONE:
            self._reason = HEALTHY_REASON
        else:
            self._reason = "; ".join(s.reason for s in sources if s.level == new)
        old = self.stats.level
        if new == old:
            return
        self.stats.level = new
        self.stats.level_entered_at = self._clock()
        self.stats.changes_total += 1
        log = logger.warning if new > old else logger.info
        log("degradation level %s -> %s: %s", old.label, new.label, self._reason)
        if self.on_change is not None:
            try:
                self.on_change(old, new, self._reason)
            except Exception:
                # A broken metrics/log hook must never change the level or its bookkeeping.
                logger.exception("on_change hook of the degradation state failed")


@dataclass(frozen=True, slots=True)
class LevelEffects:
    """What a degradation level changes for a new request; None means the settings' value."""

    history_messages: int | None = None  # at most this many history messages to the model
    max_output_tokens: int | None = None  # at most this many output tokens
    video: bool = True  # whether videos are sent to the model (else refused with a notice)
    call_model: bool = True  # False: a cached answer or the queue, never a call now (`route`)


# The lighter requests of MEDIUM and above; self-healing's reduced mode uses the same figures.
LIGHT_HISTORY_MESSAGES: Final = 10
LIGHT_MAX_OUTPUT_TOKENS: Final = 512

# The limits of each level (the table of the module docstring); each keeps those below it.
LEVEL_EFFECTS: Final[dict[DegradationLevel, LevelEffects]] = {
    DegradationLevel.NONE: LevelEffects(),
    DegradationLevel.LOW: LevelEffects(video=False),
    DegradationLevel.MEDIUM: LevelEffects(
        history_messages=LIGHT_HISTORY_MESSAGES,
        max_output_tokens=LIGHT_MAX_OUTPUT_TOKENS,
        video=False,
    ),
    DegradationLevel.HIGH: LevelEffects(
        history_messages=LIGHT_HISTORY_MESSAGES,
        max_output_tokens=LIGHT_MAX_OUTPUT_TOKENS,
        video=False,
        call_model=False,
    ),
}


def level_effects(level: DegradationLevel) -> LevelEffects:
    """What `level` changes for a new request (see the module docstring's table)."""
    return LEVEL_EFFECTS[level]


Route = Literal["call", "queue", "fallback", "maintenance"]
ROUTES: Final[tuple[Route, ...]] = ("call", "queue", "fallback", "maintenance")


def route(
    level: DegradationLevel,
    *,
    quota_exhausted: bool,
    breaker_open: bool,
    maintenance: bool,
    call_failed: bool = False,
    can_queue: bool = True,
) -> Route:
    """What to do with a message now; the first matching row wins.

    | condition                                              | route                      |
    |--------------------------------------------------------|----------------------------|
    | maintenance                                            | maintenance                |
    | quota exhausted, breaker open, level HIGH, call_failed | queue (fallback if it      |
    |                                                        | cannot queue)              |
    | otherwise (NONE, LOW, MEDIUM)                          | call                       |

    Maintenance never calls and never queues: the operator said the model is off-limits for an
    unknown time. The queue rows are the cases where a call now would be refused or add load,
    yet a real answer later is likely: the quota refills, the breaker half-opens, the queue
    worker paces calls in batches. `call_failed` is the pipeline asking again after a call that
    failed for good (retries spent, or the quota/breaker refused it first). LOW and MEDIUM
    still call, with the lighter requests of `level_effects()`. `can_queue` is
    `MessageQueue.would_accept(priority)`.
    """
    if maintenance:
        return "maintenance"
    if quota_exhausted or breaker_open or call_failed or not level_effects(level).call_model:
        return "queue" if can_queue else "fallback"
    return "call"


def choose_fallback(
    level: DegradationLevel, *, cached_available: bool, maintenance_mode_enabled: bool
) -> FallbackKind:
    """Which fallback reply to send: a cached answer if there is one, maintenance text at HIGH
    when enabled, otherwise generic text (with the reason and queue length)."""
    if cached_available:
        return "cached"
    if maintenance_mode_enabled and level >= DegradationLevel.HIGH:
        return "maintenance"
    return "generic"


def _escalate(worse: bool, base: DegradationLevel) -> DegradationLevel:
    return DegradationLevel(base + 1) if worse else base


def _mib(n: float) -> str:
    return f"{n / _MIB:.0f} MiB"


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.0f}%"
