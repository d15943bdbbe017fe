"""
Testing code that uses twcomms, with trial:

    cd examples/testing && python -m twisted.trial test_chat_trial

  - C{ChatInMemory}: the hub's callbacks over a L{MemoryNetwork} with a
    fake clock -- no sockets, no waiting: C{net.flush()} moves the bytes,
    C{net.advance(seconds)} moves time (idle timeouts, reconnect delays).
  - C{ChatOverSockets}: the same hub on a real loopback port (port 0: a
    free one), tests returning Deferreds; listeners and connections are
    closed by cleanups trial waits for, so its dirty-reactor check passes.
  - C{EchoThreaded}: code on the threaded API (C{Server}, C{Client}),
    whose blocking calls run off the reactor thread (C{deferToThread}):
    trial's reactor runs in the main thread, and twcomms uses it.
"""

from __future__ import annotations

import queue
from typing import Any

from chat import chat_hub
from threaded_echo import start_echo
from twisted.internet import defer, threads
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twcomms import Client, CloseReason, CommsClientFactory
from twcomms.testing import MemoryNetwork, Received


class ChatInMemory(SynchronousTestCase):
    def setUp(self) -> None:
        self.net = MemoryNetwork()
        self.hub = chat_hub(reactor=self.net.reactor, idle_timeout=60)
        self.hub.listen(6000)
        self.closed: list[CloseReason] = []
        self.hub.on_close.append(lambda client, reason: self.closed.append(reason))

    def connect(self, **options: Any) -> tuple[CommsClientFactory, list[Any]]:
        got: list[Any] = []
        client = CommsClientFactory(
            "json",
            reactor=self.net.reactor,
            on_message=lambda c, message: got.append(message),
            **options,
        )
        client.connectTCP("127.0.0.1", 6000)
        self.net.flush()
        return client, got

    def test_relays_to_the_others_not_the_sender(self) -> None:
        alice, alice_got = self.connect()
        _, bob_got = self.connect()
        alice_id = alice_got[0]["welcome"]
        alice.send({"text": "hi"})
        self.net.flush()
        self.assertEqual(bob_got[1:], [{"from": alice_id, "said": {"text": "hi"}}])
        self.assertEqual(len(alice_got), 1)  # her welcome only

    def test_a_silent_client_is_closed_after_the_idle_timeout(self) -> None:
        self.connect()
        self.net.advance(59)
        self.assertEqual(self.closed, [])
        self.net.advance(2)
        self.assertEqual(self.closed, [CloseReason.IDLE_TIMEOUT])

    def test_a_client_comes_back_after_its_reconnect_delay(self) -> None:
        client, got = self.connect(autoReconnect=True, initial_delay=2, jitter=0)
        self.net.break_connections()
        self.assertFalse(client.connected)
        self.net.advance(1.5)
        self.assertFalse(client.connected)
        self.net.advance(1)
        self.assertTrue(client.connected)
        self.assertEqual([m for m in got if "welcome" in m][1:], [got[-1]])
        client.stop()
        self.net.flush()


class ChatOverSockets(TestCase):
    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.hub = chat_hub(idle_timeout=60)
        port = yield self.hub.listen("tcp:0:interface=127.0.0.1")
        self.port = port.getHost().port
        self.addCleanup(self.hub.stop)  # stops listening, closes every client

    @defer.inlineCallbacks
    def connect(self) -> Any:
        received = Received()
        client = CommsClientFactory("json", on_message=received)
        client.connectTCP("127.0.0.1", self.port)
        self.addCleanup(client.stop)  # trial waits for the Deferred it returns
        yield client.whenConnected()
        welcome = yield received.next()
        return client, received, welcome["welcome"]

    @defer.inlineCallbacks
    def test_relays_to_the_others_not_the_sender(self) -> Any:
        alice, alice_got, alice_id = yield self.connect()
        bob, bob_got, bob_id = yield self.connect()
        alice.send({"text": "hi"})
        self.assertEqual(
            (yield bob_got.next()), {"from": alice_id, "said": {"text": "hi"}}
        )
        bob.send({"text": "hello"})
        # Had alice got her own "hi", it would come before bob's message.
        self.assertEqual(
            (yield alice_got.next()), {"from": bob_id, "said": {"text": "hello"}}
        )


class EchoThreaded(TestCase):
    def test_echo(self) -> Any:
        return threads.deferToThread(self.echo_round_trip)

    def echo_round_trip(self) -> None:
        # A worker thread: the threaded API may block here.
        server = start_echo()
        try:
            replies: queue.Queue[Any] = queue.Queue()
            with Client("127.0.0.1", server.port) as client:
                client.add_onmessage_callback(replies.put)
                client.send({"n": 1})
                self.assertEqual(replies.get(timeout=5), {"echo": {"n": 1}})
        finally:
            server.stop()
