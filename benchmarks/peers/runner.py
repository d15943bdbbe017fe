"""
Running cells: one (scenario, system) cell is a server process and its
client processes, synchronised over pipes, within the scenario's time
bound; every child is killed by pid when its cell ends. Also the figures a
cell's results make.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.peers.settings import MIB, MODULE, NOT_APPLICABLE, ROOT, Settings
from harness.procs import end_process


class Cutoff(Exception):
    """
    The cell ran out of time (or, in E, stopped making progress).
    """


class CellError(Exception):
    pass


class Proc:
    """
    One child process; its stdout JSON lines go to a shared queue.
    """

    def __init__(self, name: str, cmd: list[str], events: queue.Queue[Any]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.stderr: collections.deque[str] = collections.deque(maxlen=20)
        threading.Thread(target=self._read_out, args=(events,), daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self, events: queue.Queue[Any]) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                events.put((self.name, json.loads(raw)))
            except ValueError:
                self.stderr.append("stdout: " + raw.decode(errors="replace").rstrip())
        events.put((self.name, None))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr.append(raw.decode(errors="replace").rstrip())

    def send(self, obj: Any) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def tail(self) -> str:
        return " | ".join(list(self.stderr)[-4:])

    def kill(self, graceful: float = 0.0) -> None:
        """
        Kill this child by its pid (SIGINT first, when C{graceful}: py-spy
        then writes its profile).
        """
        proc = self.proc
        end_process(proc, first=signal.SIGINT if graceful else None, grace=graceful)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def client_split(total: int, per_proc: int, min_procs: int) -> list[int]:
    procs = max(min_procs, math.ceil(total / per_proc))
    procs = min(procs, total)
    base, extra = divmod(total, procs)
    return [base + (1 if i < extra else 0) for i in range(procs)]


def cell_specs(
    scn: str, system: str, settings: Settings, size_mib: float | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """
    The server's spec and each client process's spec.
    """
    bound = settings.bound(scn)
    if scn == "A":
        spec = {"messages": settings.a_messages}
        return {**spec, "bound": bound}, [{**spec, "bound": bound}]
    if scn == "B":
        spec = {"trips": settings.b_trips, "warmup": settings.b_warmup}
        return {**spec, "bound": bound}, [{**spec, "bound": bound}]
    if scn == "C":
        split = client_split(
            settings.c_clients,
            math.ceil(settings.c_clients / settings.c_procs),
            settings.c_procs,
        )
        server = {"clients": settings.c_clients, "messages": settings.c_messages}
        clients = [
            {"clients": k, "messages": settings.c_messages, "bound": bound}
            for k in split
        ]
        return {**server, "bound": bound}, clients
    if scn == "D":
        assert size_mib is not None
        size = round(size_mib * MIB)
        # Stock Twisted's receive path is quadratic: one reception only.
        reps = 1 if system == "stock-twisted" else settings.repeat
        spec = {"size": size, "reps": reps, "bound": bound}
        return spec, [dict(spec)]
    if scn == "E":
        split = client_split(settings.e_connections, settings.e_per_proc, 2)
        server = {"connections": settings.e_connections, "bound": bound}
        return server, [{"connections": k, "bound": bound} for k in split]
    raise ValueError(scn)


def _child_cmd(
    role: str, system: str, scn: str, spec: dict[str, Any], profile: Path | None
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        MODULE,
        "--child",
        role,
        system,
        scn,
        json.dumps(spec),
    ]
    if profile is not None:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        cmd = [
            py_spy,
            "record",
            "--format",
            "raw",
            "--rate",
            "250",
            "--threads",
            "--nonblocking",
            "-o",
            str(profile),
            "--",
            *cmd,
        ]
    return cmd


def _run_cell_once(
    scn: str,
    system: str,
    settings: Settings,
    size_mib: float | None = None,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    server_spec, client_specs = cell_specs(scn, system, settings, size_mib)
    bound = settings.bound(scn)
    events: queue.Queue[Any] = queue.Queue()
    procs: list[Proc] = []
    progress: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    deadline = started + bound
    profiling = profile_dir is not None and system.startswith("twcomms")

    def prof(name: str) -> Path | None:
        if not profiling:
            return None
        assert profile_dir is not None
        tag = f"{scn}{'' if size_mib is None else f'{size_mib:g}'}-{system}-{name}"
        return profile_dir / f"{tag}.txt"

    # E: a server that accepts nothing more for this long (its file limit,
    # say) is reported at once instead of at the bound.
    stall = settings.e_stall if scn == "E" else None
    last_change = [time.monotonic(), -1]

    def next_event() -> tuple[str, Any]:
        while True:
            t = time.monotonic()
            remaining = deadline - t
            if remaining <= 0:
                raise Cutoff("time bound")
            if stall is not None and t - last_change[0] > stall:
                raise Cutoff(f"stalled: no new connection for {stall:g} s")
            try:
                return events.get(timeout=min(remaining, 1.0))  # type: ignore[no-any-return]
            except queue.Empty:
                continue

    def by_name(name: str) -> Proc:
        return next(p for p in procs if p.name == name)

    try:
        procs.append(
            Proc(
                "server",
                _child_cmd("server", system, scn, server_spec, prof("server")),
                events,
            )
        )
        for i, spec in enumerate(client_specs):
            name = f"client{i}"
            procs.append(
                Proc(name, _child_cmd("client", system, scn, spec, prof(name)), events)
            )
        need = {p.name for p in procs if p.name != "server" or scn != "B"}
        ready = False
        while need:
            name, ev = next_event()
            if ev is None:
                if name in need or (name == "server" and not ready):
                    raise CellError(f"{name} exited early: {by_name(name).tail()}")
                continue
            kind = ev.get("ev")
            if kind == "ready" and name == "server":
                ready = True
                for p in procs[1:]:
                    p.send({"ports": ev["ports"]})
            elif kind == "progress":
                progress.setdefault(name, {}).update(ev)
                if name == "server" and ev.get("accepted") != last_change[1]:
                    last_change[:] = [time.monotonic(), ev.get("accepted")]
            elif kind == "error":
                raise CellError(ev.get("error", "error"))
            elif kind == "result":
                results[name] = ev
                need.discard(name)
        cell = {"status": "ok", **figures(scn, results, server_spec, client_specs)}
    except Cutoff as e:
        cell = {
            "status": "cutoff",
            "why": str(e),
            "progress": _summarise_progress(scn, progress),
        }
    except CellError as e:
        cell = {"status": "error", "error": str(e)[:400]}
    finally:
        for p in procs:
            p.kill(graceful=5.0 if profiling else 0.0)
    cell["wall_s"] = round(time.monotonic() - started, 2)
    cell["bound_s"] = bound
    if profiling:
        cell["profiles"] = [str(prof(p.name)) for p in procs]
    return cell


def _summarise_progress(scn: str, progress: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    server = progress.get("server", {})
    if "accepted" in server:
        out["server_accepted"] = server["accepted"]
    clients = [v for k, v in progress.items() if k.startswith("client")]
    if any("connected" in c for c in clients):
        out["clients_connected"] = sum(c.get("connected", 0) for c in clients)
        out["client_failures"] = sum(c.get("failures", 0) for c in clients)
        errors = [c["error"] for c in clients if c.get("error")]
        if errors:
            out["last_error"] = errors[-1]
    if scn == "D" and clients and clients[0].get("times"):
        out["times"] = clients[0]["times"]
    return out


def figures(
    scn: str,
    results: dict[str, dict[str, Any]],
    server_spec: dict[str, Any],
    client_specs: list[dict[str, Any]],
) -> dict[str, Any]:
    server = results.get("server", {})
    clients = [v for k, v in sorted(results.items()) if k.startswith("client")]
    if scn == "A":
        n = server["count"]
        if server["last"] != n - 1:
            raise CellError(f"last message was {server['last']}, not {n - 1}")
        elapsed = server["t_last"] - server["t_first"]
        client = clients[0]
        return {
            "messages": n,
            "seconds": elapsed,
            "msgs_per_s": (n - 1) / elapsed,
            "client_send_s": client["t_send_end"] - client["t_send_start"],
            # The client's send loop ended at or after the server's last
            # message: the sender, not the receiver, set the pace.
            "sender_bound": client["t_send_end"] >= server["t_last"] - 0.05 * elapsed,
        }
    if scn == "B":
        return {k: v for k, v in clients[0].items() if k != "ev"}
    if scn == "C":
        t_done = max(c["t_done"] for c in clients)
        deliveries = server_spec["clients"] * server_spec["messages"]
        elapsed = t_done - server["t_start"]
        return {
            "deliveries": deliveries,
            "seconds": elapsed,
            "deliveries_per_s": deliveries / elapsed,
            "broadcast_loop_s": server["t_sent"] - server["t_start"],
        }
    if scn == "D":
        times = clients[0]["times"]
        size = server_spec["size"]
        best = min(times)
        return {
            "size": size,
            "size_mib": size / MIB,
            "times": times,
            "seconds": best,
            "first_s": times[0],
            "mb_per_s": size / 1e6 / best,
            "peak_extra_mib": server["peak_extra_kib"] / 1024,
            "peak_ratio": server["peak_extra_kib"] * 1024 / size,
        }
    if scn == "E":
        n = server["connections"]
        t_done = max(c["t_done"] for c in clients)
        return {
            "connections": n,
            "held": n,
            "kib_per_conn": (server["rss_connected_kib"] - server["rss_base_kib"]) / n,
            "rss_base_mib": server["rss_base_kib"] / 1024,
            "rss_connected_mib": server["rss_connected_kib"] / 1024,
            "connect_s": server["t_all"] - server["t_ready"],
            "deliver_ms": (t_done - server["t_broadcast"]) * 1e3,
            "broadcast_call_ms": (server["t_sent"] - server["t_broadcast"]) * 1e3,
            "client_failures": sum(c.get("failures", 0) for c in clients),
        }
    raise ValueError(scn)


def run_cell(
    scn: str,
    system: str,
    settings: Settings,
    size_mib: float | None = None,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    base: dict[str, Any] = {"scenario": scn, "system": system}
    if size_mib is not None:
        base["size_mib"] = size_mib
    if (scn, system) in NOT_APPLICABLE:
        return {**base, "status": "n/a", "reason": NOT_APPLICABLE[(scn, system)]}
    runs = settings.repeat if scn == "A" else 1
    attempts = [
        _run_cell_once(scn, system, settings, size_mib, profile_dir)
        for _ in range(runs)
    ]
    ok = [a for a in attempts if a["status"] == "ok"]
    if scn == "A" and ok:
        best = max(ok, key=lambda a: a["msgs_per_s"])
        cell = {**base, **best, "runs": [round(a["msgs_per_s"]) for a in ok]}
    else:
        cell = {**base, **(ok[0] if ok else attempts[-1])}
    return cell
