"""
Benchmark: what the extended protocol costs, beside plain connections, in
one run.

The extended protocol (C{CommsClientFactory(extensions=True)}) keeps every
message in exactly the plain frame and adds control frames (pings,
requests, replies); it should cost next to nothing on the message path.
This measures it with the processes, sizes and figures of
L{benchmarks.peers} (its C{twcomms-twisted} system: the Twisted API on both
ends, the server in its own process, the clients in others), the clients
plain or extended. The server is the same in every cell: a
C{CommsServerFactory} with its defaults (it accepts extensions) and an
C{on_request} that answers a request with the request itself.

Cells (figures as in L{benchmarks.peers}; each is a median over the
rounds):

  - A: one client sends 200,000 small json messages to the server;
    messages/s at the server. Client: plain, extended.
  - B: 5,000 sequential round trips (after 500 warm-up): the client sends,
    the server echoes with C{client.send}, the client receives; p50 and
    p99. Client: plain, extended.
  - R: the same round trips as extended requests: the client's
    C{request(message)} (the default timeout, the C{request_timeout}
    option: a timer per request) and C{request(message, timeout=None)},
    answered by the server's C{on_request}; compared with B's plain echo.
  - C: 50 clients in 2 processes; the server broadcasts 20,000 small json
    messages; deliveries/s until the last client has all. Clients: all
    plain, all extended, and a 50/50 mix (one process of each).

Rounds are interleaved: each round runs every cell once, and the cells of
one scenario run next to each other, in an order rotated every round, so
a slow spell of the machine falls on all of them alike. Ratios are
against the plain cell of the same run: C{x plain} is the median over the
median of the plain cell; C{paired} is the median over rounds of the
figure over the plain cell's figure in that round. The goal shown: the
extended protocol costs at most 10% (msgs/s, p50, deliveries/s).

Run from the repository root::

    python -m benchmarks.extensions                   # 5 rounds, ~1.5-2 minutes
    python -m benchmarks.extensions --quick           # tiny sizes, 2 rounds, ~15 s
    python -m benchmarks.extensions --rounds 9 --scenarios A,C
    python -m benchmarks.extensions --scenarios R --rounds 3 --profile

It writes C{benchmarks/results/extensions.json} (C{--quick}:
C{extensions-quick.json}; C{--output-dir} to choose where). C{--profile}
runs every process's event loop under C{cProfile} (figures are then slower
and only the profiles count: no JSON is written) and prints, per cell, the
functions of the server and of the first client with the most time in
themselves, summed over the rounds; the C{.prof} files stay in
C{<output-dir>/profiles/}.

From a test (it blocks for a few seconds and uses only subprocesses)::

    from benchmarks.extensions import problems, run_quick

    run = run_quick(tmp_path)          # or run_quick() to write nothing
    assert not problems(run)

Linux only, as L{benchmarks.peers}.

(Over 500 lines: one benchmark in one file -- its processes, which are
L{benchmarks.peers}' own with another net; its cells and rounds; the
figures, tables and goal; the profiles; and its command line.)
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import functools
import json
import os
import pstats
import queue
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.peers import eventloop
from benchmarks.peers.child import run_child
from benchmarks.peers.cli import round_arguments
from benchmarks.peers.common import emit
from benchmarks.peers.nets import TwcommsNet
from benchmarks.peers.report import one_line
from benchmarks.peers.run import environment
from benchmarks.peers.runner import CellError, Cutoff, Proc, cell_specs, figures
from benchmarks.peers.settings import FULL, QUICK, RESULTS, Settings
from benchmarks.summary import (
    compact,
    compare,
    interleave,
    missing_rounds,
    num,
    ratio,
    write_run,
)
from benchmarks.summary import row as summary_row

MODULE = "benchmarks.extensions"
#: The peers system whose processes every cell runs.
SYSTEM = "twcomms-twisted"
#: Rounds of a full run, and of a quick one.
ROUNDS = 5
QUICK_ROUNDS = 2
#: The goal: the extended protocol costs at most this much.
GOAL = 0.10
SCENARIOS = ("A", "B", "R", "C")

# -- the processes: peers' own code, with clients that may be extended --------

# What each client process is. "request" clients replace send() with
# request(); the server's on_request answers (see _Net).
CLIENT_MODES = ("plain", "extended", "request", "request-untimed")

# Set in a child run with --profile: where its profile goes.
_profile: tuple[cProfile.Profile, str] | None = None


def _echo_request(client: Any, message: Any) -> Any:
    return message


class _Net(TwcommsNet):
    """
    L{benchmarks.peers.nets}' twcomms net (so A, B and C run exactly the
    code of L{benchmarks.peers.eventloop}), whose server also answers
    requests (C{on_request}: the message itself) and whose clients are
    plain or extended. A C{request} client's C{sender(conn)} is
    C{conn.request}, its reply handed to the scenario's C{on_message}:
    scenario B's loop, each trip a request.
    """

    def __init__(self, mode: str) -> None:
        super().__init__(binary=False)
        if mode not in CLIENT_MODES:
            raise ValueError(mode)
        self.mode = mode
        if mode != "plain":
            self._client_cls = functools.partial(  # type: ignore[assignment]
                self._client_cls, extensions=True
            )
        self._replies: dict[Any, Callable[..., Any]] = {}

    def listen(
        self, on_connect: Callable[..., Any], on_message: Callable[..., Any]
    ) -> int:
        port = super().listen(on_connect, on_message)
        self.server.on_request.append(_echo_request)
        return port

    def connect(
        self,
        port: int,
        on_message: Callable[..., Any],
        on_connected: Callable[[Any], Any],
        on_failed: Callable[[str], Any],
    ) -> None:
        if not self.mode.startswith("request"):
            super().connect(port, on_message, on_connected, on_failed)
            return

        def connected(conn: Any) -> None:
            self._replies[conn] = on_message
            on_connected(conn)

        super().connect(port, _ignore, connected, on_failed)

    def sender(self, conn: Any) -> Callable[[Any], None]:
        if not self.mode.startswith("request"):
            return super().sender(conn)
        on_message = self._replies[conn]
        request = conn.request
        # request(message): the default timeout (the request_timeout
        # option), as an application calls it; or no timeout (no timer).
        if self.mode == "request-untimed":
            request = functools.partial(request, timeout=None)

        def got(reply: Any) -> None:
            on_message(conn, reply)

        def errored(failure: Any) -> None:
            emit("error", error=f"request failed: {failure.value!r}")
            self.stop()

        def send(message: Any) -> None:
            request(message).addCallbacks(got, errored)

        return send

    def run(self) -> None:
        if _profile is None:
            super().run()
            return
        _profile[0].enable()
        super().run()
        _dump_profile()


def _ignore(*args: Any) -> None:
    pass


def _dump_profile(*args: Any) -> None:
    """
    Write this child's profile (once): when its event loop ends, or on the
    SIGINT that ends a child which runs until it is killed.
    """
    global _profile
    if _profile is not None:
        profiler, path = _profile
        _profile = None
        profiler.disable()
        profiler.dump_stats(path)
    if args:  # the signal
        sys.stderr.flush()
        os._exit(0)


def run_extensions_child(role: str, mode: str, scn: str, spec: dict[str, Any]) -> int:
    """
    One server or client process: L{benchmarks.peers.child.run_child} of
    the twcomms system, in scenario C{scn}, its net made by L{_Net}.
    """
    global _profile
    # peers' scenario code builds its net through this module attribute.
    eventloop.make_net = lambda system, binary: _Net(mode)  # type: ignore[attr-defined]
    if spec.get("profile"):
        _profile = (cProfile.Profile(), spec["profile"])
        signal.signal(signal.SIGINT, _dump_profile)
    return run_child(role, SYSTEM, scn, spec)


# -- the cells -----------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """
    One measured configuration.

    @ivar key: its name (C{"A/extended"}).
    @ivar group: the scenario it is shown (and interleaved) with.
    @ivar scenario: the peers scenario whose processes and figures it uses.
    @ivar client: what its client processes are: a C{CLIENT_MODES} value, or
        C{"mixed"} (plain and extended processes in turn).
    @ivar baseline: the key of the plain cell it is compared with.
    """

    key: str
    group: str
    scenario: str
    client: str
    label: str
    baseline: str

    def modes(self, processes: int) -> list[str]:
        if self.client == "mixed":
            return [("plain", "extended")[i % 2] for i in range(processes)]
        return [self.client] * processes


CELLS = (
    Cell("A/plain", "A", "A", "plain", "plain", "A/plain"),
    Cell("A/extended", "A", "A", "extended", "extended", "A/plain"),
    Cell("B/plain", "B", "B", "plain", "plain: send / echo", "B/plain"),
    Cell("B/extended", "B", "B", "extended", "extended: send / echo", "B/plain"),
    Cell("R/request", "R", "B", "request", "extended: request()", "B/plain"),
    Cell(
        "R/untimed",
        "R",
        "B",
        "request-untimed",
        "extended: request(timeout=None)",
        "B/plain",
    ),
    Cell("C/plain", "C", "C", "plain", "all plain", "C/plain"),
    Cell("C/extended", "C", "C", "extended", "all extended", "C/plain"),
    Cell("C/mixed", "C", "C", "mixed", "mixed", "C/plain"),
)
CELL = {c.key: c for c in CELLS}

#: group -> (figure, unit, higher is better), and a second figure shown.
FIGURES = {
    "A": ("msgs_per_s", "msgs/s", True),
    "B": ("p50_us", "p50 us", False),
    "C": ("deliveries_per_s", "deliveries/s", True),
}
SECOND = {"B": ("p99_us", "p99 us")}


def _figure_of(cell: Cell) -> tuple[str, str, bool]:
    return FIGURES[cell.scenario]


def select_cells(scenarios: list[str] | tuple[str, ...]) -> list[Cell]:
    """
    The cells of C{scenarios}, with the plain cell each is compared with.
    """
    wanted = {c.key for c in CELLS if c.group in scenarios}
    wanted |= {CELL[k].baseline for k in wanted}
    return [c for c in CELLS if c.key in wanted]


def _child_cmd(role: str, mode: str, scn: str, spec: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", MODULE, "--child", role, mode, scn, json.dumps(spec)]


def run_cell_once(
    cell: Cell, settings: Settings, profile_prefix: Path | None = None
) -> dict[str, Any]:
    """
    Run C{cell} once: its server and client processes, within the
    scenario's time bound (as L{benchmarks.peers.runner} runs a cell);
    every child is killed by pid when it ends. The figures are peers'.
    """
    scn = cell.scenario
    server_spec, client_specs = cell_specs(scn, SYSTEM, settings, None)
    modes = cell.modes(len(client_specs))
    bound = settings.bound(scn)
    events: queue.Queue[Any] = queue.Queue()
    procs: list[Proc] = []
    results: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    deadline = started + bound

    def spec_for(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        if profile_prefix is None:
            return spec
        return {**spec, "profile": f"{profile_prefix}-{name}.prof"}

    def next_event() -> tuple[str, Any]:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Cutoff("time bound")
            try:
                return events.get(timeout=min(remaining, 1.0))  # type: ignore[no-any-return]
            except queue.Empty:
                continue

    try:
        procs.append(
            Proc(
                "server",
                _child_cmd("server", "plain", scn, spec_for("server", server_spec)),
                events,
            )
        )
        for i, (spec, mode) in enumerate(zip(client_specs, modes, strict=True)):
            name = f"client{i}"
            cmd = _child_cmd("client", mode, scn, spec_for(name, spec))
            procs.append(Proc(name, cmd, events))
        # The echo server of B never reports; it runs until killed.
        need = {p.name for p in procs if p.name != "server" or scn != "B"}
        ready = False
        while need:
            name, ev = next_event()
            if ev is None:
                if name in need or (name == "server" and not ready):
                    proc = next(p for p in procs if p.name == name)
                    raise CellError(f"{name} exited early: {proc.tail()}")
                continue
            kind = ev.get("ev")
            if kind == "ready" and name == "server":
                ready = True
                for p in procs[1:]:
                    p.send({"ports": ev["ports"]})
            elif kind == "error":
                raise CellError(ev.get("error", "error"))
            elif kind == "result":
                results[name] = ev
                need.discard(name)
        out = {"status": "ok", **figures(scn, results, server_spec, client_specs)}
    except Cutoff as e:
        out = {"status": "cutoff", "why": str(e)}
    except CellError as e:
        out = {"status": "error", "error": str(e)[:400]}
    finally:
        for p in procs:
            p.kill(graceful=5.0 if profile_prefix is not None else 0.0)
    out["wall_s"] = round(time.monotonic() - started, 2)
    out["bound_s"] = bound
    out["client_modes"] = modes
    out["client_counts"] = [spec.get("clients", 1) for spec in client_specs]
    return out


def round_order(cells: list[Cell], round_index: int) -> list[Cell]:
    """
    The cells in the order round C{round_index} runs them: scenario by
    scenario (R beside B), each scenario's cells rotated by the round.
    """
    groups: dict[str, list[Cell]] = {}
    for c in cells:
        groups.setdefault("B" if c.group == "R" else c.group, []).append(c)
    order: list[Cell] = []
    for members in groups.values():
        k = round_index % len(members)
        order.extend(members[k:] + members[:k])
    return order


# -- figures -------------------------------------------------------------------


def summarise(run: dict[str, Any]) -> list[dict[str, Any]]:
    """
    Per cell and figure: the median over rounds, its ratio to the plain
    cell's median (C{vs_plain}), and the median of the per-round ratios
    (C{paired}).
    """
    out = []
    for key in run["cells"]:
        cell = CELL[key]
        figure, unit, higher = _figure_of(cell)
        wanted = [(figure, unit)]
        if cell.scenario in SECOND:
            wanted.append(SECOND[cell.scenario])
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
                    "vs_plain": compared["ratio"],
                    "paired": compared["paired"],
                }
            )
    return out


#: The goal, per extended cell: its headline figure at most 10% worse than
#: the plain cell's. R is shown beside them, without a goal: a request is
#: more work than a message (a Deferred, a reply matched by id).
GOALS = (
    ("A/extended", "A: extended / plain msgs/s"),
    ("B/extended", "B: extended / plain echo p50"),
    ("C/extended", "C: all extended / all plain deliveries/s"),
    ("C/mixed", "C: mixed / all plain deliveries/s"),
    ("R/request", "R: request() / plain echo p50"),
    ("R/untimed", "R: request(timeout=None) / plain echo p50"),
)


def evaluate(run: dict[str, Any]) -> list[dict[str, Any]]:
    """
    The goal for each extended cell run: its median over the plain one's
    at most 10% worse (C{>= 0.9} for a rate, C{<= 1.1} for a latency);
    R's ratios with the verdict C{"info"}.
    """
    goals = []
    for key, text in GOALS:
        if key not in run["cells"]:
            continue
        cell = CELL[key]
        figure, _unit, higher = _figure_of(cell)
        row = summary_row(run["summary"], key, figure)
        limit = 1 - GOAL if higher else 1 + GOAL
        value = row["vs_plain"]
        if cell.group == "R":
            verdict = "info"
        elif value is None:
            verdict = "MISS"
        else:
            met = value >= limit if higher else value <= limit
            verdict = "PASS" if met else "MISS"
        goals.append(
            {
                "cell": key,
                "goal": text,
                "value": value,
                "paired": row["paired"],
                "op": ">=" if higher else "<=",
                "limit": limit,
                "verdict": verdict,
            }
        )
    return goals


# -- printing ------------------------------------------------------------------


def print_tables(run: dict[str, Any]) -> list[str]:
    s = run["settings"]
    summary = run["summary"]
    rounds = s["rounds"]
    lines: list[str] = []
    out = lines.append

    def notes(key: str) -> str:
        bad = [r for r in run["rounds"] if r["cell"] == key and r["status"] != "ok"]
        text = "; ".join(f"round {r['round'] + 1}: {one_line(r)}" for r in bad)
        return f"  {text[:160]}" if text else ""

    def table(group: str, *header: str) -> None:
        keys = [k for k in run["cells"] if CELL[k].group == group]
        if not keys:
            return
        figure, unit, _ = FIGURES[CELL[keys[0]].scenario]
        second = SECOND.get(CELL[keys[0]].scenario)
        out("")
        for text in header:
            out(text)
        head = f"  {'client':<32} {unit:>13} {'x plain':>8} {'paired':>7}"
        if second:
            head += f" {second[1]:>10} {'x plain':>8}"
        out(head + f"  rounds ({unit})")
        for key in keys:
            row = summary_row(summary, key, figure)
            is_base = key == CELL[key].baseline
            line = (
                f"  {CELL[key].label:<32} "
                f"{num(row['median'], 1 if group in ('B', 'R') else 0):>13} "
                f"{'-' if is_base else ratio(row['vs_plain']):>8} "
                f"{'-' if is_base else ratio(row['paired']):>7}"
            )
            if second:
                row2 = summary_row(summary, key, second[0])
                line += (
                    f" {num(row2['median'], 1):>10} "
                    f"{'-' if is_base else ratio(row2['vs_plain']):>8}"
                )
            spread = " ".join(compact(v, unit) for v in row["rounds"])
            if group == "A":
                bound = sum(
                    1
                    for r in run["rounds"]
                    if r["cell"] == key and r.get("sender_bound")
                )
                spread += f"  (sender-bound {bound}/{rounds})"
            out(line + f"  {spread}" + notes(key))

    table(
        "A",
        f"A. one client -> server, {s['a_messages']:,} small json messages; "
        f"messages/s at the server (higher is better)",
    )
    table(
        "B",
        f"B. {s['b_trips']:,} sequential round trips (after {s['b_warmup']} "
        f"warm-up): client sends, server echoes (send); microseconds (lower is "
        f"better)",
    )
    table(
        "R",
        "R. the same round trips as requests: client request(), server "
        "on_request returns the message; 'x plain' against B's plain echo",
    )
    mixed = next((r for r in run["rounds"] if r["cell"] == "C/mixed"), None)
    mix = ""
    if mixed is not None:
        plain = extended = 0
        for mode, count in zip(
            mixed["client_modes"], mixed["client_counts"], strict=True
        ):
            if mode == "plain":
                plain += count
            else:
                extended += count
        mix = (
            f"  mixed: {plain} plain + {extended} extended clients "
            f"(each process all plain or all extended)"
        )
    table(
        "C",
        f"C. {s['c_clients']} clients in {s['c_procs']} processes, "
        f"{s['c_messages']:,} broadcast messages; deliveries/s until the last "
        f"client has all (higher is better)",
        *([mix] if mix else []),
    )
    lines = [line.rstrip() for line in lines]
    for line in lines:
        print(line)
    return lines


def print_goals(goals: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        f"Goal: the extended protocol costs at most {GOAL:.0%} "
        f"(ratio of medians; paired ratio beside it):",
    ]
    for g in goals:
        lim = f"{g['op']} {g['limit']:.2f}" if g["verdict"] != "info" else ""
        lines.append(
            f"  {g['goal']:<48} {ratio(g['value']):>7} "
            f"(paired {ratio(g['paired'])})  {lim:<8} {g['verdict']}"
        )
    for line in lines:
        print(line)
    return lines


def _short(func: tuple[str, int, str]) -> str:
    path, line, name = func
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path}:{line})" if line else name


def profile_top(files: list[Path], top: int = 14) -> list[str]:
    """
    The functions with the most time in themselves over C{files}' profiles
    (one process's, over the rounds): self% and inclusive% of the busy
    time (the profiled time less the wait in C{epoll}), calls.
    """
    files = [f for f in files if f.exists()]
    if not files:
        return ["    (no profile written)"]
    stats = pstats.Stats(str(files[0]))
    for f in files[1:]:
        stats.add(str(f))
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in table.values())
    idle = sum(v[2] for k, v in table.items() if k[2] in _IDLE)
    busy = max(total - idle, 1e-9)
    rows = sorted(
        ((k, v) for k, v in table.items() if k[2] not in _IDLE),
        key=lambda kv: kv[1][2],
        reverse=True,
    )[:top]
    lines = [
        f"    {busy:.3f} s busy (of {total:.3f} s profiled); "
        f"self% incl% of busy, calls, function"
    ]
    for func, (_cc, nc, tt, ct, _callers) in rows:
        # (Inclusive time that holds the wait is shown as "-".)
        incl = f"{100 * ct / busy:5.1f}" if ct <= busy else "    -"
        lines.append(f"    {100 * tt / busy:5.1f} {incl} {nc:>8}  {_short(func)}")
    return lines


#: Waiting for the sockets: not the work measured.
_IDLE = frozenset({"<method 'poll' of 'select.epoll' objects>"})


def print_profiles(run: dict[str, Any], profile_dir: Path) -> None:
    print(
        "\nProfiles (cProfile of each process's event loop, summed over the "
        "rounds; self% = in the function itself):"
    )
    for key in run["cells"]:
        for proc in ("server", "client0"):
            stem = key.replace("/", "-")
            files = sorted(profile_dir.glob(f"ext-{stem}-r*-{proc}.prof"))
            print(f"  {key} {proc}:")
            for line in profile_top(files):
                print(line)


# -- running -------------------------------------------------------------------


def run_benchmark(
    settings: Settings,
    rounds: int = ROUNDS,
    scenarios: list[str] | tuple[str, ...] = SCENARIOS,
    output_dir: Path | None = RESULTS,
    profile_dir: Path | None = None,
    argv: list[str] | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """
    Run every cell of C{scenarios} C{rounds} times, interleaved; print the
    tables and the goal, and (with C{output_dir}) write
    C{extensions.json} (C{extensions-quick.json} for quick settings).
    Returns the run as a dict (as the JSON).
    """
    cells = select_cells(scenarios)
    # Every cell runs once a round (peers' best-of-N repeat is not used).
    settings = replace(settings, repeat=1)
    run: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "command": [Path(sys.executable).name, "-m", MODULE, *(argv or [])],
        "settings": {**asdict(settings), "rounds": rounds},
        "scenarios": [s for s in SCENARIOS if s in scenarios],
        "cells": [c.key for c in cells],
        "environment": environment(),
        "rounds": [],
    }
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)

    def one(cell: Cell, r: int) -> dict[str, Any]:
        prefix = None
        if profile_dir is not None:
            prefix = profile_dir / f"ext-{cell.key.replace('/', '-')}-r{r}"
        return run_cell_once(cell, settings, prefix)

    interleave(
        run,
        rounds,
        lambda r: round_order(cells, r),
        one,
        one_line,
        verbose,
        tags=lambda cell: {"scenario": cell.scenario},
    )
    run["summary"] = summarise(run)
    run["goals"] = evaluate(run)
    if verbose:
        print()
        print(
            f"Extended protocol vs plain: one run, "
            f"{run['environment']['cpus']} cores, {rounds} interleaved rounds, "
            f"{run['elapsed_s']:g} s{' (quick sizes)' if settings.quick else ''}; "
            f"figures are medians over the rounds;"
        )
        print(
            "'x plain' = median / plain median, 'paired' = median over rounds "
            "of figure / plain figure of that round"
        )
        lines: list[str] = []
        if settings.quick or profile_dir is not None:
            lines.append(
                "NOTE: "
                + ("quick sizes" if settings.quick else "profiled (cProfile)")
                + ": these figures only show that every cell runs; compare "
                "with a full run."
            )
            print(lines[0])
        run["printed"] = lines + print_tables(run) + print_goals(run["goals"])
    if profile_dir is not None and verbose:
        print_profiles(run, profile_dir)
    write_run(run, output_dir, "extensions", settings.quick, verbose)
    return run


def run_quick(output_dir: Path | str | None = None, **kwargs: Any) -> dict[str, Any]:
    """
    Every cell at tiny sizes, L{QUICK_ROUNDS} rounds (a few seconds); with
    C{output_dir}, also write C{extensions-quick.json} there. Keyword
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
    What is wrong with a run: a (cell, round) missing or not ok, or a cell
    without a median or a ratio. Empty when every figure was produced.
    """
    out = missing_rounds(run, one_line)
    for row in run.get("summary", []):
        if row["median"] is None or row["vs_plain"] is None:
            out.append(f"{row['cell']} {row['figure']}: no figure")
    return out


# -- the command line ----------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m " + MODULE,
        description=(
            "The extended protocol beside plain connections, in one run\n"
            "(benchmarks.peers' twcomms processes): A msgs/s, B echo round\n"
            "trip, R request/reply round trip, C broadcast to 50 clients\n"
            "(plain, extended, mixed); medians over interleaved rounds and\n"
            "their ratio to the plain cell."
        ),
        epilog=(
            "examples:\n"
            "  python -m benchmarks.extensions\n"
            "  python -m benchmarks.extensions --quick\n"
            "  python -m benchmarks.extensions --rounds 9 --scenarios A,C\n"
            "  python -m benchmarks.extensions --scenarios R --rounds 3 --profile\n"
            "writes benchmarks/results/extensions.json "
            "(--quick: extensions-quick.json)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    round_arguments(
        p,
        scenarios=SCENARIOS,
        metavar="A,B,R,C",
        scenarios_help="default: all; R brings B's plain cell",
        stem="extensions",
        rounds=ROUNDS,
        quick_rounds=QUICK_ROUNDS,
        results=RESULTS,
        output_help="",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="run every process's event loop under cProfile and print the "
        "server's and first client's top functions per cell (profiles kept "
        "in <output-dir>/profiles/); writes no JSON",
    )
    p.add_argument(
        "--child",
        nargs=4,
        metavar=("ROLE", "MODE", "SCENARIO", "SPEC"),
        help=argparse.SUPPRESS,
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.child:
        role, mode, scn, spec = args.child
        return run_extensions_child(role, mode, scn, json.loads(spec))
    settings = QUICK if args.quick else FULL
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    profile_dir = args.output_dir / "profiles" if args.profile else None
    run = run_benchmark(
        settings,
        rounds=rounds,
        scenarios=args.scenarios,
        output_dir=None if args.profile else args.output_dir,
        profile_dir=profile_dir,
        argv=argv,
    )
    return 0 if not problems(run) else 1


if __name__ == "__main__":
    raise SystemExit(main())
