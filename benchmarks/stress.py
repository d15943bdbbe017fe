"""
Stress figures: every reliability scenario at a chosen scale, in a table.

Each scenario of L{harness.stress} (the same code the reliability tests
run) is run in a fresh process,
C{python -m harness.stress NAME --scale SCALE}, killed by pid
if it overruns C{--timeout} (L{harness.procs.run_bounded}). The table
gives, per scenario: the load held, the faults injected, the messages that
had to arrive (sent), arrived once and intact (received), never arrived
(lost) or arrived more than once (duplicated), the memory figure it
measured (tracemalloc peak or growth in the measured process, with the
bound it asserts), the time, and whether every check held.

Run from the repository root::

    python -m benchmarks.stress                 # ci scale (or TWCOMMS_SCALE)
    python -m benchmarks.stress --scale full    # the full sizes
    python -m benchmarks.stress --only load,churn --json out.json

Exit status: 0 if every scenario held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from harness.procs import run_bounded
from harness.stress.registry import SCENARIOS
from harness.stress.result import Result
from harness.stress.scale import SCALES

COLUMNS = (
    ("scenario", "scenario"),
    ("load", "load held"),
    ("faults", "faults injected"),
    ("sent", "sent"),
    ("received", "received"),
    ("lost", "lost"),
    ("duplicated", "dup"),
    ("memory", "memory (measured process)"),
    ("seconds", "time"),
    ("status", "held"),
)


def run_one(name: str, scale: str, timeout: float) -> tuple[Result | None, str]:
    """
    Run scenario C{name} in a fresh process; its L{Result}, or L{None} and
    why not.
    """
    done = run_bounded(
        [sys.executable, "-m", "harness.stress", name, "--scale", scale],
        timeout,
    )
    if done.cut_off:
        return None, f"cut off after {timeout:.0f} s"
    out, err = done.stdout, done.stderr
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            return Result.from_json(line[len("RESULT ") :]), ""
    tail = (err or out).strip().splitlines()[-1:] or ["no output"]
    return None, f"exit {done.returncode}: {tail[0]}"


def row(name: str, result: Result | None, why: str, seconds: float) -> dict[str, str]:
    if result is None:
        return {
            "scenario": name,
            "load": "-",
            "faults": "-",
            "sent": "-",
            "received": "-",
            "lost": "-",
            "duplicated": "-",
            "memory": "-",
            "seconds": f"{seconds:.1f} s",
            "status": f"FAILED ({why})",
        }
    return {
        "scenario": result.scenario,
        "load": result.load,
        "faults": result.faults,
        "sent": f"{result.sent:,}",
        "received": f"{result.received:,}",
        "lost": f"{result.lost:,}",
        "duplicated": f"{result.duplicated:,}",
        "memory": result.memory,
        "seconds": f"{result.seconds:.1f} s",
        "status": "yes" if not result.problems else f"NO ({len(result.problems)})",
    }


def table(rows: list[dict[str, str]]) -> str:
    """
    A Markdown table (readable as plain text too).
    """
    widths = {
        key: max(len(title), *(len(r[key]) for r in rows)) for key, title in COLUMNS
    }
    numeric = {"sent", "received", "lost", "duplicated", "seconds"}

    def line(cells: dict[str, str]) -> str:
        parts = [
            cells[key].rjust(widths[key])
            if key in numeric
            else cells[key].ljust(widths[key])
            for key, _ in COLUMNS
        ]
        return "| " + " | ".join(parts) + " |"

    head = line({key: title for key, title in COLUMNS})
    rule = (
        "|"
        + "|".join(
            "-" * (widths[key] + 1) + (":" if key in numeric else "-")
            for key, _ in COLUMNS
        )
        + "|"
    )
    return "\n".join([head, rule, *(line(r) for r in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the reliability scenarios and print a table."
    )
    parser.add_argument(
        "--scale",
        choices=sorted(SCALES),
        default=os.environ.get("TWCOMMS_SCALE") or "ci",
        help="scenario sizes (default: $TWCOMMS_SCALE or ci)",
    )
    parser.add_argument(
        "--only", default="", help="comma-separated scenario names (default: all)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per scenario before it is cut off (ci 300, full 1800)",
    )
    parser.add_argument("--json", default=None, help="also write results here")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {list(SCENARIOS)}")
    timeout = args.timeout or (300.0 if args.scale == "ci" else 1800.0)

    print(f"twcomms stress, scale {args.scale}, {len(names)} scenarios", flush=True)
    rows = []
    results: list[dict[str, Any]] = []
    held = True
    started = time.monotonic()
    for name in names:
        t0 = time.monotonic()
        result, why = run_one(name, args.scale, timeout)
        seconds = time.monotonic() - t0
        r = row(name, result, why, seconds)
        rows.append(r)
        status = r["status"]
        print(f"  {name}: {status} in {seconds:.1f} s", flush=True)
        if result is None or result.problems:
            held = False
            for problem in (result.problems if result else [why])[:10]:
                print(f"    - {problem}", flush=True)
        results.append(
            {"name": name, "wall_seconds": seconds, "error": why}
            | ({"result": json.loads(result.to_json())} if result else {})
        )
    print()
    print(table(rows))
    print(f"\ntotal {time.monotonic() - started:.1f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"scale": args.scale, "scenarios": results}, indent=2)
        )
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
