"""A timed fault plan for the Gemini emulator, so a demo can show alerts firing and healing.

`slow:30+60,errors:120+45` makes Gemini slow from 30 s to 90 s after the start, and fail every
request from 120 s to 165 s. Kinds: `slow` (answers take `SLOW_LATENCY_S`), `errors` (HTTP 500),
`ratelimit` (HTTP 429 with a retry delay).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bot.emulator.gemini import GeminiEmulator

__all__ = ["FaultPhase", "parse_schedule", "run_schedule"]

FaultKind = Literal["slow", "errors", "ratelimit"]
KINDS: tuple[FaultKind, ...] = ("slow", "errors", "ratelimit")
SLOW_LATENCY_S = 8.0  # above the default 5 s response-time threshold

_PHASE = re.compile(r"^(?P<kind>[a-z]+):(?P<start>\d+(?:\.\d+)?)\+(?P<length>\d+(?:\.\d+)?)$")


@dataclass(frozen=True, slots=True)
class FaultPhase:
    kind: FaultKind
    start_s: float
    duration_s: float


def parse_schedule(text: str) -> list[FaultPhase]:
    """`kind:start+duration,...` in seconds; raises ValueError saying what is wrong."""
    phases = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _PHASE.match(part)
        if match is None:
            raise ValueError(f"fault {part!r} is not kind:start+duration, e.g. slow:30+60")
        kind = next((k for k in KINDS if k == match.group("kind")), None)
        if kind is None:
            raise ValueError(f"fault kind {match.group('kind')!r} is not one of {', '.join(KINDS)}")
        length = float(match.group("length"))
        if not length > 0:
            raise ValueError(f"fault {part!r} lasts {length:g} s: give it a duration above 0")
        phases.append(FaultPhase(kind, float(match.group("start")), length))
    return sorted(phases, key=lambda p: p.start_s)


async def run_schedule(
    gemini: GeminiEmulator, phases: list[FaultPhase], report: Callable[[str], None]
) -> None:
    """Apply each phase at its time and undo it at its end (cancel to stop early)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    normal_latency = gemini.latency
    events = sorted(
        [(p.start_s, True, p) for p in phases]
        + [(p.start_s + p.duration_s, False, p) for p in phases],
        key=lambda e: e[0],
    )
    for at, begin, phase in events:
        await asyncio.sleep(max(0.0, started + at - loop.time()))
        if begin:
            if phase.kind == "slow":
                gemini.latency = SLOW_LATENCY_S
            elif phase.kind == "errors":
                gemini.fail_all(500)
            else:
                gemini.fail_all(429)
            report(f"fault: {phase.kind} for {phase.duration_s:g} s")
        else:
            if phase.kind == "slow":
                gemini.latency = normal_latency
            else:
                gemini.heal()
            report(f"fault: {phase.kind} over")
