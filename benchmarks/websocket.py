"""
Benchmark: the hub's WebSocket gateway (C{twcomms serve --web}) beside
the same hub's TCP clients, and against an anchor, autobahn's own echo
server on Twisted, in one run; the C{websockets} library's echo server
(asyncio) is reported beside them.

The issue's goal: the gateway's messages/s at least 0.8x the autobahn
echo server's.

Systems (each server in its own process, the client in another, all on
127.0.0.1, ports chosen by the kernel):

  - C{gateway}: C{twcomms serve --mode echo --type T --listen
    tcp:0:interface=127.0.0.1 --web tcp:0:interface=127.0.0.1}, run by
    L{twcomms.ops.cli.main} exactly as the command runs it; the client is a
    WebSocket client of C{/ws}. Echo mode: each message is decoded by the
    hub's codec and sent back to its client.
  - C{tcp}: the same hub (both listeners up), the client a plain TCP
    client (4-byte little-endian length header, then the payload).
  - C{autobahn} (the anchor): a C{WebSocketServerProtocol} whose
    C{onMessage} is C{self.sendMessage(payload, isBinary)}, its
    C{WebSocketServerFactory()} with every setting at its default, on
    C{reactor.listenTCP(0, factory, interface="127.0.0.1")}: the reactor
    C{twcomms serve} runs on (Twisted's default, epoll on Linux), the same
    autobahn (its NVX C extensions for masking and UTF-8 validation).
  - C{websockets}: C{websockets.asyncio.server.serve(echo, "127.0.0.1",
    0)}, C{async for m in ws: await ws.send(m)}, every setting at its
    default, on C{asyncio.run} (the default event loop).

The client (L{_client}) is one program for every system: a plain socket
and a loop of its own, no WebSocket library, so it costs as little as a
Python client can and the same for every server. It precomputes its
frames (masked with a random key each, as RFC 6455 requires of a client;
a TCP client's with their length header), does the WebSocket opening
handshake by hand (no extension offered: no compression anywhere), and
checks each reply: its opcode, its length and its first 64 bytes against
the message it answers, in order. It answers a ping with a pong.

Scenarios (cells are a scenario and a system; each figure is a median over
the rounds):

  - C{small}: ~100-byte json messages (C{{"i": k, "payload": 76 x "x"}}),
    text messages over WebSocket (a C{json} hub).
  - C{large}: 64 KiB binary messages (a C{binary} hub).

In each cell, one connection: first the round trips one at a time
(after a warm-up; the client's C{time.perf_counter()} around each, p50
and p99), then the throughput: C{messages} echoes with C{window} of them
in flight (the client sends as many as it has had answered), messages/s
from the first send to the last reply. The server's CPU over the
throughput phase is read from C{/proc/PID/stat}, the client's is its own
C{time.process_time()}; C{cores} is CPU seconds over the phase's seconds
(a server near 1.0 is the bottleneck; the client must stay under it),
C{us/msg} the server's CPU per echo. The machine's own busy time
(C{/proc/stat}) less these two is shown as C{others}: another program's
load on the 2 cores (a concurrent test run) shows there.

Rounds are interleaved: each round runs every cell once, a scenario's
cells next to each other, rotated every round, so a slow spell of the
machine falls on all of them alike. Ratios are against the autobahn cell
of the same scenario (C{x autobahn}: the ratio of medians; C{paired}: the
median over rounds of each round's ratio), and TCP against WebSocket
through the same hub.

Run from the repository root (needs the C{bench} extra for C{websockets},
and the C{web} extra)::

    python -m benchmarks.websocket               # 5 rounds, ~2 minutes
    python -m benchmarks.websocket --quick       # tiny sizes, 1 round, ~5 s
    python -m benchmarks.websocket --rounds 3 --scenarios small
    python -m benchmarks.websocket --scenarios small --rounds 1 --profile
    python -m benchmarks.websocket --hub-args "--app mymodule:install"

It writes C{benchmarks/results/websocket.json} (C{--quick}:
C{websocket-quick.json}; C{--output-dir} to choose where). C{--profile}
runs every server under C{cProfile} during the throughput phase only (the
parent signals it: SIGUSR1 starts, SIGUSR2 writes the profile), prints
each server's functions with the most time in themselves, and writes no
JSON: profiled figures are slower. C{--hub-args} passes more arguments
to the hub's C{twcomms serve}: an C{--app} that patches a class tries a
change to the gateway against the same anchor, without editing twcomms.

From a test (it blocks for a few seconds and uses only subprocesses)::

    from benchmarks.websocket import problems, run_quick

    run = run_quick(tmp_path)          # or run_quick() to write nothing
    assert not problems(run)

Linux only (C{/proc}), as L{benchmarks.peers}.

(Over 500 lines: one benchmark in one file -- its processes (the client,
the two echo servers, the hub's wrapper), its cells and rounds, the
figures, tables and goal, the profiles, and its command line.)
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import datetime
import hashlib
import json
import os
import re
import select
import shlex
import signal
import socket
import statistics
import struct
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import backplane
from benchmarks.backplane import machine_cores, machine_cpu
from benchmarks.extensions import profile_top
from benchmarks.peers.cli import round_arguments
from benchmarks.peers.common import emit, read_go, rtt_result
from benchmarks.peers.run import environment
from benchmarks.peers.runner import CellError, Cutoff, Proc
from benchmarks.peers.settings import RESULTS
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
from harness.procs import watchdog

MODULE = "benchmarks.websocket"
ROUNDS = 5
QUICK_ROUNDS = 1
SCENARIOS = ("small", "large")
#: The anchor first: every ratio is against it.
SYSTEMS = ("autobahn", "gateway", "tcp", "websockets")
LABEL = {
    "gateway": "twcomms gateway (WebSocket)",
    "tcp": "twcomms hub (TCP)",
    "autobahn": "autobahn echo (anchor)",
    "websockets": "websockets echo (asyncio)",
}
#: The issue's goal: the gateway's msgs/s at least this many times the
#: autobahn echo server's.
GOAL_RATIO = 0.8
#: Bytes of each reply compared with the message it answers.
CHECKED = 64
VERSIONS = ("autobahn", "txaio", "websockets", "twisted", "twcomms")


@dataclass(frozen=True)
class Sizes:
    """
    What one run does: per scenario, C{messages} echoes with C{window} in
    flight, C{trips} round trips after C{warmup}; C{bound}: seconds one
    cell may take, its processes' start included.
    """

    small_messages: int
    small_window: int
    small_trips: int
    small_warmup: int
    large_messages: int
    large_window: int
    large_trips: int
    large_warmup: int
    bound: float
    quick: bool

    def of(self, scenario: str) -> dict[str, int]:
        return {
            name: getattr(self, f"{scenario}_{name}")
            for name in ("messages", "window", "trips", "warmup")
        }


FULL = Sizes(
    small_messages=100_000,
    small_window=64,
    small_trips=5_000,
    small_warmup=500,
    large_messages=5_000,
    large_window=8,
    large_trips=1_000,
    large_warmup=100,
    bound=120.0,
    quick=False,
)
QUICK = Sizes(
    small_messages=2_000,
    small_window=16,
    small_trips=200,
    small_warmup=20,
    large_messages=100,
    large_window=4,
    large_trips=50,
    large_warmup=5,
    bound=60.0,
    quick=True,
)

#: scenario -> (hub data type, message size in bytes, distinct messages).
KINDS = {"small": ("json", 100, 256), "large": ("binary", 64 * 1024, 8)}


# -- the client: one program for every server ----------------------------------

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_LEN = struct.Struct("<I")
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def payloads(scenario: str) -> list[bytes]:
    """
    The distinct messages of C{scenario}: ~100-byte json texts, or 64 KiB
    binaries whose first 8 bytes are their index.
    """
    kind, size, distinct = KINDS[scenario]
    if kind == "json":
        return [
            json.dumps({"i": k, "payload": "x" * 76}).encode() for k in range(distinct)
        ]
    body = bytes(range(256)) * (size // 256)
    return [k.to_bytes(8, "little") + body[8:] for k in range(distinct)]


def _mask(data: bytes, key: bytes) -> bytes:
    if not data:
        return data
    n = len(data)
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(keys, "big")).to_bytes(
        n, "big"
    )


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """
    One final, masked client frame (RFC 6455 section 5.2).
    """
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 0x10000:
        head = bytes((0x80 | opcode, 0x80 | 126)) + _U16.pack(n)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + _U64.pack(n)
    key = os.urandom(4)
    return head + key + _mask(payload, key)


class Reader:
    """
    Counts the replies in the bytes a client reads, checking each against
    the message it answers (opcode, length, first L{CHECKED} bytes, in
    order); over WebSocket it answers pings and refuses anything else.
    """

    def __init__(self, sock: socket.socket, ws: bool, opcode: int, sent: list[bytes]):
        self.sock = sock
        self.ws = ws
        self.first = 0x80 | opcode
        self.prefixes = [p[:CHECKED] for p in sent]
        self.lengths = [len(p) for p in sent]
        self.buf = bytearray()
        self.got = 0

    def feed(self, data: bytes) -> int:
        """
        Take C{data}; return how many replies it completed.
        """
        buf = self.buf
        buf += data
        size = len(buf)
        off = 0
        got = self.got
        prefixes, lengths = self.prefixes, self.lengths
        distinct = len(prefixes)
        if self.ws:
            first = self.first
            while size - off >= 2:
                b0 = buf[off]
                n = buf[off + 1]
                head = 2
                if n >= 126:
                    if n & 0x80:
                        raise CellError("the server masked a frame")
                    if n == 126:
                        if size - off < 4:
                            break
                        (n,) = _U16.unpack_from(buf, off + 2)
                        head = 4
                    else:
                        if size - off < 10:
                            break
                        (n,) = _U64.unpack_from(buf, off + 2)
                        head = 10
                start = off + head
                end = start + n
                if end > size:
                    break
                if b0 == first:
                    k = got % distinct
                    if n != lengths[k] or buf[start : start + CHECKED] != prefixes[k]:
                        raise CellError(f"reply {got} is not the message sent")
                    got += 1
                else:
                    self._control(b0, bytes(buf[start:end]))
                off = end
        else:
            while size - off >= 4:
                (n,) = _LEN.unpack_from(buf, off)
                start = off + 4
                end = start + n
                if end > size:
                    break
                k = got % distinct
                if n != lengths[k] or buf[start : start + CHECKED] != prefixes[k]:
                    raise CellError(f"reply {got} is not the message sent")
                got += 1
                off = end
        if off:
            del buf[:off]
        new = got - self.got
        self.got = got
        return new

    def _control(self, b0: int, body: bytes) -> None:
        opcode = b0 & 0x0F
        if opcode == 0x9:  # ping
            self.sock.sendall(ws_frame(0xA, body))
        elif opcode == 0xA:  # pong
            pass
        elif opcode == 0x8:
            code = _U16.unpack_from(body)[0] if len(body) >= 2 else None
            raise CellError(f"the server closed the connection: {code} {body[2:]!r}")
        else:
            raise CellError(f"unexpected frame: first byte {b0:#x}")


def _handshake(sock: socket.socket, port: int, path: str) -> bytes:
    """
    The WebSocket opening handshake (no extension offered); the bytes read
    past the response.
    """
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET " + path.encode() + b" HTTP/1.1\r\n"
        b"Host: 127.0.0.1:" + str(port).encode() + b"\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            raise CellError(f"handshake: connection closed after {data!r}")
        data += more
        if len(data) > 65536:
            raise CellError("handshake: no end of the response")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if b" 101 " not in lines[0] + b" ":
        raise CellError(f"handshake refused: {lines[0]!r}")
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    fields = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in lines[1:])
    }
    if fields.get(b"sec-websocket-accept") != accept:
        raise CellError("handshake: wrong Sec-WebSocket-Accept")
    if fields.get(b"sec-websocket-extensions"):
        raise CellError("handshake: the server chose an extension")
    return rest


def _latency(
    sock: socket.socket, reader: Reader, frames: list[bytes], spec: dict[str, Any]
) -> list[float]:
    rtts = []
    warmup = spec["warmup"]
    deadline = time.monotonic() + spec["bound"]
    clock = time.perf_counter
    recv = sock.recv
    for i in range(warmup + spec["trips"]):
        frame = frames[i % len(frames)]
        t0 = clock()
        sock.sendall(frame)
        while not reader.feed(_recv(recv, deadline)):
            pass
        t1 = clock()
        if i >= warmup:
            rtts.append(t1 - t0)
    return rtts


def _recv(recv: Any, deadline: float) -> bytes:
    """
    One read (blocking, at most a second at a time: SO_RCVTIMEO), bounded
    by C{deadline}.
    """
    while True:
        try:
            data: bytes = recv(1 << 18)
        except (BlockingIOError, TimeoutError):
            if time.monotonic() > deadline:
                raise Cutoff("time bound") from None
            continue
        if not data:
            raise CellError("the server closed the connection")
        return data


def _throughput(
    sock: socket.socket, reader: Reader, frames: list[bytes], spec: dict[str, Any]
) -> tuple[float, float]:
    """
    C{messages} echoes with C{window} in flight: each reply lets one more
    message go. The socket stays blocking for reads (the common case: all
    sent, wait for replies); a send that cannot finish at once waits in
    C{out}, and then the loop waits for both directions.
    """
    total, window = spec["messages"], spec["window"]
    deadline = time.monotonic() + spec["bound"]
    distinct = len(frames)
    out = bytearray()
    sent = 0
    recv = sock.recv
    send = sock.send
    fileno = sock.fileno()

    def queue(k: int) -> None:
        nonlocal sent
        for _ in range(k):
            out.extend(frames[sent % distinct])
            sent += 1

    t0 = time.perf_counter()
    queue(min(window, total))
    got = 0
    while got < total:
        if out:
            try:
                done = send(out, socket.MSG_DONTWAIT)
            except BlockingIOError:
                done = 0
            del out[:done]
        if out:
            readable, _, _ = select.select([fileno], [fileno], [], 1.0)
            if not readable:
                if time.monotonic() > deadline:
                    raise Cutoff("time bound")
                continue
        new = reader.feed(_recv(recv, deadline))
        got += new
        if new and sent < total:
            queue(min(new, total - sent))
    t1 = time.perf_counter()
    return t0, t1


def _client(spec: dict[str, Any]) -> None:
    """
    One client: connect (over WebSocket, the handshake), round trips, then
    (on the parent's C{go}) the throughput; events C{connected},
    C{latency}, C{result}.
    """
    scenario = spec["scenario"]
    ws = spec["proto"] == "ws"
    kind = KINDS[scenario][0]
    sent = payloads(scenario)
    opcode = 0x1 if kind == "json" else 0x2
    if ws:
        frames = [ws_frame(opcode, p) for p in sent]
    else:
        frames = [_LEN.pack(len(p)) + p for p in sent]
    go = read_go()
    sock = socket.create_connection(("127.0.0.1", go["port"]), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = Reader(sock, ws, opcode, sent)
    rest = _handshake(sock, go["port"], go.get("path", "/")) if ws else b""
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 1, 0))
    if rest and reader.feed(rest):
        raise CellError("a reply before any message")
    emit("connected")
    rtts = _latency(sock, reader, frames, spec)
    emit("latency", **rtt_result(rtts))
    read_go()  # the parent has read the server's CPU time
    reader.got = 0
    cpu0 = time.process_time()
    t0, t1 = _throughput(sock, reader, frames, spec)
    cpu = time.process_time() - cpu0
    emit(
        "result",
        messages=spec["messages"],
        t_first=t0,
        t_last=t1,
        msgs_per_s=spec["messages"] / (t1 - t0),
        cpu_s=cpu,
    )
    sock.close()


# -- the servers ---------------------------------------------------------------

# (cProfile.Profile, path) while a server is profiled.
_profile: dict[str, Any] = {}


def _profiling(path: str | None) -> None:
    """
    With C{path}: SIGUSR1 starts profiling this process's main thread (its
    event loop), SIGUSR2 stops and writes the profile to C{path}.
    """
    if not path:
        return

    def start(*_: Any) -> None:
        profiler = cProfile.Profile()
        _profile["on"] = profiler
        profiler.enable()

    def stop(*_: Any) -> None:
        profiler = _profile.pop("on", None)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(path)
        # To the real stdout: twcomms serve sends sys.stdout to its log.
        os.write(1, json.dumps({"ev": "profiled"}).encode() + b"\n")

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


def _hub(spec: dict[str, Any]) -> int:
    """
    C{twcomms serve} with C{spec["argv"]}, as the command runs it.
    """
    from twcomms.ops.cli import main

    return main(["serve", *spec["argv"]])


def _autobahn(spec: dict[str, Any]) -> int:
    """
    The anchor: autobahn's echo server on Twisted, at its defaults.
    """
    from autobahn.twisted.websocket import (
        WebSocketServerFactory,
        WebSocketServerProtocol,
    )
    from twisted.internet import reactor

    class Echo(WebSocketServerProtocol):  # type: ignore[misc]
        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            self.sendMessage(payload, isBinary)

    factory = WebSocketServerFactory()
    factory.protocol = Echo
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    emit("ready", port=port.getHost().port, reactor=type(reactor).__name__)
    reactor.run(installSignalHandlers=False)
    return 0


def _websockets(spec: dict[str, Any]) -> int:
    """
    The websockets library's echo server, asyncio, at its defaults.
    """
    import asyncio

    from websockets.asyncio.server import serve

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            emit("ready", port=port)
            await asyncio.Future()

    asyncio.run(main())
    return 0


def run_child(role: str, spec: dict[str, Any]) -> int:
    """
    One process of a cell, under a watchdog; a server profiled on signal
    when C{spec["profile"]} names a file.
    """
    watchdog(spec["bound"] + 10)
    try:
        if role == "client":
            _client(spec)
            code = 0
        else:
            servers = {"hub": _hub, "autobahn": _autobahn, "websockets": _websockets}
            _profiling(spec.get("profile"))
            code = servers[role](spec)
    except BaseException as e:  # report anything, then leave at once
        emit("error", error=f"{role}: {type(e).__name__}: {e}")
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# -- the cells -----------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """
    One measured configuration: C{scenario} (C{small} or C{large}) and
    C{system} (L{SYSTEMS}).
    """

    scenario: str
    system: str

    @property
    def key(self) -> str:
        return f"{self.scenario}/{self.system}"


CELLS = tuple(Cell(scn, system) for scn in SCENARIOS for system in SYSTEMS)
CELL = {c.key: c for c in CELLS}


def select_cells(scenarios: list[str] | tuple[str, ...]) -> list[Cell]:
    return [c for c in CELLS if c.scenario in scenarios]


def round_order(cells: list[Cell], round_index: int) -> list[Cell]:
    """
    Scenario by scenario, each scenario's cells rotated by the round (each
    system in turn first).
    """
    order: list[Cell] = []
    for scn in SCENARIOS:
        members = [c for c in cells if c.scenario == scn]
        if members:
            k = round_index % len(members)
            order.extend(members[k:] + members[:k])
    return order


class Procs(backplane.Procs):
    """
    L{benchmarks.backplane}'s process group (bounded waits, events by
    kind), its processes started from this module.
    """

    def start(self, name: str, role: str, spec: dict[str, Any]) -> None:
        cmd = [sys.executable, "-m", MODULE, "--child", role, json.dumps(spec)]
        self.procs[name] = Proc(name, cmd, self.events)

    def pid(self, name: str) -> int:
        return self.procs[name].proc.pid


#: Where the hub's log says its listeners are.
_LISTENING = re.compile(r"(CommsServerFactory|Site) starting on (\d+)")


def _hub_ports(procs: Procs) -> dict[str, int]:
    """
    The hub's TCP and web ports, from its log, within the cell's bound.
    """
    proc = procs.procs["server"]
    while True:
        found = {}
        for line in list(proc.stderr):
            m = _LISTENING.search(line)
            if m:
                found["tcp" if m.group(1) == "CommsServerFactory" else "web"] = int(
                    m.group(2)
                )
        if len(found) == 2:
            return found
        if proc.proc.poll() is not None:
            raise CellError(f"the hub exited: {proc.tail()}")
        if time.monotonic() > procs.deadline:
            raise Cutoff("the hub did not listen in time")
        time.sleep(0.02)


def proc_cpu(pid: int) -> float:
    """
    CPU seconds process C{pid} has used so far, every thread's: their time
    on a CPU in nanoseconds (C{/proc/PID/task/TID/schedstat}), where
    C{/proc/PID/stat} counts clock ticks (10 ms: too coarse for a quick
    run's phases).
    """
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def _start_server(
    procs: Procs,
    cell: Cell,
    bound: float,
    profile: str | None,
    hub_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """
    The cell's server; where its client connects (C{port}, C{path}).
    """
    spec: dict[str, Any] = {"bound": bound, "profile": profile}
    if cell.system in ("gateway", "tcp"):
        argv = [
            "--mode",
            "echo",
            "--type",
            KINDS[cell.scenario][0],
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--web",
            "tcp:0:interface=127.0.0.1",
            *hub_args,
        ]
        procs.start("server", "hub", {**spec, "argv": argv})
        ports = _hub_ports(procs)
        if cell.system == "tcp":
            return {"port": ports["tcp"]}
        return {"port": ports["web"], "path": "/ws"}
    procs.start("server", cell.system, spec)
    (ready,) = procs.wait(("server", "ready"))
    return {"port": ready["port"], "path": "/ws"}


def run_cell_once(
    cell: Cell,
    sizes: Sizes,
    profile: Path | None = None,
    hub_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """
    Run C{cell} once within C{sizes.bound}: its server and its client,
    each in its own process, killed by pid when it ends. C{hub_args}: more
    arguments for the hub's C{twcomms serve}.
    """
    started = time.monotonic()
    procs = Procs(sizes.bound)
    try:
        client_spec = {
            "scenario": cell.scenario,
            "proto": "tcp" if cell.system == "tcp" else "ws",
            "bound": sizes.bound,
            **sizes.of(cell.scenario),
        }
        # The client builds its frames while the server starts.
        procs.start("client", "client", client_spec)
        go = _start_server(
            procs,
            cell,
            sizes.bound,
            None if profile is None else str(profile),
            hub_args,
        )
        procs.send("client", go)
        (latency,) = procs.wait(("client", "latency"))
        server = procs.pid("server")
        if profile is not None:
            os.kill(server, signal.SIGUSR1)
        cpu0 = proc_cpu(server)
        machine0 = machine_cpu()
        procs.send("client", {"cmd": "go"})
        (result,) = procs.wait(("client", "result"))
        machine1 = machine_cpu()
        server_cpu = proc_cpu(server) - cpu0
        if profile is not None:
            os.kill(server, signal.SIGUSR2)
            procs.wait(("server", "profiled"))
        window = result["t_last"] - result["t_first"]
        n = result["messages"]
        cores = machine_cores(machine0, machine1)
        out: dict[str, Any] = {
            "status": "ok",
            "msgs_per_s": result["msgs_per_s"],
            "messages": n,
            "window_s": window,
            **{k: v for k, v in latency.items() if k != "ev"},
            "server_us_per_msg": server_cpu / n * 1e6,
            "client_us_per_msg": result["cpu_s"] / n * 1e6,
            "cores": {
                "server": server_cpu / window,
                "client": result["cpu_s"] / window,
                **cores,
            },
        }
        c = out["cores"]
        c["others"] = max(c["machine"] - c["server"] - c["client"], 0.0)
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
    c = result["cores"]
    return (
        f"{result['msgs_per_s']:,.0f} msgs/s, p50 {result['p50_us']:.0f} us, "
        f"p99 {result['p99_us']:.0f} us; cores server {c['server']:.2f} client "
        f"{c['client']:.2f} others {c['others']:.2f} ({result['wall_s']} s)"
    )


# -- figures -------------------------------------------------------------------

#: figure -> (unit, higher is better).
FIGURES = {
    "msgs_per_s": ("msgs/s", True),
    "p50_us": ("p50 us", False),
    "p99_us": ("p99 us", False),
    "server_us_per_msg": ("server us/msg", False),
}


#: The figures every cell must produce (the CPU figures may be missing).
HEADLINE = ("msgs_per_s", "p50_us", "p99_us")


def _median(run: dict[str, Any], key: str, figure: str) -> float | None:
    found = values(run, key, figure)
    return statistics.median(found.values()) if found else None


def summarise(run: dict[str, Any]) -> list[dict[str, Any]]:
    """
    Per cell and figure: the median over rounds, its ratio to the autobahn
    cell's median (C{vs_autobahn}) and the median of the per-round ratios
    (C{paired}); for the TCP cell also against the gateway's (C{vs_ws}).
    """
    out = []
    for key in run["cells"]:
        cell = CELL[key]
        anchor = Cell(cell.scenario, "autobahn").key
        gateway = Cell(cell.scenario, "gateway").key
        for figure, (unit, higher) in FIGURES.items():
            against = compare(run, key, anchor, figure)
            row = {
                "cell": key,
                "scenario": cell.scenario,
                "system": cell.system,
                "figure": figure,
                "unit": unit,
                "higher_is_better": higher,
                "rounds": against["rounds"],
                "median": against["median"],
                "vs_autobahn": against["ratio"],
                "paired": against["paired"],
            }
            if cell.system == "tcp" and gateway in run["cells"]:
                vs_ws = compare(run, key, gateway, figure)
                row["vs_ws"] = vs_ws["ratio"]
                row["vs_ws_paired"] = vs_ws["paired"]
            out.append(row)
    return out


def _row(run: dict[str, Any], key: str, figure: str) -> dict[str, Any] | None:
    return next(
        (r for r in run["summary"] if r["cell"] == key and r["figure"] == figure),
        None,
    )


def goals(run: dict[str, Any]) -> list[dict[str, Any]]:
    """
    The issue's goal, per scenario: the gateway's msgs/s at least
    L{GOAL_RATIO} times the autobahn echo server's.
    """
    found = []
    for scn in run["scenarios"]:
        row = _row(run, Cell(scn, "gateway").key, "msgs_per_s")
        if row is None or Cell(scn, "autobahn").key not in run["cells"]:
            continue
        value = row["vs_autobahn"]
        found.append(
            {
                "scenario": scn,
                "ratio": value,
                "paired": row["paired"],
                "goal": GOAL_RATIO,
                "met": value is not None and value >= GOAL_RATIO,
            }
        )
    return found


# -- printing ------------------------------------------------------------------

_TITLE = {
    "small": "~100-byte json messages (text messages; a json hub)",
    "large": "64 KiB binary messages (binary messages; a binary hub)",
}


def _table(run: dict[str, Any], scn: str) -> list[str]:
    keys = [k for k in run["cells"] if CELL[k].scenario == scn]
    if not keys:
        return []
    s = run["settings"]
    lines = [
        "",
        f"{scn}: {_TITLE[scn]}, echoed; msgs/s: {s[f'{scn}_messages']:,} "
        f"with {s[f'{scn}_window']} in flight; round trip: "
        f"{s[f'{scn}_trips']:,} one at a time (after {s[f'{scn}_warmup']} "
        f"warm-up), microseconds",
        f"  {'system':<28} {'msgs/s':>8} {'x ab':>6} {'paired':>6} "
        f"{'p50 us':>7} {'x ab':>6} {'p99 us':>7} {'x ab':>6}  "
        f"{'us/msg':>6} {'x ab':>6} {'cores':>5} {'client':>6} {'others':>6}  "
        f"rounds (msgs/s)",
    ]
    for key in keys:
        cell = CELL[key]
        rate = _row(run, key, "msgs_per_s")
        p50 = _row(run, key, "p50_us")
        p99 = _row(run, key, "p99_us")
        cost = _row(run, key, "server_us_per_msg")
        assert rate and p50 and p99 and cost
        anchor = cell.system == "autobahn"

        def vs(row: dict[str, Any], paired: bool = False, anchor: bool = anchor) -> str:
            return "-" if anchor else ratio(row["paired" if paired else "vs_autobahn"])

        spread = " ".join(compact(v, "msgs/s") for v in rate["rounds"])
        bad = [r for r in run["rounds"] if r["cell"] == key and r["status"] != "ok"]
        if bad:
            spread += (
                "  ["
                + "; ".join(f"round {r['round'] + 1}: {one_line(r)}" for r in bad)[:160]
                + "]"
            )
        lines.append(
            f"  {LABEL[cell.system]:<28} {num(rate['median']):>8} {vs(rate):>6} "
            f"{vs(rate, True):>6} {num(p50['median'], 1):>7} {vs(p50):>6} "
            f"{num(p99['median'], 1):>7} {vs(p99):>6}  "
            f"{num(cost['median'], 1):>6} {vs(cost):>6} "
            f"{num(_median(run, key, 'cores.server'), 2):>5} "
            f"{num(_median(run, key, 'cores.client'), 2):>6} "
            f"{num(_median(run, key, 'cores.others'), 2):>6}  {spread}"
        )
    tcp = _row(run, Cell(scn, "tcp").key, "msgs_per_s")
    tcp50 = _row(run, Cell(scn, "tcp").key, "p50_us")
    if tcp and tcp50 and "vs_ws" in tcp:
        lines.append(
            f"  TCP / WebSocket, same hub: msgs/s {ratio(tcp['vs_ws'])} "
            f"(paired {ratio(tcp['vs_ws_paired'])}), p50 {ratio(tcp50['vs_ws'])} "
            f"(paired {ratio(tcp50['vs_ws_paired'])})"
        )
    return lines


def print_report(run: dict[str, Any]) -> list[str]:
    env = run["environment"]
    lines = [
        f"WebSocket gateway vs autobahn {env.get('autobahn')} echo (anchor) and "
        f"websockets {env.get('websockets')} echo, one run, {env['cpus']} cores, "
        f"{run['settings']['rounds']} interleaved rounds, {run['elapsed_s']:g} s"
        f"{' (quick sizes)' if run['settings']['quick'] else ''}; medians over "
        f"the rounds; 'x ab' = median / the autobahn echo's median, 'paired' = "
        f"median over rounds of that round's ratio; us/msg = the server's CPU "
        f"per echo; cores = the server's CPU / the throughput phase's time, "
        f"'client' the client's, 'others' the rest of the machine's",
    ]
    if run["settings"]["quick"]:
        lines.append(
            "NOTE: quick sizes: these figures only show that every cell runs; "
            "compare with a full run."
        )
    if run.get("profiled"):
        lines.append(
            "NOTE: profiled (cProfile in every server during the throughput "
            "phase): these figures are slower; only the profiles count."
        )
    for scn in run["scenarios"]:
        lines += _table(run, scn)
    if run["goals"]:
        lines += ["", f"Goal (issue): gateway msgs/s >= {GOAL_RATIO:g}x autobahn's:"]
        for g in run["goals"]:
            lines.append(
                f"  {g['scenario']:<6} {ratio(g['ratio'])} (paired "
                f"{ratio(g['paired'])}) -> {'MET' if g['met'] else 'NOT MET'}"
            )
    lines = [line.rstrip() for line in lines]
    for line in lines:
        print(line)
    return lines


def print_profiles(run: dict[str, Any], profile_dir: Path) -> None:
    print(
        "\nProfiles (cProfile of each server's event loop during the "
        "throughput phase, summed over the rounds; self% = in the function "
        "itself):"
    )
    for key in run["cells"]:
        stem = key.replace("/", "-")
        print(f"  {key} server:")
        for line in profile_top(sorted(profile_dir.glob(f"ws-{stem}-r*.prof"))):
            print(line)


# -- running -------------------------------------------------------------------


def run_benchmark(
    sizes: Sizes,
    rounds: int = ROUNDS,
    scenarios: list[str] | tuple[str, ...] = SCENARIOS,
    output_dir: Path | None = RESULTS,
    profile_dir: Path | None = None,
    argv: list[str] | None = None,
    verbose: bool = True,
    hub_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """
    Run every cell of C{scenarios} C{rounds} times, interleaved; print the
    tables and the goal, and (with C{output_dir}) write C{websocket.json}
    (C{websocket-quick.json} for quick sizes). Returns the run.
    C{hub_args}: more arguments for the hub's C{twcomms serve} (an
    C{--app} trying a change, say).
    """
    cells = select_cells(scenarios)
    run: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "command": [Path(sys.executable).name, "-m", MODULE, *(argv or [])],
        "settings": {**asdict(sizes), "rounds": rounds, "hub_args": list(hub_args)},
        "scenarios": [s for s in SCENARIOS if s in scenarios],
        "cells": [c.key for c in cells],
        "servers": {
            "gateway": "twcomms serve --mode echo --type T --listen "
            "tcp:0:interface=127.0.0.1 --web tcp:0:interface=127.0.0.1 (client: /ws)",
            "tcp": "the same hub (client: its TCP port)",
            "autobahn": "WebSocketServerProtocol.onMessage: "
            "self.sendMessage(payload, isBinary); WebSocketServerFactory() "
            "defaults; reactor.listenTCP on Twisted's default reactor",
            "websockets": "websockets.asyncio.server.serve(echo, '127.0.0.1', 0), "
            "defaults; async for m in ws: await ws.send(m); asyncio.run",
            "client": "raw socket, precomputed masked frames, no extension; "
            "replies checked (opcode, length, first 64 bytes, order)",
        },
        "environment": environment(*VERSIONS),
        "rounds": [],
    }
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        run["profiled"] = True

    def one(cell: Cell, r: int) -> dict[str, Any]:
        profile = None
        if profile_dir is not None:
            profile = profile_dir / f"ws-{cell.key.replace('/', '-')}-r{r}.prof"
        return run_cell_once(cell, sizes, profile, hub_args)

    interleave(
        run,
        rounds,
        lambda r: round_order(cells, r),
        one,
        one_line,
        verbose,
        tags=lambda cell: {"scenario": cell.scenario, "system": cell.system},
    )
    run["summary"] = summarise(run)
    run["goals"] = goals(run)
    if verbose:
        print()
        run["printed"] = print_report(run)
    if profile_dir is not None and verbose:
        print_profiles(run, profile_dir)
    write_run(run, output_dir, "websocket", sizes.quick, verbose)
    return run


def run_quick(output_dir: Path | str | None = None, **kwargs: Any) -> dict[str, Any]:
    """
    Every cell at tiny sizes, L{QUICK_ROUNDS} round (seconds); with
    C{output_dir}, also write C{websocket-quick.json} there. Keyword
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
    What is wrong with a run: a (cell, round) missing or not ok, or a
    figure without a median or a ratio. Empty when every figure was
    produced.
    """
    out = missing_rounds(run, one_line)
    for row in run.get("summary", []):
        if row["figure"] not in HEADLINE:
            continue
        if row["median"] is None or row["vs_autobahn"] is None:
            out.append(f"{row['cell']} {row['figure']}: no figure")
    return out


# -- the command line ----------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m " + MODULE,
        description=(
            "The hub's WebSocket gateway beside its TCP clients and against\n"
            "autobahn's echo server on Twisted (the anchor), with the\n"
            "websockets library's echo server beside them: echo msgs/s with a\n"
            "window in flight, round-trip p50/p99, server CPU per message;\n"
            "~100-byte json and 64 KiB binary messages; medians over\n"
            "interleaved rounds, ratios to the autobahn echo."
        ),
        epilog=(
            "examples:\n"
            f"  python -m {MODULE}\n"
            f"  python -m {MODULE} --quick\n"
            f"  python -m {MODULE} --rounds 3 --scenarios small\n"
            f"  python -m {MODULE} --scenarios small --rounds 1 --profile\n"
            "writes benchmarks/results/websocket.json "
            "(--quick: websocket-quick.json)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    round_arguments(
        p,
        scenarios=SCENARIOS,
        metavar="small,large",
        scenarios_help="default: both",
        stem="websocket",
        rounds=ROUNDS,
        quick_rounds=QUICK_ROUNDS,
        results=RESULTS,
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="run every server under cProfile during the throughput phase "
        "and print its top functions per cell (profiles kept in "
        "<output-dir>/profiles/); writes no JSON",
    )
    p.add_argument(
        "--hub-args",
        default="",
        metavar="ARGS",
        help="more arguments for the hub's twcomms serve, one string split "
        "like a shell's (e.g. '--app mymodule:install' to try a change)",
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
    profile_dir = args.output_dir / "profiles" if args.profile else None
    run = run_benchmark(
        sizes,
        rounds=rounds,
        scenarios=args.scenarios,
        output_dir=None if args.profile else args.output_dir,
        profile_dir=profile_dir,
        argv=argv,
        hub_args=tuple(shlex.split(args.hub_args)),
    )
    return 0 if not problems(run) else 1


if __name__ == "__main__":
    raise SystemExit(main())
