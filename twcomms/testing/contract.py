"""
L{RegistryContract}: the tests every L{ClientRegistry} must pass -- the
local one now, a backplane's later. Mix it into a C{unittest} (or trial)
test case and say how to make the registry:

    from twisted.trial.unittest import SynchronousTestCase
    from twcomms.server import LocalClientRegistry
    from twcomms.testing import RegistryContract

    class LocalRegistryContract(RegistryContract, SynchronousTestCase):
        def make_registry(self):
            return LocalClientRegistry()

The tests go through a L{CommsServerFactory} using the registry, with
clients connected over a L{MemoryNetwork}, and check what the clients
receive: behaviour, not internals. A registry whose deliveries take more
than the in-memory network's turn (a broker in between) overrides
L{RegistryContract.settle} to wait until they have arrived.

Thread: the test's; nothing here uses a real reactor.
"""

from __future__ import annotations

from typing import Any

from twcomms.errors import ClientGoneError, InvalidRoomError
from twcomms.server import ClientHandle, ClientRegistry, CommsServerFactory
from twcomms.testing.memory import MemoryNetwork

__all__ = ["RegistryContract"]


class _Peer:
    """
    A connected test client: its factory, what it received, its handle on
    the server.
    """

    def __init__(self, factory: Any, handle: ClientHandle, inbox: list[Any]) -> None:
        self.factory = factory
        self.handle = handle
        self.inbox = inbox

    def take(self) -> list[Any]:
        got, self.inbox[:] = list(self.inbox), []
        return got


def _collect(inbox: list[Any]) -> Any:
    def on_message(client: Any, message: Any) -> None:
        inbox.append(message)

    return on_message


class RegistryContract:
    """
    Tests any registry must pass. Subclasses (also a C{TestCase}) define
    L{make_registry}.
    """

    # Provided by the TestCase this is mixed into.
    assertEqual: Any
    assertTrue: Any
    assertFalse: Any
    assertRaises: Any

    def make_registry(self) -> ClientRegistry:
        """
        A new registry to test.
        """
        raise NotImplementedError("define make_registry()")

    def settle(self) -> None:
        """
        Let every message sent so far arrive.
        """
        self.net.flush()

    def setUp(self) -> None:
        self.net = MemoryNetwork()
        self.registry = self.make_registry()
        self.server = CommsServerFactory(
            "json", registry=self.registry, reactor=self.net.reactor
        )
        started: list[object] = []
        self.server.listen(6000).addCallback(started.append)
        self.settle()
        self.assertEqual(len(started), 1, "listen() did not fire: start() hung")

    def connect(self, count: int = 1) -> list[_Peer]:
        """
        C{count} new clients, connected and registered.
        """
        from twcomms.client import CommsClientFactory

        peers = []
        for _ in range(count):
            inbox: list[Any] = []
            factory = CommsClientFactory(
                "json", reactor=self.net.reactor, on_message=_collect(inbox)
            )
            before = {c.id for c in self.registry}
            factory.connectTCP("127.0.0.1", 6000)
            self.settle()
            (handle,) = [c for c in self.registry if c.id not in before]
            peers.append(_Peer(factory, handle, inbox))
        return peers

    # -- membership ----------------------------------------------------------

    def test_clients_are_kept_in_connection_order_until_they_leave(self) -> None:
        a, b, c = self.connect(3)
        self.assertEqual(list(self.registry), [a.handle, b.handle, c.handle])
        self.assertEqual(len(self.registry), 3)
        self.assertEqual(self.registry.get(b.handle.id), b.handle)
        b.factory.stop()
        self.settle()
        self.assertEqual(list(self.registry), [a.handle, c.handle])
        self.assertEqual(self.registry.get(b.handle.id), None)

    def test_start_and_stop_fire(self) -> None:
        stopped: list[object] = []
        self.server.stop().addCallback(stopped.append)
        self.settle()
        self.assertEqual(stopped, [None])

    # -- rooms ---------------------------------------------------------------

    def test_a_room_is_made_by_its_first_member_and_gone_with_its_last(self) -> None:
        a, b = self.connect(2)
        self.assertEqual(self.server.rooms(), [])
        self.assertTrue(self.server.join(a.handle, "lab"))
        self.assertFalse(self.server.join(a.handle, "lab"))  # already in it
        self.assertTrue(self.server.join(b.handle.id, "lab"))
        self.assertEqual(self.server.rooms(), ["lab"])
        self.assertEqual(self.server.members("lab"), [a.handle, b.handle])
        self.assertTrue(self.server.leave(a.handle, "lab"))
        self.assertFalse(self.server.leave(a.handle, "lab"))
        self.assertEqual(self.server.members("lab"), [b.handle])
        self.server.leave(b.handle, "lab")
        self.assertEqual(self.server.rooms(), [])
        self.assertEqual(self.server.members("lab"), [])

    def test_a_client_leaves_every_room_when_it_disconnects(self) -> None:
        a, b = self.connect(2)
        for room in ("x", "y"):
            self.server.join(a.handle, room)
        self.server.join(b.handle, "y")
        self.assertEqual(self.server.rooms_of(a.handle), frozenset({"x", "y"}))
        a.factory.stop()
        self.settle()
        self.assertEqual(self.server.rooms_of(a.handle), frozenset())
        self.assertEqual(self.server.rooms(), ["y"])
        self.assertEqual(self.server.members("y"), [b.handle])

    def test_joining_needs_a_connected_client_and_a_valid_name(self) -> None:
        (a,) = self.connect(1)
        with self.assertRaises(ClientGoneError):
            self.server.join("no such client", "lab")
        bad: Any
        for bad in ("", "has space", "tab\t", "x" * 129, 7):
            with self.assertRaises(InvalidRoomError):
                self.server.join(a.handle, bad)
        self.assertEqual(self.server.rooms(), [])

    # -- broadcasting --------------------------------------------------------

    def test_a_room_broadcast_reaches_its_members_only(self) -> None:
        a, b, c = self.connect(3)
        self.server.join(a.handle, "lab")
        self.server.join(b.handle, "lab")
        self.assertEqual(self.server.broadcast({"n": 1}, room="lab"), 2)
        self.assertEqual(
            self.server.broadcast({"n": 2}, room="lab", exclude=a.handle), 1
        )
        self.assertEqual(self.server.broadcast({"n": 3}, room="empty"), 0)
        self.settle()
        self.assertEqual(a.take(), [{"n": 1}])
        self.assertEqual(b.take(), [{"n": 1}, {"n": 2}])
        self.assertEqual(c.take(), [])

    def test_a_broadcast_to_all_still_reaches_everyone(self) -> None:
        a, b = self.connect(2)
        self.server.join(a.handle, "lab")
        self.assertEqual(self.server.broadcast({"all": 1}), 2)
        self.assertEqual(self.server.broadcast({"all": 2}, exclude=[b.handle]), 1)
        self.settle()
        self.assertEqual(a.take(), [{"all": 1}, {"all": 2}])
        self.assertEqual(b.take(), [{"all": 1}])

    def test_rooms_broadcasts_and_direct_sends_keep_their_order(self) -> None:
        a, b = self.connect(2)
        for room in ("x", "y"):
            self.server.join(a.handle, room)
        self.server.join(b.handle, "y")
        self.server.broadcast({"m": 1}, room="x")
        self.server.send(a.handle, {"m": 2})
        self.server.broadcast({"m": 3}, room="y")
        self.server.broadcast({"m": 4})
        self.server.broadcast({"m": 5}, room="x")
        self.server.broadcast({"m": 6}, exclude=b.handle)
        self.server.broadcast({"m": "x" * 20_000}, room="y")  # a larger one
        self.server.broadcast({"m": 7}, room="y")
        self.settle()
        self.assertEqual(
            a.take(),
            [{"m": n} for n in (1, 2, 3, 4, 5, 6)] + [{"m": "x" * 20_000}, {"m": 7}],
        )
        self.assertEqual(b.take(), [{"m": 3}, {"m": 4}, {"m": "x" * 20_000}, {"m": 7}])

    def test_a_client_joining_later_gets_only_later_room_broadcasts(self) -> None:
        a, b = self.connect(2)
        self.server.join(a.handle, "lab")
        self.server.broadcast({"n": 1}, room="lab")
        self.server.join(b.handle, "lab")
        self.server.broadcast({"n": 2}, room="lab")
        self.server.leave(a.handle, "lab")
        self.server.broadcast({"n": 3}, room="lab")
        self.settle()
        self.assertEqual(a.take(), [{"n": 1}, {"n": 2}])
        self.assertEqual(b.take(), [{"n": 2}, {"n": 3}])

    def test_stats_count_clients_rooms_and_memberships(self) -> None:
        a, b = self.connect(2)
        self.server.join(a.handle, "x")
        self.server.join(a.handle, "y")
        self.server.join(b.handle, "y")
        stats = self.registry.stats()
        self.assertEqual(
            (stats["clients"], stats["rooms"], stats["memberships"]), (2, 2, 3)
        )
        before = (stats["broadcasts"], stats["deliveries"])
        self.server.broadcast({"n": 1}, room="y")
        after = self.registry.stats()
        self.assertEqual(
            (after["broadcasts"] - before[0], after["deliveries"] - before[1]),
            (1, 2),
        )
