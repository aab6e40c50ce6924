"""The demo's fault plan: parsing, and the emulator switched on and off on time."""

from __future__ import annotations

import pytest

from bot.emulator.fault_schedule import FaultPhase, parse_schedule, run_schedule
from bot.emulator.gemini import GeminiEmulator


def test_parses_phases_in_time_order() -> None:
    assert parse_schedule("errors:120+45, slow:30+60") == [
        FaultPhase("slow", 30.0, 60.0),
        FaultPhase("errors", 120.0, 45.0),
    ]


@pytest.mark.parametrize("bad", ["slow", "slow:30", "boom:1+2", "slow:a+b"])
def test_mistakes_say_what_is_expected(bad: str) -> None:
    with pytest.raises(ValueError, match=r"slow:30\+60|not one of"):
        parse_schedule(bad)


async def test_phases_switch_the_emulator_and_restore_it() -> None:
    seen: list[tuple[str, float, float]] = []
    async with GeminiEmulator(latency=0.01) as gemini:

        def report(line: str) -> None:
            seen.append((line, float(gemini.latency), gemini.error_rate))  # type: ignore[arg-type]

        await run_schedule(gemini, parse_schedule("slow:0+0.05"), report)

    assert [s[0] for s in seen] == ["fault: slow for 0.05 s", "fault: slow over"]
    assert seen[0][1] == 8.0
    assert seen[1][1] == 0.01
