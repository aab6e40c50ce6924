"""`python -m bot fleet --processes N [--shard-count M]`: a fleet of bot processes on one machine.

Each child is `python -m bot run` with its own consecutive shard range (DISCORD_SHARD_IDS of
DISCORD_SHARD_COUNT), its own ops port (OPS_PORT, OPS_PORT + 1, ...), its own DATA_DIR
sub-folder (`process-0`, ...) and the one REDIS_URL they share the quota and identify turns
through. The supervisor restarts a child that exits with backoff (1 s doubling to 30 s; reset
after a minute of running), stops the fleet when a child reports a configuration mistake
(exit 2 or 78: a restart would fail the same way), forwards SIGTERM/SIGINT for a graceful stop,
and writes a Prometheus `file_sd` targets file naming every child.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bot.config import ConfigError, Settings

__all__ = ["FleetPlan", "ProcessPlan", "add_arguments", "main", "plan_fleet"]

log = logging.getLogger(__name__)

RESTART_FIRST_S: Final = 1.0
RESTART_MAX_S: Final = 30.0
RESTART_RESET_AFTER_S: Final = 60.0
# Exit codes after which a restart cannot help: a setting to fix (ConfigError, GatewayRefused).
FATAL_EXIT_CODES: Final = frozenset({2, 78})
TARGETS_FILE: Final = "fleet-targets.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--processes", type=int, required=True, help="bot processes to run (each `bot run`)"
    )
    parser.add_argument(
        "--shard-count",
        type=int,
        default=None,
        help="the bot's total shards (default: DISCORD_SHARD_COUNT, else one per process)",
    )
    parser.add_argument(
        "--targets-file",
        type=Path,
        default=None,
        help=f"Prometheus file_sd targets file to write (default: DATA_DIR/{TARGETS_FILE})",
    )


@dataclass(frozen=True, slots=True)
class ProcessPlan:
    index: int
    shard_ids: tuple[int, ...]
    ops_port: int
    data_dir: Path

    @property
    def shards_text(self) -> str:
        first, last = self.shard_ids[0], self.shard_ids[-1]
        return str(first) if first == last else f"{first}-{last}"


@dataclass(frozen=True, slots=True)
class FleetPlan:
    shard_count: int
    processes: tuple[ProcessPlan, ...]
    ops_host: str
    targets_file: Path


def plan_fleet(
    settings: Settings, processes: int, shard_count: int | None, targets_file: Path | None
) -> FleetPlan:
    """Split the shards into consecutive ranges, or say in one line what to set."""
    if settings.redis_url is None:
        raise ConfigError(
            "python -m bot fleet needs REDIS_URL (its processes share the quota through Redis): "
            "set REDIS_URL, e.g. redis://127.0.0.1:6379/0"
        )
    if processes < 1:
        raise ConfigError(f"--processes must be at least 1, got {processes}")
    count = shard_count or settings.discord_shard_count or processes
    if count < processes:
        raise ConfigError(
            f"--shard-count {count} is less than --processes {processes}: every process needs a "
            "shard"
        )
    if settings.ops_port == 0 or settings.ops_port + processes - 1 > 65535:
        raise ConfigError(
            f"OPS_PORT = {settings.ops_port} cannot start {processes} consecutive ops ports: set "
            "OPS_PORT to a fixed port with room above it (e.g. 9464)"
        )
    plans = []
    for index in range(processes):
        low, high = index * count // processes, (index + 1) * count // processes
        plans.append(
            ProcessPlan(
                index=index,
                shard_ids=tuple(range(low, high)),
                ops_port=settings.ops_port + index,
                data_dir=settings.data_dir / f"process-{index}",
            )
        )
    return FleetPlan(
        shard_count=count,
        processes=tuple(plans),
        ops_host=settings.ops_host,
        targets_file=targets_file or settings.data_dir / TARGETS_FILE,
    )


def write_targets(plan: FleetPlan) -> None:
    """The Prometheus file_sd file: one target per process, labelled with its shards."""
    host = "127.0.0.1" if plan.ops_host in ("0.0.0.0", "::", "") else plan.ops_host
    groups = [
        {
            "targets": [f"{host}:{p.ops_port}"],
            "labels": {"fleet_process": str(p.index), "shards": p.shards_text},
        }
        for p in plan.processes
    ]
    plan.targets_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan.targets_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups, indent=2) + "\n", encoding="utf-8")
    tmp.replace(plan.targets_file)  # Prometheus never reads half a file


@dataclass
class _Child:
    plan: ProcessPlan
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    backoff_s: float = RESTART_FIRST_S
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)


class FleetSupervisor:
    """Runs the children, restarts the ones that exit, stops them all on a signal."""

    def __init__(
        self,
        plan: FleetPlan,
        *,
        command: Sequence[str] = (sys.executable, "-m", "bot", "run"),
        first_backoff_s: float = RESTART_FIRST_S,
    ) -> None:
        self.plan = plan
        self.shard_count = plan.shard_count
        self._command = tuple(command)
        self._first_backoff_s = first_backoff_s
        self.children = [_Child(p, backoff_s=first_backoff_s) for p in plan.processes]
        self._stopping = asyncio.Event()
        self.exit_code = 0

    def _env(self, child: _Child) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DISCORD_SHARD_IDS=",".join(str(i) for i in child.plan.shard_ids),
            DISCORD_SHARD_COUNT=str(self.shard_count),
            OPS_PORT=str(child.plan.ops_port),
            DATA_DIR=str(child.plan.data_dir),
        )
        env.pop("HEAL_INSTANCE", None)  # each child is its own instance (host:port)
        return env

    async def _spawn(self, child: _Child) -> None:
        child.plan.data_dir.mkdir(parents=True, exist_ok=True)
        child.process = await asyncio.create_subprocess_exec(*self._command, env=self._env(child))
        child.started_at = time.monotonic()
        log.info(
            "fleet process %d (shards %s of %d, ops port %d) started as pid %d",
            child.plan.index,
            child.plan.shards_text,
            self.shard_count,
            child.plan.ops_port,
            child.process.pid,
        )

    async def _watch(self, child: _Child) -> None:
        while not self._stopping.is_set():
            await self._spawn(child)
            assert child.process is not None
            code = await child.process.wait()
            child.exit_codes.append(code)
            if self._stopping.is_set():
                return
            if code in FATAL_EXIT_CODES:
                log.error(
                    "fleet process %d exited with %d (a setting to fix, see its log): stopping "
                    "the fleet",
                    child.plan.index,
                    code,
                )
                self.exit_code = code
                self._stopping.set()
                return
            if time.monotonic() - child.started_at >= RESTART_RESET_AFTER_S:
                child.backoff_s = self._first_backoff_s
            log.warning(
                "fleet process %d exited with %d; restarting in %.0f s",
                child.plan.index,
                code,
                child.backoff_s,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), child.backoff_s)
            child.backoff_s = min(child.backoff_s * 2, RESTART_MAX_S)
            child.restarts += 1

    def stop(self) -> None:
        """Stop the fleet (what SIGTERM and SIGINT do)."""
        self._stopping.set()

    async def run(self, grace_s: float) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopping.set)
        write_targets(self.plan)
        watchers = [asyncio.create_task(self._watch(c)) for c in self.children]
        await self._stopping.wait()
        log.info("stopping the fleet: SIGTERM to every process")
        for child in self.children:
            if child.process is not None and child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        for child in self.children:
            process = child.process
            if process is None:
                continue
            try:
                await asyncio.wait_for(process.wait(), grace_s)
            except TimeoutError:
                log.error("fleet process %d did not stop in time: killing it", child.plan.index)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        return self.exit_code


def main(settings: Settings, args: argparse.Namespace) -> int:
    plan = plan_fleet(settings, args.processes, args.shard_count, args.targets_file)
    settings.require_credentials()  # say it once here rather than N times from the children
    supervisor = FleetSupervisor(plan)
    # The children drain for SHUTDOWN_GRACE_SECONDS; give them that and a little more.
    return asyncio.run(supervisor.run(settings.shutdown_grace_seconds + 10))
