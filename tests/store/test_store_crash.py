"""kill -9 in the middle of a write burst loses no acknowledged write and damages nothing."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.store import SqliteStore

HERE = Path(__file__).parent
REPO = HERE.parent.parent
WRITER = HERE / "crash_writer.py"
ACKS_BEFORE_KILL = 200


def load_value_for() -> Callable[[str], bytes]:
    # Loaded by path so the test does not depend on pytest's import mode.
    spec = importlib.util.spec_from_file_location("crash_writer", WRITER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    value_for: Callable[[str], bytes] = module.value_for
    return value_for


async def lost_keys(path: Path, acknowledged: list[str]) -> list[str]:
    """Acknowledged keys that are missing or wrong after reopening the store."""
    value_for = load_value_for()
    async with SqliteStore(path) as store:
        assert store.stats.recovered_from_corruption == 0
        assert len(await store.keys("queue:")) >= len(acknowledged)
        return [key for key in acknowledged if await store.get(key) != value_for(key)]


# A plain (sync) test: the parent only reads a pipe and kills; the store check runs in
# asyncio.run at the end.
@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_acknowledged_writes_survive_sigkill(tmp_path: Path, synchronous: str) -> None:
    path = tmp_path / "store.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), synchronous],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    acknowledged: list[str] = []
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 30
        while len(acknowledged) < ACKS_BEFORE_KILL:
            line = child.stdout.readline()  # the child writes fast: this never waits long
            assert line, f"writer stopped early: {child.stderr.read()!r}"  # type: ignore[union-attr]
            acknowledged.append(line.decode().rstrip("\n"))
            assert time.monotonic() < deadline, "writer too slow"
        os.kill(child.pid, signal.SIGKILL)
        # Keys already in the pipe were acknowledged before the kill: they count too. A last
        # line without its newline was cut by the kill and is ignored.
        rest = child.stdout.read().decode()
        acknowledged += [line for line in rest.split("\n")[:-1] if line]
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

    missing = asyncio.run(lost_keys(path, acknowledged))
    assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged keys lost"
