"""
Rooms on the Twisted API: the local registry passes the registry contract
(L{twcomms.testing.RegistryContract}); a turn's broadcasts, to rooms and
to all, still reach each client in one write, in order; rooms over real
sockets.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.trial.unittest import SynchronousTestCase

from twcomms import ClientHandle, CommsClientFactory, CommsServerFactory
from twcomms.server import LocalClientRegistry
from twcomms.testing import MemoryNetwork, Received, RegistryContract


class LocalRegistryContract(RegistryContract, SynchronousTestCase):
    def make_registry(self) -> LocalClientRegistry:
        return LocalClientRegistry()


def _writes(handle: ClientHandle) -> list[bytes]:
    transport = handle.protocol.transport  # type: ignore[union-attr]
    calls: list[bytes] = []
    real = transport.write

    def write(data: bytes) -> None:
        calls.append(data)
        real(data)

    transport.write = write
    return calls


def test_a_turns_room_and_all_broadcasts_are_one_write_per_client() -> None:
    net = MemoryNetwork()
    server = CommsServerFactory("json", reactor=net.reactor)
    server.listen(6000)
    inboxes: list[list[Any]] = []
    for _ in range(3):
        inbox: list[Any] = []
        inboxes.append(inbox)
        CommsClientFactory(
            "json", reactor=net.reactor, on_message=lambda c, m, i=inbox: i.append(m)
        ).connectTCP("127.0.0.1", 6000)
        net.flush()
    a, b, c = list(server.clients)
    server.join(a, "x")
    server.join(b, "x")
    writes = [_writes(h) for h in (a, b, c)]
    server.broadcast({"n": 1})
    server.broadcast({"n": 2}, room="x")
    server.broadcast({"n": 3})
    server.broadcast({"n": 4}, exclude=a)
    server.broadcast({"n": 5}, room="x", exclude=b)
    assert writes == [[], [], []]  # batched until the turn ends
    net.flush()
    assert [len(w) for w in writes] == [1, 1, 1]
    assert inboxes == [
        [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 5}],
        [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}],
        [{"n": 1}, {"n": 3}, {"n": 4}],
    ]
    # Counted as sent: messages and payload bytes per client.
    assert [h.messages_out for h in (a, b, c)] == [4, 4, 3]


def test_a_room_broadcast_touches_only_its_members() -> None:
    # A room broadcast costs time proportional to its members: the other
    # clients' writers are not even looked at (benchmarks/rooms.py times it).
    net = MemoryNetwork()
    server = CommsServerFactory("json", reactor=net.reactor)
    server.listen(6000)
    for _ in range(4):
        CommsClientFactory("json", reactor=net.reactor).connectTCP("127.0.0.1", 6000)
        net.flush()
    handles = list(server.clients)
    server.join(handles[0], "lab")
    looked: list[str] = []
    for h in handles[1:]:
        writer = h.protocol.writer  # type: ignore[union-attr]

        class Watching(type(writer)):  # type: ignore[misc]
            __slots__ = ()

            @property
            def closed(self) -> bool:  # type: ignore[override]
                looked.append("closed")
                return False

        writer.__class__ = Watching
    assert server.broadcast({"n": 1}, room="lab") == 1
    assert looked == []


@pytest_twisted.ensureDeferred
async def test_rooms_over_real_sockets() -> None:
    server = CommsServerFactory("json")

    def on_message(client: ClientHandle, message: Any) -> None:
        if "join" in message:
            server.join(client, message["join"])
            client.send({"joined": message["join"]})
        else:
            server.broadcast(message, room=message["to"], exclude=client)

    server.on_message.append(on_message)
    port = (await server.listen("tcp:0:interface=127.0.0.1")).getHost().port
    clients = []
    try:
        for room in ("red", "red", "blue"):
            received = Received()
            client = CommsClientFactory("json", on_message=received)
            client.connectTCP("127.0.0.1", port)
            await client.whenConnected()
            client.send({"join": room})
            assert await received.next() == {"joined": room}
            clients.append((client, received))
        (red1, red1_got), (red2, red2_got), (blue, blue_got) = clients
        red1.send({"to": "red", "text": "hi red"})
        assert await red2_got.next() == {"to": "red", "text": "hi red"}
        blue.send({"to": "red", "text": "from blue"})
        assert await red1_got.next() == {"to": "red", "text": "from blue"}
        assert await red2_got.next() == {"to": "red", "text": "from blue"}
        red2.send({"to": "blue", "text": "to blue"})
        assert await blue_got.next() == {"to": "blue", "text": "to blue"}
        assert blue_got.waiting == red1_got.waiting == 0
    finally:
        for client, _ in clients:
            await client.stop()
        await server.stop()
