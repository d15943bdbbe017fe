"""
Testing code that uses twcomms, with pytest and pytest-twisted:

    python -m pytest examples/testing

The same tests as C{test_chat_trial.py}, in pytest's style: fixtures, plain
functions for the in-memory tests, C{pytest_twisted.ensureDeferred} for
the ones over real sockets (an async fixture listens on a free port and
stops the hub after the test), and C{deferToThread} for the threaded API,
whose blocking calls must not run on the reactor thread (pytest-twisted
runs every test there).
"""

from __future__ import annotations

import queue
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_twisted
from chat import chat_hub
from threaded_echo import start_echo
from twisted.internet import threads

from twcomms import Client, CloseReason, CommsClientFactory, CommsServerFactory
from twcomms.testing import MemoryNetwork, Received

# -- in memory, with a fake clock ---------------------------------------------------


@pytest.fixture
def net() -> MemoryNetwork:
    return MemoryNetwork()


@pytest.fixture
def closed() -> list[CloseReason]:
    return []


@pytest.fixture
def hub(net: MemoryNetwork, closed: list[CloseReason]) -> Iterator[CommsServerFactory]:
    hub = chat_hub(reactor=net.reactor, idle_timeout=60)
    hub.on_close.append(lambda client, reason: closed.append(reason))
    hub.listen(6000)
    yield hub


def connect(net: MemoryNetwork, **options: Any) -> tuple[CommsClientFactory, list[Any]]:
    got: list[Any] = []
    client = CommsClientFactory(
        "json", reactor=net.reactor, on_message=lambda c, m: got.append(m), **options
    )
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    return client, got


def test_relays_to_the_others_not_the_sender(
    net: MemoryNetwork, hub: CommsServerFactory
) -> None:
    alice, alice_got = connect(net)
    _, bob_got = connect(net)
    alice.send({"text": "hi"})
    net.flush()
    assert bob_got[1:] == [{"from": alice_got[0]["welcome"], "said": {"text": "hi"}}]
    assert len(alice_got) == 1  # her welcome only


def test_a_silent_client_is_closed_after_the_idle_timeout(
    net: MemoryNetwork, hub: CommsServerFactory, closed: list[CloseReason]
) -> None:
    connect(net)
    net.advance(59)
    assert closed == []
    net.advance(2)
    assert closed == [CloseReason.IDLE_TIMEOUT]


def test_a_client_comes_back_after_its_reconnect_delay(
    net: MemoryNetwork, hub: CommsServerFactory
) -> None:
    client, got = connect(net, autoReconnect=True, initial_delay=2, jitter=0)
    net.break_connections()
    net.advance(1.5)
    assert not client.connected
    net.advance(1)
    assert client.connected
    assert [m for m in got if "welcome" in m][1:] == [got[-1]]


# -- over real loopback sockets -------------------------------------------------


@pytest_twisted.async_yield_fixture
async def live_hub() -> AsyncIterator[int]:
    hub = chat_hub(idle_timeout=60)
    port = await hub.listen("tcp:0:interface=127.0.0.1")
    yield port.getHost().port
    await hub.stop()  # stops listening, closes every client


@pytest_twisted.ensureDeferred
async def test_relays_over_sockets(live_hub: int) -> None:
    clients = []
    try:
        names = []
        for _ in range(2):
            received = Received()
            client = CommsClientFactory("json", on_message=received)
            clients.append((client, received))
            client.connectTCP("127.0.0.1", live_hub)
            await client.whenConnected()
            names.append((await received.next())["welcome"])
        (alice, alice_got), (bob, bob_got) = clients
        alice.send({"text": "hi"})
        assert await bob_got.next() == {"from": names[0], "said": {"text": "hi"}}
        bob.send({"text": "hello"})
        # Had alice got her own "hi", it would come before bob's message.
        assert await alice_got.next() == {"from": names[1], "said": {"text": "hello"}}
    finally:
        for client, _ in clients:
            await client.stop()


# -- code on the threaded API ---------------------------------------------------


def echo_round_trip() -> None:
    # A worker thread: the threaded API may block here.
    server = start_echo()
    try:
        replies: queue.Queue[Any] = queue.Queue()
        with Client("127.0.0.1", server.port) as client:
            client.add_onmessage_callback(replies.put)
            client.send({"n": 1})
            assert replies.get(timeout=5) == {"echo": {"n": 1}}
    finally:
        server.stop()


@pytest_twisted.inlineCallbacks
def test_threaded_echo() -> Any:
    yield threads.deferToThread(echo_round_trip)
