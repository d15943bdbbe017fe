"""
The threaded API on a backplane: two C{Server}s given the same
C{backplane=} URL and C{hub=} act as one -- a broadcast on either reaches
the clients of both, and C{sendTo} by id reaches a client of the other.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from typing import Any

import pytest

from harness.redis import RedisServer
from twcomms import Client, ClientGoneError, ConnectedClient, Server

pytestmark = pytest.mark.blocking  # the threaded API blocks: off the reactor

WAIT = 15.0


def get(q: queue.Queue[Any]) -> Any:
    return q.get(timeout=WAIT)


@pytest.fixture
def made() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        if isinstance(thing, Server):
            thing.stop(timeout=WAIT)
        else:
            thing.close(timeout=WAIT)


def test_two_threaded_servers_act_as_one(
    redis_server: RedisServer, made: list[Any]
) -> None:
    name = "th" + os.urandom(4).hex()
    servers = []
    for _ in range(2):
        server = Server(
            "127.0.0.1",
            0,
            backplane=redis_server.url,
            hub=name,
            keep_process_alive=False,
        )
        server.start(timeout=WAIT)
        made.append(server)
        servers.append(server)
    a, b = servers
    on_b: queue.Queue[ConnectedClient] = queue.Queue()
    b.add_onconnect_callback(on_b.put)
    inboxes = []
    for server in (a, b):
        inbox: queue.Queue[Any] = queue.Queue()
        client = Client("127.0.0.1", server.port, keep_process_alive=False)
        client.add_onmessage_callback(inbox.put)
        client.connect(timeout=WAIT)
        made.append(client)
        inboxes.append(inbox)
    b_client = get(on_b)
    a.broadcast({"from": "a"})
    assert get(inboxes[0]) == {"from": "a"}
    assert get(inboxes[1]) == {"from": "a"}
    a.sendTo({"just": "b's client"}, b_client.id)
    assert get(inboxes[1]) == {"just": "b's client"}
    with pytest.raises(ClientGoneError):
        a.sendTo({"to": "nobody"}, "f" * 32)
    assert inboxes[0].empty()


def test_the_two_hubs_example(redis_server: RedisServer) -> None:
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "two_hubs.py"
    result = subprocess.run(
        [sys.executable, str(example), redis_server.url],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "first hub's client got: {'hello': 'everyone'}",
        "second hub's client got: {'hello': 'everyone'}",
        "second hub's client got: {'just': 'you'}",
    ]
