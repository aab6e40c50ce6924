"""`python -m bot loadtest`: the real bot, in a child process, against the local emulators.

The emulators and the simulated users run in this process; the bot runs as `python -m bot run`
in its own, pointed at them through DISCORD_REST_URL / GEMINI_BASE_URL, so its CPU time and
memory can be read from the OS on their own. The pieces (`BotProcess`, `ReplyWatcher`,
`parse_latency`) are shared with the benchmark harness in `benchmarks/`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TextIO

import psutil

from bot.config import Settings
from bot.emulator.discord import DiscordEmulator, SentMessage
from bot.emulator.gemini import GeminiEmulator, Latency
from bot.emulator.local_server import free_port
from bot.ops.percentile import percentile

__all__ = [
    "BotProcess",
    "LoadConfig",
    "LoadReport",
    "ProcessUsage",
    "ReplyWatcher",
    "add_arguments",
    "bot_command",
    "bot_env",
    "classify_reply",
    "main",
    "message_time",
    "parse_latency",
    "run_loadtest",
]

# A loadtest measures the bot, not a free-tier quota or a person's typing speed: these apply
# unless the operator set them (environment or .env).
LOADTEST_DEFAULTS: dict[str, object] = {
    "user_cooldown_seconds": 0,
    "gemini_rate_limit_rpm": 1_000_000,
    "gemini_rate_limit_daily": 100_000_000,
    "queue_max_size": 10_000,
    "log_level": "WARNING",
}
# With --no-discord-limits the bot may call as fast as the emulator answers.
UNLIMITED_REST_RPS = 100_000.0
USERS_PER_GUILD = 50
# absolute(), not resolve(): a symlinked checkout must run its own `bot` package.
_REPO_ROOT = Path(__file__).absolute().parent.parent


# -- the bot as a child process -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    """A child's CPU time (user + system, all threads) and memory, as the OS reports them."""

    cpu_s: float
    rss_bytes: int
    peak_rss_bytes: int


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, frozenset | set | list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def bot_env(
    settings: Mapping[str, object],
    *,
    base: Mapping[str, str] | None = None,
    keep_settings: bool = False,
) -> dict[str, str]:
    """The environment of a bot child: `base` (default os.environ) plus `settings` (by field name).

    Without `keep_settings`, every bot setting and OTEL_* variable in `base` is dropped first,
    so only `settings` configure the child.
    """
    env = dict(os.environ if base is None else base)
    if not keep_settings:
        names = {name.upper() for name in Settings.model_fields} | {"GOOGLE_API_KEY"}
        env = {k: v for k, v in env.items() if k not in names and not k.startswith("OTEL_")}
    for name, value in settings.items():
        key = name.upper()
        if value is None:
            env.pop(key, None)
        else:
            env[key] = _env_value(value)
    # The child must find this checkout's `bot` package whatever its working directory.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def bot_command() -> list[str]:
    """The command line of the real bot."""
    return [sys.executable, "-m", "bot", "run"]


class BotProcess:
    """A child process (the bot, or a baseline) whose CPU and RSS are read through psutil."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        cwd: Path,
        log_path: Path,
        name: str = "bot",
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.name = name
        self._proc: asyncio.subprocess.Process | None = None
        self._ps: psutil.Process | None = None
        self._log: TextIO | None = None
        self._peak_sampled = 0

    async def start(self) -> None:
        """Start the child; its stdout and stderr go to `log_path`."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w")
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._ps = psutil.Process(self._proc.pid)

    @property
    def pid(self) -> int:
        """The child's process id."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the child has ended, else None."""
        return None if self._proc is None else self._proc.returncode

    @property
    def running(self) -> bool:
        """Whether the child is still alive."""
        return self._proc is not None and self._proc.returncode is None

    async def wait_ready(self, discord: DiscordEmulator, timeout_s: float = 60.0) -> None:
        """Wait until the child's gateway session is READY; fail early (with its log) if it dies."""
        assert self._proc is not None
        ready = asyncio.ensure_future(discord.wait_until_ready(timeout=timeout_s))
        died = asyncio.ensure_future(self._proc.wait())
        try:
            await asyncio.wait({ready, died}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (ready, died):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await task
        if not self.running:
            raise RuntimeError(f"{self.name} exited during start-up:\n{self.log_tail()}")
        if ready.cancelled() or ready.exception() is not None:
            raise RuntimeError(f"{self.name} did not connect in {timeout_s:g}s:\n{self.log_tail()}")

    def pause(self) -> None:
        """Stop the child (SIGSTOP): it takes no CPU until `resume()`."""
        if self._ps is not None:
            self._ps.suspend()

    def resume(self) -> None:
        """Let a paused child run again (SIGCONT)."""
        if self._ps is not None:
            self._ps.resume()

    def usage(self) -> ProcessUsage:
        """CPU seconds so far, current RSS and peak RSS (VmHWM where Linux reports it)."""
        if self._ps is None:
            raise RuntimeError(f"{self.name} is not started")
        with self._ps.oneshot():
            times = self._ps.cpu_times()
            rss = int(self._ps.memory_info().rss)
        self._peak_sampled = max(self._peak_sampled, rss)
        return ProcessUsage(times.user + times.system, rss, max(self._peak_rss(), rss))

    def _peak_rss(self) -> int:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return self._peak_sampled
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return self._peak_sampled

    async def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`; returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the child wrote."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


# -- what came back -----------------------------------------------------------------------------


def message_time(message: Mapping[str, Any]) -> float:
    """Epoch seconds of a Discord message object's `timestamp` (set by the emulator)."""
    return datetime.fromisoformat(str(message["timestamp"])).timestamp()


class ReplyWatcher:
    """Resolves one future per awaited reply from a single watcher task (cheap at any scale)."""

    def __init__(self, discord: DiscordEmulator) -> None:
        self._discord = discord
        self._last_id = 0
        self._replies: dict[int, list[SentMessage]] = {}
        self._waiters: dict[int, list[tuple[int, asyncio.Future[SentMessage]]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.seen = 0

    def start(self) -> None:
        """Start watching the bot's messages."""
        if self._task is None:
            sent = self._discord.sent_messages
            self._last_id = sent[-1].id if sent else 0
            self._task = asyncio.create_task(self._run(), name="reply watcher")

    async def stop(self) -> None:
        """Stop watching; pending waits are cancelled."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for waiters in self._waiters.values():
            for _, future in waiters:
                future.cancel()
        self._waiters.clear()

    async def reply(self, message_id: int, timeout_s: float, nth: int = 1) -> SentMessage:
        """The `nth` bot message replying to `message_id`; TimeoutError if it does not come."""
        replies = self._replies.get(message_id, [])
        if len(replies) >= nth:
            return replies[nth - 1]
        future: asyncio.Future[SentMessage] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(message_id, []).append((nth, future))
        try:
            return await asyncio.wait_for(future, timeout_s)
        finally:
            waiters = self._waiters.get(message_id)
            if waiters is not None:
                waiters[:] = [(n, f) for n, f in waiters if f is not future]
                if not waiters:
                    del self._waiters[message_id]

    def forget(self, message_id: int) -> None:
        """Drop what is kept about `message_id` (keeps memory flat in long runs)."""
        self._replies.pop(message_id, None)

    async def _run(self) -> None:
        sent = self._discord.sent_messages
        while True:
            await self._discord.wait_for(
                lambda: bool(sent) and sent[-1].id > self._last_id, timeout=1e9, what="replies"
            )
            fresh: list[SentMessage] = []
            # Ids only grow, so the new messages are the tail (the list may have been trimmed).
            for message in reversed(sent):
                if message.id <= self._last_id:
                    break
                fresh.append(message)
            self._last_id = sent[-1].id
            for message in reversed(fresh):
                self._deliver(message)

    def _deliver(self, message: SentMessage) -> None:
        self.seen += 1
        if message.reply_to is None:
            return
        replies = self._replies.setdefault(message.reply_to, [])
        replies.append(message)
        for nth, future in self._waiters.get(message.reply_to, []):
            if len(replies) >= nth and not future.done():
                future.set_result(replies[nth - 1])


def classify_reply(text: str) -> str:
    """`answered` for a model answer from the emulator, else the kind of notice the bot sent."""
    if text.startswith(("You said:", "You sent no text", "# Rate limits")):
        return "answered"
    lowered = text.lower()
    if "queued" in lowered:
        return "queued"
    if lowered.startswith("you're going a bit fast"):
        return "cooldown"
    if "maintenance" in lowered:
        return "maintenance"
    return "other_notice"


def parse_latency(spec: str, seed: int = 1) -> Latency:
    """`fixed:S`, `uniform:A,B` or `lognormal:MEAN,SIGMA` (seconds; SIGMA of the log) or `S`."""
    kind, colon, args = spec.partition(":")
    if not colon:
        kind, args = "fixed", kind
    try:
        numbers = [float(part) for part in args.split(",")]
    except ValueError:
        where = "after the colon" if colon else "(seconds, or kind:numbers)"
        raise ValueError(
            f"bad latency {spec!r}: numbers expected {where}; use fixed:0.2, uniform:0.1,0.5 "
            "or lognormal:0.3,0.5"
        ) from None
    rng = random.Random(seed)
    if kind == "fixed" and len(numbers) == 1 and numbers[0] >= 0:
        return numbers[0]
    if kind == "uniform" and len(numbers) == 2 and 0 <= numbers[0] <= numbers[1]:
        low, high = numbers
        return lambda: rng.uniform(low, high)
    if kind == "lognormal" and len(numbers) == 2 and numbers[0] > 0 and numbers[1] >= 0:
        mean, sigma = numbers
        mu = math.log(mean) - sigma * sigma / 2  # so that the mean latency is `mean`
        return lambda: rng.lognormvariate(mu, sigma)
    raise ValueError(
        f"bad latency {spec!r}: use fixed:0.2, uniform:0.1,0.5 or lognormal:0.3,0.5 (seconds)"
    )


# -- the load test ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """What `python -m bot loadtest` was asked to do."""

    concurrency: int
    duration_s: float
    rate: float | None = None
    gemini_latency: str = "fixed:0.2"
    discord_limits: bool = True
    reply_timeout_s: float = 30.0
    seed: int = 1


@dataclass
class LoadReport:
    """The figures of one load test run (also its JSON form)."""

    concurrency: int
    duration_s: float
    rate: float | None
    gemini_latency: str
    discord_limits: bool
    messages_sent: int = 0
    replies: int = 0
    answered: int = 0
    elapsed_s: float = 0.0
    throughput_per_s: float = 0.0
    response_s: dict[str, float] = field(default_factory=dict)
    # User message created -> first text of the answer visible (streamed answers show early).
    first_visible_s: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    bot_cpu_s: float = 0.0
    bot_startup_cpu_s: float = 0.0
    bot_peak_rss_bytes: int = 0
    bot_exit_code: int | None = None


class _Progress:
    """A one-line progress bar on stderr (a line per 10 % when stderr is not a terminal)."""

    def __init__(self, total_s: float, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self._total = max(total_s, 1e-9)
        self._stream = stream
        self._width = width
        self._tty = stream.isatty()
        self._last_decile = -1

    def show(self, elapsed_s: float, sent: int, answered: int) -> None:
        share = min(1.0, elapsed_s / self._total)
        rate = answered / elapsed_s if elapsed_s > 0 else 0.0
        filled = int(share * self._width)
        bar = "#" * filled + "." * (self._width - filled)
        line = (
            f"[{bar}] {share:4.0%} {elapsed_s:5.1f}s  sent {sent}  answered {answered}"
            f"  {rate:.1f}/s"
        )
        if self._tty:
            self._stream.write("\r" + line)
            self._stream.flush()
        elif (decile := int(share * 10)) != self._last_decile:
            self._last_decile = decile
            self._stream.write(line + "\n")
            self._stream.flush()

    def done(self) -> None:
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()


class _Pacer:
    """Hands out send times `1/rate` apart to all users together (an open-loop rate cap)."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._next = time.monotonic()

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


def _world(discord: DiscordEmulator, users: int) -> list[tuple[dict[str, Any], int]]:
    """`users` users, each with a text channel of their own (Discord limits are per channel)."""
    pairs: list[tuple[dict[str, Any], int]] = []
    guild = 0
    for index in range(users):
        if index % USERS_PER_GUILD == 0:
            guild = discord.create_guild(f"Load guild {index // USERS_PER_GUILD + 1}")
        user = discord.create_user(f"load-user-{index + 1}")
        discord.add_member(guild, user)
        channel = discord.create_channel(guild, name=f"chat-{index + 1}")
        pairs.append((user, channel))
    return pairs


async def run_loadtest(
    config: LoadConfig,
    *,
    settings: Settings | None = None,
    progress: bool = True,
    workdir: Path | None = None,
) -> LoadReport:
    """Run the bot in a child process under `config.concurrency` closed-loop users."""
    report = LoadReport(
        config.concurrency,
        config.duration_s,
        config.rate,
        config.gemini_latency,
        config.discord_limits,
    )
    latency = parse_latency(config.gemini_latency, config.seed)
    with tempfile.TemporaryDirectory(prefix="bot-loadtest-") as tmp:
        scratch = workdir or Path(tmp)
        async with (
            DiscordEmulator(
                enforce_limits=config.discord_limits,
                validate=config.discord_limits,
                history_limit=100_000,
            ) as discord,
            GeminiEmulator(latency=latency, seed=config.seed) as gemini,
        ):
            pairs = _world(discord, config.concurrency)
            overrides: dict[str, object] = {
                name: value
                for name, value in LOADTEST_DEFAULTS.items()
                if settings is None or name not in settings.model_fields_set
            }
            if not config.discord_limits:
                overrides["discord_rest_max_rps"] = UNLIMITED_REST_RPS
            overrides.update(
                discord_token=discord.token,
                gemini_api_key=gemini.api_key,
                discord_rest_url=discord.rest_url,
                gemini_base_url=gemini.base_url,
                data_dir=scratch / "data",
                ops_port=free_port(),
            )
            env = bot_env(overrides, keep_settings=settings is not None)
            proc = BotProcess(
                bot_command(), env, cwd=Path.cwd(), log_path=scratch / "bot.log", name="the bot"
            )
            async with proc:
                await proc.wait_ready(discord)
                started = proc.usage()
                report.bot_startup_cpu_s = started.cpu_s
                await _drive(discord, pairs, config, report, progress)
                usage = proc.usage()
                report.bot_cpu_s = usage.cpu_s - started.cpu_s
                report.bot_peak_rss_bytes = usage.peak_rss_bytes
                report.errors["gemini_429"] = gemini.rate_limited_count
                report.errors["discord_429"] = discord.rate_limited_count
                report.errors["discord_spec_violation"] = len(discord.spec_violations)
                if not proc.running:
                    report.errors["bot_exited"] = 1
            report.bot_exit_code = proc.returncode
    return report


async def _drive(
    discord: DiscordEmulator,
    pairs: list[tuple[dict[str, Any], int]],
    config: LoadConfig,
    report: LoadReport,
    progress: bool,
) -> None:
    watcher = ReplyWatcher(discord)
    watcher.start()
    pacer = _Pacer(config.rate)
    kinds: Counter[str] = Counter()
    times: list[float] = []
    first_times: list[float] = []
    bar = _Progress(config.duration_s) if progress else None
    start = time.monotonic()
    deadline = start + config.duration_s

    async def user(author: dict[str, Any], channel: int, index: int) -> None:
        turn = 0
        while True:
            await pacer.wait()
            if time.monotonic() >= deadline:
                return
            turn += 1
            sent = await discord.send_message(
                channel,
                author=author,
                content=f"question {turn} from user {index}: what is a monad?",
                mention_bot=True,
            )
            report.messages_sent += 1
            message_id = int(sent["id"])
            try:
                reply = await watcher.reply(message_id, config.reply_timeout_s)
                shown_at = done_at = message_time(reply.message)
                if discord.streaming_in(channel):  # a streamed answer: wait for its end
                    await discord.wait_for(
                        lambda: not discord.streaming_in(channel),
                        config.reply_timeout_s,
                        "a streamed answer to end",
                    )
                    done_at = time.time()
            except TimeoutError:
                kinds["timeout"] += 1
                continue
            finally:
                watcher.forget(message_id)
            report.replies += 1
            kind = classify_reply(reply.content)
            kinds[kind] += 1
            if kind == "answered":
                report.answered += 1
                times.append(done_at - message_time(sent))
                first_times.append(shown_at - message_time(sent))

    async def show() -> None:
        assert bar is not None
        while True:
            bar.show(time.monotonic() - start, report.messages_sent, report.answered)
            await asyncio.sleep(0.25)

    ticker = asyncio.create_task(show()) if bar is not None else None
    try:
        await asyncio.gather(*(user(a, c, i) for i, (a, c) in enumerate(pairs)))
    finally:
        if ticker is not None and bar is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            bar.show(time.monotonic() - start, report.messages_sent, report.answered)
            bar.done()
        await watcher.stop()
    report.elapsed_s = time.monotonic() - start
    report.throughput_per_s = report.answered / report.elapsed_s if report.elapsed_s else 0.0
    report.response_s = {
        f"p{q}": round(percentile(times, q), 4) if times else math.nan for q in (50, 95, 99)
    }
    report.first_visible_s = {
        f"p{q}": round(percentile(first_times, q), 4) if first_times else math.nan
        for q in (50, 95, 99)
    }
    report.errors.update({k: v for k, v in kinds.items() if k != "answered"})


def format_report(report: LoadReport) -> str:
    """The human-readable summary."""
    rate = f"{report.rate:g}/s" if report.rate else "as fast as answered"
    errors = ", ".join(f"{k} {v}" for k, v in sorted(report.errors.items()) if v) or "none"

    def ms(key: str, figures: dict[str, float] | None = None) -> str:
        value = (report.response_s if figures is None else figures).get(key, math.nan)
        return "n/a" if math.isnan(value) else f"{value * 1000:.0f} ms"

    first = report.first_visible_s

    return "\n".join(
        [
            f"load test: {report.concurrency} users, {report.duration_s:g} s, rate {rate}, "
            f"Gemini latency {report.gemini_latency}, "
            f"Discord limits {'on' if report.discord_limits else 'off'}",
            f"  messages        {report.messages_sent} sent, {report.replies} replies, "
            f"{report.answered} answered",
            f"  throughput      {report.throughput_per_s:.1f} answers/s "
            f"over {report.elapsed_s:.1f} s",
            f"  response time   p50 {ms('p50')}  p95 {ms('p95')}  p99 {ms('p99')}",
            f"  first visible   p50 {ms('p50', first)}  p95 {ms('p95', first)}  "
            f"p99 {ms('p99', first)}",
            f"  errors          {errors}",
            f"  bot CPU         {report.bot_cpu_s:.2f} s under load "
            f"(+{report.bot_startup_cpu_s:.2f} s start-up)",
            f"  bot peak RSS    {report.bot_peak_rss_bytes / 2**20:.1f} MiB",
        ]
    )


# -- command line -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The loadtest subcommand's options."""
    parser.add_argument(
        "--concurrency", type=int, default=10, help="simulated users, each waiting for its answer"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument(
        "--rate", type=float, default=None, help="cap on messages/s across all users"
    )
    parser.add_argument(
        "--gemini-latency",
        default="fixed:0.2",
        help="Gemini emulator latency: fixed:S, uniform:A,B or lognormal:MEAN,SIGMA",
    )
    parser.add_argument(
        "--no-discord-limits",
        action="store_true",
        help="relax the Discord emulator's rate limits and validation (and the bot's pacing)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")


def main(settings: Settings, args: argparse.Namespace) -> int:
    """Run the load test from parsed arguments; prints the report, returns the exit code."""
    if args.concurrency < 1 or args.duration <= 0 or (args.rate is not None and args.rate <= 0):
        print("error: --concurrency, --duration and --rate must be positive", file=sys.stderr)
        return 2
    try:
        parse_latency(args.gemini_latency)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = LoadConfig(
        concurrency=args.concurrency,
        duration_s=args.duration,
        rate=args.rate,
        gemini_latency=args.gemini_latency,
        discord_limits=not args.no_discord_limits,
    )
    report = asyncio.run(run_loadtest(config, settings=settings))
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=2, default=str) + "\n")
    return 0 if report.answered else 1
