"""
Benchmark: twcomms against its peers, from one command and one run.

Systems (each a server and its clients, written small and idiomatically):

  - C{raw-socket}: the floor. Blocking sockets, pre-built frames, C{recv_into}
    a preallocated buffer, C{json.loads} per message.
  - C{twcomms-twisted}: C{CommsServerFactory} / C{CommsClientFactory}
    (C{broadcast()} encodes once).
  - C{twcomms-threaded}: the threaded C{Server} / C{Client} (outside any
    reactor; twcomms starts its own reactor thread; callbacks on workers).
  - C{stock-twisted}: C{Int32StringReceiver} with C{structFormat = "<I"},
    C{MAX_LENGTH = 2**32 - 1}, C{json.loads}/C{json.dumps} around it.
  - C{asyncio}: streams, C{readexactly} of a C{struct} header then the payload.
  - C{pyzmq}: PUSH/PULL (A, D), REQ/REP (B), XPUB/SUB (C, E; XPUB is PUB that
    also reports subscriptions, so the server knows when all subscribers are
    there). High-water marks are unlimited so nothing is dropped.

Scenarios (server and clients in separate processes on 127.0.0.1):

  - A: one client sends 200,000 small json messages
    C{{"i": n, "payload": "x" * 20}}; the server decodes each. Messages/s at
    the server, first to last message received (best of C{--repeat} runs).
  - B: 5,000 sequential request/echo round trips (after 500 warm-up ones);
    p50 and p99 in microseconds, measured by the client.
  - C: 50 clients in 2 processes; the server broadcasts 20,000 small json
    messages (yielding to its event loop every 1,000); every client decodes
    and counts. Deliveries/s from the first broadcast until the last client
    has all (C{time.perf_counter} is C{CLOCK_MONOTONIC} on Linux, one clock
    for every process).
  - D: one 64 MiB and one 256 MiB binary message, client to server: seconds
    from the client starting to send until it has the server's small
    acknowledgement (best of C{--repeat} receptions on one connection, after
    a small hello message), MB/s (10**6 bytes), and the receiver's peak RSS
    growth as a multiple of the message size (one process per size).
    Stock Twisted receives once (its receive path is quadratic).
  - E: C{--scale-connections} (default 10,000) concurrent connections, from
    clients spread over processes of at most 2,500 connections each (100
    connection attempts in flight per process), then one broadcast to all.
    Server memory per connection (RSS growth from listening to all connected,
    divided by the connections) and the time until every client has the
    message. Systems: twcomms-twisted, stock-twisted, asyncio, pyzmq.

Every process raises its soft C{RLIMIT_NOFILE} to the hard limit; servers
listen with a backlog of 1024. Processes synchronise over pipes (the server
prints its port; the parent hands it to the clients, which connect only
then), never with sleeps. Every cell has a time bound: a cell that exceeds
it is killed and reported as a cut-off; every child process is killed by
pid when its cell ends.

It prints one table per scenario (each figure and its ratio to the
raw-socket floor), then twcomms' targets with PASS/MISS, and writes
C{benchmarks/results/peers.json} and C{benchmarks/results/peers.png}.
C{--quick} uses tiny sizes (about 10-20 s) and writes C{peers-quick.json} and
C{peers-quick.png} instead, so a smoke run never replaces a full run's
figures.

Run from the repository root::

    python -m benchmarks.peers                        # everything
    python -m benchmarks.peers --quick                # every cell, tiny sizes
    python -m benchmarks.peers --scenarios A,B --systems twcomms-twisted,stock-twisted
    python -m benchmarks.peers --scenarios E --scale-connections 2000
    python -m benchmarks.peers --scenarios A --systems twcomms-twisted --profile

C{--profile} runs the twcomms processes under C{py-spy} (C{pip install
py-spy}) and prints, per process, the functions with the most samples (self
and inclusive); the raw stacks are kept in C{benchmarks/results/profiles/}.

From a test (the maintainer's CI calls this; it blocks for ~10-20 s and
uses only subprocesses, so it is safe under pytest-twisted)::

    from benchmarks.peers import run_quick, problems

    def test_every_cell_is_produced(tmp_path):
        run = run_quick(tmp_path)          # or run_quick() to write nothing
        assert not problems(run)           # missing cells, errors, cut-offs

Benchmark-only dependencies: C{pyzmq} (the pyzmq system; without it those
cells are reported as errors) and C{matplotlib} (the chart; without it the
chart is skipped). Linux only (C{/proc}, C{resource}).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import queue
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

MODULE = "benchmarks.peers"
ROOT = Path(__file__).resolve().parent.parent.parent
RESULTS = ROOT / "benchmarks" / "results"

SYSTEMS = (
    "raw-socket",
    "twcomms-twisted",
    "twcomms-threaded",
    "stock-twisted",
    "asyncio",
    "pyzmq",
)
SCENARIOS = ("A", "B", "C", "D", "E")
FLOOR = "raw-socket"
NOT_APPLICABLE = {
    ("E", "twcomms-threaded"): "E covers the Twisted API; a threaded Client per "
    "connection (each with its callback queue) is not how 10,000 peers are held",
    ("E", "raw-socket"): "blocking sockets need a thread per connection; "
    "there is no blocking floor at this scale",
}

MIB = 1024 * 1024
HDR = struct.Struct("<I")
#: D's maximum message size for the systems that have one (twcomms).
MAX_MESSAGE = 300 * MIB
#: C: messages broadcast between two returns to the event loop.
BATCH = 1000
#: E: connection attempts in flight per client process, and connections per
#: client process.
IN_FLIGHT = 100
HELLO = b"hello"
HI = b"hi"
ACK = b"ok"

now = time.perf_counter


@dataclass(frozen=True)
class Settings:
    """
    Sizes and time bounds of one run.
    """

    a_messages: int = 200_000
    b_trips: int = 5_000
    b_warmup: int = 500
    c_clients: int = 50
    c_procs: int = 2
    c_messages: int = 20_000
    d_sizes_mib: tuple[float, float] = (64.0, 256.0)
    e_connections: int = 10_000
    e_per_proc: int = 2_500
    repeat: int = 3
    bound_a: float = 60.0
    bound_b: float = 60.0
    bound_c: float = 120.0
    bound_d: float = 60.0
    bound_e_base: float = 40.0
    bound_e_per_1000: float = 10.0
    e_stall: float = 20.0
    quick: bool = False

    def bound(self, scenario: str) -> float:
        if scenario == "E":
            return self.bound_e_base + self.bound_e_per_1000 * self.e_connections / 1000
        return float(getattr(self, "bound_" + scenario.lower()))


FULL = Settings()
QUICK = Settings(
    a_messages=3_000,
    b_trips=300,
    b_warmup=30,
    c_clients=4,
    c_procs=2,
    c_messages=500,
    d_sizes_mib=(1.0, 4.0),
    e_connections=40,
    e_per_proc=20,
    repeat=1,
    bound_a=20.0,
    bound_b=20.0,
    bound_c=20.0,
    bound_d=20.0,
    bound_e_base=20.0,
    bound_e_per_1000=0.0,
    e_stall=10.0,
    quick=True,
)


# =============================================================================
# Child processes: shared helpers
# =============================================================================

_emit_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    """
    One JSON line on stdout for the parent. Any thread.
    """
    line = json.dumps({"ev": event, **fields})
    with _emit_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _watchdog(limit: float) -> None:
    """
    Exit this process if its parent goes away or after C{limit} seconds, so
    that no benchmark process outlives its cell.
    """
    ppid = os.getppid()
    deadline = time.monotonic() + limit

    def run() -> None:
        while True:
            time.sleep(0.25)
            if os.getppid() != ppid or time.monotonic() > deadline:
                os._exit(3)

    threading.Thread(target=run, name="watchdog", daemon=True).start()


def _maxrss_kib() -> int:
    """
    Peak resident set size of this process so far, KiB.
    """
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _rss_kib() -> int:
    """
    Current resident set size of this process, KiB.
    """
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE") // 1024


def _hold() -> None:
    """
    Keep the process (and its sockets, and what they still have to send)
    alive until the parent kills it.
    """
    while True:
        time.sleep(3600)


def _messages(n: int) -> list[dict[str, Any]]:
    payload = "x" * 20
    return [{"i": i, "payload": payload} for i in range(n)]


def _pattern(size: int) -> bytes:
    if size % 256:
        raise ValueError("D sizes must be multiples of 256 bytes")
    return bytes(range(256)) * (size // 256)


def _payload_ok(payload: Any, size: int) -> bool:
    if len(payload) != size:
        return False
    return all(payload[i] == i % 256 for i in (0, size // 2, size - 1))


def _percentile(sorted_values: list[float], q: float) -> float:
    """
    Nearest-rank percentile of already sorted values.
    """
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def _rtt_result(rtts: list[float]) -> dict[str, Any]:
    rtts.sort()
    return {
        "trips": len(rtts),
        "p50_us": _percentile(rtts, 0.50) * 1e6,
        "p99_us": _percentile(rtts, 0.99) * 1e6,
        "mean_us": sum(rtts) / len(rtts) * 1e6,
        "min_us": rtts[0] * 1e6,
    }


def _read_go() -> dict[str, Any]:
    """
    A client waits for the parent to hand it the server's ports.
    """
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("parent closed stdin before the server was ready")
    return json.loads(line)  # type: ignore[no-any-return]


def _nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _json_bytes(message: Any) -> bytes:
    return json.dumps(message).encode()


def _json_value(payload: bytes | bytearray) -> Any:
    """
    UTF-8, then JSON: what twcomms' json codec does (C{json.loads} of bytes
    would first run a pure-Python encoding detection, ~0.8 us a message).
    """
    return json.loads(payload.decode())


# =============================================================================
# Event-loop systems: twcomms-twisted, stock-twisted, asyncio
#
# Each "net" offers the same small interface; the scenario logic below is
# written once against it, so those three do exactly the same work.
#   listen(on_connect, on_message) -> port
#   reply(conn, msg); sender(conn) -> send(msg); broadcast(msg)
#   connect(port, on_message, on_connected, on_failed)
#   call_soon(f, *a); call_later(dt, f, *a); run(); stop()
# on_connect(conn), on_message(conn, msg), on_connected(conn): conn is the
# system's own connection object.
# =============================================================================


class _TwistedLoop:
    def __init__(self) -> None:
        from twisted.internet import reactor
        from twisted.logger import (
            FilteringLogObserver,
            LogLevel,
            LogLevelFilterPredicate,
            globalLogBeginner,
            textFileLogObserver,
        )

        # Warnings and errors to stderr; info events (twcomms logs each
        # connection) are dropped, as a configured server would.
        observer = FilteringLogObserver(
            textFileLogObserver(sys.stderr),
            [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
        )
        globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
        self.reactor: Any = reactor

    def call_soon(self, f: Callable[..., Any], *args: Any) -> None:
        self.reactor.callLater(0, f, *args)

    def call_later(self, delay: float, f: Callable[..., Any], *args: Any) -> None:
        self.reactor.callLater(delay, f, *args)

    def run(self) -> None:
        self.reactor.run(installSignalHandlers=False)

    def stop(self) -> None:
        if self.reactor.running:
            self.reactor.stop()


class _TwcommsNet(_TwistedLoop):
    """
    twcomms' Twisted API.
    """

    def __init__(self, binary: bool) -> None:
        super().__init__()
        from twcomms import CommsClientFactory, CommsServerFactory
        from twcomms.framing import DEFAULT_MAX_MESSAGE_SIZE

        self._client_cls = CommsClientFactory
        self._server_cls = CommsServerFactory
        self._mode = "binary" if binary else "json"
        self._max = MAX_MESSAGE if binary else DEFAULT_MAX_MESSAGE_SIZE
        self.server: Any = None

    def listen(
        self, on_connect: Callable[..., Any], on_message: Callable[..., Any]
    ) -> int:
        self.server = self._server_cls(
            self._mode,
            max_message_size=self._max,
            on_connect=on_connect,
            on_message=on_message,
        )
        ports: list[Any] = []
        self.server.listen(("127.0.0.1", 0)).addCallback(ports.append)
        return int(ports[0].getHost().port)

    def reply(self, conn: Any, message: Any) -> None:
        conn.send(message)

    def sender(self, conn: Any) -> Callable[[Any], None]:
        return conn.send  # type: ignore[no-any-return]

    def broadcast(self, message: Any) -> None:
        self.server.broadcast(message)

    def connect(
        self,
        port: int,
        on_message: Callable[..., Any],
        on_connected: Callable[[Any], Any],
        on_failed: Callable[[str], Any],
    ) -> None:
        client = self._client_cls(
            self._mode, max_message_size=self._max, on_message=on_message
        )
        client.connectTCP("127.0.0.1", port)
        client.whenConnected().addCallbacks(
            lambda _: on_connected(client), lambda f: on_failed(f.getErrorMessage())
        )


class _StockNet(_TwistedLoop):
    """
    Twisted's own Int32StringReceiver, json around it.
    """

    def __init__(self, binary: bool) -> None:
        super().__init__()
        from twisted.internet.protocol import ClientFactory, Factory
        from twisted.protocols.basic import Int32StringReceiver

        self._encode: Callable[[Any], bytes] = (lambda m: m) if binary else _json_bytes
        decode: Callable[[bytes], Any] = (lambda b: b) if binary else _json_value
        self.protocols: dict[Any, None] = {}
        net = self

        class Proto(Int32StringReceiver):
            structFormat = "<I"
            prefixLength = 4
            MAX_LENGTH = 0xFFFFFFFF

            def connectionMade(self) -> None:
                self.factory.made(self)

            def stringReceived(self, string: bytes) -> None:
                self.factory.on_message(self, decode(string))

            def connectionLost(self, reason: Any = None) -> None:
                net.protocols.pop(self, None)

        class ServerFactory(Factory):
            protocol = Proto
            noisy = False

            def __init__(self, on_connect: Any, on_message: Any) -> None:
                self.on_connect = on_connect
                self.on_message = on_message

            def made(self, proto: Any) -> None:
                net.protocols[proto] = None
                self.on_connect(proto)

        class Client(ClientFactory):
            protocol = Proto
            noisy = False

            def __init__(self, on_message: Any, on_connected: Any, on_failed: Any):
                self.on_message = on_message
                self.on_connected = on_connected
                self.on_failed = on_failed

            def made(self, proto: Any) -> None:
                self.on_connected(proto)

            def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
                self.on_failed(reason.getErrorMessage())

        self._server_factory = ServerFactory
        self._client_factory = Client

    def listen(
        self, on_connect: Callable[..., Any], on_message: Callable[..., Any]
    ) -> int:
        port = self.reactor.listenTCP(
            0,
            self._server_factory(on_connect, on_message),
            backlog=1024,
            interface="127.0.0.1",
        )
        return int(port.getHost().port)

    def reply(self, conn: Any, message: Any) -> None:
        conn.sendString(self._encode(message))

    def sender(self, conn: Any) -> Callable[[Any], None]:
        send_string = conn.sendString
        encode = self._encode

        def send(message: Any) -> None:
            send_string(encode(message))

        return send

    def broadcast(self, message: Any) -> None:
        data = self._encode(message)
        for proto in list(self.protocols):
            proto.sendString(data)

    def connect(
        self,
        port: int,
        on_message: Callable[..., Any],
        on_connected: Callable[[Any], Any],
        on_failed: Callable[[str], Any],
    ) -> None:
        self.reactor.connectTCP(
            "127.0.0.1", port, self._client_factory(on_message, on_connected, on_failed)
        )


class _AsyncioNet:
    """
    asyncio streams with a struct header.
    """

    def __init__(self, binary: bool) -> None:
        import asyncio

        self._asyncio = asyncio
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self._binary = binary
        self._decode: Callable[[bytes], Any] = (lambda b: b) if binary else _json_value
        self._encode: Callable[[Any], bytes] = (lambda m: m) if binary else _json_bytes
        self.writers: dict[Any, None] = {}
        self._tasks: set[Any] = set()

    def call_soon(self, f: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon(f, *args)

    def call_later(self, delay: float, f: Callable[..., Any], *args: Any) -> None:
        self.loop.call_later(delay, f, *args)

    def run(self) -> None:
        self.loop.run_forever()

    def stop(self) -> None:
        self.loop.stop()

    async def _read_frames(self, reader: Any, writer: Any, on_message: Any) -> None:
        readexactly = reader.readexactly
        unpack = HDR.unpack
        decode = self._decode
        try:
            while True:
                (length,) = unpack(await readexactly(4))
                on_message(writer, decode(await readexactly(length)))
        except (self._asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writers.pop(writer, None)
            writer.close()

    def listen(
        self, on_connect: Callable[..., Any], on_message: Callable[..., Any]
    ) -> int:
        async def handle(reader: Any, writer: Any) -> None:
            self.writers[writer] = None
            on_connect(writer)
            await self._read_frames(reader, writer, on_message)

        server = self.loop.run_until_complete(
            self._asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        )
        self._server = server
        return int(server.sockets[0].getsockname()[1])

    def _write(self, writer: Any, data: bytes) -> None:
        if len(data) <= 16384:
            writer.write(HDR.pack(len(data)) + data)
        else:
            # No copy of a large payload to prepend 4 bytes.
            writer.write(HDR.pack(len(data)))
            writer.write(data)

    def reply(self, conn: Any, message: Any) -> None:
        self._write(conn, self._encode(message))

    def sender(self, conn: Any) -> Callable[[Any], None]:
        write = self._write
        encode = self._encode

        def send(message: Any) -> None:
            write(conn, encode(message))

        return send

    def broadcast(self, message: Any) -> None:
        data = self._encode(message)
        frame = HDR.pack(len(data)) + data
        for writer in list(self.writers):
            writer.write(frame)

    def connect(
        self,
        port: int,
        on_message: Callable[..., Any],
        on_connected: Callable[[Any], Any],
        on_failed: Callable[[str], Any],
    ) -> None:
        async def run() -> None:
            try:
                reader, writer = await self._asyncio.open_connection("127.0.0.1", port)
            except OSError as e:
                on_failed(str(e))
                return
            on_connected(writer)
            await self._read_frames(reader, writer, on_message)

        task = self.loop.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _make_net(system: str, binary: bool) -> Any:
    if system == "twcomms-twisted":
        return _TwcommsNet(binary)
    if system == "stock-twisted":
        return _StockNet(binary)
    if system == "asyncio":
        return _AsyncioNet(binary)
    raise ValueError(system)


def _ignore(*args: Any) -> None:
    pass


def _ev_server(system: str, scn: str, spec: dict[str, Any]) -> None:
    net = _make_net(system, binary=scn == "D")

    if scn == "A":
        n = spec["messages"]
        count = 0
        t_first = 0.0

        def on_message(conn: Any, msg: Any) -> None:
            nonlocal count, t_first
            count += 1
            if count == 1:
                t_first = now()
            elif count == n:
                t_last = now()
                emit(
                    "result", t_first=t_first, t_last=t_last, count=count, last=msg["i"]
                )
                net.stop()

        port = net.listen(_ignore, on_message)

    elif scn == "B":
        port = net.listen(_ignore, net.reply)

    elif scn == "C":
        msgs = _messages(spec["messages"])
        expected = spec["clients"]
        connected = 0
        t_start = 0.0

        def broadcast_from(i: int) -> None:
            nonlocal t_start
            if i == 0:
                t_start = now()
            broadcast = net.broadcast
            for m in msgs[i : i + BATCH]:
                broadcast(m)
            if i + BATCH < len(msgs):
                net.call_soon(broadcast_from, i + BATCH)
            else:
                emit("result", t_start=t_start, t_sent=now(), clients=connected)

        def on_connect(conn: Any) -> None:
            nonlocal connected
            connected += 1
            if connected == expected:
                net.call_soon(broadcast_from, 0)

        port = net.listen(on_connect, _ignore)

    elif scn == "D":
        size = spec["size"]
        reps = spec["reps"]
        received = 0
        base = _maxrss_kib()

        def on_message(conn: Any, payload: Any) -> None:
            nonlocal received
            if len(payload) < 16:
                net.reply(conn, HI)
                return
            if not _payload_ok(payload, size):
                emit("error", error=f"payload check failed ({len(payload)} bytes)")
                return
            net.reply(conn, ACK)
            received += 1
            if received == reps:
                emit("result", peak_extra_kib=_maxrss_kib() - base, baseline_kib=base)

        port = net.listen(_ignore, on_message)

    elif scn == "E":
        expected = spec["connections"]
        connected = 0
        state: dict[str, Any] = {"done": False}

        def fire() -> None:
            rss_connected = _rss_kib()
            t_broadcast = now()
            net.broadcast({"i": 0, "payload": "x" * 20})
            state["done"] = True
            emit(
                "result",
                connections=connected,
                rss_base_kib=state["rss_base"],
                rss_connected_kib=rss_connected,
                t_ready=state["t_ready"],
                t_all=state["t_all"],
                t_broadcast=t_broadcast,
                t_sent=now(),
            )

        def on_connect(conn: Any) -> None:
            nonlocal connected
            connected += 1
            if connected == expected:
                state["t_all"] = now()
                net.call_soon(fire)

        def tick() -> None:
            if not state["done"]:
                emit("progress", accepted=connected)
                net.call_later(0.5, tick)

        port = net.listen(on_connect, _ignore)
        gc.collect()
        state["rss_base"] = _rss_kib()
        state["t_ready"] = now()
        net.call_later(0.5, tick)

    else:
        raise ValueError(scn)

    emit("ready", ports=[port])
    net.run()


def _ev_client(system: str, scn: str, spec: dict[str, Any], go: dict[str, Any]) -> None:
    net = _make_net(system, binary=scn == "D")
    port = go["ports"][0]

    def failed(error: str) -> None:
        emit("error", error=f"connect failed: {error}")
        net.stop()

    if scn == "A":
        msgs = _messages(spec["messages"])

        def on_connected(conn: Any) -> None:
            send = net.sender(conn)
            t0 = now()
            for m in msgs:
                send(m)
            emit("result", t_send_start=t0, t_send_end=now())
            # Keep running: the reactor still has to write it all.

        net.connect(port, _ignore, on_connected, failed)

    elif scn == "B":
        msgs = _messages(spec["trips"] + spec["warmup"])
        warmup = spec["warmup"]
        rtts: list[float] = []
        i = 0
        t0 = 0.0
        send: Callable[[Any], None] = _ignore

        def on_connected(conn: Any) -> None:
            nonlocal send, t0
            send = net.sender(conn)
            t0 = now()
            send(msgs[0])

        def on_message(conn: Any, msg: Any) -> None:
            nonlocal i, t0
            t1 = now()
            if i >= warmup:
                rtts.append(t1 - t0)
            i += 1
            if i == len(msgs):
                emit("result", **_rtt_result(rtts))
                net.stop()
                return
            t0 = now()
            send(msgs[i])

        net.connect(port, on_message, on_connected, failed)

    elif scn == "C":
        k = spec["clients"]
        m = spec["messages"]
        counts: dict[Any, int] = {}
        done = 0

        def on_message(conn: Any, msg: Any) -> None:
            nonlocal done
            c = counts.get(conn, 0) + 1
            counts[conn] = c
            if c == m:
                if msg["i"] != m - 1:
                    emit("error", error=f"last message out of order: {msg['i']}")
                done += 1
                if done == k:
                    emit("result", t_done=now(), clients=k, each=m)
                    net.stop()

        for _ in range(k):
            net.connect(port, on_message, _ignore, failed)

    elif scn == "D":
        size = spec["size"]
        reps = spec["reps"]
        payload = _pattern(size)
        times: list[float] = []
        t0 = 0.0
        send: Callable[[Any], None] = _ignore

        def on_connected(conn: Any) -> None:
            nonlocal send
            send = net.sender(conn)
            send(HELLO)

        def start() -> None:
            nonlocal t0
            t0 = now()
            send(payload)

        def on_message(conn: Any, reply: Any) -> None:
            if reply == HI:
                start()
                return
            times.append(now() - t0)
            emit("progress", times=times)
            if len(times) == reps:
                emit("result", times=times)
                net.stop()
            else:
                start()

        net.connect(port, on_message, on_connected, failed)

    elif scn == "E":
        k = spec["connections"]
        launched = connected = failures = got = 0
        finished = False

        def launch() -> None:
            nonlocal launched
            while launched < k and launched - connected - failures < IN_FLIGHT:
                launched += 1
                net.connect(port, on_message, on_connected, on_failed)

        def on_connected(conn: Any) -> None:
            nonlocal connected
            connected += 1
            launch()

        def on_failed(error: str) -> None:
            nonlocal failures
            failures += 1
            emit("progress", connected=connected, failures=failures, error=error)
            launch()

        def on_message(conn: Any, msg: Any) -> None:
            nonlocal got, finished
            got += 1
            if got == k:
                finished = True
                emit("result", t_done=now(), connections=k, failures=failures)
                net.stop()

        def tick() -> None:
            if not finished:
                emit("progress", connected=connected, failures=failures)
                net.call_later(0.5, tick)

        net.call_soon(launch)
        net.call_later(0.5, tick)

    else:
        raise ValueError(scn)

    net.run()


# =============================================================================
# twcomms-threaded: the threaded Server/Client, driven from plain threads
# =============================================================================


def _threaded_server(scn: str, spec: dict[str, Any]) -> None:
    from twcomms import Server

    if scn == "D":
        srv = Server(
            "127.0.0.1",
            0,
            "binary",
            max_message_size=MAX_MESSAGE,
            keep_process_alive=False,
        )
    else:
        srv = Server("127.0.0.1", 0, "json", keep_process_alive=False)
    all_connected = threading.Event()

    if scn == "A":
        n = spec["messages"]
        count = 0
        t_first = 0.0

        def on_message(msg: Any) -> None:
            # One connection: its callbacks run one at a time, in order.
            nonlocal count, t_first
            count += 1
            if count == 1:
                t_first = now()
            elif count == n:
                emit(
                    "result", t_first=t_first, t_last=now(), count=count, last=msg["i"]
                )

        srv.add_onmessage_callback(on_message)

    elif scn == "B":
        srv.add_onmessage_callback(
            lambda client, msg: client.send(msg), with_sender=True
        )

    elif scn == "C":
        lock = threading.Lock()
        connected = 0

        def on_connect(client: Any) -> None:
            nonlocal connected
            with lock:
                connected += 1
                if connected == spec["clients"]:
                    all_connected.set()

        srv.add_onconnect_callback(on_connect)

    elif scn == "D":
        size = spec["size"]
        reps = spec["reps"]
        received = 0
        base = _maxrss_kib()

        def on_payload(client: Any, payload: bytes) -> None:
            nonlocal received
            if len(payload) < 16:
                client.send(HI)
                return
            if not _payload_ok(payload, size):
                emit("error", error="payload check failed")
                return
            client.send(ACK)
            received += 1
            if received == reps:
                emit("result", peak_extra_kib=_maxrss_kib() - base, baseline_kib=base)

        srv.add_onmessage_callback(on_payload, with_sender=True)

    else:
        raise ValueError(scn)

    srv.start()
    emit("ready", ports=[srv.port])
    if scn == "C":
        msgs = _messages(spec["messages"])
        all_connected.wait()
        t_start = now()
        for m in msgs:
            srv.broadcast(m)
        emit("result", t_start=t_start, t_sent=now(), clients=len(srv.clients))
    _hold()


def _threaded_client(scn: str, spec: dict[str, Any], go: dict[str, Any]) -> None:
    from twcomms import Client

    port = go["ports"][0]

    if scn == "A":
        msgs = _messages(spec["messages"])
        client = Client("127.0.0.1", port, keep_process_alive=False)
        client.connect()
        t0 = now()
        for m in msgs:
            client.send(m)
        emit("result", t_send_start=t0, t_send_end=now())
        _hold()

    elif scn == "B":
        msgs = _messages(spec["trips"] + spec["warmup"])
        replies: queue.SimpleQueue[Any] = queue.SimpleQueue()
        client = Client("127.0.0.1", port, keep_process_alive=False)
        client.add_onmessage_callback(replies.put)
        client.connect()
        rtts = []
        for i, m in enumerate(msgs):
            t0 = now()
            client.send(m)
            replies.get()
            if i >= spec["warmup"]:
                rtts.append(now() - t0)
        emit("result", **_rtt_result(rtts))

    elif scn == "C":
        k, m = spec["clients"], spec["messages"]
        lock = threading.Lock()
        all_done = threading.Event()
        done = 0
        clients = []

        def make_callback() -> Callable[[Any], None]:
            count = 0

            def on_message(msg: Any) -> None:
                # One client's callbacks run one at a time; clients in
                # parallel, hence the lock on the shared count.
                nonlocal count, done
                count += 1
                if count == m:
                    with lock:
                        done += 1
                        if done == k:
                            all_done.set()

            return on_message

        for _ in range(k):
            c = Client("127.0.0.1", port, keep_process_alive=False)
            c.add_onmessage_callback(make_callback())
            clients.append(c)
        for c in clients:
            c.connect()
        all_done.wait()
        emit("result", t_done=now(), clients=k, each=m)

    elif scn == "D":
        payload = _pattern(spec["size"])
        replies = queue.SimpleQueue()
        client = Client(
            "127.0.0.1",
            port,
            messageDataType="binary",
            max_message_size=MAX_MESSAGE,
            keep_process_alive=False,
        )
        client.add_onmessage_callback(replies.put)
        client.connect()
        client.send(HELLO)
        replies.get()
        times = []
        for _ in range(spec["reps"]):
            t0 = now()
            client.send(payload)
            replies.get()
            times.append(now() - t0)
            emit("progress", times=times)
        emit("result", times=times)

    else:
        raise ValueError(scn)
    _hold()


# =============================================================================
# pyzmq
# =============================================================================


def _zmq_server(scn: str, spec: dict[str, Any]) -> None:
    import zmq

    ctx = zmq.Context()
    url = "tcp://127.0.0.1"

    if scn == "A":
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, 0)  # unbounded, like the other systems' buffers
        port = pull.bind_to_random_port(url)
        emit("ready", ports=[port])
        n = spec["messages"]
        recv = pull.recv
        loads = _json_value
        loads(recv())
        t_first = now()
        msg = None
        for _ in range(n - 1):
            msg = loads(recv())
        emit(
            "result",
            t_first=t_first,
            t_last=now(),
            count=n,
            last=msg["i"] if msg else 0,
        )

    elif scn == "B":
        rep = ctx.socket(zmq.REP)
        port = rep.bind_to_random_port(url)
        emit("ready", ports=[port])
        while True:
            rep.send(_json_bytes(_json_value(rep.recv())))

    elif scn in ("C", "E"):
        pub = ctx.socket(zmq.XPUB)
        pub.setsockopt(zmq.XPUB_VERBOSE, 1)  # one subscription message each
        pub.setsockopt(zmq.SNDHWM, 0)  # no drops
        pub.setsockopt(zmq.BACKLOG, 1024)
        pub.setsockopt(zmq.RCVTIMEO, 500)
        expected = spec["clients"] if scn == "C" else spec["connections"]
        port = pub.bind_to_random_port(url)
        gc.collect()
        rss_base = _rss_kib()
        t_ready = now()
        emit("ready", ports=[port])
        subscribed = 0
        next_progress = now() + 0.5
        while subscribed < expected:
            if now() >= next_progress:
                emit("progress", accepted=subscribed)
                next_progress = now() + 0.5
            try:
                event = pub.recv()
            except zmq.Again:
                continue
            if event[:1] == b"\x01":
                subscribed += 1
        t_all = now()
        if scn == "C":
            msgs = _messages(spec["messages"])
            t_start = now()
            send = pub.send
            for m in msgs:
                send(_json_bytes(m))
            emit("result", t_start=t_start, t_sent=now(), clients=subscribed)
        else:
            rss_connected = _rss_kib()
            t_broadcast = now()
            pub.send(_json_bytes({"i": 0, "payload": "x" * 20}))
            emit(
                "result",
                connections=subscribed,
                rss_base_kib=rss_base,
                rss_connected_kib=rss_connected,
                t_ready=t_ready,
                t_all=t_all,
                t_broadcast=t_broadcast,
                t_sent=now(),
            )

    elif scn == "D":
        pull = ctx.socket(zmq.PULL)
        acks = ctx.socket(zmq.PUSH)
        port = pull.bind_to_random_port(url)
        ack_port = acks.bind_to_random_port(url)
        base = _maxrss_kib()
        emit("ready", ports=[port, ack_port])
        size = spec["size"]
        received = 0
        while received < spec["reps"]:
            frame = pull.recv(copy=False)  # pyzmq's zero-copy path for large data
            payload = frame.buffer
            if len(payload) < 16:
                acks.send(HI)
                continue
            if not _payload_ok(payload, size):
                emit("error", error="payload check failed")
            del payload, frame
            acks.send(ACK)
            received += 1
        emit("result", peak_extra_kib=_maxrss_kib() - base, baseline_kib=base)

    else:
        raise ValueError(scn)
    _hold()


def _zmq_client(scn: str, spec: dict[str, Any], go: dict[str, Any]) -> None:
    import zmq

    ctx = zmq.Context()
    url = f"tcp://127.0.0.1:{go['ports'][0]}"

    if scn == "A":
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, 0)  # unbounded, like the other systems' buffers
        push.connect(url)
        msgs = _messages(spec["messages"])
        send = push.send
        t0 = now()
        for m in msgs:
            send(_json_bytes(m))
        emit("result", t_send_start=t0, t_send_end=now())

    elif scn == "B":
        req = ctx.socket(zmq.REQ)
        req.connect(url)
        msgs = _messages(spec["trips"] + spec["warmup"])
        rtts = []
        for i, m in enumerate(msgs):
            t0 = now()
            req.send(_json_bytes(m))
            _json_value(req.recv())
            if i >= spec["warmup"]:
                rtts.append(now() - t0)
        emit("result", **_rtt_result(rtts))

    elif scn == "C":
        k, m = spec["clients"], spec["messages"]
        poller = zmq.Poller()
        counts = {}
        for _ in range(k):
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.RCVHWM, 0)
            sub.connect(url)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            poller.register(sub, zmq.POLLIN)
            counts[sub] = 0
        done = 0
        loads = _json_value
        while done < k:
            for sub, _ in poller.poll():
                while True:
                    try:
                        data = sub.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    loads(data)
                    counts[sub] += 1
                    if counts[sub] == m:
                        done += 1
        emit("result", t_done=now(), clients=k, each=m)

    elif scn == "D":
        push = ctx.socket(zmq.PUSH)
        acks = ctx.socket(zmq.PULL)
        push.connect(url)
        acks.connect(f"tcp://127.0.0.1:{go['ports'][1]}")
        payload = _pattern(spec["size"])
        push.send(HELLO)
        acks.recv()
        times = []
        for _ in range(spec["reps"]):
            t0 = now()
            push.send(payload, copy=False)
            acks.recv()
            times.append(now() - t0)
            emit("progress", times=times)
        emit("result", times=times)

    elif scn == "E":
        k = spec["connections"]
        ctx.set(zmq.MAX_SOCKETS, k + 100)
        subs = []
        for i in range(k):
            sub = ctx.socket(zmq.SUB)
            sub.connect(url)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            subs.append(sub)
            if i % 500 == 499:
                emit("progress", connected=i + 1)
        for sub in subs:
            _json_value(sub.recv())
        emit("result", t_done=now(), connections=k, failures=0)

    else:
        raise ValueError(scn)
    _hold()


# =============================================================================
# raw-socket: the floor
# =============================================================================


class _RawFrames:
    """
    Frames from a blocking socket, read with C{recv_into} into one
    preallocated buffer (small frames only).
    """

    def __init__(self, sock: socket.socket, size: int = 1 << 20) -> None:
        self.sock = sock
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0

    def fill(self) -> int:
        buf = self.buf
        if self.start and len(buf) - self.end < 65536:
            rest = self.end - self.start
            buf[:rest] = buf[self.start : self.end]
            self.start, self.end = 0, rest
        got = self.sock.recv_into(self.view[self.end :])
        if not got:
            raise EOFError("peer closed")
        self.end += got
        return got

    def frames(self) -> list[bytearray]:
        """
        The complete payloads now in the buffer.
        """
        out = []
        buf, start, end = self.buf, self.start, self.end
        unpack_from = HDR.unpack_from
        while end - start >= 4:
            (length,) = unpack_from(buf, start)
            stop = start + 4 + length
            if stop > end:
                break
            out.append(buf[start + 4 : stop])
            start = stop
        self.start = start
        return out

    def next(self) -> bytearray:
        while True:
            frames = self.frames_one()
            if frames is not None:
                return frames
            self.fill()

    def frames_one(self) -> bytearray | None:
        if self.end - self.start < 4:
            return None
        (length,) = HDR.unpack_from(self.buf, self.start)
        stop = self.start + 4 + length
        if stop > self.end:
            return None
        payload = self.buf[self.start + 4 : stop]
        self.start = stop
        return payload


def _frame(payload: bytes) -> bytes:
    return HDR.pack(len(payload)) + payload


def _recv_exact(sock: socket.socket, view: memoryview) -> None:
    got = 0
    size = len(view)
    while got < size:
        n = sock.recv_into(view[got:])
        if not n:
            raise EOFError("peer closed")
        got += n


def _raw_listen() -> socket.socket:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1024)
    emit("ready", ports=[lsock.getsockname()[1]])
    return lsock


def _raw_accept(lsock: socket.socket) -> socket.socket:
    conn, _ = lsock.accept()
    _nodelay(conn)
    return conn


def _raw_server(scn: str, spec: dict[str, Any]) -> None:
    if scn == "D":
        base = _maxrss_kib()
    lsock = _raw_listen()

    if scn == "A":
        conn = _raw_accept(lsock)
        n = spec["messages"]
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        start = end = count = 0
        t_first = 0.0
        loads = _json_value
        unpack_from = HDR.unpack_from
        msg: Any = None
        while count < n:
            if start and len(buf) - end < 65536:
                buf[: end - start] = buf[start:end]
                start, end = 0, end - start
            got = conn.recv_into(view[end:])
            if not got:
                raise EOFError("peer closed")
            end += got
            while end - start >= 4:
                (length,) = unpack_from(buf, start)
                stop = start + 4 + length
                if stop > end:
                    break
                msg = loads(buf[start + 4 : stop])
                start = stop
                count += 1
                if count == 1:
                    t_first = now()
        emit("result", t_first=t_first, t_last=now(), count=count, last=msg["i"])

    elif scn == "B":
        conn = _raw_accept(lsock)
        requests = _RawFrames(conn)
        while True:
            data = _json_bytes(_json_value(requests.next()))
            conn.sendall(HDR.pack(len(data)) + data)

    elif scn == "C":
        socks = [_raw_accept(lsock) for _ in range(spec["clients"])]
        frames = [_frame(_json_bytes(m)) for m in _messages(spec["messages"])]
        batches = [
            b"".join(frames[i : i + BATCH]) for i in range(0, len(frames), BATCH)
        ]
        t_start = now()
        for batch in batches:
            for s in socks:
                s.sendall(batch)
        emit("result", t_start=t_start, t_sent=now(), clients=len(socks))

    elif scn == "D":
        conn = _raw_accept(lsock)
        size = spec["size"]
        header = bytearray(4)
        buf: bytearray | None = None
        received = 0
        while received < spec["reps"]:
            _recv_exact(conn, memoryview(header))
            (length,) = HDR.unpack(header)
            if length < 16:
                _recv_exact(conn, memoryview(bytearray(length)))
                conn.sendall(_frame(HI))
                continue
            if buf is None or len(buf) != length:
                buf = bytearray(length)
            _recv_exact(conn, memoryview(buf))
            if not _payload_ok(buf, size):
                emit("error", error="payload check failed")
            conn.sendall(_frame(ACK))
            received += 1
        emit("result", peak_extra_kib=_maxrss_kib() - base, baseline_kib=base)

    else:
        raise ValueError(scn)
    _hold()


def _raw_connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    _nodelay(sock)
    return sock


def _raw_client(scn: str, spec: dict[str, Any], go: dict[str, Any]) -> None:
    port = go["ports"][0]

    if scn == "A":
        data = b"".join(_frame(_json_bytes(m)) for m in _messages(spec["messages"]))
        sock = _raw_connect(port)
        t0 = now()
        sock.sendall(data)
        emit("result", t_send_start=t0, t_send_end=now())

    elif scn == "B":
        frames = [
            _frame(_json_bytes(m)) for m in _messages(spec["trips"] + spec["warmup"])
        ]
        sock = _raw_connect(port)
        replies = _RawFrames(sock, 65536)
        rtts = []
        for i, frame in enumerate(frames):
            t0 = now()
            sock.sendall(frame)
            _json_value(replies.next())
            if i >= spec["warmup"]:
                rtts.append(now() - t0)
        emit("result", **_rtt_result(rtts))

    elif scn == "C":
        import selectors

        k, m = spec["clients"], spec["messages"]
        sel = selectors.DefaultSelector()
        for _ in range(k):
            sock = _raw_connect(port)
            sel.register(sock, selectors.EVENT_READ, [_RawFrames(sock), 0])
        done = 0
        loads = _json_value
        while done < k:
            for key, _ in sel.select():
                state = key.data
                state[0].fill()
                frames = state[0].frames()
                for payload in frames:
                    loads(payload)
                state[1] += len(frames)
                if state[1] == m:
                    done += 1
        emit("result", t_done=now(), clients=k, each=m)

    elif scn == "D":
        frame = _frame(_pattern(spec["size"]))
        sock = _raw_connect(port)
        replies = _RawFrames(sock, 65536)
        sock.sendall(_frame(HELLO))
        replies.next()
        times = []
        for _ in range(spec["reps"]):
            t0 = now()
            sock.sendall(frame)
            replies.next()
            times.append(now() - t0)
            emit("progress", times=times)
        emit("result", times=times)

    else:
        raise ValueError(scn)
    _hold()


# =============================================================================
# Child entry point
# =============================================================================


def _child(role: str, system: str, scn: str, spec: dict[str, Any]) -> int:
    _raise_nofile()
    _watchdog(spec["bound"] + 10)
    try:
        if role == "server":
            if system in ("twcomms-twisted", "stock-twisted", "asyncio"):
                _ev_server(system, scn, spec)
            elif system == "twcomms-threaded":
                _threaded_server(scn, spec)
            elif system == "pyzmq":
                _zmq_server(scn, spec)
            elif system == "raw-socket":
                _raw_server(scn, spec)
            else:
                raise ValueError(system)
        else:
            go = _read_go()
            if system in ("twcomms-twisted", "stock-twisted", "asyncio"):
                _ev_client(system, scn, spec, go)
            elif system == "twcomms-threaded":
                _threaded_client(scn, spec, go)
            elif system == "pyzmq":
                _zmq_client(scn, spec, go)
            elif system == "raw-socket":
                _raw_client(scn, spec, go)
            else:
                raise ValueError(system)
    except BaseException as e:  # report anything, then leave at once
        emit("error", error=f"{role}: {type(e).__name__}: {e}")
        sys.stderr.flush()
        os._exit(1)
    sys.stderr.flush()
    # Leave without interpreter teardown (reactor threads, zmq contexts).
    os._exit(0)


# =============================================================================
# Parent: running cells
# =============================================================================


class _Cutoff(Exception):
    """
    The cell ran out of time (or, in E, stopped making progress).
    """


class _CellError(Exception):
    pass


class _Proc:
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
        if proc.poll() is None and graceful:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=graceful)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _client_split(total: int, per_proc: int, min_procs: int) -> list[int]:
    procs = max(min_procs, math.ceil(total / per_proc))
    procs = min(procs, total)
    base, extra = divmod(total, procs)
    return [base + (1 if i < extra else 0) for i in range(procs)]


def _cell_specs(
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
        split = _client_split(
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
        split = _client_split(settings.e_connections, settings.e_per_proc, 2)
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
    server_spec, client_specs = _cell_specs(scn, system, settings, size_mib)
    bound = settings.bound(scn)
    events: queue.Queue[Any] = queue.Queue()
    procs: list[_Proc] = []
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
                raise _Cutoff("time bound")
            if stall is not None and t - last_change[0] > stall:
                raise _Cutoff(f"stalled: no new connection for {stall:g} s")
            try:
                return events.get(timeout=min(remaining, 1.0))  # type: ignore[no-any-return]
            except queue.Empty:
                continue

    def by_name(name: str) -> _Proc:
        return next(p for p in procs if p.name == name)

    try:
        procs.append(
            _Proc(
                "server",
                _child_cmd("server", system, scn, server_spec, prof("server")),
                events,
            )
        )
        for i, spec in enumerate(client_specs):
            name = f"client{i}"
            procs.append(
                _Proc(name, _child_cmd("client", system, scn, spec, prof(name)), events)
            )
        need = {p.name for p in procs if p.name != "server" or scn != "B"}
        ready = False
        while need:
            name, ev = next_event()
            if ev is None:
                if name in need or (name == "server" and not ready):
                    raise _CellError(f"{name} exited early: {by_name(name).tail()}")
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
                raise _CellError(ev.get("error", "error"))
            elif kind == "result":
                results[name] = ev
                need.discard(name)
        cell = {"status": "ok", **_figures(scn, results, server_spec, client_specs)}
    except _Cutoff as e:
        cell = {
            "status": "cutoff",
            "why": str(e),
            "progress": _summarise_progress(scn, progress),
        }
    except _CellError as e:
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


def _figures(
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
            raise _CellError(f"last message was {server['last']}, not {n - 1}")
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


def _run_cell(
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


# =============================================================================
# Parent: figures, ratios, targets, output
# =============================================================================

#: scenario -> (headline key, unit, higher is better)
HEADLINE = {
    "A": ("msgs_per_s", "msgs/s", True),
    "B": ("p50_us", "us", False),
    "C": ("deliveries_per_s", "deliveries/s", True),
    "D": ("seconds", "s", False),
    "E": ("kib_per_conn", "KiB/conn", False),
}


def _cell(
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


def _value(cell: dict[str, Any] | None, key: str) -> float | None:
    if cell is None or cell.get("status") != "ok":
        return None
    v = cell.get(key)
    return float(v) if v is not None else None


def _add_ratios(cells: list[dict[str, Any]]) -> None:
    for c in cells:
        key = HEADLINE[c["scenario"]][0]
        floor = _cell(cells, c["scenario"], FLOOR, c.get("size_mib"))
        v, f = _value(c, key), _value(floor, key)
        c["vs_floor"] = v / f if v is not None and f else None


def _fmt_n(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def _status_text(c: dict[str, Any] | None) -> str:
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


def _progress_text(c: dict[str, Any]) -> str:
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


def _print_tables(run: dict[str, Any]) -> list[str]:
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
            return _progress_text(c)
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
            c = _cell(cells, "A", system)
            ok = c is not None and c["status"] == "ok"
            send = f"{c['client_send_s']:.3f}" if ok else "-"
            extra = (
                " ".join(f"{r / 1000:.0f}k" for r in c.get("runs", [])) if ok else ""
            )
            if ok and c.get("sender_bound"):
                extra += "  (sender-bound)"
            val = _fmt_n(c.get("msgs_per_s")) if ok else _status_text(c)
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
            c = _cell(cells, "B", system)
            ok = c is not None and c["status"] == "ok"
            p50 = _fmt_n(c["p50_us"], 1) if ok else _status_text(c)
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
            c = _cell(cells, "C", system)
            ok = c is not None and c["status"] == "ok"
            val = _fmt_n(c["deliveries_per_s"]) if ok else _status_text(c)
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
            a = _cell(cells, "D", system, small)
            b = _cell(cells, "D", system, large)
            va, vb = _value(a, "seconds"), _value(b, "seconds")
            ta = f"{va:.3f}" if va is not None else _status_text(a)
            tb = f"{vb:.3f}" if vb is not None else _status_text(b)
            ma = _fmt_n(_value(a, "mb_per_s"))
            mb = _fmt_n(_value(b, "mb_per_s"))
            ratio = f"{vb / va:.2f}" if va and vb else "-"
            pa = _value(a, "peak_ratio")
            pb = _value(b, "peak_ratio")
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
            f"{len(_client_split(s['e_connections'], s['e_per_proc'], 2))} processes), "
            f"one broadcast; server memory per connection, time until every "
            f"client has it (no raw-socket floor here)"
        )
        out(
            f"  {'system':<18} {'held':>7} {'KiB/conn':>9} {'deliver ms':>11} "
            f"{'connect s':>10} {'RSS MiB':>8}  notes"
        )
        for system in systems:
            c = _cell(cells, "E", system)
            ok = c is not None and c["status"] == "ok"
            if ok:
                out(
                    f"  {system:<18} {c['held']:>7,} {c['kib_per_conn']:>9.1f} "
                    f"{c['deliver_ms']:>11.1f} {c['connect_s']:>10.2f} "
                    f"{c['rss_connected_mib']:>8.1f}"
                )
            else:
                out(f"  {system:<18} {_status_text(c):>7}  {notes(c)}")
    lines = [line.rstrip() for line in lines]
    for line in lines:
        print(line)
    return lines


def _target(
    ident: str,
    text: str,
    value: float | None,
    op: str,
    limit: float,
    missing: str = "",
) -> dict[str, Any]:
    if value is None:
        verdict = "MISS"
        shown = missing or "no figure"
    else:
        ok = value >= limit if op == ">=" else value <= limit
        verdict = "PASS" if ok else "MISS"
        shown = f"{value:.2f}"
    return {
        "id": ident,
        "target": text,
        "value": value,
        "op": op,
        "limit": limit,
        "shown": shown,
        "verdict": verdict,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _targets(run: dict[str, Any]) -> list[dict[str, Any]]:
    cells = run["cells"]
    s = run["settings"]
    tw, th, st, zmq, raw = (
        "twcomms-twisted",
        "twcomms-threaded",
        "stock-twisted",
        "pyzmq",
        FLOOR,
    )
    out: list[dict[str, Any]] = []
    scns = run["scenarios"]

    def v(scn: str, system: str, key: str, size: float | None = None) -> float | None:
        return _value(_cell(cells, scn, system, size), key)

    if "A" in scns:
        a = lambda system: v("A", system, "msgs_per_s")  # noqa: E731
        out.append(
            _target(
                "A1",
                "A: twcomms-twisted / stock-twisted msgs/s",
                _ratio(a(tw), a(st)),
                ">=",
                1.0,
            )
        )
        out.append(
            _target(
                "A2",
                "A: twcomms-twisted / pyzmq msgs/s",
                _ratio(a(tw), a(zmq)),
                ">=",
                1.2,
            )
        )
        out.append(
            _target(
                "A3",
                "A: twcomms-threaded / stock-twisted msgs/s",
                _ratio(a(th), a(st)),
                ">=",
                0.7,
            )
        )
    if "B" in scns:
        b = lambda system: v("B", system, "p50_us")  # noqa: E731
        out.append(
            _target(
                "B1",
                "B: twcomms-twisted / stock-twisted p50",
                _ratio(b(tw), b(st)),
                "<=",
                1.2,
            )
        )
        out.append(
            _target(
                "B2",
                "B: twcomms-threaded / stock-twisted p50",
                _ratio(b(th), b(st)),
                "<=",
                2.0,
            )
        )
    if "C" in scns:
        c = lambda system: v("C", system, "deliveries_per_s")  # noqa: E731
        out.append(
            _target(
                "C1",
                "C: twcomms-twisted / pyzmq deliveries/s",
                _ratio(c(tw), c(zmq)),
                ">=",
                1.0,
            )
        )
    if "D" in scns:
        small, large = s["d_sizes_mib"]
        t_large = v("D", tw, "seconds", large)
        t_small = v("D", tw, "seconds", small)
        out.append(
            _target(
                "D1",
                f"D: twcomms-twisted t({large:g} MiB) / raw-socket t({large:g} MiB)",
                _ratio(t_large, v("D", raw, "seconds", large)),
                "<=",
                2.0,
            )
        )
        out.append(
            _target(
                "D2",
                f"D: twcomms-twisted t({large:g}) / t({small:g})",
                _ratio(t_large, t_small),
                "<=",
                4.5,
            )
        )
        for size in (small, large):
            out.append(
                _target(
                    f"D3-{size:g}",
                    f"D: twcomms-twisted peak receiver RSS growth / size "
                    f"({size:g} MiB)",
                    v("D", tw, "peak_ratio", size),
                    "<=",
                    2.5,
                )
            )
    if "E" in scns:
        e = _cell(cells, "E", tw)
        held = _value(e, "held")
        wanted = 10_000
        t = _target(
            "E1",
            f"E: twcomms-twisted connections held (asked {s['e_connections']:,})",
            held,
            ">=",
            wanted,
        )
        if held is not None:
            t["shown"] = f"{held:,.0f}"
            if s["e_connections"] < wanted:
                t["verdict"] = "n/a"
                t["shown"] += f" (run asked for {s['e_connections']:,}, not {wanted:,})"
        elif e is not None:
            t["shown"] = _status_text(e)
            t["detail"] = _progress_text(e)
        out.append(t)
        kib = _value(e, "kib_per_conn")
        t2 = _target(
            "E2",
            "E: twcomms-twisted memory per connection reported (KiB)",
            kib,
            ">=",
            0.0,
        )
        if kib is not None:
            t2["shown"] = f"{kib:.1f} KiB"
        out.append(t2)
    return out


def _mark_not_run(run: dict[str, Any], targets: list[dict[str, Any]]) -> None:
    """
    A target whose systems were not part of this run says so (not MISS).
    """
    needs = {
        "A1": ("twcomms-twisted", "stock-twisted"),
        "A2": ("twcomms-twisted", "pyzmq"),
        "A3": ("twcomms-threaded", "stock-twisted"),
        "B1": ("twcomms-twisted", "stock-twisted"),
        "B2": ("twcomms-threaded", "stock-twisted"),
        "C1": ("twcomms-twisted", "pyzmq"),
        "D1": ("twcomms-twisted", FLOOR),
    }
    for t in targets:
        wanted = needs.get(t["id"], ("twcomms-twisted",))
        missing = [x for x in wanted if x not in run["systems"]]
        if missing:
            t["verdict"] = "not run"
            t["shown"] = "-"


def _print_targets(targets: list[dict[str, Any]]) -> list[str]:
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


def _write_chart(run: dict[str, Any], path: Path) -> bool:
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
            c = _cell(cells, scn, system, size)
            if c is None:
                continue
            v = _value(c, key)
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


def _environment() -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    }
    try:
        from importlib.metadata import version

        for dist in ("twisted", "twcomms", "pyzmq"):
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
        "environment": _environment(),
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
        cell = _run_cell(scn, system, settings, size, profile_dir)
        if verbose:
            prefix = "" if jobs == 1 else f"[{time.monotonic() - t0:6.1f}s] {label} ..."
            print(prefix + " " + _one_line(cell), file=sys.stderr, flush=True)
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
    _add_ratios(run["cells"])
    run["targets"] = _targets(run)
    _mark_not_run(run, run["targets"])
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
        run["printed"] = lines + _print_tables(run) + _print_targets(run["targets"])
    if profile_dir is not None and verbose:
        _print_profiles(run)
    if output_dir is not None:
        stem = "peers-quick" if settings.quick else "peers"
        output_dir.mkdir(parents=True, exist_ok=True)
        json_path = output_dir / f"{stem}.json"
        json_path.write_text(json.dumps(run, indent=2) + "\n")
        png_path = output_dir / f"{stem}.png"
        charted = _write_chart(run, png_path)
        if verbose:
            print(
                f"\nResults: {json_path}"
                + (f"\nChart:   {png_path}" if charted else "")
            )
    return run


def _one_line(cell: dict[str, Any]) -> str:
    if cell["status"] == "cutoff":
        return _status_text(cell) + ": " + _progress_text(cell)
    if cell["status"] != "ok":
        return _status_text(cell) + f": {cell.get('error') or cell.get('reason')}"
    key, unit, _ = HEADLINE[cell["scenario"]]
    return f"{cell[key]:,.1f} {unit} ({cell['wall_s']:g} s)"


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
                    out.append(f"{name}: {_one_line(c)}")
    if "B" in run["scenarios"]:
        wake = run.get("wakeup") or {}
        for key in ("thread_us", "process_us"):
            if not wake.get(key, 0) > 0:
                out.append(f"B wake-up cost {key}: missing")
    return out


# =============================================================================
# Profiles (py-spy raw output: "frame;frame;...;leaf count" per line)
# =============================================================================


_NOT_MEASURED = (
    "_watchdog.<locals>.run ",
    "_pattern ",
    "_messages ",
    "_frame ",
)


def _profile_top(path: Path, top: int = 12) -> list[str]:
    if not path.exists():
        return [f"  (no profile written: {path.name})"]
    self_count: collections.Counter[str] = collections.Counter()
    incl_count: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [
            f for f in stack.split(";") if not f.startswith(("thread (", "process "))
        ]
        # Start-up and set-up are not the measured work: imports, the
        # watchdog thread, building messages and payloads.
        if not frames or any(
            f.startswith(_NOT_MEASURED) or "(<frozen importlib" in f for f in frames
        ):
            continue
        total += count
        names = [_frame_name(f) for f in frames]
        self_count[names[-1]] += count
        for name in set(names):
            incl_count[name] += count
    if not total:
        return [f"  (empty profile: {path.name})"]
    lines = [f"  {path.name}: {total} samples (self% / incl%)"]
    for name, count in self_count.most_common(top):
        lines.append(
            f"    {100 * count / total:5.1f}% "
            f"{100 * incl_count[name] / total:5.1f}%  {name}"
        )
    return lines


def _frame_name(frame: str) -> str:
    """
    C{"dataReceived (twcomms/framing.py:255)"} -> C{"dataReceived (twcomms/framing.py)"}
    """
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":")
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path or where})"


def _print_profiles(run: dict[str, Any]) -> None:
    print(
        "\nProfiles (py-spy samples of the twcomms processes; "
        "self% = in the function itself):"
    )
    for c in run["cells"]:
        for p in c.get("profiles", []):
            for line in _profile_top(Path(p)):
                print(line)


# =============================================================================
# Command line
# =============================================================================


def _choices(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        out = []
        for part in text.split(","):
            name = part.strip()
            if not name:
                continue
            if name not in allowed:
                raise argparse.ArgumentTypeError(
                    f"unknown {name!r}; choose from {', '.join(allowed)}"
                )
            out.append(name)
        if not out:
            raise argparse.ArgumentTypeError("none given")
        return out

    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m " + MODULE,
        description=(
            "twcomms against its peers (raw sockets, stock Twisted, asyncio,\n"
            "pyzmq), every server and client in its own process on 127.0.0.1:\n"
            "A small-message throughput, B round-trip latency, C broadcast to\n"
            "50 clients, D 64 and 256 MiB messages, E 10,000 connections.\n"
            "Prints each figure and its ratio to the raw-socket floor, and\n"
            "twcomms' targets with PASS/MISS."
        ),
        epilog=(
            "examples:\n"
            "  python -m benchmarks.peers\n"
            "  python -m benchmarks.peers --quick\n"
            "  python -m benchmarks.peers --scenarios A,B --repeat 5\n"
            "  python -m benchmarks.peers --scenarios E --scale-connections 2000\n"
            "  python -m benchmarks.peers --scenarios A --systems "
            "twcomms-twisted --profile\n"
            "writes benchmarks/results/peers.json and peers.png "
            "(--quick: peers-quick.*)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--scenarios",
        type=_choices(SCENARIOS),
        default=list(SCENARIOS),
        metavar="A,B,C,D,E",
        help="scenarios to run (default: all)",
    )
    p.add_argument(
        "--systems",
        type=_choices(SYSTEMS),
        default=list(SYSTEMS),
        metavar="NAME,...",
        help="systems to run (default: all): " + ", ".join(SYSTEMS),
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes (about 10-20 s); writes peers-quick.json/.png",
    )
    p.add_argument(
        "--repeat",
        type=_positive_int,
        default=None,
        metavar="N",
        help="best of N: A runs N times, D receives N times per "
        "connection (default: 3; --quick: 1)",
    )
    p.add_argument(
        "--scale-connections",
        type=_positive_int,
        default=None,
        metavar="N",
        help="E's concurrent connections (default: 10000; --quick: 40)",
    )
    p.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="cells run at once (default: 1; --quick: 3, whose "
        "figures are then only a smoke test)",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        default=RESULTS,
        metavar="DIR",
        help="where peers.json and peers.png go (default: benchmarks/results)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="run the twcomms processes under py-spy and print their "
        "top functions (stacks kept in <output-dir>/profiles/); "
        "writes no JSON or chart",
    )
    p.add_argument(
        "--child",
        nargs=4,
        metavar=("ROLE", "SYSTEM", "SCENARIO", "SPEC"),
        help=argparse.SUPPRESS,
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.child:
        role, system, scn, spec = args.child
        return _child(role, system, scn, json.loads(spec))
    settings = QUICK if args.quick else FULL
    if args.repeat is not None:
        settings = replace(settings, repeat=args.repeat)
    if args.scale_connections is not None:
        settings = replace(settings, e_connections=args.scale_connections)
    profile_dir = args.output_dir / "profiles" if args.profile else None
    run = run_benchmark(
        settings,
        scenarios=args.scenarios,
        systems=args.systems,
        output_dir=None if args.profile else args.output_dir,
        profile_dir=profile_dir,
        argv=argv,
        jobs=args.jobs,
    )
    return 0 if not any(c["status"] == "error" for c in run["cells"]) else 1


if __name__ == "__main__":
    sys.exit(main())
