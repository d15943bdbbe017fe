"""
twcomms' targets, as data: one row per target (L{TARGETS}), evaluated by
one function (L{evaluate}) against a run's cells.

A target compares a figure of one system (the numerator) with a figure of
another (the denominator: a ratio), or judges the figure alone (no
denominator). A target whose systems were not part of the run says so
("not run") rather than MISS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.peers.report import cell_value, find_cell, progress_text, status_text
from benchmarks.peers.settings import FLOOR

TW = "twcomms-twisted"
TH = "twcomms-threaded"
STOCK = "stock-twisted"
ZMQ = "pyzmq"


@dataclass(frozen=True)
class Figure:
    """
    One figure of one cell: C{key} of C{system}'s cell in the target's
    scenario, at D's C{"small"} or C{"large"} size where it has sizes.
    """

    system: str
    key: str
    size: str | None = None


@dataclass(frozen=True)
class Target:
    """
    One of twcomms' targets.

    @ivar ident: its name; C{ident} and C{text} are formatted with C{small}
        and C{large} (D's sizes in MiB) and C{asked} (E's connections).
    @ivar numerator: the figure judged (divided by C{denominator}, if any).
    @ivar op: C{">="} or C{"<="}: how the value must stand to C{bound}.
    @ivar shown: how a value is printed.
    @ivar asked: a setting that must reach C{bound} for the target to be
        judged at all (else n/a: a smaller run cannot show it).
    @ivar explain_missing: without a figure, show the cell's status and
        progress instead of "no figure".
    """

    ident: str
    scenario: str
    text: str
    numerator: Figure
    denominator: Figure | None
    op: str
    bound: float
    shown: str = "{:.2f}"
    asked: str | None = None
    explain_missing: bool = False

    def systems(self) -> set[str]:
        figures = [self.numerator, self.denominator]
        return {f.system for f in figures if f is not None}


TARGETS: tuple[Target, ...] = (
    Target(
        "A1", "A", "A: twcomms-twisted / stock-twisted msgs/s",
        Figure(TW, "msgs_per_s"), Figure(STOCK, "msgs_per_s"), ">=", 1.0,
    ),
    Target(
        "A2", "A", "A: twcomms-twisted / pyzmq msgs/s",
        Figure(TW, "msgs_per_s"), Figure(ZMQ, "msgs_per_s"), ">=", 1.2,
    ),
    Target(
        "A3", "A", "A: twcomms-threaded / stock-twisted msgs/s",
        Figure(TH, "msgs_per_s"), Figure(STOCK, "msgs_per_s"), ">=", 0.7,
    ),
    Target(
        "B1", "B", "B: twcomms-twisted / stock-twisted p50",
        Figure(TW, "p50_us"), Figure(STOCK, "p50_us"), "<=", 1.2,
    ),
    Target(
        "B2", "B", "B: twcomms-threaded / stock-twisted p50",
        Figure(TH, "p50_us"), Figure(STOCK, "p50_us"), "<=", 2.0,
    ),
    Target(
        "C1", "C", "C: twcomms-twisted / pyzmq deliveries/s",
        Figure(TW, "deliveries_per_s"), Figure(ZMQ, "deliveries_per_s"), ">=", 1.0,
    ),
    Target(
        "D1", "D", "D: twcomms-twisted t({large:g} MiB) / raw-socket t({large:g} MiB)",
        Figure(TW, "seconds", "large"), Figure(FLOOR, "seconds", "large"), "<=", 2.0,
    ),
    Target(
        "D2", "D", "D: twcomms-twisted t({large:g}) / t({small:g})",
        Figure(TW, "seconds", "large"), Figure(TW, "seconds", "small"), "<=", 4.5,
    ),
    Target(
        "D3-{small:g}", "D",
        "D: twcomms-twisted peak receiver RSS growth / size ({small:g} MiB)",
        Figure(TW, "peak_ratio", "small"), None, "<=", 2.5,
    ),
    Target(
        "D3-{large:g}", "D",
        "D: twcomms-twisted peak receiver RSS growth / size ({large:g} MiB)",
        Figure(TW, "peak_ratio", "large"), None, "<=", 2.5,
    ),
    Target(
        "E1", "E", "E: twcomms-twisted connections held (asked {asked:,})",
        Figure(TW, "held"), None, ">=", 10_000,
        shown="{:,.0f}", asked="e_connections", explain_missing=True,
    ),
    Target(
        "E2", "E", "E: twcomms-twisted memory per connection reported (KiB)",
        Figure(TW, "kib_per_conn"), None, ">=", 0.0, shown="{:.1f} KiB",
    ),
)  # fmt: skip


def evaluate(run: dict[str, Any]) -> list[dict[str, Any]]:
    """
    Every target of the run's scenarios, judged on its cells: a dict per
    target (id, target, value, op, limit, shown, verdict, and a detail
    where there is one), as printed and stored in the JSON.
    """
    s = run["settings"]
    small, large = s["d_sizes_mib"]
    words = {"small": small, "large": large, "asked": s["e_connections"]}
    sizes = {"small": small, "large": large}

    def figure(scenario: str, f: Figure) -> float | None:
        size = None if f.size is None else sizes[f.size]
        return cell_value(find_cell(run["cells"], scenario, f.system, size), f.key)

    out = []
    for t in TARGETS:
        if t.scenario not in run["scenarios"]:
            continue
        value = figure(t.scenario, t.numerator)
        if t.denominator is not None:
            below = figure(t.scenario, t.denominator)
            value = value / below if value is not None and below else None
        if value is None:
            verdict, shown = "MISS", "no figure"
        else:
            ok = value >= t.bound if t.op == ">=" else value <= t.bound
            verdict, shown = ("PASS" if ok else "MISS"), t.shown.format(value)
        row: dict[str, Any] = {
            "id": t.ident.format(**words),
            "target": t.text.format(**words),
            "value": value,
            "op": t.op,
            "limit": t.bound,
            "shown": shown,
            "verdict": verdict,
        }
        if t.asked is not None and value is not None and s[t.asked] < t.bound:
            row["verdict"] = "n/a"
            row["shown"] += f" (run asked for {s[t.asked]:,}, not {t.bound:,})"
        if t.explain_missing and value is None:
            cell = find_cell(run["cells"], t.scenario, t.numerator.system)
            if cell is not None:
                row["shown"] = status_text(cell)
                row["detail"] = progress_text(cell)
        if any(system not in run["systems"] for system in t.systems()):
            row["verdict"] = "not run"
            row["shown"] = "-"
        out.append(row)
    return out


def print_targets(targets: list[dict[str, Any]]) -> list[str]:
    lines = ["", "Targets (ratios from this run):"]
    for t in targets:
        lim = f"{t['op']} {t['limit']:g}"
        lines.append(
            f"  {t['id']:<7} {t['target']:<66} {t['shown']:>12}  "
            f"{lim:<9} {t['verdict']}"
        )
        if t.get("detail"):
            lines.append(f"          ({t['detail']})")
    for line in lines:
        print(line)
    return lines
