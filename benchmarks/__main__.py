"""`python -m benchmarks [--quick] [--only NAME ...] [--no-instrumentation] [--profile]`."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Mode, Result
from benchmarks.report import existing_analysis, load_results, machine_facts, render, save_results
from benchmarks.scenarios import ALL_SCENARIOS, SCENARIOS, Options

HERE = Path(__file__).absolute().parent


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} s: give a duration above 0")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="smaller and shorter (about 4 min instead of 16)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(ALL_SCENARIOS),
        default=None,
        help="run only these (soak and fleet run only when named)",
    )
    parser.add_argument(
        "--duration",
        type=_seconds,
        default=None,
        help="seconds of traffic for the soak (default 1200; 180 with --quick)",
    )
    parser.add_argument(
        "--no-instrumentation",
        dest="instrumentation",
        action="store_false",
        help="skip the answer path's instrumentation on vs off comparison",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="attach py-spy to each measured process; writes benchmarks/profiles/ "
        "(figures are printed, not written to RESULTS.md)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where to write the report (default: benchmarks/RESULTS.md for a full run)",
    )
    parser.add_argument("--keep-scratch", action="store_true", help="keep child logs and data")
    return parser


async def run(options: Options, names: list[str]) -> list[Result]:
    """Run the named scenarios one after the other."""
    results = []
    for name in names:
        started = time.monotonic()
        print(f"benchmarks: {name} ...", file=sys.stderr, flush=True)
        result = await ALL_SCENARIOS[name](options)
        print(
            f"benchmarks: {name} done in {time.monotonic() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the harness and write the report."""
    args = _parser().parse_args(argv)
    mode: Mode = "quick" if args.quick else "full"
    names = args.only or list(SCENARIOS)
    scratch = Path(tempfile.mkdtemp(prefix="bot-bench-"))
    options = Options(
        mode=mode,
        scratch=scratch,
        instrumentation=args.instrumentation,
        profile_dir=HERE / "profiles" if args.profile else None,
        soak_seconds=args.duration,
    )
    started = time.monotonic()
    try:
        results = asyncio.run(run(options, names))
    finally:
        if args.keep_scratch:
            print(f"benchmarks: logs and data kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    facts = machine_facts(mode, (time.monotonic() - started) / 60)
    output: Path | None = args.output
    if output is None and mode == "full" and not args.profile:
        output = HERE / "RESULTS.md"
    if output is not None:
        raw_path = output.with_name(output.stem.lower() + ".json")
        if args.only:  # refresh these scenarios, keep the others of the last run
            fresh = {r.name: r for r in results}
            earlier, earlier_facts = load_results(raw_path)
            kept = [r for r in earlier if r.name not in fresh]
            results = sorted(
                [*kept, *fresh.values()], key=lambda r: list(ALL_SCENARIOS).index(r.name)
            )
            if kept and earlier_facts:
                refreshed = f"{', '.join(names)} on {facts['date']} ({facts['mode']})"
                # Earlier refreshes of other scenarios stay listed; one of these replaces its own.
                earlier_refreshes = [
                    entry
                    for entry in str(earlier_facts.get("refreshed", "")).split("; ")
                    if entry and entry.split(" on ", 1)[0] not in ", ".join(names)
                ]
                facts = {**earlier_facts, "refreshed": "; ".join([*earlier_refreshes, refreshed])}
        output.write_text(render(results, facts, existing_analysis(output)))
        save_results(raw_path, results, facts)
        print(f"benchmarks: wrote {output} and {raw_path.name}", file=sys.stderr)
    print(render(results, facts, ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
