"""
A node reads what other nodes publish at the pace of its own healthy
clients, as a broadcasting loop does (issue 14): a client of node B that
stops reading holds B's reading of Redis back -- the rest waits in Redis,
not in B's memory -- until B drops it as stalled; B's healthy client gets
everything, in order.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor, threads
from twisted.internet.task import LoopingCall

from harness.redis import RedisServer
from tests.backplane.test_nodes import (  # noqa: F401 (fixtures)
    bounded,
    connect,
    hub_name,
    nodes,
    start_node,
)
from twcomms.backplane import RedisBackplane
from twcomms.server import CommsServerFactory

KiB = 1024
MiB = 1024 * KiB


def _stuck_reader(port: int, connected: threading.Event, done: threading.Event) -> None:
    # Connects and never reads (a small receive buffer: the queue builds
    # up in the server soon), until the server closes it or the test ends.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KiB)
    sock.connect(("127.0.0.1", port))
    connected.set()
    done.wait(60)
    sock.close()


@pytest_twisted.inlineCallbacks
def test_a_node_reads_redis_at_its_healthy_clients_pace(
    redis_server: RedisServer,
    hub_name: str,  # noqa: F811
    nodes: list[Any],  # noqa: F811
) -> Any:
    hub = hub_name
    a, _ = yield start_node(nodes, redis_server.url, hub, messageDataType="binary")
    backplane = RedisBackplane(
        redis_server.url,
        hub=hub,
        drain_high_water=512 * KiB,
        drain_low_water=128 * KiB,
    )
    b = CommsServerFactory(
        backplane=backplane, messageDataType="binary", stall_timeout=2.0
    )
    joined: defer.DeferredQueue[Any] = defer.DeferredQueue()
    b.on_connect.append(joined.put)
    port_b = (yield bounded(b.listen(("127.0.0.1", 0)))).getHost().port
    nodes.append(b)
    _, healthy = yield connect(nodes, port_b, messageDataType="binary")
    stuck_in = threading.Event()
    done = threading.Event()
    stuck = threading.Thread(target=_stuck_reader, args=(port_b, stuck_in, done))
    stuck.start()
    try:
        yield bounded(joined.get())  # the healthy one
        yield bounded(joined.get())  # the stuck one
        peak = [0]

        def sample() -> None:
            queued = [h.protocol.writer.queued for h in b.clients if h.protocol]
            peak[0] = max([peak[0], *queued])

        sampler = LoopingCall(sample)
        sampler.clock = reactor
        sampler.start(0.005)
        count = 400  # 400 x 64 KiB: 25 MiB that B's stuck client never takes
        body = b"." * (64 * KiB - 4)
        for i in range(count):
            a.broadcast(i.to_bytes(4, "big") + body)
        got = yield healthy.wait(count)
        sampler.stop()
        assert [int.from_bytes(m[:4], "big") for m in got] == list(range(count))
        assert len(b.clients) == 1  # the stuck one was dropped as stalled
        stats = backplane.stats()
        assert stats["paced"] >= 1 and stats["missed"] == 0
        # Held to about the high-water mark plus one read (4 MiB), not the
        # 25 MiB the other node published.
        assert peak[0] < 8 * MiB, peak[0]
    finally:
        done.set()
        yield threads.deferToThread(stuck.join, 30)
