"""py-spy attached to a child for the length of a block, summarised as top frames in a text file."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Self

__all__ = ["Profiler", "summarise"]

_SITE = ("site-packages/", "python3.11/", "python3.12/", "python3.13/")


def _py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _frame(raw: str) -> str:
    name, _, where = raw.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in _SITE:
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def summarise(collapsed: str, top: int = 40) -> str:
    """Self and inclusive shares of the busiest frames in py-spy's collapsed-stack output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        # Idle thread-pool workers are sampled too; they cost nothing.
        if frames[-1].startswith(("_worker (", "wait (", "select (")):
            continue
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if not total:
        return "no samples\n"
    lines = [f"{total} samples (idle thread-pool waits left out)", "", "self:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"


class Profiler:
    """`async with Profiler(pid, path)`: sample `pid` with py-spy; write a summary to `path`."""

    def __init__(self, pid: int, path: Path, rate: int = 250) -> None:
        self.pid = pid
        self.path = path
        self.rate = rate
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Self:
        exe = _py_spy()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if exe is None:
            self.path.write_text("py-spy is not installed: .venv/bin/pip install py-spy\n")
            return self
        self._proc = await asyncio.create_subprocess_exec(
            exe,
            "record",
            "--pid",
            str(self.pid),
            "--rate",
            str(self.rate),
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(self.path.with_suffix(".collapsed")),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(0.5)  # attached before the work starts
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        raw = self.path.with_suffix(".collapsed")
        text = raw.read_text() if raw.exists() else ""
        self.path.write_text(summarise(text))
