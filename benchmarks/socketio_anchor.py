"""
Benchmark: twcomms' Redis backplane against an anchor, python-socketio
with its C{AsyncRedisManager}, in one run on one C{redis-server}: the
cross-node broadcast deliveries/s and round-trip p50/p99 beside the
same-node figures, for both.

The issue's goal: twcomms' cross-node deliveries/s at least 3x
python-socketio's, and a lower cross-node round-trip p50.

Cells (each figure a median over the rounds):

  - broadcast: 50 clients in 2 client processes; a loop in the origin
    node's server broadcasts 20,000 small json messages (C{{"i": i,
    "payload": 20 x "x"}}, L{benchmarks.peers.common.messages});
    deliveries/s from the first broadcast until the last client has all.
    C{same}: one node on Redis, the clients on it; C{cross}: nodes A and B
    on Redis, the loop on A, every client on B.
  - rtt: 5,000 sequential round trips (after 500 warm-up): a client
    sends, its node relays to every other client (the echo client), which
    sends it back, relayed again; microseconds at the sender, p50 and p99.
    C{same}: both clients on one node; C{cross}: the sender on A, the echo
    client on B.

twcomms' cells are L{benchmarks.backplane}'s own, run by its
L{run_cell_once<benchmarks.backplane.run_cell_once>} (hub nodes as
C{twcomms serve --backplane URL --hub NAME} builds them; see that module).

python-socketio's cells (processes in L{benchmarks.socketio_nodes}), its
configuration -- what its documentation shows for several servers on
Redis, every setting at its default:

  - node: C{socketio.AsyncServer(client_manager=
    socketio.AsyncRedisManager(redis_url))}, attached to an
    C{aiohttp.web.Application} served by C{web.AppRunner} on a socket bound
    to 127.0.0.1 (port 0). aiohttp, not uvicorn: it is the default
    C{async_mode} (the first of engineio's C{aiohttp, sanic, tornado,
    asgi} that is installed), and python-socketio's C{AsyncClient} needs it
    anyway, so one package serves both sides, with no ASGI layer between
    the socket and engineio. Defaults kept: the C{"socketio"} channel, the
    stdlib json, no logging, ping interval 25 s / timeout 20 s, redis-py's
    own defaults (it parses with hiredis when hiredis is installed, as it
    is here: twcomms' C{redis} extra installs it).
  - broadcast: the origin node's loop is a task of its event loop, C{for m
    in msgs: await sio.emit("m", m)} (how python-socketio's API is used:
    C{emit} is a coroutine; each one sends to the node's own clients, then
    C{PUBLISH}es to Redis, which the other nodes' listener tasks get).
  - rtt: a client's C{"relay"} event is emitted by its node with
    C{sio.emit("m", data, skip_sid=sid)}: to every other client, as
    twcomms' hub broadcast mode does; with two clients that is the other
    client, across Redis when it is on the other node.
  - clients: C{socketio.AsyncClient()}, default settings,
    C{connect(url, transports=["websocket"])} (no long-polling first); 25
    clients per process on one event loop, sync handlers counting (the
    pinger and echo clients reply from async handlers).

Each python-socketio cell waits until Redis shows the nodes with clients
subscribed (C{PUBSUB NUMSUB socketio}; the manager subscribes when its
first client connects) before it starts. A cell that runs out of time
(the broadcast may be slow) reports what was delivered by then: delivered
/ expected and the rate so far (from the clients' progress events).

CPU: each process's C{time.process_time} over the run, reported back by
the process; C{INFO cpu}'s delta for C{redis-server}; shown as CPU per
delivered message (per round trip) per process.

Rounds are interleaved: each round runs every cell once, python-socketio's
and twcomms' alternating, in an order rotated every round, so a slow spell
of the machine falls on all of them alike. Ratios are twcomms /
python-socketio: C{ratio} of medians, and C{paired} (the median over
rounds of each round's ratio).

Run from the repository root (needs the C{bench} extra:
C{pip install -e .[bench,redis,test]}, and a C{redis-server}: see
L{harness.redis.find_redis_server})::

    python -m benchmarks.socketio_anchor            # 3 rounds, ~11 minutes
    python -m benchmarks.socketio_anchor --quick    # tiny sizes, 1 round
    python -m benchmarks.socketio_anchor --rounds 5 --scenarios broadcast

(A round is ~3.5 minutes on 2 cores, most of it python-socketio's two
broadcast cells, 65-100 s each: 1,000,000 deliveries at 10-15k/s.)

It writes C{benchmarks/results/socketio_anchor.json} (C{--quick}:
C{socketio_anchor-quick.json}; C{--output-dir} to choose where).

Linux only, as L{benchmarks.backplane}.

(Over 500 lines: one benchmark in one file -- python-socketio's cells,
the rounds beside twcomms' cells, the figures, the tables and its command
line; the python-socketio processes are in L{benchmarks.socketio_nodes}.)
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks import backplane
from benchmarks.backplane import (
    CELL,
    FULL,
    QUICK,
    Sizes,
    machine_cpu,
    redis_cpu,
    run_cell_once,
)
from benchmarks.peers.cli import round_arguments
from benchmarks.peers.run import environment
from benchmarks.peers.runner import CellError, Cutoff, Proc, client_split
from benchmarks.peers.settings import RESULTS
from benchmarks.summary import (
    compare,
    interleave,
    missing_rounds,
    num,
    ratio,
    values,
    write_run,
)
from harness.redis import redis_command

MODULE = "benchmarks.socketio_anchor"
#: Where python-socketio's processes are.
NODES_MODULE = "benchmarks.socketio_nodes"
ROUNDS = 3
QUICK_ROUNDS = 1
SCENARIOS = ("broadcast", "rtt")
LAYOUTS = ("same", "cross")
SYSTEMS = ("socketio", "twcomms")
LABEL = {"socketio": "python-socketio", "twcomms": "twcomms"}
#: python-socketio's pub/sub channel (AsyncRedisManager's default).
CHANNEL = "socketio"
#: Seconds one python-socketio cell may take (full sizes; quick: the
#: quick sizes' bound), its processes' start included.
SOCKETIO_BOUND = 200.0
#: The issue's goal: twcomms' cross-node deliveries/s at least this many
#: times python-socketio's.
GOAL_RATIO = 3.0

VERSIONS = (
    "python-socketio",
    "python-engineio",
    "aiohttp",
    "redis",
    "hiredis",
    "twcomms",
    "twisted",
)


@dataclass(frozen=True)
class Cell:
    """
    One measured configuration: C{system} (C{"socketio"} or C{"twcomms"}),
    C{group} (C{"broadcast"} or C{"rtt"}) and C{layout} (C{"same"} or
    C{"cross"}).
    """

    system: str
    group: str
    layout: str

    @property
    def key(self) -> str:
        return f"{self.system} {self.group}/{self.layout}"

    @property
    def backplane_key(self) -> str:
        return f"{self.group}/{self.layout}"


CELLS = tuple(
    Cell(system, group, layout)
    for group in SCENARIOS
    for layout in LAYOUTS
    for system in SYSTEMS
)

#: group -> (figure, unit, higher is better), and a second figure shown.
FIGURES = {
    "broadcast": ("deliveries_per_s", "deliveries/s", True),
    "rtt": ("p50_us", "p50 us", False),
}


def select_cells(scenarios: list[str] | tuple[str, ...]) -> list[Cell]:
    return [c for c in CELLS if c.group in scenarios]


def round_order(cells: list[Cell], round_index: int) -> list[Cell]:
    """
    The cells, python-socketio's and twcomms' alternating, rotated by the
    round (so each cell is in turn first, and each system in turn leads).
    """
    k = round_index % len(cells)
    return cells[k:] + cells[:k]


# -- python-socketio's cells ---------------------------------------------------


class SocketioProcs(backplane.Procs):
    """
    L{benchmarks.backplane}'s process group (bounded waits, events by
    kind), its processes started from L{benchmarks.socketio_nodes}.
    """

    def start(self, name: str, role: str, spec: dict[str, Any]) -> None:
        cmd = [sys.executable, "-m", NODES_MODULE, role, json.dumps(spec)]
        self.procs[name] = Proc(name, cmd, self.events)


def _nodes(layout: str) -> list[str]:
    return ["A", "B"] if layout == "cross" else ["A"]


def _start_nodes(
    procs: SocketioProcs, layout: str, sizes: Sizes, redis_url: str, messages: int
) -> dict[str, dict[str, Any]]:
    nodes = _nodes(layout)
    for n in nodes:
        spec = {
            "redis": redis_url,
            "messages": messages if n == "A" else 0,
            "bound": sizes.bound,
        }
        procs.start(n, "node", spec)
    return dict(zip(nodes, procs.wait(*[(n, "ready") for n in nodes]), strict=True))


def _wait_subscribed(procs: SocketioProcs, port: int, count: int) -> None:
    """
    Until C{count} connections are subscribed to python-socketio's channel
    (bounded by the cell's deadline).
    """
    while True:
        reply = redis_command(port, "PUBSUB", "NUMSUB", CHANNEL)
        if isinstance(reply, list) and len(reply) == 2 and int(reply[1]) == count:
            return
        if time.monotonic() > procs.deadline:
            raise Cutoff(f"{count} subscriptions to {CHANNEL!r}: got {reply!r}")
        time.sleep(0.02)


def _marks(procs: SocketioProcs, nodes: list[str]) -> None:
    procs.ask({n: {"cmd": "mark"} for n in nodes}, "marked")


def _socketio_broadcast(
    procs: SocketioProcs, cell: Cell, sizes: Sizes, redis: Any
) -> Any:
    k = sizes.messages
    nodes = _nodes(cell.layout)
    target = nodes[-1]  # where the clients are: A, or B when crossing
    split = client_split(
        sizes.clients, math.ceil(sizes.clients / sizes.client_procs), sizes.client_procs
    )
    receivers = [f"clients{i}" for i in range(len(split))]
    ready = _start_nodes(procs, cell.layout, sizes, redis.url, k)
    for name, count in zip(receivers, split, strict=True):
        procs.start(
            name, "receivers", {"clients": count, "messages": k, "bound": sizes.bound}
        )
        procs.send(name, {"ports": [ready[target]["port"]]})
    connected = procs.wait(*[(r, "connected") for r in receivers])
    procs.wait_until(lambda: procs.clients(target) == sizes.clients)
    _wait_subscribed(procs, redis.port, 1)
    _marks(procs, nodes)
    redis0 = redis_cpu(redis.port)
    machine0 = machine_cpu()
    procs.send("A", {"cmd": "broadcast"})
    deliveries = sizes.clients * k
    try:
        sent, *results = procs.wait(("A", "sent"), *[(r, "result") for r in receivers])
    except Cutoff as e:
        return _partial(procs, receivers, deliveries, str(e))
    machine1 = machine_cpu()
    redis1 = redis_cpu(redis.port)
    reports = procs.ask({n: {"cmd": "report"} for n in nodes}, "report")
    window = max(r["t_done"] for r in results) - sent["t_start"]
    cpu = {n: reports[n]["cpu_s"] for n in nodes}
    cpu["redis"] = redis1 - redis0
    for name, c, r in zip(receivers, connected, results, strict=True):
        cpu[name] = r["cpu"] - c["cpu"]
    out: dict[str, Any] = {
        "status": "ok",
        "deliveries": deliveries,
        "delivered": deliveries,
        "broadcasts": k,
        "window_s": window,
        "sent_s": sent["t_sent"] - sent["t_start"],
        "deliveries_per_s": deliveries / window,
        "out_of_order": sum(r.get("disorder", 0) for r in results),
        "cpu_s": cpu,
        "node_stats": {n: reports[n]["stats"] for n in nodes},
    }
    out.update(backplane.cpu_figures(cpu, nodes, receivers, window, deliveries))
    cores = out["cores"]
    cores.update(backplane.machine_cores(machine0, machine1))
    cores["others"] = max(cores["machine"] - cores["all"], 0.0)
    return out


def _partial(
    procs: SocketioProcs, receivers: list[str], expected: int, why: str
) -> dict[str, Any]:
    """
    A broadcast cut off by the time bound: what the clients had by their
    last progress events, and the rate from the first broadcast to then.
    """
    progress = [procs.got.get((r, "progress"), {}) for r in receivers]
    delivered = sum(p.get("delivered", 0) for p in progress)
    started = procs.got.get(("A", "started"), {}).get("t_start")
    t_last = max((p.get("t", 0.0) for p in progress), default=0.0)
    rate = None
    if started is not None and t_last > started:
        rate = delivered / (t_last - started)
    return {
        "status": "cutoff",
        "why": why,
        "delivered": delivered,
        "expected": expected,
        "delivered_share": delivered / expected,
        "deliveries_per_s_so_far": rate,
        "loop_done": ("A", "sent") in procs.got,
    }


def _socketio_rtt(procs: SocketioProcs, cell: Cell, sizes: Sizes, redis: Any) -> Any:
    nodes = _nodes(cell.layout)
    ready = _start_nodes(procs, cell.layout, sizes, redis.url, 0)
    spec = {"trips": sizes.trips, "warmup": sizes.warmup, "bound": sizes.bound}
    procs.start("echo", "echo", spec)
    procs.start("pinger", "pinger", spec)
    procs.send("echo", {"ports": [ready[nodes[-1]]["port"]]})
    procs.send("pinger", {"ports": [ready["A"]["port"]]})
    procs.wait(("echo", "connected"), ("pinger", "connected"))
    procs.wait_until(lambda: sum(procs.clients(n) for n in nodes) == 2)
    _wait_subscribed(procs, redis.port, len(nodes))
    _marks(procs, nodes)
    redis0 = redis_cpu(redis.port)
    machine0 = machine_cpu()
    procs.send("pinger", {"cmd": "start"})
    (result,) = procs.wait(("pinger", "result"))
    machine1 = machine_cpu()
    redis1 = redis_cpu(redis.port)
    reports = procs.ask({n: {"cmd": "report"} for n in nodes}, "report")
    trips = sizes.trips + sizes.warmup
    cpu = {n: reports[n]["cpu_s"] for n in nodes}
    cpu["redis"] = redis1 - redis0
    cpu["pinger"] = result["cpu"]
    figures = {k: result[k] for k in ("trips", "p50_us", "p99_us", "mean_us", "min_us")}
    nodes_cpu = sum(cpu[n] for n in nodes)
    return {
        "status": "ok",
        **figures,
        "window_s": result["t_last"] - result["t_first"],
        "cpu_s": cpu,
        "cores": backplane.machine_cores(machine0, machine1),
        "cpu_us_per_trip": {
            **{n: cpu[n] / trips * 1e6 for n in nodes},
            "nodes": nodes_cpu / trips * 1e6,
            "redis": cpu["redis"] / trips * 1e6,
        },
    }


def run_socketio_cell(cell: Cell, sizes: Sizes, redis: Any) -> dict[str, Any]:
    """
    Run python-socketio's C{cell} once, within C{sizes.bound}; every child
    is killed by pid when it ends.
    """
    started = time.monotonic()
    procs = SocketioProcs(sizes.bound)
    run = _socketio_broadcast if cell.group == "broadcast" else _socketio_rtt
    try:
        out = run(procs, cell, sizes, redis)
    except Cutoff as e:
        out = {"status": "cutoff", "why": str(e)}
    except (CellError, OSError) as e:
        out = {"status": "error", "error": str(e)[:400]}
    finally:
        procs.close()
    out["wall_s"] = round(time.monotonic() - started, 2)
    return out


def run_cell(
    cell: Cell, sizes: Sizes, socketio_sizes: Sizes, redis: Any
) -> dict[str, Any]:
    if cell.system == "socketio":
        return run_socketio_cell(cell, socketio_sizes, redis)
    try:
        return run_cell_once(CELL[cell.backplane_key], sizes, redis)
    except Exception as e:  # twcomms being edited under us: report, go on
        return {"status": "error", "error": f"{type(e).__name__}: {e}"[:400]}


def one_line(result: dict[str, Any]) -> str:
    if result["status"] == "cutoff" and "delivered" in result:
        return (
            f"cutoff: delivered {result['delivered']:,} of {result['expected']:,} "
            f"({num(result['deliveries_per_s_so_far'])} /s so far)"
        )
    return backplane.one_line(result)


# -- figures ------------------------------------------------------------------


def _median(run: dict[str, Any], key: str, figure: str) -> float | None:
    found = values(run, key, figure)
    return statistics.median(found.values()) if found else None


def summarise(run: dict[str, Any]) -> list[dict[str, Any]]:
    """
    Per group, layout and figure: each system's median, twcomms / socketio
    (C{ratio}: of the medians; C{paired}: the median of the per-round
    ratios), and each system's cross / same.
    """
    out = []
    cells = {c.key for c in CELLS if c.key in run["cells"]}
    for group in SCENARIOS:
        figures = [FIGURES[group][0]] + (["p99_us"] if group == "rtt" else [])
        for layout in LAYOUTS:
            sio = Cell("socketio", group, layout).key
            tw = Cell("twcomms", group, layout).key
            if sio not in cells or tw not in cells:
                continue
            for figure in figures:
                both = compare(run, tw, sio, figure)
                row: dict[str, Any] = {
                    "group": group,
                    "layout": layout,
                    "figure": figure,
                    "socketio": _median(run, sio, figure),
                    "twcomms": both["median"],
                    "ratio": both["ratio"],
                    "paired": both["paired"],
                    "rounds": {
                        "socketio": compare(run, sio, sio, figure)["rounds"],
                        "twcomms": both["rounds"],
                    },
                }
                if layout == "cross":
                    for system in SYSTEMS:
                        same = Cell(system, group, "same").key
                        cross = Cell(system, group, "cross").key
                        row[f"{system}_vs_same"] = compare(run, cross, same, figure)[
                            "ratio"
                        ]
                out.append(row)
    return out


def goals(run: dict[str, Any]) -> dict[str, Any]:
    """
    The issue's two goals, from the cross-node medians.
    """
    found: dict[str, Any] = {}
    for row in run["summary"]:
        if row["layout"] != "cross":
            continue
        if row["figure"] == "deliveries_per_s":
            r = row["ratio"]
            found["deliveries"] = {
                "ratio": r,
                "paired": row["paired"],
                "goal": GOAL_RATIO,
                "met": r is not None and r >= GOAL_RATIO,
            }
        elif row["figure"] == "p50_us":
            r = row["ratio"]
            found["p50"] = {
                "twcomms_us": row["twcomms"],
                "socketio_us": row["socketio"],
                "ratio": r,
                "met": r is not None and r < 1.0,
            }
    sio = Cell("socketio", "broadcast", "cross").key
    tw = Cell("twcomms", "broadcast", "cross").key
    if sio in run["cells"] and tw in run["cells"]:
        cost = {
            f"{system}_{part}": _median(
                run,
                Cell(system, "broadcast", "cross").key,
                f"cpu_us_per_delivery.{part}",
            )
            for system in SYSTEMS
            for part in ("nodes", "clients")
        }
        if cost["socketio_nodes"] and cost["twcomms_nodes"]:
            cost["nodes_ratio"] = cost["socketio_nodes"] / cost["twcomms_nodes"]
            found["cpu"] = cost
    return found


# -- printing -----------------------------------------------------------------

_LAYOUT = {"same": "same node", "cross": "cross node (A -> Redis -> B)"}


def _cutoffs(run: dict[str, Any], key: str) -> str:
    bad = [r for r in run["rounds"] if r["cell"] == key and r["status"] != "ok"]
    return "; ".join(f"round {r['round'] + 1}: {one_line(r)}" for r in bad)[:200]


def _broadcast_table(run: dict[str, Any]) -> list[str]:
    rows = [r for r in run["summary"] if r["group"] == "broadcast"]
    if not rows:
        return []
    s = run["settings"]
    lines = [
        "",
        f"Broadcast: {s['clients']} clients in {s['client_procs']} processes "
        f"receive {s['messages']:,} broadcasts made by a loop in the origin "
        f"node; deliveries/s until the last client has all (higher is better)",
        f"  {'layout':<30} {'python-socketio':>15} {'twcomms':>11} "
        f"{'tw/sio':>7} {'paired':>7}  {'sio x same':>10} {'tw x same':>9}",
    ]
    for row in rows:
        lines.append(
            f"  {_LAYOUT[row['layout']]:<30} {num(row['socketio']):>15} "
            f"{num(row['twcomms']):>11} {ratio(row['ratio']):>7} "
            f"{ratio(row['paired']):>7}  "
            f"{ratio(row.get('socketio_vs_same')):>10} "
            f"{ratio(row.get('twcomms_vs_same')):>9}"
        )
    lines.append("  rounds (k deliveries/s):")
    for row in rows:
        for system in SYSTEMS:
            key = Cell(system, "broadcast", row["layout"]).key
            shown = " ".join(
                "-" if v is None else f"{v / 1000:.0f}k" for v in row["rounds"][system]
            )
            bad = _cutoffs(run, key)
            lines.append(
                f"    {key:<28} {shown}" + (f"  [{bad}]" if bad else "").rstrip()
            )
    return lines


def _rtt_table(run: dict[str, Any]) -> list[str]:
    rows = {
        (r["layout"], r["figure"]): r for r in run["summary"] if r["group"] == "rtt"
    }
    if not rows:
        return []
    s = run["settings"]
    lines = [
        "",
        f"Round trip: {s['trips']:,} sequential trips (after {s['warmup']} "
        f"warm-up): a client sends, its node relays to the echo client, which "
        f"sends it back; microseconds at the sender (lower is better)",
        f"  {'layout':<30} {'sio p50':>9} {'tw p50':>9} {'tw/sio':>7} {'paired':>7}"
        f"  {'sio p99':>9} {'tw p99':>9} {'tw/sio':>7}",
    ]
    for layout in LAYOUTS:
        p50, p99 = rows.get((layout, "p50_us")), rows.get((layout, "p99_us"))
        if p50 is None or p99 is None:
            continue
        lines.append(
            f"  {_LAYOUT[layout]:<30} {num(p50['socketio'], 1):>9} "
            f"{num(p50['twcomms'], 1):>9} {ratio(p50['ratio']):>7} "
            f"{ratio(p50['paired']):>7}  {num(p99['socketio'], 1):>9} "
            f"{num(p99['twcomms'], 1):>9} {ratio(p99['ratio']):>7}"
        )
    lines.append("  rounds (p50 us):")
    for layout in LAYOUTS:
        p50 = rows.get((layout, "p50_us"))
        if p50 is None:
            continue
        for system in SYSTEMS:
            key = Cell(system, "rtt", layout).key
            shown = " ".join(
                "-" if v is None else f"{v:.0f}" for v in p50["rounds"][system]
            )
            bad = _cutoffs(run, key)
            lines.append(
                f"    {key:<28} {shown}" + (f"  [{bad}]" if bad else "").rstrip()
            )
    return lines


def _cpu_tables(run: dict[str, Any]) -> list[str]:
    s = run["settings"]
    cells = select_cells(run["scenarios"])
    lines: list[str] = []
    broadcast = [c for c in cells if c.group == "broadcast"]
    if broadcast:
        deliveries = s["clients"] * s["messages"]
        lines += [
            "",
            f"CPU per delivered message, us (each process's CPU time over the "
            f"run / {deliveries:,} deliveries; medians), and cores busy over "
            f"the window ('cell': these processes'; 'others': the machine's "
            f"(/proc/stat) less the cell's; 'steal': the hypervisor's):",
            f"  {'cell':<28} {'node A':>7} {'node B':>7} {'nodes':>7} "
            f"{'redis':>7} {'clients':>8} {'total':>7}  {'cell':>5} "
            f"{'others':>6} {'steal':>5}",
        ]
        for c in broadcast:

            def us(name: str, key: str = c.key) -> float | None:
                return _median(run, key, f"cpu_us_per_delivery.{name}")

            parts = [us("nodes"), us("redis"), us("clients")]
            total = None if None in parts else sum(p for p in parts if p is not None)
            lines.append(
                f"  {c.key:<28} {num(us('A'), 3):>7} {num(us('B'), 3):>7} "
                f"{num(us('nodes'), 3):>7} {num(us('redis'), 3):>7} "
                f"{num(us('clients'), 3):>8} {num(total, 3):>7}  "
                f"{num(_median(run, c.key, 'cores.all'), 2):>5} "
                f"{num(_median(run, c.key, 'cores.others'), 2):>6} "
                f"{num(_median(run, c.key, 'cores.steal'), 2):>5}"
            )
    rtt = [c for c in cells if c.group == "rtt"]
    if rtt:
        lines += [
            "",
            "CPU per round trip, us (medians; each trip is relayed twice; "
            "'pinger': the sending client's):",
            f"  {'cell':<28} {'node A':>7} {'node B':>7} {'nodes':>7} "
            f"{'redis':>7} {'pinger':>7}  {'machine':>7} {'steal':>5}",
        ]
        trips = s["trips"] + s["warmup"]
        for c in rtt:

            def trip(name: str, key: str = c.key) -> float | None:
                return _median(run, key, f"cpu_us_per_trip.{name}")

            pinger = _median(run, c.key, "cpu_s.pinger")
            lines.append(
                f"  {c.key:<28} {num(trip('A'), 1):>7} {num(trip('B'), 1):>7} "
                f"{num(trip('nodes'), 1):>7} {num(trip('redis'), 1):>7} "
                f"{num(None if pinger is None else pinger / trips * 1e6, 1):>7}  "
                f"{num(_median(run, c.key, 'cores.machine'), 2):>7} "
                f"{num(_median(run, c.key, 'cores.steal'), 2):>5}"
            )
    return lines


def _goal_lines(run: dict[str, Any]) -> list[str]:
    found = run.get("goals", {})
    lines = ["", "Goals (issue), cross node:"]
    d = found.get("deliveries")
    if d:
        lines.append(
            f"  deliveries/s >= {GOAL_RATIO:g}x python-socketio's: "
            f"{ratio(d['ratio'])} (paired {ratio(d['paired'])}) -> "
            f"{'MET' if d['met'] else 'NOT MET'}"
        )
    p = found.get("p50")
    if p:
        lines.append(
            f"  p50 lower than python-socketio's: {num(p['twcomms_us'], 1)} us vs "
            f"{num(p['socketio_us'], 1)} us ({ratio(p['ratio'])}) -> "
            f"{'MET' if p['met'] else 'NOT MET'}"
        )
    cost = found.get("cpu")
    if cost:
        lines.append(
            f"  CPU per cross-node delivery, us: nodes "
            f"{num(cost['socketio_nodes'], 2)} (python-socketio) vs "
            f"{num(cost['twcomms_nodes'], 2)} (twcomms): python-socketio's "
            f"nodes use {ratio(cost['nodes_ratio'])} twcomms'; clients "
            f"{num(cost['socketio_clients'], 2)} vs "
            f"{num(cost['twcomms_clients'], 2)}. Both systems' clients share "
            f"the machine's cores with the nodes and Redis, so deliveries/s "
            f"also carries each side's client cost."
        )
    return lines if len(lines) > 1 else []


def print_report(run: dict[str, Any]) -> list[str]:
    lines = [
        f"python-socketio {run['environment'].get('python-socketio')} "
        f"(AsyncRedisManager, defaults) vs twcomms, one redis-server: one run, "
        f"{run['environment']['cpus']} cores, {run['settings']['rounds']} "
        f"interleaved rounds, {run['elapsed_s']:g} s"
        f"{' (quick sizes)' if run['settings']['quick'] else ''}; medians over "
        f"the rounds; 'tw/sio' = twcomms median / python-socketio median, "
        f"'paired' = median over rounds of that round's ratio; 'x same' = "
        f"cross median / same-node median",
    ]
    if run["settings"]["quick"]:
        lines.append(
            "NOTE: quick sizes: these figures only show that every cell runs; "
            "compare with a full run."
        )
    lines += _broadcast_table(run)
    lines += _rtt_table(run)
    lines += _cpu_tables(run)
    lines += _goal_lines(run)
    lines = [line.rstrip() for line in lines]
    for line in lines:
        print(line)
    return lines


# -- running ------------------------------------------------------------------


def run_benchmark(
    sizes: Sizes,
    rounds: int = ROUNDS,
    scenarios: list[str] | tuple[str, ...] = SCENARIOS,
    output_dir: Path | None = RESULTS,
    argv: list[str] | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """
    Run every cell of C{scenarios} C{rounds} times, interleaved, on one
    C{redis-server}; print the tables and (with C{output_dir}) write
    C{socketio_anchor.json} (C{socketio_anchor-quick.json} for quick
    sizes).
    """
    from harness.redis import RedisServer

    socketio_sizes = sizes if sizes.quick else replace(sizes, bound=SOCKETIO_BOUND)
    cells = select_cells(scenarios)
    run: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "command": [Path(sys.executable).name, "-m", MODULE, *(argv or [])],
        "settings": {
            **asdict(sizes),
            "socketio_bound": socketio_sizes.bound,
            "rounds": rounds,
        },
        "scenarios": [s for s in SCENARIOS if s in scenarios],
        "cells": [c.key for c in cells],
        "socketio_config": {
            "server": "socketio.AsyncServer(client_manager="
            "socketio.AsyncRedisManager(redis_url)), defaults (async_mode "
            "aiohttp), on aiohttp.web.AppRunner + SockSite, 127.0.0.1",
            "broadcast": "for m in msgs: await sio.emit('m', m)",
            "relay": "await sio.emit('m', data, skip_sid=sid)",
            "client": "socketio.AsyncClient(); connect(url, transports=['websocket'])",
        },
        "environment": environment(*VERSIONS),
        "rounds": [],
    }
    with RedisServer() as redis:
        run["environment"]["redis_server"] = redis.executable
        interleave(
            run,
            rounds,
            lambda r: round_order(cells, r),
            lambda cell, r: run_cell(cell, sizes, socketio_sizes, redis),
            one_line,
            verbose,
            tags=lambda cell: {"system": cell.system},
        )
    run["summary"] = summarise(run)
    run["goals"] = goals(run)
    if verbose:
        print()
        run["printed"] = print_report(run)
    write_run(run, output_dir, "socketio_anchor", sizes.quick, verbose)
    return run


def problems(run: dict[str, Any]) -> list[str]:
    """
    What is wrong with a run: a (cell, round) missing or not ok, or a
    compared figure without a median. Empty when every figure was produced.
    """
    out = missing_rounds(run, one_line)
    for row in run.get("summary", []):
        if row["ratio"] is None:
            out.append(f"{row['group']}/{row['layout']} {row['figure']}: no ratio")
    return out


# -- the command line ---------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m " + MODULE,
        description=(
            "twcomms' Redis backplane against python-socketio's\n"
            "AsyncRedisManager (default settings), one redis-server, one run:\n"
            "broadcast deliveries/s and round-trip p50/p99, same node and\n"
            "cross node, medians over interleaved rounds, ratios\n"
            "twcomms / python-socketio, CPU per delivered message per process."
        ),
        epilog=(
            "examples:\n"
            f"  python -m {MODULE}\n"
            f"  python -m {MODULE} --quick\n"
            f"  python -m {MODULE} --rounds 5 --scenarios broadcast\n"
            "writes benchmarks/results/socketio_anchor.json "
            "(--quick: socketio_anchor-quick.json)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    round_arguments(
        p,
        scenarios=SCENARIOS,
        metavar="broadcast,rtt",
        scenarios_help="default: both",
        stem="socketio_anchor",
        rounds=ROUNDS,
        quick_rounds=QUICK_ROUNDS,
        results=RESULTS,
        output_help="",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    run = run_benchmark(
        sizes,
        rounds=rounds,
        scenarios=args.scenarios,
        output_dir=args.output_dir,
        argv=argv,
    )
    return 0 if not problems(run) else 1


if __name__ == "__main__":
    raise SystemExit(main())
