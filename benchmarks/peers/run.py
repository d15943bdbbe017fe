"""
Running the whole benchmark (L{run_benchmark}), its quick smoke form
(L{run_quick}) and what a run is missing (L{problems}).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import queue
import resource
import statistics
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.peers.chart import write_chart
from benchmarks.peers.profiles import print_profiles
from benchmarks.peers.report import add_ratios, one_line, print_tables
from benchmarks.peers.runner import run_cell
from benchmarks.peers.settings import (
    MODULE,
    QUICK,
    RESULTS,
    SCENARIOS,
    SYSTEMS,
    Settings,
    now,
)
from benchmarks.peers.targets import evaluate, print_targets


def environment(*packages: str) -> dict[str, Any]:
    """
    The machine and the versions of Twisted, twcomms, pyzmq and
    C{packages} (those installed), recorded with a run.
    """
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    }
    try:
        from importlib.metadata import version

        for dist in ("twisted", "twcomms", "pyzmq", *packages):
            with contextlib.suppress(Exception):
                env[dist] = version(dist)
    except ImportError:  # pragma: no cover
        pass
    return env


def _wakeup_costs(trips: int) -> dict[str, float]:
    """
    What waking another thread, or another process, costs on this machine
    now: the p50 of half a ping-pong round trip, in microseconds. Between
    two threads of one process through C{queue.SimpleQueue} (as twcomms
    hands work between its reactor and callback threads), and between two
    processes through pipes (as every system's client and server do).
    Explains B: each thread hand-off on a round trip's path costs about
    one thread wake-up.
    """
    a: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    b: queue.SimpleQueue[int] = queue.SimpleQueue()

    def echo() -> None:
        while (x := a.get()) is not None:
            b.put(x)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    times = []
    for i in range(trips):
        t0 = now()
        a.put(i)
        b.get()
        times.append(now() - t0)
    a.put(None)
    thread.join(10)
    out = {"thread_us": statistics.median(times) / 2 * 1e6}

    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child echoes, then exits
        os.close(w1)
        os.close(r2)
        while d := os.read(r1, 1):
            os.write(w2, d)
        os._exit(0)
    os.close(r1)
    os.close(w2)
    times = []
    try:
        for _ in range(trips):
            t0 = now()
            os.write(w1, b"x")
            os.read(r2, 1)
            times.append(now() - t0)
    finally:
        os.close(w1)
        os.close(r2)
        os.waitpid(pid, 0)
    out["process_us"] = statistics.median(times) / 2 * 1e6
    return out


def run_benchmark(
    settings: Settings,
    scenarios: list[str] | tuple[str, ...] = SCENARIOS,
    systems: list[str] | tuple[str, ...] = SYSTEMS,
    output_dir: Path | None = RESULTS,
    profile_dir: Path | None = None,
    argv: list[str] | None = None,
    verbose: bool = True,
    jobs: int | None = None,
) -> dict[str, Any]:
    """
    Run every (scenario, system) cell, print the tables and targets, and
    (with C{output_dir}) write C{peers.json} and C{peers.png} there
    (C{peers-quick.*} for quick settings). Returns the run as a dict.

    @param jobs: cells run at once; default 1, or 3 with quick settings
        (whose figures are only a smoke test: concurrent cells share the
        cores).
    """
    systems = [x for x in SYSTEMS if x in systems]
    scenarios = [x for x in SCENARIOS if x in scenarios]
    run: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "command": [Path(sys.executable).name, "-m", MODULE, *(argv or [])],
        "settings": asdict(settings),
        "scenarios": scenarios,
        "systems": systems,
        "environment": environment(),
        "cells": [],
    }
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    if "B" in scenarios:
        run["wakeup"] = _wakeup_costs(settings.b_trips)
    t0 = time.monotonic()
    todo = [
        (scn, system, size)
        for scn in scenarios
        for system in systems
        for size in (list(settings.d_sizes_mib) if scn == "D" else [None])
    ]

    def one(job: tuple[str, str, float | None]) -> dict[str, Any]:
        scn, system, size = job
        label = f"{scn}{'' if size is None else f' {size:g} MiB'} {system}"
        if verbose and jobs == 1:
            print(
                f"[{time.monotonic() - t0:6.1f}s] {label} ...",
                end="",
                file=sys.stderr,
                flush=True,
            )
        cell = run_cell(scn, system, settings, size, profile_dir)
        if verbose:
            prefix = "" if jobs == 1 else f"[{time.monotonic() - t0:6.1f}s] {label} ..."
            print(prefix + " " + one_line(cell), file=sys.stderr, flush=True)
        return cell

    if jobs is None:
        jobs = 3 if settings.quick else 1
    if jobs == 1:
        run["cells"] = [one(job) for job in todo]
    else:
        # Quick mode only: figures from concurrent cells are not comparable.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(jobs) as pool:
            run["cells"] = list(pool.map(one, todo))
    run["jobs"] = jobs
    run["elapsed_s"] = round(time.monotonic() - t0, 1)
    add_ratios(run["cells"])
    run["targets"] = evaluate(run)
    if verbose:
        print()
        print(
            f"twcomms vs peers: one run, {run['environment']['cpus']} cores, "
            f"{run['elapsed_s']:g} s{' (quick sizes)' if settings.quick else ''}; "
            f"'x floor' = figure / raw-socket figure"
        )
        lines: list[str] = []
        if settings.quick or jobs > 1:
            lines.append(
                "NOTE: "
                + ("quick sizes" if settings.quick else "")
                + (" and " if settings.quick and jobs > 1 else "")
                + (f"{jobs} cells at once" if jobs > 1 else "")
                + ": these figures and verdicts only show that every cell "
                "runs; compare systems with a full run."
            )
            print(lines[0])
        run["printed"] = lines + print_tables(run) + print_targets(run["targets"])
    if profile_dir is not None and verbose:
        print_profiles(run)
    if output_dir is not None:
        stem = "peers-quick" if settings.quick else "peers"
        output_dir.mkdir(parents=True, exist_ok=True)
        json_path = output_dir / f"{stem}.json"
        json_path.write_text(json.dumps(run, indent=2) + "\n")
        png_path = output_dir / f"{stem}.png"
        charted = write_chart(run, png_path)
        if verbose:
            print(
                f"\nResults: {json_path}"
                + (f"\nChart:   {png_path}" if charted else "")
            )
    return run


def run_quick(output_dir: Path | str | None = None, **kwargs: Any) -> dict[str, Any]:
    """
    Run every cell with tiny sizes (about 10-20 s) and return the run (the
    same dict as the JSON). With C{output_dir}, also write
    C{peers-quick.json} and C{peers-quick.png} there. Keyword arguments go
    to L{run_benchmark} (C{scenarios=}, C{systems=}, C{verbose=}).

    For a test: C{assert not problems(run_quick(tmp_path))}.
    """
    return run_benchmark(
        QUICK,
        output_dir=Path(output_dir) if output_dir is not None else None,
        argv=["--quick"],
        **kwargs,
    )


def problems(run: dict[str, Any]) -> list[str]:
    """
    What is wrong with a run: a (scenario, system[, size]) cell missing, or
    one that is neither ok nor n/a (an error or a cut-off). Empty when every
    cell was produced.
    """
    found = {(c["scenario"], c["system"], c.get("size_mib")): c for c in run["cells"]}
    out = []
    for scn in run["scenarios"]:
        sizes = run["settings"]["d_sizes_mib"] if scn == "D" else [None]
        for system in run["systems"]:
            for size in sizes:
                c = found.get((scn, system, size))
                name = f"{scn}{'' if size is None else f' {size:g} MiB'} {system}"
                if c is None:
                    out.append(f"{name}: missing")
                elif c["status"] not in ("ok", "n/a"):
                    out.append(f"{name}: {one_line(c)}")
    if "B" in run["scenarios"]:
        wake = run.get("wakeup") or {}
        for key in ("thread_us", "process_us"):
            if not wake.get(key, 0) > 0:
                out.append(f"B wake-up cost {key}: missing")
    return out
