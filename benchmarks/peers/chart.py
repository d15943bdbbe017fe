"""
The chart of a run (matplotlib, optional): one panel per scenario figure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.peers.report import cell_value, find_cell


def write_chart(run: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no chart; pip install matplotlib)")
        return False
    cells = run["cells"]
    systems = run["systems"]
    s = run["settings"]
    small, large = s["d_sizes_mib"]
    panels = [
        ("A", None, "msgs_per_s", "A: msgs/s at server\n(higher is better)", 1e-3, "k"),
        ("B", None, "p50_us", "B: round trip p50, µs\n(lower is better)", 1, ""),
        (
            "C",
            None,
            "deliveries_per_s",
            "C: broadcast deliveries/s\n(higher is better)",
            1e-3,
            "k",
        ),
        (
            "D",
            small,
            "seconds",
            f"D: one {small:g} MiB message, s\n(lower is better; log)",
            1,
            "",
        ),
        (
            "D",
            large,
            "seconds",
            f"D: one {large:g} MiB message, s\n(lower is better; log)",
            1,
            "",
        ),
        (
            "E",
            None,
            "kib_per_conn",
            f"E: KiB per connection\n({s['e_connections']:,} conns; lower is better)",
            1,
            "",
        ),
    ]
    panels = [p for p in panels if p[0] in run["scenarios"]]
    if not panels:
        return False
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows + 0.6), squeeze=False
    )
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    colors = {
        "raw-socket": "#888888",
        "twcomms-twisted": "#d62728",
        "twcomms-threaded": "#ff9896",
        "stock-twisted": "#1f77b4",
        "asyncio": "#2ca02c",
        "pyzmq": "#9467bd",
    }
    for ax, (scn, size, key, title, scale, suffix) in zip(
        axes.flat, panels, strict=False
    ):
        names, values, labels, hatches = [], [], [], []
        for system in systems:
            c = find_cell(cells, scn, system, size)
            if c is None:
                continue
            v = cell_value(c, key)
            names.append(system)
            if v is not None:
                values.append(v * scale)
                labels.append(
                    f"{v * scale:,.0f}{suffix}"
                    if v * scale >= 10
                    else f"{v * scale:.3g}{suffix}"
                )
                hatches.append("")
            elif c["status"] == "cutoff" and scn == "D":
                values.append(c["bound_s"])
                labels.append(f"> {c['bound_s']:g} (cut off)")
                hatches.append("//")
            else:
                values.append(0)
                labels.append(c["status"])
                hatches.append("")
        bars = ax.barh(names, values, color=[colors.get(n, "#333") for n in names])
        for bar, hatch in zip(bars, hatches, strict=True):
            bar.set_hatch(hatch)
        ax.invert_yaxis()
        if scn == "D" and any(v > 0 for v in values):
            ax.set_xscale("log")
        for bar, label in zip(bars, labels, strict=True):
            ax.text(
                bar.get_width() if bar.get_width() > 0 else 0,
                bar.get_y() + bar.get_height() / 2,
                " " + label,
                va="center",
                fontsize=8,
            )
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.margins(x=0.35)
    fig.suptitle(
        f"twcomms vs peers, one run, {run['environment']['cpus']} cores"
        f"{' (quick sizes)' if s['quick'] else ''}\n{run['when'][:16]}Z",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
