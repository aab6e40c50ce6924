"""Command line: `python -m bot run | demo | check | loadtest | export | fleet` (also
`discord-llm-bot`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from bot.config import ConfigError, Settings, ensure_data_dir, load_settings, unknown_settings
from bot.logs import setup_logging
from bot.ops.runtime import detect_build_info
from bot.ops.tracing import install_log_correlation, setup_tracing

if TYPE_CHECKING:
    from bot.emulator.fault_schedule import FaultPhase

__all__ = ["main"]

_N = TypeVar("_N", int, float)

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_REJECTED = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the bot against Discord and Gemini (needs tokens)")
    demo = sub.add_parser(
        "demo",
        help="run the real bot against local Discord and Gemini emulators with simulated users",
    )
    demo.add_argument("--users", type=_positive(int), default=4, help="simulated users (default 4)")
    demo.add_argument(
        "--rate",
        type=_positive(float),
        default=0.5,
        help="messages per second across all users (default 0.5)",
    )
    demo.add_argument(
        "--duration",
        type=_positive(float),
        default=None,
        help="stop after this many seconds (default: Ctrl-C)",
    )
    demo.add_argument("--seed", type=int, default=1, help="random seed of the simulated users")
    demo.add_argument(
        "--faults",
        metavar="SCHEDULE",
        type=_fault_schedule,
        default=[],
        help="Gemini faults, kind:start+duration in seconds, e.g. slow:30+90,errors:20+150 "
        "(kinds: slow, errors, ratelimit)",
    )
    sub.add_parser("check", help="validate the settings and, where reachable, the tokens")
    from bot.loadtest import add_arguments as add_loadtest_arguments

    add_loadtest_arguments(
        sub.add_parser("loadtest", help="load the real bot (a child process) through the emulators")
    )
    from bot.fleet import add_arguments as add_fleet_arguments

    add_fleet_arguments(
        sub.add_parser(
            "fleet",
            help="run N bot processes on this machine sharing state through Redis (REDIS_URL)",
        )
    )
    from bot.export import add_arguments as add_export_arguments

    add_export_arguments(
        sub.add_parser("export", help="write the health history under DATA_DIR as JSON or CSV")
    )
    return parser


def _positive(kind: Callable[[str], _N]) -> Callable[[str], _N]:
    """An argparse type: a number above 0 (argparse prints the message and exits 2)."""

    def parse(text: str) -> _N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    return parse


def _fault_schedule(text: str) -> list[FaultPhase]:
    # Imported on use: the emulators are only needed by the demo.
    from bot.emulator.fault_schedule import parse_schedule

    try:
        return parse_schedule(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        setup_logging(settings.log_level, settings.log_format)
        install_log_correlation()
        unknown = unknown_settings()
        if args.command == "check" and unknown:
            for line in unknown:
                print(f"error: {line}", file=sys.stderr)
            return EXIT_CONFIG
        for line in unknown:  # a typo must not pass silently, nor stop a running bot
            logging.getLogger("bot").warning("%s", line)
        if args.command in ("run", "demo", "fleet"):
            ensure_data_dir(settings)
        if args.command == "run":
            return _run(settings)
        if args.command == "demo":
            from bot.demo import run_demo

            with tracing():
                return asyncio.run(
                    run_demo(
                        settings,
                        users=args.users,
                        rate=args.rate,
                        duration=args.duration,
                        seed=args.seed,
                        faults=args.faults,
                    )
                )
        if args.command == "check":
            from bot.check import run_check

            return asyncio.run(run_check(settings))
        if args.command == "loadtest":
            from bot.loadtest import main as run_loadtest

            return run_loadtest(settings, args)
        if args.command == "fleet":
            from bot.fleet import main as run_fleet

            return run_fleet(settings, args)
        if args.command == "export":
            from bot.export import main as run_export

            return run_export(settings, args)
    except ConfigError as exc:  # ServiceUnavailable included, with its own code
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


@contextlib.contextmanager
def tracing() -> Iterator[None]:
    """OpenTelemetry for this process, from the OTEL_* variables; spans flushed at exit."""
    handle = setup_tracing(detect_build_info().version)
    try:
        yield
    finally:
        handle.shutdown()


def _run(settings: Settings) -> int:
    token, api_key = settings.require_credentials()
    from bot.app import BotApp

    async def go() -> int:
        app = BotApp(settings, discord_token=token, gemini_api_key=api_key)
        return await app.run()

    with tracing():
        return asyncio.run(go())


if __name__ == "__main__":
    sys.exit(main())
