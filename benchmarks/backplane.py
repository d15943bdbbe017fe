"""
Benchmark: what crossing nodes through the Redis backplane costs, beside
clients on one node, in one run -- and whether the Redis client
(L{twcomms.backplane.resp}) is what limits it.

Every node is a process built as C{twcomms serve --backplane URL --hub
NAME} builds one: a C{CommsServerFactory} whose registry is a
C{RedisBackplane}, with the hub's broadcast mode (L{twcomms.ops.service.Hub}:
each client's message relayed to every other client, on every node). One
real C{redis-server} (L{harness.redis.RedisServer}) serves the whole run;
each cell has a hub name of its own. Clients are plain twcomms clients
(L{benchmarks.peers.nets.TwcommsNet}) in processes of their own.

Cells (each figure a median over the rounds):

  - broadcast: 50 clients in 2 processes; a loop in the origin node's
    server broadcasts 20,000 small json messages (1,000 per reactor turn,
    as L{benchmarks.peers}' scenario C); deliveries/s from the first
    broadcast until the last client has all of them.
      - C{same}: one node on Redis, the clients on it (its broadcasts are
        still published; Redis sends them back and the node drops them);
      - C{cross}: nodes A and B on Redis, the loop on A, every client on B;
      - C{local}: one node without a backplane, for reference.
  - rtt: 5,000 sequential round trips (after 500 warm-up) through the
    hub: a client sends, the hub relays it to an echo client, which sends
    it back, relayed again; microseconds at the sender, p50 and p99.
    C{same}: both clients on one node on Redis; C{cross}: the sender on
    A, the echo client on B; C{local}: one node without a backplane.
  - broadcast/profiled: the cross cell again with both nodes under
    C{cProfile} during the broadcasts (its figures are not compared): the
    share of the receiving node's busy time in the Redis client (resp.py
    and hiredis), in the backplane's envelopes, in delivery to the clients
    (registry, framing, writers), in the socket calls and in Twisted.

Beside every cell: each process's CPU time over the run (C{time.process_time}
in each node and client process; C{INFO cpu}'s C{used_cpu_user} +
C{used_cpu_sys} delta for C{redis-server}), shown as CPU per delivered
message (per round trip) and as cores busy, with the whole machine's
(C{/proc/stat}: every process's, and the hypervisor's steal -- the machine
may be shared); from them and the profile, what limits deliveries/s is
named. (At C{--quick} sizes a window is tens of milliseconds, too short for
C{/proc/stat}'s ticks.)

Rounds are interleaved: each round runs every cell once, the cells of a
group in an order rotated every round, so a slow spell of the machine falls
on all of them alike. Ratios are against the C{same} cell of the same run:
C{x same} is the median over the C{same} median; C{paired} is the median
over rounds of the figure over the C{same} cell's figure in that round.

Run from the repository root::

    python -m benchmarks.backplane                  # 5 rounds, ~2-3 minutes
    python -m benchmarks.backplane --quick          # tiny sizes, 1 round, seconds
    python -m benchmarks.backplane --rounds 9 --scenarios rtt

It writes C{benchmarks/results/backplane.json} (C{--quick}:
C{backplane-quick.json}; C{--output-dir} to choose where) and keeps the
profiles in C{<output-dir>/profiles/}. It needs a C{redis-server}: see
L{harness.redis.find_redis_server}.

From a test (it blocks for a few seconds and uses only subprocesses)::

    from benchmarks.backplane import problems, run_quick

    run = run_quick(tmp_path)          # or run_quick() to write nothing
    assert not problems(run)

Linux only, as L{benchmarks.peers}.

(Over 500 lines: one benchmark in one file -- its processes, its cells and
rounds, the figures, the profile's breakdown, the tables and its command
line.)
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import json
import math
import os
import pstats
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.peers.cli import round_arguments
from benchmarks.peers.common import emit, messages, read_go, rtt_result
from benchmarks.peers.run import environment
from benchmarks.peers.runner import CellError, Cutoff, Proc, client_split
from benchmarks.peers.settings import BATCH, RESULTS, now
from benchmarks.summary import (
    compact,
    compare,
    interleave,
    missing_rounds,
    num,
    ratio,
    values,
    write_run,
)
from benchmarks.summary import row as summary_row
from harness.procs import raise_fd_limit, watchdog
from harness.redis import redis_command

MODULE = "benchmarks.backplane"
ROUNDS = 5
QUICK_ROUNDS = 1
SCENARIOS = ("broadcast", "rtt")


@dataclass(frozen=True)
class Sizes:
    """
    Sizes and the time bound of one run.
    """

    clients: int = 50
    client_procs: int = 2
    messages: int = 20_000
    trips: int = 5_000
    warmup: int = 500
    #: Seconds one cell may take, its processes' start included.
    bound: float = 90.0
    quick: bool = False


FULL = Sizes()
QUICK = Sizes(clients=4, messages=300, trips=200, warmup=20, bound=30.0, quick=True)


# -- the processes ------------------------------------------------------------
#
# Every child prints JSON events on stdout (benchmarks.peers.common.emit) and
# reads JSON lines on stdin; the parent drives it (benchmarks.peers.runner's
# Proc). Times are time.perf_counter(): CLOCK_MONOTONIC, one clock for every
# process of the machine.


def _net() -> Any:
    # peers' twcomms net: the reactor, logging at warn level to stderr (as a
    # configured hub logs), and plain json clients.
    from benchmarks.peers.nets import TwcommsNet

    return TwcommsNet(binary=False)


def _read_lines(reactor: Any, handle: Callable[[dict[str, Any]], None]) -> None:
    """
    Hand each JSON line the parent writes on stdin to C{handle}, on the
    reactor thread.
    """

    def pump() -> None:
        for line in sys.stdin:
            reactor.callFromThread(handle, json.loads(line))

    threading.Thread(target=pump, name="stdin", daemon=True).start()


def _node(spec: dict[str, Any]) -> None:
    """
    One hub node: what C{twcomms serve --backplane URL --hub NAME} runs
    (without C{--backplane}, C{redis} None: one process alone). Commands on
    stdin: C{mark} (note the CPU time; start the profiler if given a path),
    C{broadcast} (the server loop), C{report} (CPU time since the mark,
    the registry's counters; the profile written).
    """
    from twcomms import CommsServerFactory
    from twcomms.ops.service import Hub

    net = _net()
    reactor = net.reactor
    registry = None
    if spec["redis"] is not None:
        from twcomms.backplane import RedisBackplane

        registry = RedisBackplane(
            spec["redis"], hub=spec["hub"], reactor=reactor, required=True
        )
    count = 0

    def on_connect(client: Any) -> None:
        nonlocal count
        count += 1
        emit("clients", count=count)

    factory = CommsServerFactory(
        "json", registry=registry, reactor=reactor, on_connect=on_connect
    )
    Hub(factory, "broadcast")
    msgs = messages(spec["messages"])
    state: dict[str, Any] = {"cpu0": 0.0, "profile": None}

    def broadcast_from(i: int) -> None:
        if i == 0:
            state["t_start"] = now()
        broadcast = factory.broadcast
        for m in msgs[i : i + BATCH]:
            broadcast(m)
        if i + BATCH < len(msgs):
            reactor.callLater(0, broadcast_from, i + BATCH)
        else:
            emit("sent", t_start=state["t_start"], t_sent=now())

    def command(cmd: dict[str, Any]) -> None:
        what = cmd["cmd"]
        if what == "mark":
            if cmd.get("profile"):
                profiler = cProfile.Profile()
                state["profile"] = (profiler, cmd["profile"])
                profiler.enable()
            state["cpu0"] = time.process_time()
            emit("marked")
        elif what == "broadcast":
            broadcast_from(0)
        elif what == "report":
            cpu = time.process_time() - state["cpu0"]
            if state["profile"] is not None:
                profiler, path = state["profile"]
                state["profile"] = None
                profiler.disable()
                profiler.dump_stats(path)
            emit("report", cpu_s=cpu, stats=factory.clients.stats())

    def listening(port: Any) -> None:
        _read_lines(reactor, command)
        emit("ready", port=port.getHost().port, node=getattr(registry, "node", None))

    def failed(failure: Any) -> None:
        emit("error", error=f"node did not start: {failure.getErrorMessage()}")
        net.stop()

    factory.listen(("127.0.0.1", 0)).addCallbacks(listening, failed)
    net.run()


def _receivers(spec: dict[str, Any], go: dict[str, Any]) -> None:
    """
    C{clients} connections, each counting C{messages} broadcasts (the last
    one checked to be the last sent); one result when every one has all,
    and connected until the parent kills the process.
    """
    net = _net()
    k, m = spec["clients"], spec["messages"]
    counts: dict[Any, int] = {}
    connected = done = 0

    def on_connected(conn: Any) -> None:
        nonlocal connected
        connected += 1
        if connected == k:
            emit("connected", cpu=time.process_time())

    def on_message(conn: Any, msg: Any) -> None:
        nonlocal done
        c = counts.get(conn, 0) + 1
        counts[conn] = c
        if c == m:
            if msg["i"] != m - 1:
                emit("error", error=f"last message out of order: {msg['i']}")
            done += 1
            if done == k:
                # Connected until killed: the nodes' figures hold no
                # disconnections.
                emit("result", t_done=now(), cpu=time.process_time())

    def failed(error: str) -> None:
        emit("error", error=f"connect failed: {error}")
        net.stop()

    for _ in range(k):
        net.connect(go["ports"][0], on_message, on_connected, failed)
    net.run()


def _pinger(spec: dict[str, Any], go: dict[str, Any]) -> None:
    """
    One client: once told C{start} (a line on stdin), C{warmup + trips}
    sequential round trips through the hub, timed at this end.
    """
    net = _net()
    msgs = messages(spec["trips"] + spec["warmup"])
    warmup = spec["warmup"]
    rtts: list[float] = []
    i = 0
    t0 = 0.0
    state: dict[str, Any] = {}

    def on_connected(conn: Any) -> None:
        state["send"] = net.sender(conn)
        _read_lines(net.reactor, start)
        emit("connected", cpu=time.process_time())

    def start(cmd: dict[str, Any]) -> None:
        nonlocal t0
        state["t_first"] = t0 = now()
        state["cpu0"] = time.process_time()
        state["send"](msgs[0])

    def on_message(conn: Any, msg: Any) -> None:
        nonlocal i, t0
        t1 = now()
        if msg["i"] != i:
            emit("error", error=f"reply {msg['i']} to message {i}")
            net.stop()
            return
        if i >= warmup:
            rtts.append(t1 - t0)
        i += 1
        if i == len(msgs):
            emit(
                "result",
                t_first=state["t_first"],
                t_last=t1,
                cpu=time.process_time() - state["cpu0"],
                **rtt_result(rtts),
            )
            return  # connected until killed, as the receivers
        t0 = now()
        state["send"](msgs[i])

    def failed(error: str) -> None:
        emit("error", error=f"connect failed: {error}")
        net.stop()

    net.connect(go["ports"][0], on_message, on_connected, failed)
    net.run()


def _echo(spec: dict[str, Any], go: dict[str, Any]) -> None:
    """
    One client that sends back every message it gets.
    """
    net = _net()

    def failed(error: str) -> None:
        emit("error", error=f"connect failed: {error}")
        net.stop()

    net.connect(
        go["ports"][0],
        net.reply,
        lambda conn: emit("connected", cpu=time.process_time()),
        failed,
    )
    net.run()


def run_child(role: str, spec: dict[str, Any]) -> int:
    """
    One process of a cell, under a watchdog, leaving without interpreter
    teardown. A client first reads the port of its node from stdin.
    """
    raise_fd_limit()
    watchdog(spec["bound"] + 10)
    try:
        if role == "node":
            _node(spec)
        else:
            roles = {"receivers": _receivers, "pinger": _pinger, "echo": _echo}
            if role not in roles:
                raise ValueError(role)
            roles[role](spec, read_go())
    except BaseException as e:  # report anything, then leave at once
        emit("error", error=f"{role}: {type(e).__name__}: {e}")
        sys.stderr.flush()
        os._exit(1)
    sys.stderr.flush()
    os._exit(0)


# -- Redis's own CPU time -----------------------------------------------------


def redis_cpu(port: int, timeout: float = 5.0) -> float:
    """
    The CPU seconds C{redis-server} on 127.0.0.1:C{port} has used so far
    (C{INFO cpu}: C{used_cpu_user + used_cpu_sys}), asked over a short
    connection of its own.
    """
    info = redis_command(port, "INFO", "cpu", timeout=timeout)
    if not isinstance(info, bytes):
        raise CellError(f"INFO cpu: {info!r}")
    fields = dict(
        line.split(":", 1) for line in info.decode().splitlines() if ":" in line
    )
    return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])


def machine_cpu() -> tuple[float, float, float]:
    """
    The whole machine's CPU seconds so far, every process's (C{/proc/stat}:
    user, nice, system, irq, softirq), the seconds stolen by the hypervisor,
    and the C{time.monotonic()} they were read at.
    """
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    busy = user + nice + system + irq + softirq
    return busy / hz, steal / hz, time.monotonic()


def machine_cores(
    before: tuple[float, float, float], after: tuple[float, float, float]
) -> dict[str, float]:
    elapsed = max(after[2] - before[2], 1e-9)
    return {
        "machine": (after[0] - before[0]) / elapsed,
        "steal": (after[1] - before[1]) / elapsed,
    }


# -- the cells ----------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """
    One measured configuration.

    @ivar key: its name (C{"broadcast/cross"}).
    @ivar group: C{"broadcast"} or C{"rtt"}.
    @ivar layout: C{"local"} (one node, no backplane), C{"same"} (one node
        on Redis), C{"cross"} (two nodes on Redis) or C{"four"} (four:
        the clients on three, a cost figure on 2 cores).
    @ivar profiled: its nodes run under cProfile (not compared).
    """

    key: str
    group: str
    layout: str
    label: str
    profiled: bool = False

    @property
    def baseline(self) -> str:
        return f"{self.group}/same"


CELLS = (
    Cell("broadcast/local", "broadcast", "local", "one node, no backplane (ref.)"),
    Cell("broadcast/same", "broadcast", "same", "same node: 1 node on Redis"),
    Cell(
        "broadcast/cross", "broadcast", "cross", "cross node: sent on A, clients on B"
    ),
    Cell(
        "broadcast/four",
        "broadcast",
        "four",
        "4 nodes: sent on A, clients on B, C, D (cost)",
    ),
    Cell(
        "broadcast/profiled",
        "broadcast",
        "cross",
        "cross node under cProfile",
        profiled=True,
    ),
    Cell("rtt/local", "rtt", "local", "one node, no backplane (ref.)"),
    Cell("rtt/same", "rtt", "same", "same node: 1 node on Redis"),
    Cell("rtt/cross", "rtt", "cross", "cross node: sender on A, echo on B"),
)
CELL = {c.key: c for c in CELLS}

#: group -> (figure, unit, higher is better), and a second figure shown.
FIGURES = {
    "broadcast": ("deliveries_per_s", "deliveries/s", True),
    "rtt": ("p50_us", "p50 us", False),
}
SECOND = {"rtt": ("p99_us", "p99 us")}


def select_cells(scenarios: list[str] | tuple[str, ...]) -> list[Cell]:
    return [c for c in CELLS if c.group in scenarios]


def round_order(cells: list[Cell], round_index: int) -> list[Cell]:
    """
    Group by group, each group's compared cells rotated by the round; the
    profiled cell after them.
    """
    order: list[Cell] = []
    for group in SCENARIOS:
        members = [c for c in cells if c.group == group and not c.profiled]
        if members:
            k = round_index % len(members)
            order.extend(members[k:] + members[:k])
        order.extend(c for c in cells if c.group == group and c.profiled)
    return order


class Procs:
    """
    The processes of one cell run, and the last event of each kind each
    has sent. Every wait is bounded by the cell's deadline; an error event,
    or a process that exits before its result, ends the cell.
    """

    def __init__(self, bound: float) -> None:
        self.events: queue.Queue[Any] = queue.Queue()
        self.procs: dict[str, Proc] = {}
        self.got: dict[tuple[str, str], dict[str, Any]] = {}
        self.done: set[str] = set()
        self.deadline = time.monotonic() + bound

    def start(self, name: str, role: str, spec: dict[str, Any]) -> None:
        cmd = [sys.executable, "-m", MODULE, "--child", role, json.dumps(spec)]
        self.procs[name] = Proc(name, cmd, self.events)

    def send(self, name: str, obj: dict[str, Any]) -> None:
        self.procs[name].send(obj)

    def _take(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise Cutoff("time bound")
        try:
            name, ev = self.events.get(timeout=min(remaining, 1.0))
        except queue.Empty:
            return
        if ev is None:
            if name not in self.done:
                raise CellError(f"{name} exited early: {self.procs[name].tail()}")
            return
        kind = ev.get("ev")
        if kind == "error":
            raise CellError(f"{name}: {ev.get('error')}")
        if kind == "result":
            self.done.add(name)
        self.got[(name, kind)] = ev

    def wait(self, *keys: tuple[str, str]) -> list[dict[str, Any]]:
        while any(k not in self.got for k in keys):
            self._take()
        return [self.got[k] for k in keys]

    def wait_until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            self._take()

    def clients(self, node: str) -> int:
        return int(self.got.get((node, "clients"), {}).get("count", 0))

    def ask(
        self, commands: dict[str, dict[str, Any]], reply: str
    ) -> dict[str, dict[str, Any]]:
        """
        Send each process its command; wait for each one's C{reply}.
        """
        for name, cmd in commands.items():
            self.got.pop((name, reply), None)
            self.send(name, cmd)
        got = self.wait(*[(name, reply) for name in commands])
        return dict(zip(commands, got, strict=True))

    def close(self) -> None:
        for p in self.procs.values():
            p.kill()


def _nodes(cell: Cell) -> list[str]:
    return {"cross": ["A", "B"], "four": ["A", "B", "C", "D"]}.get(cell.layout, ["A"])


def _start_nodes(
    procs: Procs, cell: Cell, sizes: Sizes, redis_url: str, sender_messages: int
) -> None:
    url = None if cell.layout == "local" else redis_url
    hub = "bench-" + os.urandom(4).hex()
    for n in _nodes(cell):
        spec = {
            "redis": url,
            "hub": hub,
            "messages": sender_messages if n == "A" else 0,
            "bound": sizes.bound,
        }
        procs.start(n, "node", spec)


def _marks(
    procs: Procs, nodes: list[str], profile_prefix: Path | None
) -> dict[str, Any]:
    cmds = {}
    for n in nodes:
        path = f"{profile_prefix}-{n}.prof" if profile_prefix is not None else None
        cmds[n] = {"cmd": "mark", "profile": path}
    return procs.ask(cmds, "marked")


def _broadcast_cell(
    procs: Procs, cell: Cell, sizes: Sizes, redis: Any, profile: Path | None
) -> dict[str, Any]:
    k = sizes.messages
    nodes = _nodes(cell)
    # Where the clients are: A, or every other node when crossing.
    targets = nodes[1:] if len(nodes) > 1 else nodes
    _start_nodes(procs, cell, sizes, redis.url, k)
    split = client_split(
        sizes.clients,
        math.ceil(sizes.clients / sizes.client_procs),
        max(sizes.client_procs, len(targets)),
    )
    receivers = [f"clients{i}" for i in range(len(split))]
    for name, count in zip(receivers, split, strict=True):
        procs.start(
            name, "receivers", {"clients": count, "messages": k, "bound": sizes.bound}
        )
    ready = dict(zip(nodes, procs.wait(*[(n, "ready") for n in nodes]), strict=True))
    for i, name in enumerate(receivers):
        procs.send(name, {"ports": [ready[targets[i % len(targets)]]["port"]]})
    connected = procs.wait(*[(r, "connected") for r in receivers])
    procs.wait_until(lambda: sum(procs.clients(t) for t in targets) == sizes.clients)
    _marks(procs, nodes, profile)
    redis0 = redis_cpu(redis.port)
    machine0 = machine_cpu()
    procs.send("A", {"cmd": "broadcast"})
    sent, *results = procs.wait(("A", "sent"), *[(r, "result") for r in receivers])
    machine1 = machine_cpu()
    redis1 = redis_cpu(redis.port)
    reports = procs.ask({n: {"cmd": "report"} for n in nodes}, "report")
    deliveries = sizes.clients * k
    window = max(r["t_done"] for r in results) - sent["t_start"]
    cpu = {n: reports[n]["cpu_s"] for n in nodes}
    cpu["redis"] = redis1 - redis0
    for name, c, r in zip(receivers, connected, results, strict=True):
        cpu[name] = r["cpu"] - c["cpu"]
    out: dict[str, Any] = {
        "status": "ok",
        "deliveries": deliveries,
        "broadcasts": k,
        "window_s": window,
        "sent_s": sent["t_sent"] - sent["t_start"],
        "deliveries_per_s": deliveries / window,
        "cpu_s": cpu,
        "node_stats": {n: reports[n]["stats"] for n in nodes},
    }
    out.update(cpu_figures(cpu, nodes, receivers, window, deliveries))
    cores = out["cores"]
    cores.update(machine_cores(machine0, machine1))
    cores["others"] = max(cores["machine"] - cores["all"], 0.0)
    for n in nodes[1:]:
        got = reports[n]["stats"].get("received")
        if got != k:
            raise CellError(f"node {n} received {got} envelopes of {k}")
    return out


def _rtt_cell(
    procs: Procs, cell: Cell, sizes: Sizes, redis: Any, profile: Path | None
) -> dict[str, Any]:
    nodes = _nodes(cell)
    _start_nodes(procs, cell, sizes, redis.url, 0)
    spec = {"trips": sizes.trips, "warmup": sizes.warmup, "bound": sizes.bound}
    procs.start("echo", "echo", spec)
    procs.start("pinger", "pinger", spec)
    ready = dict(zip(nodes, procs.wait(*[(n, "ready") for n in nodes]), strict=True))
    procs.send("echo", {"ports": [ready[nodes[-1]]["port"]]})
    procs.send("pinger", {"ports": [ready["A"]["port"]]})
    procs.wait(("echo", "connected"), ("pinger", "connected"))
    procs.wait_until(lambda: sum(procs.clients(n) for n in nodes) == 2)
    _marks(procs, nodes, profile)
    redis0 = redis_cpu(redis.port)
    machine0 = machine_cpu()
    procs.send("pinger", {"cmd": "start"})
    (result,) = procs.wait(("pinger", "result"))
    machine1 = machine_cpu()
    redis1 = redis_cpu(redis.port)
    reports = procs.ask({n: {"cmd": "report"} for n in nodes}, "report")
    trips = sizes.trips + sizes.warmup
    window = result["t_last"] - result["t_first"]
    cpu = {n: reports[n]["cpu_s"] for n in nodes}
    cpu["redis"] = redis1 - redis0
    cpu["pinger"] = result["cpu"]
    figures = {k: result[k] for k in ("trips", "p50_us", "p99_us", "mean_us", "min_us")}
    out: dict[str, Any] = {
        "status": "ok",
        **figures,
        "window_s": window,
        "cpu_s": cpu,
        "cores": machine_cores(machine0, machine1),
    }
    nodes_cpu = sum(cpu[n] for n in nodes)
    out["cpu_us_per_trip"] = {
        **{n: cpu[n] / trips * 1e6 for n in nodes},
        "nodes": nodes_cpu / trips * 1e6,
        "redis": cpu["redis"] / trips * 1e6,
    }
    return out


def cpu_figures(
    cpu: dict[str, float],
    nodes: list[str],
    clients: list[str],
    window: float,
    deliveries: int,
) -> dict[str, Any]:
    """
    CPU per delivered message (us) and cores busy over the window, per
    process and per kind of process.
    """
    parts = {n: cpu[n] for n in nodes}
    parts["nodes"] = sum(cpu[n] for n in nodes)
    parts["redis"] = cpu["redis"]
    parts["clients"] = sum(cpu[c] for c in clients)
    cores = {name: value / window for name, value in parts.items()}
    cores.update({c: cpu[c] / window for c in clients})
    cores["all"] = parts["nodes"] + parts["redis"] + parts["clients"]
    cores["all"] /= window
    return {
        "cpu_us_per_delivery": {k: v / deliveries * 1e6 for k, v in parts.items()},
        "cores": cores,
    }


def run_cell_once(
    cell: Cell, sizes: Sizes, redis: Any, profile_prefix: Path | None = None
) -> dict[str, Any]:
    """
    Run C{cell} once, within the time bound; every child is killed by pid
    when it ends.
    """
    started = time.monotonic()
    procs = Procs(sizes.bound)
    run = _broadcast_cell if cell.group == "broadcast" else _rtt_cell
    try:
        out = run(procs, cell, sizes, redis, profile_prefix)
    except Cutoff as e:
        out = {"status": "cutoff", "why": str(e)}
    except (CellError, OSError) as e:
        out = {"status": "error", "error": str(e)[:400]}
    finally:
        procs.close()
    out["wall_s"] = round(time.monotonic() - started, 2)
    return out


def one_line(result: dict[str, Any]) -> str:
    if result["status"] != "ok":
        return f"{result['status']}: {result.get('error') or result.get('why')}"
    if "deliveries_per_s" in result:
        return f"{result['deliveries_per_s']:,.0f} deliveries/s ({result['wall_s']} s)"
    return (
        f"p50 {result['p50_us']:.0f} us, p99 {result['p99_us']:.0f} us "
        f"({result['wall_s']} s)"
    )


# -- figures ------------------------------------------------------------------


def _median(run: dict[str, Any], key: str, figure: str) -> float | None:
    found = values(run, key, figure)
    return statistics.median(found.values()) if found else None


def summarise(run: dict[str, Any]) -> list[dict[str, Any]]:
    """
    Per compared cell and figure: the median over rounds, its ratio to the
    same-node cell's median (C{vs_same}), and the median of the per-round
    ratios (C{paired}).
    """
    out = []
    for key in run["cells"]:
        cell = CELL[key]
        if cell.profiled:
            continue
        figure, unit, higher = FIGURES[cell.group]
        wanted = [(figure, unit)]
        if cell.group in SECOND:
            wanted.append(SECOND[cell.group])
        for name, shown in wanted:
            compared = compare(run, key, cell.baseline, name)
            out.append(
                {
                    "cell": key,
                    "figure": name,
                    "unit": shown,
                    "higher_is_better": higher,
                    "rounds": compared["rounds"],
                    "median": compared["median"],
                    "baseline": cell.baseline,
                    "vs_same": compared["ratio"],
                    "paired": compared["paired"],
                }
            )
    return out


# -- the profile --------------------------------------------------------------

#: Where a profile's busy time goes: categories, in the order shown.
CATEGORIES = (
    ("redis", "Redis client: twcomms.backplane.resp + hiredis"),
    ("backplane", "backplane: envelopes, order (base, envelope, redis.py)"),
    ("delivery", "delivery to clients: registry, framing, writers"),
    ("send", "socket send() (syscalls)"),
    ("recv", "socket recv() (syscalls)"),
    ("transport", "Twisted transports: write buffers, doRead/doWrite"),
    ("reactor", "Twisted reactor: epoll dispatch, timers, Deferreds"),
    ("encode", "json encoding of the broadcasts (codec)"),
    ("driver", "this benchmark's own code (A's loop, its commands)"),
    ("other", "other"),
)
#: Waiting for the sockets: not the work measured.
_IDLE = frozenset({"<method 'poll' of 'select.epoll' objects>"})


def _category(func: tuple[str, int, str]) -> str | None:
    """
    The category of a profiled function by where it is; L{None} for a
    builtin (or code made at run time) whose time goes to its callers'
    categories.
    """
    path, _line, name = func
    if path.startswith("<"):
        # Code made at run time (a dataclass's __init__): its callers'.
        return None
    if path == "~":
        if "hiredis" in name:
            return "redis"
        if "'send'" in name or "'sendmsg'" in name:
            return "send"
        if "'recv'" in name or "'recv_into'" in name:
            return "recv"
        return None
    path = path.replace(os.sep, "/")
    if "twcomms/backplane/resp.py" in path or "hiredis" in path:
        return "redis"
    if "twcomms/backplane/" in path:
        return "backplane"
    if ("twcomms/" in path and "codecs.py" in path) or "/json/" in path:
        return "encode"
    if "/twcomms/" in path:
        return "delivery"
    if path.endswith(("twisted/internet/tcp.py", "twisted/internet/abstract.py")):
        return "transport"
    if "/twisted/" in path:
        return "reactor"
    if "benchmarks/" in path:
        return "driver"
    return "other"


def profile_breakdown(files: list[Path], top: int = 12) -> dict[str, Any] | None:
    """
    Sum C{files}' profiles (one process's, over the rounds) and share their
    busy time (profiled, less the wait in C{epoll}) among L{CATEGORIES} by
    self time; a builtin's time goes to the category of its callers, in the
    proportion each caller spent in it (except hiredis and the socket calls,
    which are categories of their own). Also the top functions by self time.
    """
    files = [f for f in files if f.exists()]
    if not files:
        return None
    stats = pstats.Stats(str(files[0]))
    for f in files[1:]:
        stats.add(str(f))
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in table.values())
    idle = sum(v[2] for k, v in table.items() if k[2] in _IDLE)
    busy = max(total - idle, 1e-9)
    seconds = dict.fromkeys((c for c, _ in CATEGORIES), 0.0)
    for func, (_cc, _nc, tt, _ct, callers) in table.items():
        if func[2] in _IDLE:
            continue
        cat = _category(func)
        if cat is not None:
            seconds[cat] += tt
            continue
        spent = {c: v[2] for c, v in callers.items()}
        whole = sum(spent.values())
        if whole <= 0:
            seconds["other"] += tt
            continue
        for caller, part in spent.items():
            seconds[_category(caller) or "other"] += tt * part / whole
    rows = sorted(
        ((k, v) for k, v in table.items() if k[2] not in _IDLE),
        key=lambda kv: kv[1][2],
        reverse=True,
    )[:top]
    return {
        "files": len(files),
        "busy_s": busy,
        "redis_inclusive_share": _redis_inclusive(table) / busy,
        "profiled_s": total,
        "seconds": seconds,
        "shares": {c: s / busy for c, s in seconds.items()},
        "top": [
            {
                "function": _short(func),
                "category": _category(func) or "charged to its callers",
                "self_share": v[2] / busy,
                "calls": v[1],
            }
            for func, v in rows
        ],
    }


def _redis_inclusive(table: dict[Any, Any]) -> float:
    """
    Seconds in the Redis client counting what it calls (encoding, a
    Deferred per command, the transport's write buffers, hiredis) but not
    the backplane's handling of what it hands over: the inclusive time of
    C{RedisProtocol.execute} and C{.dataReceived}, less that of
    C{RedisBackplane._message} (which C{dataReceived} calls per message).
    """

    def inclusive(path: str, name: str) -> float:
        return sum(
            v[3]
            for k, v in table.items()
            if k[2] == name and k[0].replace(os.sep, "/").endswith(path)
        )

    resp = "twcomms/backplane/resp.py"
    return (
        inclusive(resp, "execute")
        + inclusive(resp, "dataReceived")
        - inclusive("twcomms/backplane/redis.py", "_message")
    )


def _short(func: tuple[str, int, str]) -> str:
    path, line, name = func
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path}:{line})" if line else name


def analyse(run: dict[str, Any], profile_dir: Path | None) -> dict[str, Any]:
    """
    The profile breakdowns of the profiled cell's nodes, and what limits
    the cross-node broadcast: cores busy per process, and how much the
    Redis client could take at the CPU it costs.
    """
    out: dict[str, Any] = {"profiles": {}}
    if profile_dir is not None:
        for node in ("A", "B"):
            files = sorted(profile_dir.glob(f"backplane-r*-{node}.prof"))
            out["profiles"][node] = profile_breakdown(files)
    cross = "broadcast/cross"
    if cross not in run["cells"]:
        return out
    messages_ = run["settings"]["messages"]
    clients = run["settings"]["clients"]
    cores = {
        name: _median(run, cross, f"cores.{name}")
        for name in ("A", "B", "redis", "clients", "all", "others", "steal", "machine")
    }
    procs = [f"clients{i}" for i in range(run["settings"]["client_procs"])]
    cores.update({p: _median(run, cross, f"cores.{p}") for p in procs})
    out["cross_cores"] = cores
    rate = _median(run, cross, "deliveries_per_s")
    if not rate:
        return out
    out["nodes"] = {}
    for node in ("A", "B"):
        cpu = _median(run, cross, f"cpu_s.{node}")
        profile = out["profiles"].get(node)
        if not cpu or not profile:
            continue
        # Per envelope: per broadcast made (A) or received (B), from the
        # cells run without the profiler; the shares from the profile.
        us = cpu / messages_ * 1e6
        self_us = profile["shares"]["redis"] * us
        incl_us = profile["redis_inclusive_share"] * us
        out["nodes"][node] = {
            "us_per_envelope": us,
            "redis_client_us": self_us,
            "redis_client_inclusive_us": incl_us,
            "redis_client_alone_per_s": 1e6 / incl_us if incl_us > 0 else None,
            "node_alone_per_s": 1e6 / us,
            "run_per_s": rate / clients,
        }
    return out


# -- printing -----------------------------------------------------------------


def _table(run: dict[str, Any], group: str, *header: str) -> list[str]:
    keys = [k for k in run["cells"] if CELL[k].group == group and not CELL[k].profiled]
    if not keys:
        return []
    summary = run["summary"]
    figure, unit, _ = FIGURES[group]
    second = SECOND.get(group)
    lines = ["", *header]
    head = f"  {'cell':<38} {unit:>13} {'x same':>7} {'paired':>7}"
    if second:
        head += f" {second[1]:>9} {'x same':>7}"
    lines.append(head + f"  rounds ({unit})")
    for key in keys:
        cell = CELL[key]
        row = summary_row(summary, key, figure)
        is_base = key == cell.baseline
        line = (
            f"  {cell.label:<38} "
            f"{num(row['median'], 1 if group == 'rtt' else 0):>13} "
            f"{'-' if is_base else ratio(row['vs_same']):>7} "
            f"{'-' if is_base else ratio(row['paired']):>7}"
        )
        if second:
            row2 = summary_row(summary, key, second[0])
            line += (
                f" {num(row2['median'], 1):>9} "
                f"{'-' if is_base else ratio(row2['vs_same']):>7}"
            )
        line += "  " + " ".join(compact(v, unit) for v in row["rounds"])
        bad = [r for r in run["rounds"] if r["cell"] == key and r["status"] != "ok"]
        if bad:
            line += (
                "  "
                + "; ".join(f"round {r['round'] + 1}: {one_line(r)}" for r in bad)[:160]
            )
        lines.append(line)
    return lines


_SHORT = {
    "local": "no backplane",
    "same": "same node",
    "cross": "cross node",
    "four": "4 nodes",
}


def _per_envelope(run: dict[str, Any], key: str) -> float | None:
    seconds = _median(run, key, "cpu_s.redis")
    if seconds is None:
        return None
    return seconds / run["settings"]["messages"] * 1e6


def _cpu_tables(run: dict[str, Any]) -> list[str]:
    s = run["settings"]
    keys = [
        k for k in run["cells"] if CELL[k].group == "broadcast" and not CELL[k].profiled
    ]
    lines: list[str] = []
    if keys:
        deliveries = s["clients"] * s["messages"]
        lines += [
            "",
            f"CPU per delivered message, us (each process's CPU time over the "
            f"run / {deliveries:,} deliveries; medians):",
            f"  {'cell':<38} {'node A':>7} {'node B':>7} {'nodes':>7} "
            f"{'redis':>7} {'clients':>8}  nodes x same",
        ]
        base = _median(run, "broadcast/same", "cpu_us_per_delivery.nodes")
        for key in keys:

            def us(name: str, key: str = key) -> float | None:
                return _median(run, key, f"cpu_us_per_delivery.{name}")

            nodes = us("nodes")
            vs_same = nodes / base if nodes is not None and base else None
            lines.append(
                f"  {CELL[key].label:<38} {num(us('A'), 3):>7} "
                f"{num(us('B'), 3):>7} {num(nodes, 3):>7} "
                f"{num(us('redis'), 3):>7} {num(us('clients'), 3):>8}  "
                f"{'-' if key == 'broadcast/same' else ratio(vs_same)}"
            )
        per = []
        for k in keys:
            seconds = _median(run, k, "cpu_s.redis")
            ms = None if seconds is None else seconds * 1000
            per.append(
                f"{_SHORT[CELL[k].layout]} {num(ms, 1)} ms "
                f"({num(_per_envelope(run, k), 2)} us/broadcast)"
            )
        lines.append("  redis-server CPU (INFO cpu delta): " + "; ".join(per))
        lines += [
            "",
            f"Cores busy over the delivery window (CPU time / window; medians; "
            f"{run['environment']['cpus']} cores; 'machine': every process's, "
            f"from /proc/stat; 'others': the machine's less this run's):",
            f"  {'cell':<38} {'node A':>7} {'node B':>7} {'redis':>7} "
            f"{'clients':>8} {'all':>6} {'others':>7} {'steal':>6} {'machine':>8}",
        ]
        for key in keys:

            def busy(name: str, key: str = key) -> float | None:
                return _median(run, key, f"cores.{name}")

            lines.append(
                f"  {CELL[key].label:<38} {num(busy('A'), 2):>7} "
                f"{num(busy('B'), 2):>7} {num(busy('redis'), 2):>7} "
                f"{num(busy('clients'), 2):>8} {num(busy('all'), 2):>6} "
                f"{num(busy('others'), 2):>7} {num(busy('steal'), 2):>6} "
                f"{num(busy('machine'), 2):>8}"
            )
    rtt = [k for k in run["cells"] if CELL[k].group == "rtt"]
    if rtt:
        lines += [
            "",
            "CPU per round trip, us (medians; each trip is relayed twice):",
            f"  {'cell':<38} {'node A':>7} {'node B':>7} {'nodes':>7} {'redis':>7}"
            f"  {'machine cores busy':>18}",
        ]
        for key in rtt:

            def trip(name: str, key: str = key) -> float | None:
                return _median(run, key, f"cpu_us_per_trip.{name}")

            lines.append(
                f"  {CELL[key].label:<38} {num(trip('A'), 1):>7} "
                f"{num(trip('B'), 1):>7} {num(trip('nodes'), 1):>7} "
                f"{num(trip('redis'), 1):>7}  "
                f"{num(_median(run, key, 'cores.machine'), 2):>18}"
            )
    return lines


def _profile_lines(name: str, profile: dict[str, Any] | None) -> list[str]:
    if profile is None:
        return [f"  {name}: (no profile written)"]
    lines = [
        f"  {name}: {profile['busy_s']:.2f} s busy over {profile['files']} "
        f"round(s) (of {profile['profiled_s']:.2f} s profiled; the rest is the "
        f"wait in epoll)",
    ]
    for cat, text in CATEGORIES:
        share = profile["shares"][cat]
        if share >= 0.0005 or cat == "redis":
            lines.append(f"    {100 * share:5.1f}%  {text}")
    lines.append(
        f"    ({100 * profile['redis_inclusive_share']:.1f}% in the Redis client "
        f"counting the Deferreds, transport writes and hiredis calls it makes; "
        f"not the backplane's handling of what it hands over)"
    )
    lines.append("    top functions by self time (self% of busy, calls):")
    for row in profile["top"][:8]:
        lines.append(
            f"    {100 * row['self_share']:5.1f}% {row['calls']:>9}  "
            f"{row['function'][:72]}  [{row['category']}]"
        )
    return lines


def _verdict(run: dict[str, Any]) -> list[str]:
    """
    What limits the cross-node broadcast, said from the figures.
    """
    found = run.get("analysis", {})
    cores = found.get("cross_cores")
    if not cores or cores.get("all") is None:
        return []
    cpus = run["environment"]["cpus"] or 1
    cross = "broadcast/cross"
    procs = [f"clients{i}" for i in range(run["settings"]["client_procs"])]
    groups = {
        "the client processes": cores.get("clients"),
        "node A (sending)": cores.get("A"),
        "node B (receiving)": cores.get("B"),
        "redis-server": cores.get("redis"),
    }
    singles = {
        "node A": cores.get("A"),
        "node B": cores.get("B"),
        "redis-server": cores.get("redis"),
        **{f"client process {p[len('clients') :]}": cores.get(p) for p in procs},
    }
    top = max(((k, v) for k, v in groups.items() if v is not None), key=_second)
    busiest = max(((k, v) for k, v in singles.items() if v is not None), key=_second)
    per = {
        name: _median(run, cross, f"cpu_us_per_delivery.{name}")
        for name in ("clients", "B", "A", "redis")
    }
    machine = cores.get("machine") or cores["all"]
    taken = machine + (cores.get("steal") or 0.0)
    lines = [
        "",
        "What limits the cross-node broadcast:",
        f"  cores busy: clients {num(cores.get('clients'), 2)} "
        f"({len(procs)} processes), node A {num(cores.get('A'), 2)}, node B "
        f"{num(cores.get('B'), 2)}, redis-server {num(cores.get('redis'), 2)}; "
        f"this run {num(cores['all'], 2)}, other processes "
        f"{num(cores.get('others'), 2)}, steal {num(cores.get('steal'), 2)}; "
        f"of {cpus}. CPU per delivery: clients {num(per['clients'], 2)} us, "
        f"node A {num(per['A'], 2)}, node B {num(per['B'], 2)}, redis-server "
        f"{num(per['redis'], 3)}.",
    ]
    if taken >= 0.85 * cpus:
        lines.append(
            f"  The {cpus} cores are saturated ({taken:.2f} busy or stolen): "
            f"deliveries/s is bound by CPU. The largest share of this run's "
            f"goes to {top[0]} ({top[1]:.2f} cores); the busiest single "
            f"process is {busiest[0]} ({busiest[1]:.2f} of a core)."
        )
    else:
        bound = "bound by it" if busiest[1] >= 0.85 else "no process is CPU-bound"
        lines.append(
            f"  The cores are not saturated ({taken:.2f} busy or stolen); the "
            f"busiest process is {busiest[0]} ({busiest[1]:.2f} of a core): "
            f"{bound}."
        )
    nodes = found.get("nodes", {})
    headrooms = []
    for node, role, what in (
        ("B", "receiving", "envelope"),
        ("A", "sending", "broadcast"),
    ):
        n = nodes.get(node)
        if not n:
            continue
        profile = found["profiles"][node]
        alone = n["redis_client_alone_per_s"]
        headroom = alone / n["run_per_s"] if alone else None
        if headroom is not None:
            headrooms.append(headroom)
        lines.append(
            f"  node {node} ({role}): {n['us_per_envelope']:.1f} us of CPU per "
            f"{what}; the Redis client {100 * profile['shares']['redis']:.1f}% "
            f"of its busy time ({100 * profile['redis_inclusive_share']:.1f}% "
            f"with what it calls), ~{n['redis_client_inclusive_us']:.2f} us per "
            f"{what}: alone it would do ~{num(alone)}/s, "
            f"{ratio(headroom)} the run's {n['run_per_s']:,.0f}/s; the whole "
            f"node ~{n['node_alone_per_s']:,.0f}/s on a core of its own."
        )
    if headrooms:
        limit = "is not" if min(headrooms) >= 2 else "may be"
        lines.append(f"  So the Redis client {limit} what limits throughput.")
    return lines


def _second(kv: tuple[str, float]) -> float:
    return kv[1]


def print_report(run: dict[str, Any]) -> list[str]:
    s = run["settings"]
    lines: list[str] = []
    lines += _table(
        run,
        "broadcast",
        f"Broadcast: {s['clients']} clients in {s['client_procs']} processes "
        f"receive {s['messages']:,} broadcasts made by a server loop; "
        f"deliveries/s until the last client has all (higher is better)",
    )
    lines += _table(
        run,
        "rtt",
        f"Round trip: {s['trips']:,} sequential trips (after {s['warmup']} "
        f"warm-up) through the hub's broadcast mode: a client sends, an echo "
        f"client sends it back; microseconds at the sender (lower is better)",
    )
    lines += _cpu_tables(run)
    profiles = run.get("analysis", {}).get("profiles", {})
    if profiles:
        lines += [
            "",
            "Profiles of the cross-node broadcast (cProfile of each node's "
            "reactor thread during the broadcasts, summed over the rounds; "
            "shares of busy time, by self time; cProfile slows Python code "
            "more than C, so shares are approximate):",
            *_profile_lines("node B (receiving: Redis -> clients)", profiles.get("B")),
            *_profile_lines("node A (sending: loop -> Redis)", profiles.get("A")),
        ]
    lines += _verdict(run)
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
    C{redis-server}; print the tables and what limits, and (with
    C{output_dir}) write C{backplane.json} (C{backplane-quick.json} for
    quick sizes) and keep the profiles in C{output_dir/profiles}.
    """
    from harness.redis import RedisServer

    cells = select_cells(scenarios)
    run: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "command": [Path(sys.executable).name, "-m", MODULE, *(argv or [])],
        "settings": {**asdict(sizes), "rounds": rounds},
        "scenarios": [s for s in SCENARIOS if s in scenarios],
        "cells": [c.key for c in cells],
        "environment": environment(),
        "rounds": [],
    }
    scratch = None
    if output_dir is not None:
        profile_dir = output_dir / "profiles"
        profile_dir.mkdir(parents=True, exist_ok=True)
        for old in profile_dir.glob("backplane-r*.prof"):
            old.unlink()
    else:
        scratch = tempfile.TemporaryDirectory(prefix="twcomms-backplane-")
        profile_dir = Path(scratch.name)
    try:
        with RedisServer() as redis:
            run["environment"]["redis_server"] = redis.executable

            def one(cell: Cell, r: int) -> dict[str, Any]:
                prefix = profile_dir / f"backplane-r{r}" if cell.profiled else None
                return run_cell_once(cell, sizes, redis, prefix)

            interleave(
                run, rounds, lambda r: round_order(cells, r), one, one_line, verbose
            )
        run["summary"] = summarise(run)
        profiled = any(c.profiled for c in cells)
        run["analysis"] = analyse(run, profile_dir if profiled else None)
    finally:
        if scratch is not None:
            scratch.cleanup()
    if verbose:
        print()
        print(
            f"Redis backplane, same node vs cross node: one run, "
            f"{run['environment']['cpus']} cores, {rounds} interleaved rounds, "
            f"{run['elapsed_s']:g} s{' (quick sizes)' if sizes.quick else ''}; "
            f"figures are medians over the rounds;"
        )
        print(
            "'x same' = median / same-node median, 'paired' = median over "
            "rounds of figure / same-node figure of that round"
        )
        lines: list[str] = []
        if sizes.quick:
            lines.append(
                "NOTE: quick sizes: these figures only show that every cell "
                "runs; compare with a full run."
            )
            print(lines[0])
        run["printed"] = lines + print_report(run)
    write_run(
        run, output_dir, "backplane", sizes.quick, verbose, f"; profiles: {profile_dir}"
    )
    return run


def run_quick(output_dir: Path | str | None = None, **kwargs: Any) -> dict[str, Any]:
    """
    Every cell at tiny sizes, L{QUICK_ROUNDS} round(s) (seconds); with
    C{output_dir}, also write C{backplane-quick.json} there. Keyword
    arguments go to L{run_benchmark} (C{scenarios=}, C{verbose=}).
    """
    kwargs.setdefault("rounds", QUICK_ROUNDS)
    return run_benchmark(
        QUICK,
        output_dir=Path(output_dir) if output_dir is not None else None,
        argv=["--quick"],
        **kwargs,
    )


def problems(run: dict[str, Any]) -> list[str]:
    """
    What is wrong with a run: a (cell, round) missing or not ok, a compared
    cell without a median or a ratio, or no profile breakdown. Empty when
    every figure was produced.
    """
    out = missing_rounds(run, one_line)
    for row in run.get("summary", []):
        if row["median"] is None or row["vs_same"] is None:
            out.append(f"{row['cell']} {row['figure']}: no figure")
    if "broadcast/profiled" in run["cells"]:
        profiles = run.get("analysis", {}).get("profiles", {})
        for node in ("A", "B"):
            if not profiles.get(node):
                out.append(f"no profile of node {node}")
    return out


# -- the command line ---------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m " + MODULE,
        description=(
            "Hub nodes on a Redis backplane: broadcast deliveries/s and round\n"
            "trips with the clients on one node and across two, in one run\n"
            "(medians over interleaved rounds, ratios to the same-node cell),\n"
            "CPU per delivered message per process, and a profile of the\n"
            "receiving node."
        ),
        epilog=(
            "examples:\n"
            "  python -m benchmarks.backplane\n"
            "  python -m benchmarks.backplane --quick\n"
            "  python -m benchmarks.backplane --rounds 9 --scenarios rtt\n"
            "writes benchmarks/results/backplane.json "
            "(--quick: backplane-quick.json)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    round_arguments(
        p,
        scenarios=SCENARIOS,
        metavar="broadcast,rtt",
        scenarios_help="default: both",
        stem="backplane",
        rounds=ROUNDS,
        quick_rounds=QUICK_ROUNDS,
        results=RESULTS,
        output_help=" and profiles/",
    )
    p.add_argument("--child", nargs=2, metavar=("ROLE", "SPEC"), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.child:
        role, spec = args.child
        return run_child(role, json.loads(spec))
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
