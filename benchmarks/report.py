"""RESULTS.md: machine facts, one table per scenario, and the hand-written analysis kept below."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from benchmarks.harness import Result, Row

__all__ = ["ANALYSIS_MARKER", "load_results", "machine_facts", "render", "save_results"]

ANALYSIS_MARKER = "<!-- analysis: written by hand below this line; the harness keeps it -->"
_MARKS = {"met": "✅ met", "missed": "❌ missed", "TODO": "⏳ TODO", "pending": "⏳ pending"}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_facts(mode: str, minutes: float) -> dict[str, str]:
    """Where and when the figures were measured."""
    dirty = (
        " + uncommitted changes" if _git("status", "--porcelain", "--untracked-files=no") else ""
    )
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("hikari", "google-genai", "aiohttp")
    )
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": f"{mode} ({minutes:.1f} min)",
        "cores": f"{os.cpu_count()} × {_cpu_model()}",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "os": platform.platform(),
        "libraries": versions,
        "commit": (_git("rev-parse", "--short", "HEAD") or "unknown") + dirty,
    }


def _row(row: Row) -> str:
    verdict = _MARKS.get(row.verdict, "")
    cells = (row.figure, row.value, row.target, verdict)
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def render(results: list[Result], facts: dict[str, str], analysis: str) -> str:
    """The whole RESULTS.md."""
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m benchmarks` (see benchmarks/README.md). Figures are ratios or "
        "counts from one run on one machine; each baseline ran in the same run.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in facts.items()),
        "",
    ]
    missed = [(r.title, row) for r in results for row in r.rows if row.verdict == "missed"]
    todo = [(r.title, row) for r in results for row in r.rows if row.verdict in ("TODO", "pending")]
    lines += [
        f"**Summary:** {sum(row.verdict == 'met' for r in results for row in r.rows)} targets "
        f"met, {len(missed)} missed, {len(todo)} TODO/pending.",
        "",
    ]
    for result in results:
        lines += [f"## {result.title}", "", "| figure | value | target | |", "|---|---|---|---|"]
        lines += [_row(row) for row in result.rows]
        lines += [""] + [f"- {note}" for note in result.notes] + [""]
    lines += [ANALYSIS_MARKER, analysis.strip("\n"), ""]
    return "\n".join(lines)


def existing_analysis(path: Path) -> str:
    """The hand-written part of an existing RESULTS.md (empty when there is none)."""
    if not path.exists():
        return "\n## Analysis\n\n(not written yet)\n"
    text = path.read_text()
    _, found, rest = text.partition(ANALYSIS_MARKER)
    return rest if found else "\n## Analysis\n\n(not written yet)\n"


def save_results(path: Path, results: list[Result], facts: dict[str, str]) -> None:
    """The raw numbers beside RESULTS.md (results.json)."""
    payload: dict[str, Any] = {"facts": facts, "results": [asdict(r) for r in results]}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def load_results(path: Path) -> tuple[list[Result], dict[str, str]]:
    """Results and facts of an earlier run (so `--only` can refresh some scenarios)."""
    if not path.exists():
        return [], {}
    raw = json.loads(path.read_text())
    results = [
        Result(
            name=r["name"],
            title=r["title"],
            rows=[Row(**row) for row in r["rows"]],
            notes=list(r["notes"]),
            data=dict(r["data"]),
        )
        for r in raw.get("results", [])
    ]
    return results, dict(raw.get("facts", {}))
