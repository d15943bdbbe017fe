"""
What the benchmarks that run interleaved rounds (C{benchmarks.extensions},
C{benchmarks.backplane}, C{benchmarks.socketio_anchor}) share: the rounds
themselves (L{interleave}), where their results go (L{write_run}), a
cell's figures per round, a figure's median beside its baseline's (the
ratio of medians, and the median of the per-round ratios), and how
figures print.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "compact",
    "compare",
    "interleave",
    "num",
    "ratio",
    "row",
    "values",
    "write_run",
]


def interleave(
    run: dict[str, Any],
    rounds: int,
    order: Callable[[int], Sequence[Any]],
    run_one: Callable[[Any, int], dict[str, Any]],
    describe: Callable[[dict[str, Any]], str],
    verbose: bool = True,
    tags: Callable[[Any], dict[str, Any]] = lambda cell: {},
) -> None:
    """
    Run C{rounds} rounds, each the cells C{order(round)} gives, one at a
    time (C{run_one(cell, round)}); record each result in C{run["rounds"]}
    with its cell's key, C{tags(cell)}, its round and its position, and
    C{run["elapsed_s"]}. With C{verbose}, a progress line per cell on
    stderr (C{describe} of what was recorded).
    """
    t0 = time.monotonic()
    for r in range(rounds):
        for position, cell in enumerate(order(r)):
            if verbose:
                print(
                    f"[{time.monotonic() - t0:6.1f}s] round {r + 1}/{rounds} "
                    f"{cell.key} ...",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
            entry = {
                "cell": cell.key,
                **tags(cell),
                "round": r,
                "position": position,
                **run_one(cell, r),
            }
            run["rounds"].append(entry)
            if verbose:
                print(" " + describe(entry), file=sys.stderr, flush=True)
    run["elapsed_s"] = round(time.monotonic() - t0, 1)


def write_run(
    run: dict[str, Any],
    output_dir: Path | None,
    stem: str,
    quick: bool,
    verbose: bool = True,
    also: str = "",
) -> None:
    """
    Write C{run} to C{output_dir/<stem>.json} (C{<stem>-quick.json} for
    quick sizes), and say where (C{also}: more to say on that line).
    """
    if output_dir is None:
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{stem}{'-quick' if quick else ''}.json"
    path.write_text(json.dumps(run, indent=2) + "\n")
    if verbose:
        print(f"\nResults: {path}{also}")


def values(run: dict[str, Any], key: str, figure: str) -> dict[int, float]:
    """
    Round -> C{figure} of cell C{key} (a dotted path such as C{"cores.B"}
    reaches into a round's dicts), for the rounds where the cell was ok.
    """
    out = {}
    for r in run["rounds"]:
        if r["cell"] != key or r["status"] != "ok":
            continue
        value: Any = r
        for part in figure.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            out[r["round"]] = float(value)
    return out


def compare(
    run: dict[str, Any], key: str, baseline: str, figure: str
) -> dict[str, Any]:
    """
    C{figure} of cell C{key} beside cell C{baseline}: its value per round,
    its C{median}, C{ratio} (median / the baseline's median) and C{paired}
    (the median over rounds of each round's figure / the baseline's in
    that round: steadier on a noisy machine).
    """
    mine = values(run, key, figure)
    base = values(run, baseline, figure)
    median = statistics.median(mine.values()) if mine else None
    base_median = statistics.median(base.values()) if base else None
    pairs = [mine[r] / base[r] for r in mine if base.get(r)]
    return {
        "rounds": [mine.get(r) for r in range(run["settings"]["rounds"])],
        "median": median,
        "ratio": median / base_median if median is not None and base_median else None,
        "paired": statistics.median(pairs) if pairs else None,
    }


def row(summary: list[dict[str, Any]], key: str, figure: str) -> dict[str, Any]:
    """
    The summary entry of cell C{key}'s C{figure}.
    """
    return next(s for s in summary if s["cell"] == key and s["figure"] == figure)


def num(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def compact(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit in ("msgs/s", "deliveries/s"):
        return f"{v / 1000:.0f}k"
    return f"{v:.0f}"


def missing_rounds(
    run: dict[str, Any], describe: Callable[[dict[str, Any]], str]
) -> list[str]:
    """
    Each (cell, round) of C{run} that is missing or not ok, as a line
    (C{describe} tells what a failed round said).
    """
    found = {(r["cell"], r["round"]): r for r in run["rounds"]}
    out = []
    for key in run["cells"]:
        for r in range(run["settings"]["rounds"]):
            got = found.get((key, r))
            if got is None:
                out.append(f"{key} round {r + 1}: missing")
            elif got["status"] != "ok":
                out.append(f"{key} round {r + 1}: {describe(got)}")
    return out
