"""
Several nodes on one real Redis act as one hub (in this process, on the
real reactor; tests/backplane/test_processes.py runs nodes as processes):
broadcasts reach every client on every node exactly once, in the sender's
order, whatever their size; exclusions, rooms and sends by id cross nodes;
a node drops its own envelopes; a malformed entry on the channel is
skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from harness.redis import RedisServer
from twcomms.backplane import RedisBackplane
from twcomms.backplane.resp import RedisProtocol
from twcomms.client import CommsClientFactory
from twcomms.errors import ClientGoneError
from twcomms.server import ClientHandle, CommsServerFactory

TIMEOUT = 20.0


def bounded(d: defer.Deferred[Any], timeout: float = TIMEOUT) -> defer.Deferred[Any]:
    return d.addTimeout(timeout, reactor)


class Inbox:
    """
    Messages a client received, and a way to wait for a count of them.
    """

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._waiting: list[tuple[int, defer.Deferred[list[Any]]]] = []

    def __call__(self, client: Any, message: Any) -> None:
        self.items.append(message)
        for entry in list(self._waiting):
            if len(self.items) >= entry[0]:
                self._waiting.remove(entry)
                entry[1].callback(self.items)

    def wait(self, count: int) -> defer.Deferred[list[Any]]:
        if len(self.items) >= count:
            return defer.succeed(self.items)
        d: defer.Deferred[list[Any]] = defer.Deferred()
        self._waiting.append((count, d))
        return bounded(d)


@pytest.fixture
def hub_name() -> str:
    # Keys and channels of this test's own, on the shared server.
    return "t" + os.urandom(4).hex()


@pytest.fixture
def nodes(redis_server: RedisServer, hub_name: str) -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for node in made:
        pytest_twisted.blockon(node.stop())


@defer.inlineCallbacks
def start_node(
    made: list[Any], url: str, hub: str, **kw: Any
) -> defer.Generator[Any, Any, tuple[CommsServerFactory, int]]:
    server = CommsServerFactory(backplane=RedisBackplane(url, hub=hub), **kw)
    port = yield bounded(server.listen(("127.0.0.1", 0)))
    made.append(server)
    return server, port.getHost().port


@defer.inlineCallbacks
def connect(made: list[Any], port: int, **kw: Any) -> Any:
    inbox = Inbox()
    client = CommsClientFactory(on_message=inbox, **kw)
    client.connectTCP("127.0.0.1", port)
    yield bounded(client.whenConnected())
    made.insert(0, client)  # stopped before the servers
    return client, inbox


def handle_of(server: CommsServerFactory, index: int = -1) -> ClientHandle:
    return list(server.clients)[index]


@pytest_twisted.inlineCallbacks
def test_broadcasts_cross_nodes_exactly_once_in_order(
    redis_server: RedisServer, hub_name: str, nodes: list[Any]
) -> Any:
    a, port_a = yield start_node(nodes, redis_server.url, hub_name)
    b, port_b = yield start_node(nodes, redis_server.url, hub_name)
    clients = []
    for port in (port_a, port_a, port_b, port_b):
        clients.append((yield connect(nodes, port)))
    for n in range(100):
        a.broadcast({"a": n})
        b.broadcast({"b": n})
    for _, inbox in clients:
        got = yield inbox.wait(200)
        assert [m["a"] for m in got if "a" in m] == list(range(100))
        assert [m["b"] for m in got if "b" in m] == list(range(100))
    # Each node dropped its own 100 when they came back.
    assert a.clients.stats()["own"] == 100 and b.clients.stats()["own"] == 100
    assert a.clients.stats()["received"] == 100


@pytest_twisted.inlineCallbacks
def test_exclude_rooms_and_send_to_cross_nodes(
    redis_server: RedisServer, hub_name: str, nodes: list[Any]
) -> Any:
    a, port_a = yield start_node(nodes, redis_server.url, hub_name)
    b, port_b = yield start_node(nodes, redis_server.url, hub_name)
    _, on_a = yield connect(nodes, port_a)
    _, on_b1 = yield connect(nodes, port_b)
    _, on_b2 = yield connect(nodes, port_b)
    b1, b2 = list(b.clients)
    b.join(b2, "lab")
    # B's clients are in Redis once B's commands are confirmed: a send by
    # id from A before that finds no owner (seen once under load).
    yield bounded(b.clients.sync())
    # From node A: everyone but b1 (an id of node B's), then the room.
    a.broadcast({"n": 1}, exclude=b1.id)
    a.broadcast({"room": "lab"}, room="lab")
    yield a.send_to(b1.id, {"just": "b1"})
    a.broadcast({"n": 2})
    assert (yield on_b1.wait(2)) == [{"just": "b1"}, {"n": 2}]
    assert (yield on_b2.wait(3)) == [{"n": 1}, {"room": "lab"}, {"n": 2}]
    assert (yield on_a.wait(2)) == [{"n": 1}, {"n": 2}]
    with pytest.raises(ClientGoneError):
        yield a.send_to("0" * 32, {"to": "nobody"})
    # The cluster view, from either node.
    view = yield a.clients.cluster()
    assert view == {a.clients.node: 1, b.clients.node: 2}
    assert (yield b.clients.cluster()) == view


@pytest.mark.parametrize("mib", [1, 16, 64, 65])
@pytest_twisted.inlineCallbacks
def test_large_messages_cross_whole_and_in_order(
    redis_server: RedisServer, hub_name: str, nodes: list[Any], mib: int
) -> Any:
    """
    A message of 1, 16, 64 or 65 MiB (stored apart, in 64 MiB pieces:
    Redis refuses a value over 512 MB) crosses nodes whole, between small
    messages from the same sender, which keep their order.
    """
    # (65 MiB: over max_message_size's default, and stored in two pieces.)
    kw = {"messageDataType": "binary", "max_message_size": 80 * 1024 * 1024}
    a, _ = yield start_node(nodes, redis_server.url, hub_name, **kw)
    _, port_b = yield start_node(nodes, redis_server.url, hub_name, **kw)
    _, inbox = yield connect(nodes, port_b, **kw)
    big = os.urandom(1024) * (mib * 1024)
    a.broadcast(b"before")
    a.broadcast(big)
    a.broadcast(b"after")
    got = yield inbox.wait(3)
    assert got[0] == b"before" and got[2] == b"after"
    assert len(got[1]) == len(big) and got[1] == big


@pytest_twisted.inlineCallbacks
def test_a_malformed_entry_on_the_channel_is_skipped(
    redis_server: RedisServer, hub_name: str, nodes: list[Any]
) -> Any:
    a, port_a = yield start_node(nodes, redis_server.url, hub_name)
    b, _ = yield start_node(nodes, redis_server.url, hub_name)
    _, inbox = yield connect(nodes, port_a)
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    other = yield connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", redis_server.port), RedisProtocol()
    )
    try:
        stream = f"twcomms:{hub_name}:all"
        for garbage in (b"", b"\x01", b"\x63" * 40, os.urandom(200)):
            yield other.execute("XADD", stream, "*", "d", garbage)
        yield other.execute("XADD", stream, "*", "not", "ours", "nor", "this")
    finally:
        other.transport.loseConnection()
    b.broadcast({"still": "fine"})
    assert (yield inbox.wait(1)) == [{"still": "fine"}]
    assert a.clients.stats()["malformed"] == 5


@pytest_twisted.inlineCallbacks
def test_a_large_message_gone_before_its_fetch_is_counted_and_skipped(
    redis_server: RedisServer, hub_name: str, nodes: list[Any]
) -> Any:
    """
    A stored payload whose key is gone when a node fetches it (it expired
    while the node lagged by more than blob_ttl, or Redis evicted it) is
    counted and logged, not delivered, and the messages after it still
    arrive, in order. (The sender here never stores it: the same outcome,
    without a race against the clock.)
    """

    class Forgetful(RedisBackplane):
        def store(self, name: str, data: bytes) -> bytes:
            return name.encode("ascii")

    server = CommsServerFactory(
        registry=Forgetful(redis_server.url, hub=hub_name),
        messageDataType="binary",
    )
    yield bounded(server.listen(("127.0.0.1", 0)))
    nodes.append(server)
    b, port_b = yield start_node(
        nodes, redis_server.url, hub_name, messageDataType="binary"
    )
    _, inbox = yield connect(nodes, port_b, messageDataType="binary")
    server.broadcast(b"before")
    server.broadcast(b"x" * (2 * 1024 * 1024))  # announced, never stored
    server.broadcast(b"after")
    assert (yield inbox.wait(2)) == [b"before", b"after"]
    assert b.clients.stats()["expired"] == 1


@pytest_twisted.inlineCallbacks
def test_a_dead_nodes_clients_are_nobodys_after_its_presence_ttl(
    redis_server: RedisServer, hub_name: str, nodes: list[Any]
) -> Any:
    """
    A node that dies without stopping (SIGKILL: its connections just end,
    nothing is cleaned up) still owns its clients in Redis until its
    presence key expires; from then on, sending to them fails with
    ClientGoneError, within presence_ttl.
    """
    a = CommsServerFactory(
        registry=RedisBackplane(redis_server.url, hub=hub_name, presence_ttl=0.6)
    )
    yield bounded(a.listen(("127.0.0.1", 0)))
    nodes.append(a)
    doomed = RedisBackplane(redis_server.url, hub=hub_name, presence_ttl=0.6)
    b = CommsServerFactory(registry=doomed)
    port_b = yield bounded(b.listen(("127.0.0.1", 0)))
    client, inbox = yield connect(nodes, port_b.getHost().port)
    target = handle_of(b).id
    yield a.send_to(target, {"alive": True})
    assert (yield inbox.wait(1)) == [{"alive": True}]
    # Death: the presence refresh stops and the connections to Redis end,
    # with no goodbye (what SIGKILL leaves behind).
    doomed._refresh.stop()  # type: ignore[union-attr]
    for service in doomed._services:
        yield service.stopService()
    started = reactor.seconds()
    while True:
        try:
            yield a.send_to(target, {"still": "there?"})
        except ClientGoneError:
            break
        # Expiry is Redis's clock, not an event we can wait on: poll it,
        # bounded by the TTL and a margin.
        assert reactor.seconds() - started < 0.6 + 1.0
        yield deferLater(reactor, 0.05, lambda: None)
    yield client.stop()
    yield b.stop_listening()


def test_backplane_takes_an_object_not_a_url() -> None:
    with pytest.raises(TypeError, match="RedisBackplane"):
        CommsServerFactory(backplane="redis://127.0.0.1:6379/0")  # type: ignore[arg-type]


@pytest_twisted.inlineCallbacks
def test_a_gap_in_a_publishers_sequence_is_counted_and_a_repeat_dropped(
    redis_server: RedisServer, hub_name: str, nodes: list[Any]
) -> Any:
    """
    Every envelope carries its publisher's sequence number on its channel:
    a receiving node counts a gap (and the messages in it) and logs it, so
    a loss is never silent, and drops an envelope it has heard before.
    """

    class Lossy(RedisBackplane):
        drop = 0
        repeat = False

        def publish(self, channel: str, data: bytes) -> bool:
            if self.drop:
                self.drop -= 1  # lost on the way, as if Redis lost it
                return True
            sent = super().publish(channel, data)
            if self.repeat:
                self.repeat = False
                super().publish(channel, data)  # the broker said it twice
            return sent

    lossy = Lossy(redis_server.url, hub=hub_name)
    a = CommsServerFactory(backplane=lossy)
    yield bounded(a.listen(("127.0.0.1", 0)))
    nodes.append(a)
    b, port_b = yield start_node(nodes, redis_server.url, hub_name)
    _, inbox = yield connect(nodes, port_b)
    a.broadcast({"n": 1})
    lossy.drop = 2
    a.broadcast({"n": 2})
    a.broadcast({"n": 3})
    lossy.repeat = True
    a.broadcast({"n": 4})
    a.broadcast({"n": 5})
    assert (yield inbox.wait(3)) == [{"n": 1}, {"n": 4}, {"n": 5}]
    yield b.clients.sync()
    stats = b.clients.stats()
    assert (stats["gaps"], stats["missed"], stats["duplicates"]) == (1, 2, 1)


@pytest_twisted.inlineCallbacks
def test_a_websocket_client_is_a_client_of_the_whole_hub(
    redis_server: RedisServer, hub_name: str, nodes: list[Any]
) -> Any:
    # A browser on node B (a shared port): node A's broadcasts and sends
    # by id reach it; what it sends, B relays to A's TCP client.
    from twisted.internet import threads

    from harness.websocket import TEXT, RawWebSocket

    a, port_a = yield start_node(nodes, redis_server.url, hub_name)
    b, port_b = yield start_node(nodes, redis_server.url, hub_name, web_shared=True)
    b.on_message.append(lambda client, message: b.broadcast(message, exclude=client))
    _, on_a = yield connect(nodes, port_a)
    joined: defer.Deferred[Any] = defer.Deferred()
    b.on_connect.append(lambda client: joined.called or joined.callback(client))
    ws = yield threads.deferToThread(RawWebSocket, port_b)
    browser = yield bounded(joined)
    yield bounded(b.clients.sync())
    a.broadcast({"to": "all"})
    yield bounded(a.send_to(browser.id, {"to": "you"}))
    got = yield threads.deferToThread(lambda: [ws.recv(), ws.recv()])
    assert got == [(TEXT, b'{"to": "all"}'), (TEXT, b'{"to": "you"}')]
    yield threads.deferToThread(ws.send_text, '{"from": "browser"}')
    assert (yield on_a.wait(2))[-1] == {"from": "browser"}
    ws.close()


@pytest_twisted.inlineCallbacks
def test_metrics_show_the_backplane(
    redis_server: RedisServer, hub_name: str, nodes: list[Any]
) -> Any:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families
    from twisted.internet import threads

    a, port_a = yield start_node(nodes, redis_server.url, hub_name, metrics=True)
    web = (yield bounded(a.listen_web("tcp:0:interface=127.0.0.1"))).getHost().port
    for n in range(3):
        a.broadcast({"n": n})
    yield bounded(a.clients.sync())

    def scrape() -> dict[str, float]:
        url = f"http://127.0.0.1:{web}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return {
            s.name: s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }

    got = yield threads.deferToThread(scrape)
    assert got["twcomms_backplane_up"] == 1
    assert got["twcomms_backplane_published_total"] == 3
    assert got["twcomms_backplane_gaps_total"] == 0
    assert got["twcomms_backplane_waiting"] == 0
