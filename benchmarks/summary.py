"""
What the benchmarks that run interleaved rounds (C{benchmarks.extensions},
C{benchmarks.backplane}) share: a cell's figures per round, a figure's
median beside its baseline's (the ratio of medians, and the median of the
per-round ratios), and how figures print.
"""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["compact", "compare", "num", "ratio", "row", "values"]


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
