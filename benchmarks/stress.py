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

The cross-node scenarios (L{harness.stress.registry.NEEDS_REDIS}: hub
processes on a backplane) need a real C{redis-server}: this runner starts
one (L{harness.redis.RedisServer}) before the first of them and stops it
at the end, each scenario using a hub name of its own on it; those of
L{harness.stress.registry.OWN_REDIS} (a Redis outage) start and kill a
server of their own. Without a binary they are skipped, with the reason
in the table -- except under CI (C{$CI} set), where that is a failure
(L{harness.redis.missing_server_fails}).

Run from the repository root::

    python -m benchmarks.stress                 # ci scale (or TWCOMMS_SCALE)
    python -m benchmarks.stress --scale full    # the full sizes
    python -m benchmarks.stress --only load,churn --json out.json
    python -m benchmarks.stress --only cross_node_load,node_kill
    python -m benchmarks.stress --only redis_outage

Exit status: 0 if every scenario held (or was skipped for want of a
redis-server, outside CI), 1 otherwise.
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
from harness.redis import MISSING, RedisServer, find_redis_server, missing_server_fails
from harness.stress.registry import NEEDS_REDIS, OWN_REDIS, SCENARIOS
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


def run_one(
    name: str, scale: str, timeout: float, redis_url: str | None = None
) -> tuple[Result | None, str]:
    """
    Run scenario C{name} in a fresh process (on the Redis at C{redis_url},
    if given); its L{Result}, or L{None} and why not.
    """
    argv = [sys.executable, "-m", "harness.stress", name, "--scale", scale]
    if redis_url is not None:
        argv += ["--redis", redis_url]
    done = run_bounded(argv, timeout)
    if done.cut_off:
        return None, f"cut off after {timeout:.0f} s"
    out, err = done.stdout, done.stderr
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            return Result.from_json(line[len("RESULT ") :]), ""
    tail = (err or out).strip().splitlines()[-1:] or ["no output"]
    return None, f"exit {done.returncode}: {tail[0]}"


def row(
    name: str, result: Result | None, why: str, seconds: float, skipped: bool = False
) -> dict[str, str]:
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
            "status": f"skipped ({why})" if skipped else f"FAILED ({why})",
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


class Redis:
    """
    The runner's C{redis-server}: started when a scenario first asks for
    it, stopped by L{stop} (by pid, bounded).
    """

    def __init__(self) -> None:
        self.server: RedisServer | None = None
        self.why = ""
        #: There is no binary (a reason to skip, outside CI); otherwise a
        #: server that is not there is a failure.
        self.missing = False

    def binary(self) -> tuple[str | None, str]:
        """
        The C{redis-server} binary (for a scenario that starts its own), or
        L{None} and why there is none (sets L{missing} when there is no
        binary).
        """
        try:
            executable = find_redis_server()
        except OSError as e:
            return None, f"redis-server: {str(e).splitlines()[0]}"
        if executable is None:
            self.missing = True
            return None, MISSING
        return executable, ""

    def url(self) -> tuple[str | None, str]:
        """
        Its URL, or L{None} and why there is none (no binary, a wrong
        C{$REDIS_SERVER}, it did not start).
        """
        if self.server is None and not self.why:
            try:
                executable = find_redis_server()
                if executable is None:
                    self.why, self.missing = MISSING, True
                else:
                    self.server = RedisServer(executable)
                    print(f"  (redis-server on port {self.server.port})", flush=True)
            except (OSError, RuntimeError) as e:
                self.why = f"redis-server: {str(e).splitlines()[0]}"
        if self.server is None:
            return None, self.why
        return self.server.url, ""

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


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
    redis = Redis()
    try:
        for name in names:
            t0 = time.monotonic()
            skipped = False
            if name in NEEDS_REDIS:
                url, why = redis.url()
                if url is None:
                    result = None
                    skipped = redis.missing and not missing_server_fails()
                else:
                    result, why = run_one(name, args.scale, timeout, url)
            elif name in OWN_REDIS:
                executable, why = redis.binary()
                if executable is None:
                    result = None
                    skipped = redis.missing and not missing_server_fails()
                else:
                    result, why = run_one(name, args.scale, timeout)
            else:
                result, why = run_one(name, args.scale, timeout)
            seconds = time.monotonic() - t0
            r = row(name, result, why, seconds, skipped)
            rows.append(r)
            status = r["status"]
            print(f"  {name}: {status} in {seconds:.1f} s", flush=True)
            if (result is None and not skipped) or (result and result.problems):
                held = False
                for problem in (result.problems if result else [why])[:10]:
                    print(f"    - {problem}", flush=True)
            results.append(
                {"name": name, "wall_seconds": seconds, "error": why}
                | ({"skipped": True} if skipped else {})
                | ({"result": json.loads(result.to_json())} if result else {})
            )
    finally:
        redis.stop()
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
