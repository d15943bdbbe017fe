"""
The command line of C{python -m benchmarks.peers}.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from benchmarks.peers.child import run_child
from benchmarks.peers.run import run_benchmark
from benchmarks.peers.settings import FULL, MODULE, QUICK, RESULTS, SCENARIOS, SYSTEMS


def choices(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        out = []
        for part in text.split(","):
            name = part.strip()
            if not name:
                continue
            if name not in allowed:
                raise argparse.ArgumentTypeError(
                    f"unknown {name!r}; choose from {', '.join(allowed)}"
                )
            out.append(name)
        if not out:
            raise argparse.ArgumentTypeError("none given")
        return out

    return parse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def round_arguments(
    p: argparse.ArgumentParser,
    *,
    scenarios: tuple[str, ...],
    metavar: str,
    scenarios_help: str,
    stem: str,
    rounds: int,
    quick_rounds: int,
    results: Path,
    output_help: str = "",
) -> None:
    """
    The options every benchmark of interleaved rounds takes: C{--scenarios},
    C{--quick}, C{--rounds}, C{--output-dir} (its results go to
    C{<stem>.json}, or C{<stem>-quick.json}).
    """
    p.add_argument(
        "--scenarios",
        type=choices(scenarios),
        default=list(scenarios),
        metavar=metavar,
        help=f"scenarios to run ({scenarios_help})",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny sizes, {quick_rounds} round{'s' if quick_rounds > 1 else ''} "
        f"(seconds); writes {stem}-quick.json",
    )
    p.add_argument(
        "--rounds",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"interleaved rounds (default: {rounds}; --quick: {quick_rounds})",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        default=results,
        metavar="DIR",
        help=f"where {stem}.json{output_help} goes (default: benchmarks/results)",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m " + MODULE,
        description=(
            "twcomms against its peers (raw sockets, stock Twisted, asyncio,\n"
            "pyzmq), every server and client in its own process on 127.0.0.1:\n"
            "A small-message throughput, B round-trip latency, C broadcast to\n"
            "50 clients, D 64 and 256 MiB messages, E 10,000 connections.\n"
            "Prints each figure and its ratio to the raw-socket floor, and\n"
            "twcomms' targets with PASS/MISS."
        ),
        epilog=(
            "examples:\n"
            "  python -m benchmarks.peers\n"
            "  python -m benchmarks.peers --quick\n"
            "  python -m benchmarks.peers --scenarios A,B --repeat 5\n"
            "  python -m benchmarks.peers --scenarios E --scale-connections 2000\n"
            "  python -m benchmarks.peers --scenarios A --systems "
            "twcomms-twisted --profile\n"
            "writes benchmarks/results/peers.json and peers.png "
            "(--quick: peers-quick.*)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--scenarios",
        type=choices(SCENARIOS),
        default=list(SCENARIOS),
        metavar="A,B,C,D,E",
        help="scenarios to run (default: all)",
    )
    p.add_argument(
        "--systems",
        type=choices(SYSTEMS),
        default=list(SYSTEMS),
        metavar="NAME,...",
        help="systems to run (default: all): " + ", ".join(SYSTEMS),
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes (about 10-20 s); writes peers-quick.json/.png",
    )
    p.add_argument(
        "--repeat",
        type=positive_int,
        default=None,
        metavar="N",
        help="best of N: A runs N times, D receives N times per "
        "connection (default: 3; --quick: 1)",
    )
    p.add_argument(
        "--scale-connections",
        type=positive_int,
        default=None,
        metavar="N",
        help="E's concurrent connections (default: 10000; --quick: 40)",
    )
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        metavar="N",
        help="cells run at once (default: 1; --quick: 3, whose "
        "figures are then only a smoke test)",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        default=RESULTS,
        metavar="DIR",
        help="where peers.json and peers.png go (default: benchmarks/results)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="run the twcomms processes under py-spy and print their "
        "top functions (stacks kept in <output-dir>/profiles/); "
        "writes no JSON or chart",
    )
    p.add_argument(
        "--child",
        nargs=4,
        metavar=("ROLE", "SYSTEM", "SCENARIO", "SPEC"),
        help=argparse.SUPPRESS,
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.child:
        role, system, scn, spec = args.child
        return run_child(role, system, scn, json.loads(spec))
    settings = QUICK if args.quick else FULL
    if args.repeat is not None:
        settings = replace(settings, repeat=args.repeat)
    if args.scale_connections is not None:
        settings = replace(settings, e_connections=args.scale_connections)
    profile_dir = args.output_dir / "profiles" if args.profile else None
    run = run_benchmark(
        settings,
        scenarios=args.scenarios,
        systems=args.systems,
        output_dir=None if args.profile else args.output_dir,
        profile_dir=profile_dir,
        argv=argv,
        jobs=args.jobs,
    )
    return 0 if not any(c["status"] == "error" for c in run["cells"]) else 1
