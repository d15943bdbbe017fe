"""
The processes of L{benchmarks.socketio_anchor}'s python-socketio cells:
a node (an C{AsyncServer} on an C{AsyncRedisManager}, served by aiohttp)
and its clients (C{AsyncClient}s on the websocket transport), each in a
process of its own, driven by the parent as L{benchmarks.backplane}'s
children are: JSON events on stdout (L{benchmarks.peers.common.emit}),
JSON lines on stdin.

This module imports nothing of twcomms (only L{benchmarks.peers.common}
and L{harness.procs}), so that its processes measure python-socketio alone.

Run by the parent as C{python -m benchmarks.socketio_nodes ROLE SPEC}.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks.peers.common import emit, messages, read_go, rtt_result
from harness.procs import raise_fd_limit, watchdog

#: The event every message travels as.
EVENT = "m"
#: The event a client sends for the node to relay to every other client.
RELAY = "relay"
#: Seconds between the progress events of the clients.
PROGRESS = 0.5


def now() -> float:
    # As benchmarks.peers.settings.now: CLOCK_MONOTONIC, one clock for every
    # process of the machine.
    return time.perf_counter()


def _read_lines(
    loop: asyncio.AbstractEventLoop, handle: Callable[[dict[str, Any]], None]
) -> None:
    """
    Hand each JSON line the parent writes on stdin to C{handle}, on the
    event loop's thread.
    """

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(handle, json.loads(line))

    threading.Thread(target=pump, name="stdin", daemon=True).start()


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def _node(spec: dict[str, Any]) -> None:
    """
    One python-socketio node, configured as its documentation shows for
    several servers on Redis: C{AsyncServer(client_manager=
    AsyncRedisManager(url))}, every other setting left at its default
    (async_mode: aiohttp, the first one available; the stdlib json;
    channel C{"socketio"}; no logging). A client's C{relay} event is
    emitted to every other client (C{skip_sid}: the hub's broadcast mode).
    Commands on stdin: C{mark} (note the CPU time), C{broadcast} (the
    server loop: C{await sio.emit(...)} for each message, in order),
    C{report} (CPU time since the mark).
    """
    import socketio
    from aiohttp import web

    manager = socketio.AsyncRedisManager(spec["redis"])
    sio = socketio.AsyncServer(client_manager=manager)
    app = web.Application()
    sio.attach(app)
    loop = asyncio.get_running_loop()
    msgs = messages(spec["messages"])
    state: dict[str, Any] = {"count": 0, "cpu0": 0.0, "emitted": 0}
    tasks: set[asyncio.Task[Any]] = set()

    @sio.event  # type: ignore[misc]
    async def connect(sid: str, environ: Any) -> None:
        state["count"] += 1
        emit("clients", count=state["count"])

    @sio.on(RELAY)  # type: ignore[misc]
    async def relay(sid: str, data: Any) -> None:
        await sio.emit(EVENT, data, skip_sid=sid)

    async def broadcast() -> None:
        t_start = now()
        emit("started", t_start=t_start)
        for m in msgs:
            await sio.emit(EVENT, m)
            state["emitted"] += 1
        emit("sent", t_start=t_start, t_sent=now())

    def command(cmd: dict[str, Any]) -> None:
        what = cmd["cmd"]
        if what == "mark":
            state["cpu0"] = time.process_time()
            emit("marked")
        elif what == "broadcast":
            task = loop.create_task(broadcast())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif what == "report":
            emit(
                "report",
                cpu_s=time.process_time() - state["cpu0"],
                stats={"emitted": state["emitted"], "clients": state["count"]},
            )

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = _listening_socket()
    await web.SockSite(runner, sock).start()
    _read_lines(loop, command)
    emit("ready", port=sock.getsockname()[1], node=manager.host_id)
    await asyncio.Event().wait()  # until killed


async def _connect(url: str, on_message: Callable[..., Any]) -> Any:
    """
    One C{AsyncClient}, default settings, on the websocket transport only
    (no long-polling first), its C{m} events handed to C{on_message}.
    """
    import socketio

    client = socketio.AsyncClient()
    client.on(EVENT, on_message)
    await client.connect(url, transports=["websocket"])
    return client


def _url(go: dict[str, Any]) -> str:
    return f"http://127.0.0.1:{go['ports'][0]}"


async def _receivers(spec: dict[str, Any], go: dict[str, Any]) -> None:
    """
    C{clients} clients, each counting C{messages} broadcasts; progress
    (deliveries so far) every L{PROGRESS} seconds; one result when every
    client has all (and how many arrived out of order); connected until
    the parent kills the process.
    """
    k, m = spec["clients"], spec["messages"]
    counts = [0] * k
    state = {"done": 0, "disorder": 0, "t_last": 0.0}
    finished = asyncio.Event()

    def handler(index: int) -> Callable[[Any], None]:
        def on_message(msg: Any) -> None:
            c = counts[index]
            if msg["i"] != c:
                state["disorder"] += 1
            c += 1
            counts[index] = c
            if c == m:
                state["done"] += 1
                if state["done"] == k:
                    state["t_last"] = now()
                    finished.set()

        return on_message

    clients = []
    for index in range(k):
        clients.append(await _connect(_url(go), handler(index)))
    emit("connected", cpu=time.process_time())

    async def progress() -> None:
        while not finished.is_set():
            emit("progress", delivered=sum(counts), t=now())
            await asyncio.sleep(PROGRESS)

    ticker = asyncio.ensure_future(progress())
    await finished.wait()
    emit(
        "result",
        t_done=state["t_last"],
        cpu=time.process_time(),
        disorder=state["disorder"],
    )
    emit("progress", delivered=sum(counts), t=state["t_last"])
    await ticker
    await asyncio.Event().wait()  # connected until killed


async def _pinger(spec: dict[str, Any], go: dict[str, Any]) -> None:
    """
    One client: once told C{start} (a line on stdin), C{warmup + trips}
    sequential round trips through the nodes, timed at this end.
    """
    msgs = messages(spec["trips"] + spec["warmup"])
    warmup = spec["warmup"]
    rtts: list[float] = []
    state: dict[str, Any] = {"i": 0, "t0": 0.0}
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()

    async def on_message(msg: Any) -> None:
        t1 = now()
        i = state["i"]
        if msg["i"] != i:
            emit("error", error=f"reply {msg['i']} to message {i}")
            finished.set()
            return
        if i >= warmup:
            rtts.append(t1 - state["t0"])
        i += 1
        state["i"] = i
        if i == len(msgs):
            state["t_last"] = t1
            finished.set()
            return
        state["t0"] = now()
        await client.emit(RELAY, msgs[i])

    client = await _connect(_url(go), on_message)

    async def first() -> None:
        state["t_first"] = state["t0"] = now()
        state["cpu0"] = time.process_time()
        await client.emit(RELAY, msgs[0])

    started: list[asyncio.Task[None]] = []

    def start(cmd: dict[str, Any]) -> None:
        started.append(loop.create_task(first()))

    _read_lines(loop, start)
    emit("connected", cpu=time.process_time())
    await finished.wait()
    if state["i"] == len(msgs):
        emit(
            "result",
            t_first=state["t_first"],
            t_last=state["t_last"],
            cpu=time.process_time() - state["cpu0"],
            **rtt_result(rtts),
        )
    await asyncio.Event().wait()  # connected until killed


async def _echo(spec: dict[str, Any], go: dict[str, Any]) -> None:
    """
    One client that sends back every message it gets.
    """
    client: Any = None

    async def on_message(msg: Any) -> None:
        await client.emit(RELAY, msg)

    client = await _connect(_url(go), on_message)
    emit("connected", cpu=time.process_time())
    await asyncio.Event().wait()


ROLES = {"receivers": _receivers, "pinger": _pinger, "echo": _echo}


def run_child(role: str, spec: dict[str, Any]) -> int:
    """
    One process, under a watchdog, leaving without interpreter teardown. A
    client first reads the port of its node from stdin.
    """
    raise_fd_limit()
    watchdog(spec["bound"] + 10)
    try:
        if role == "node":
            asyncio.run(_node(spec))
        elif role in ROLES:
            go = read_go()
            asyncio.run(ROLES[role](spec, go))
        else:
            raise ValueError(role)
    except BaseException as e:  # report anything, then leave at once
        emit("error", error=f"{role}: {type(e).__name__}: {e}")
        sys.stderr.flush()
        os._exit(1)
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        raise SystemExit("usage: python -m benchmarks.socketio_nodes ROLE SPEC")
    return run_child(args[0], json.loads(args[1]))


if __name__ == "__main__":
    raise SystemExit(main())
