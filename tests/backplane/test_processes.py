"""
Hubs as separate processes (C{twcomms serve --backplane}) on one real
Redis act as one: a message from a raw client of hub A is relayed to the
clients of hub B as to A's own (hub mode), and a hub killed with SIGKILL
stops counting in the cluster within its presence TTL.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.redis import RedisServer, redis_command
from harness.sockets import free_port, raw_connect, recv_json, send_json
from tests.procs import TWCOMMS, Hub, hub

pytestmark = pytest.mark.blocking  # subprocesses and sockets: off the reactor


def serve(port: int, redis: RedisServer, hub_name: str, *extra: str) -> list[str]:
    return [
        TWCOMMS,
        "serve",
        "--port",
        str(port),
        "--interface",
        "127.0.0.1",
        "--backplane",
        redis.url,
        "--hub",
        hub_name,
        *extra,
    ]


@pytest.fixture
def two_hubs(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[Hub, Hub]]:
    name = "p" + os.urandom(4).hex()
    extra = ["--presence-ttl", "1", "--stats-interval", "0.3"]
    port_a, port_b = free_port(), free_port()
    with (
        hub(serve(port_a, redis_server, name, *extra), port_a, cwd=tmp_path) as a,
        hub(serve(port_b, redis_server, name, *extra), port_b, cwd=tmp_path) as b,
    ):
        # Listening comes first; the backplane joins once Redis answers.
        a.wait_line(r"backplane: node \w+ of hub")
        b.wait_line(r"backplane: node \w+ of hub")
        yield a, b


def test_hub_mode_relays_across_processes(two_hubs: tuple[Hub, Hub]) -> None:
    a, b = two_hubs
    with (
        raw_connect(a.port) as on_a,
        raw_connect(b.port) as on_b1,
        raw_connect(b.port) as on_b2,
    ):
        for sock, server in ((on_a, a), (on_b1, b), (on_b2, b)):
            server.wait_client(sock)
        for n in range(20):
            send_json(on_a, {"from": "a", "n": n})
        send_json(on_b1, {"from": "b1"})
        from_a = [{"from": "a", "n": n} for n in range(20)]
        # Senders are not ordered among themselves; each sender's messages
        # are, on every node.
        got_b1 = [recv_json(on_b1) for _ in range(20)]
        assert got_b1 == from_a
        got_b2 = [recv_json(on_b2) for _ in range(21)]
        assert [m for m in got_b2 if m["from"] == "a"] == from_a
        assert {"from": "b1"} in got_b2
        assert recv_json(on_a) == {"from": "b1"}  # crossed back to A


def test_a_killed_hub_leaves_the_cluster_within_its_presence_ttl(
    two_hubs: tuple[Hub, Hub], redis_server: RedisServer
) -> None:
    a, b = two_hubs
    with raw_connect(b.port) as on_b:
        b.wait_client(on_b)
        start = len(a.lines)
        a.wait_line(r"cluster of 2 nodes, 1 clients", start=start)
        os.kill(b.pid, signal.SIGKILL)
        start = len(a.lines)
        # presence_ttl is 1 s, the stats line every 0.3 s.
        a.wait_line(r"cluster of 1 nodes, 0 clients", timeout=5.0, start=start)
        # And A sweeps the dead node out of Redis within another presence
        # TTL: its entry in the nodes set, its client in the owner hash.
        name = a.argv[a.argv.index("--hub") + 1]
        deadline = time.monotonic() + 5.0
        while True:
            nodes = redis_command(
                redis_server.port, "SMEMBERS", f"twcomms:{name}:nodes"
            )
            owners = redis_command(redis_server.port, "HLEN", f"twcomms:{name}:owner")
            if len(nodes) == 1 and owners == 0:
                break
            assert time.monotonic() < deadline, (nodes, owners)
            time.sleep(0.1)
