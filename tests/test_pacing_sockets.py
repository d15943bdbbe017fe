"""
Broadcast pacing over real loopback sockets, on the Twisted API and in
hub mode: a producer that waits on C{whenDrained()} broadcasts 1 GiB to
three clients with flat memory; the hub stops reading a raw-socket
producer while a recipient is slow, and the healthy recipients lose
nothing.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import tracemalloc
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor, threads

from harness.sockets import raw_connect
from harness.wire import frame
from twcomms import ClientHandle, CommsClientFactory, CommsServerFactory
from twcomms.connection import PauseReason
from twcomms.ops.service import Hub

MiB = 1024 * 1024


class Counter:
    """
    Counts and checks what one client receives; fires when all is in.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.bytes = 0
        self.bad = 0
        self.done: defer.Deferred[None] = defer.Deferred()

    def __call__(self, client: Any, message: bytes) -> None:
        if message[:4] != self.count.to_bytes(4, "little"):
            self.bad += 1
        self.count += 1
        self.bytes += len(message)
        if self.count == self.expected:
            self.done.callback(None)


@pytest_twisted.ensureDeferred
async def test_a_producer_waiting_on_when_drained_keeps_memory_flat() -> None:
    total = 1024  # 1 MiB messages: 1 GiB to each of three clients
    server = CommsServerFactory("binary", drain_high_water=4 * MiB, drain_low_water=MiB)
    port = (await server.listen("tcp:0:interface=127.0.0.1")).getHost().port
    counters = [Counter(total) for _ in range(3)]
    clients = []
    try:
        for counter in counters:
            client = CommsClientFactory("binary", on_message=counter)
            client.connectTCP("127.0.0.1", port)
            clients.append(client)
            await client.whenConnected()
        body = b"." * (MiB - 4)
        tracemalloc.start()
        start = time.monotonic()
        waited = 0
        for i in range(total):
            server.broadcast(i.to_bytes(4, "little") + body)
            drained = server.whenDrained()
            if not drained.called:
                waited += 1
            await drained
        await defer.gatherResults([c.done for c in counters])
        seconds = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert [(c.count, c.bad, c.bytes) for c in counters] == [
            (total, 0, total * MiB)
        ] * 3
        assert waited > 0  # the producer did wait for its clients
        # Three clients, each at most 4 MiB (high water) and a message or
        # two behind, plus each client's receive buffer: flat, while 3 GiB
        # went out.
        assert peak < 40 * MiB, peak
        print(
            f"1 GiB to 3 clients in {seconds:.1f} s; traced peak {peak / MiB:.1f} MiB"
        )
    finally:
        for client in clients:
            await client.stop()
        await server.stop()


def slow_reader(port: int, rate: float, done: threading.Event, out: list[Any]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    got = 0
    try:
        while not done.is_set():
            chunk = sock.recv(64 * 1024)
            if not chunk:
                break
            got += len(chunk)
            time.sleep(len(chunk) / rate)  # the throttle (not a wait)
    except OSError as e:
        out.append(e)
    finally:
        out.append(got)
        sock.close()


@pytest_twisted.ensureDeferred
async def test_the_hub_paces_a_raw_producer_to_its_slow_recipient() -> None:
    server = CommsServerFactory(
        "binary", drain_high_water=2 * MiB, drain_low_water=MiB // 2, stall_timeout=5
    )
    Hub(server, "broadcast")
    connected: defer.DeferredQueue[ClientHandle] = defer.DeferredQueue()
    server.on_connect.append(connected.put)
    port = (await server.listen("tcp:0:interface=127.0.0.1")).getHost().port
    count = 48
    healthy = Counter(count)
    reader = CommsClientFactory("binary", on_message=healthy)
    reader.connectTCP("127.0.0.1", port)
    await reader.whenConnected()
    await connected.get()
    done = threading.Event()
    slow_out: list[Any] = []
    slow = threading.Thread(target=slow_reader, args=(port, 8 * MiB, done, slow_out))
    slow.start()
    await connected.get()
    producer_sock = await threads.deferToThread(raw_connect, port, 30)
    producer = await connected.get()
    paused: list[str] = []
    real_pause = producer.protocol.pauseReading  # type: ignore[union-attr]

    def record(reason: str) -> None:
        paused.append(reason)
        real_pause(reason)

    producer.protocol.pauseReading = record  # type: ignore[union-attr]
    body = b"." * (MiB - 4)
    data = b"".join(frame(i.to_bytes(4, "little") + body) for i in range(count))
    try:
        # The producer sends as fast as it can: 48 MiB.
        sent = threads.deferToThread(producer_sock.sendall, data)
        await sent
        await healthy.done.addTimeout(60, reactor)
        assert (healthy.count, healthy.bad) == (count, 0)
        assert PauseReason.PACING in paused  # TCP slowed the producer
        assert producer.connected
    finally:
        done.set()
        producer_sock.close()
        await threads.deferToThread(slow.join, 30)
        await reader.stop()
        await server.stop()
    digest = hashlib.sha1(data).hexdigest()[:8]
    print(f"hub relayed {count} MiB ({digest}); producer paused {len(paused)} times")


def test_the_paced_broadcast_example_runs() -> None:
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "paced_broadcast.py"
    done = subprocess.run(
        [
            sys.executable,
            str(example),
            "--port",
            "0",
            "--frames",
            "5",
            "--clients",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "sent 5 frames to 0 clients" in done.stdout
