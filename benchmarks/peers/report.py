"""
Figures, ratios to the raw-socket floor, and the tables printed per
scenario.
"""

from __future__ import annotations

from typing import Any

from benchmarks.peers.runner import client_split
from benchmarks.peers.settings import FLOOR

#: scenario -> (headline key, unit, higher is better)
HEADLINE = {
    "A": ("msgs_per_s", "msgs/s", True),
    "B": ("p50_us", "us", False),
    "C": ("deliveries_per_s", "deliveries/s", True),
    "D": ("seconds", "s", False),
    "E": ("kib_per_conn", "KiB/conn", False),
}


def find_cell(
    cells: list[dict[str, Any]], scn: str, system: str, size: float | None = None
) -> dict[str, Any] | None:
    for c in cells:
        if (
            c["scenario"] == scn
            and c["system"] == system
            and (size is None or c.get("size_mib") == size)
        ):
            return c
    return None


def cell_value(cell: dict[str, Any] | None, key: str) -> float | None:
    if cell is None or cell.get("status") != "ok":
        return None
    v = cell.get(key)
    return float(v) if v is not None else None


def add_ratios(cells: list[dict[str, Any]]) -> None:
    for c in cells:
        key = HEADLINE[c["scenario"]][0]
        floor = find_cell(cells, c["scenario"], FLOOR, c.get("size_mib"))
        v, f = cell_value(c, key), cell_value(floor, key)
        c["vs_floor"] = v / f if v is not None and f else None


def _fmt_n(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def status_text(c: dict[str, Any] | None) -> str:
    if c is None:
        return "not run"
    if c["status"] == "n/a":
        return "n/a"
    if c["status"] == "cutoff":
        if c.get("why", "").startswith("stalled"):
            return f"stalled after {c['wall_s']:g} s"
        return f"cut off > {c['bound_s']:g} s"
    if c["status"] == "error":
        return "error"
    return ""


def progress_text(c: dict[str, Any]) -> str:
    p = c.get("progress", {})
    parts = [c.get("why", "")]
    if "server_accepted" in p:
        parts.append(f"server accepted {p['server_accepted']:,}")
    if "clients_connected" in p:
        parts.append(f"clients connected {p['clients_connected']:,}")
    if p.get("client_failures"):
        parts.append(f"{p['client_failures']} failed ({p.get('last_error', '')})")
    if "times" in p:
        parts.append(f"receptions done {len(p['times'])}")
    return "; ".join(x for x in parts if x)


def _ratio_text(c: dict[str, Any] | None) -> str:
    r = c.get("vs_floor") if c else None
    return "-" if r is None else f"{r:.2f}x"


def print_tables(run: dict[str, Any]) -> list[str]:
    cells = run["cells"]
    s = run["settings"]
    systems = run["systems"]
    lines: list[str] = []
    out = lines.append

    def notes(c: dict[str, Any] | None) -> str:
        if c is None:
            return ""
        if c["status"] == "n/a":
            return c["reason"]
        if c["status"] == "error":
            return c["error"][:150]
        if c["status"] == "cutoff":
            return progress_text(c)
        return ""

    scns = run["scenarios"]
    if "A" in scns:
        out("")
        out(
            f"A. one client -> server, {s['a_messages']:,} small json messages; "
            f"messages/s at the server, best of {s['repeat']} (higher is better)"
        )
        out(
            f"  {'system':<18} {'msgs/s':>12} {'x floor':>8}  "
            f"{'client send s':>13}  runs / notes"
        )
        for system in systems:
            c = find_cell(cells, "A", system)
            ok = c is not None and c["status"] == "ok"
            send = f"{c['client_send_s']:.3f}" if ok else "-"
            extra = (
                " ".join(f"{r / 1000:.0f}k" for r in c.get("runs", [])) if ok else ""
            )
            if ok and c.get("sender_bound"):
                extra += "  (sender-bound)"
            val = _fmt_n(c.get("msgs_per_s")) if ok else status_text(c)
            out(
                f"  {system:<18} {val:>12} {_ratio_text(c):>8}  "
                f"{send:>13}  {extra}{notes(c)}"
            )
    if "B" in scns:
        out("")
        out(
            f"B. {s['b_trips']:,} sequential request/echo round trips (after "
            f"{s['b_warmup']} warm-up), small json; microseconds (lower is better)"
        )
        out(f"  {'system':<18} {'p50 us':>10} {'p99 us':>10} {'x floor':>8}  notes")
        for system in systems:
            c = find_cell(cells, "B", system)
            ok = c is not None and c["status"] == "ok"
            p50 = _fmt_n(c["p50_us"], 1) if ok else status_text(c)
            p99 = _fmt_n(c["p99_us"], 1) if ok else "-"
            out(f"  {system:<18} {p50:>10} {p99:>10} {_ratio_text(c):>8}  {notes(c)}")
        wake = run.get("wakeup")
        if wake:
            out(
                f"  one wake-up, p50: another thread {wake['thread_us']:.1f} us, "
                f"another process {wake['process_us']:.1f} us. A threaded round "
                f"trip adds 5 thread hand-offs to"
            )
            out(
                "  stock Twisted's path (client: caller -> reactor -> callback "
                "thread -> caller; server: reactor -> callback"
            )
            out(
                f"  thread -> reactor): 5 x {wake['thread_us']:.1f} = "
                f"{5 * wake['thread_us']:.0f} us."
            )
    if "C" in scns:
        out("")
        out(
            f"C. {s['c_clients']} clients in {s['c_procs']} processes, "
            f"{s['c_messages']:,} broadcast messages; deliveries/s until the "
            f"last client has all (higher is better)"
        )
        out(
            f"  {'system':<18} {'deliveries/s':>13} {'x floor':>8} "
            f"{'seconds':>8}  notes"
        )
        for system in systems:
            c = find_cell(cells, "C", system)
            ok = c is not None and c["status"] == "ok"
            val = _fmt_n(c["deliveries_per_s"]) if ok else status_text(c)
            sec = f"{c['seconds']:.3f}" if ok else "-"
            out(f"  {system:<18} {val:>13} {_ratio_text(c):>8} {sec:>8}  {notes(c)}")
    if "D" in scns:
        small, large = s["d_sizes_mib"]
        out("")
        out(
            f"D. one binary message client -> server, until the server's ack; "
            f"best of {s['repeat']} (stock-twisted: 1); MB = 10^6 bytes; "
            f"peak = receiver RSS growth / size (lower is better)"
        )
        out(
            f"  {'system':<18} {f'{small:g} MiB s':>12} {'MB/s':>7} "
            f"{f'{large:g} MiB s':>16} {'MB/s':>7} {'t ratio':>8} "
            f"{'peak':>6} {'peak':>6} {'x floor':>8}"
        )
        out(
            f"  {'':<18} {'':>12} {'':>7} {'':>16} {'':>7} "
            f"{f'{large:g}/{small:g}':>8} {f'{small:g}':>6} {f'{large:g}':>6} "
            f"{f'({large:g})':>8}"
        )
        for system in systems:
            a = find_cell(cells, "D", system, small)
            b = find_cell(cells, "D", system, large)
            va, vb = cell_value(a, "seconds"), cell_value(b, "seconds")
            ta = f"{va:.3f}" if va is not None else status_text(a)
            tb = f"{vb:.3f}" if vb is not None else status_text(b)
            ma = _fmt_n(cell_value(a, "mb_per_s"))
            mb = _fmt_n(cell_value(b, "mb_per_s"))
            ratio = f"{vb / va:.2f}" if va and vb else "-"
            pa = cell_value(a, "peak_ratio")
            pb = cell_value(b, "peak_ratio")
            pa_t = f"{pa:.2f}x" if pa is not None else "-"
            pb_t = f"{pb:.2f}x" if pb is not None else "-"
            note = notes(b) if b is not None and b["status"] != "ok" else notes(a)
            out(
                f"  {system:<18} {ta:>12} {ma:>7} {tb:>16} {mb:>7} {ratio:>8} "
                f"{pa_t:>6} {pb_t:>6} {_ratio_text(b):>8}  {note}"
            )
    if "E" in scns:
        out("")
        out(
            f"E. {s['e_connections']:,} concurrent connections (clients in "
            f"{len(client_split(s['e_connections'], s['e_per_proc'], 2))} processes), "
            f"one broadcast; server memory per connection, time until every "
            f"client has it (no raw-socket floor here)"
        )
        out(
            f"  {'system':<18} {'held':>7} {'KiB/conn':>9} {'deliver ms':>11} "
            f"{'connect s':>10} {'RSS MiB':>8}  notes"
        )
        for system in systems:
            c = find_cell(cells, "E", system)
            ok = c is not None and c["status"] == "ok"
            if ok:
                out(
                    f"  {system:<18} {c['held']:>7,} {c['kib_per_conn']:>9.1f} "
                    f"{c['deliver_ms']:>11.1f} {c['connect_s']:>10.2f} "
                    f"{c['rss_connected_mib']:>8.1f}"
                )
            else:
                out(f"  {system:<18} {status_text(c):>7}  {notes(c)}")
    lines = [line.rstrip() for line in lines]
    for line in lines:
        print(line)
    return lines


def one_line(cell: dict[str, Any]) -> str:
    if cell["status"] == "cutoff":
        return status_text(cell) + ": " + progress_text(cell)
    if cell["status"] != "ok":
        return status_text(cell) + f": {cell.get('error') or cell.get('reason')}"
    key, unit, _ = HEADLINE[cell["scenario"]]
    return f"{cell[key]:,.1f} {unit} ({cell['wall_s']:g} s)"
