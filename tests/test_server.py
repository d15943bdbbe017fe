"""
Tests for L{twcomms.server}: in memory (L{MemoryNetwork}, C{StringTransport}),
with a fake clock.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from harness.transport import TCPStringTransport
from harness.wire import frame as reference_frame
from harness.wire import parse as reference_parse
from twcomms.client import CommsClientFactory
from twcomms.connection import CloseReason, CommsProtocol
from twcomms.errors import (
    ClientGoneError,
    MessageTooLargeError,
    SlowConsumerError,
    UnsupportedTypeError,
)
from twcomms.options import Options
from twcomms.server import (
    DEFAULT_BACKLOG,
    ClientHandle,
    CommsServerFactory,
    LocalClientRegistry,
    server_endpoint,
)
from twcomms.testing import MemoryNetwork


class Events:
    """
    Records a server's events.
    """

    def __init__(self, server: CommsServerFactory) -> None:
        self.connected: list[ClientHandle] = []
        self.closed: list[tuple[ClientHandle, CloseReason]] = []
        self.messages: list[tuple[str, Any]] = []
        self.decode_errors: list[tuple[str, bytes]] = []
        server.on_connect.append(self.connected.append)
        server.on_close.append(lambda c, r: self.closed.append((c, r)))
        server.on_message.append(lambda c, m: self.messages.append((c.id, m)))
        server.on_decode_error.append(
            lambda c, e: self.decode_errors.append((c.id, e.payload))
        )


def setup(
    n_clients: int = 2, **server_kw: Any
) -> tuple[MemoryNetwork, CommsServerFactory, Events, list[CommsClientFactory], list]:
    net = MemoryNetwork()
    server = CommsServerFactory(reactor=net.reactor, **server_kw)
    events = Events(server)
    server.listen(6000)
    clients = []
    inboxes: list[list[Any]] = []
    for _ in range(n_clients):
        inbox: list[Any] = []
        client = CommsClientFactory(
            server.codec,
            server.byteOrder,
            reactor=net.reactor,
            on_message=lambda c, m, inbox=inbox: inbox.append(m),
        )
        client.connectTCP("127.0.0.1", 6000)
        net.flush()
        clients.append(client)
        inboxes.append(inbox)
    return net, server, events, clients, inboxes


# -- bookkeeping -------------------------------------------------------------


def test_handles_are_tracked_with_string_ids_and_peer_addresses() -> None:
    net, server, events, clients, _ = setup(2)
    handles = list(server.clients)
    assert handles == events.connected
    assert len(server.clients) == 2
    ids = [h.id for h in handles]
    assert all(isinstance(i, str) and i for i in ids) and len(set(ids)) == 2
    for h in handles:
        assert h.address == "127.0.0.1" and h.port >= 40000
        assert h.connected and h.connected_at == net.reactor.seconds()
        assert server.clients.get(h.id) is h


def test_counters_per_client() -> None:
    net, server, _, clients, _ = setup(1)
    (handle,) = server.clients
    clients[0].send({"a": 1})
    clients[0].send([1, 2])
    net.flush()
    handle.send("[3]")
    net.flush()
    assert (handle.messages_in, handle.bytes_in) == (2, len(b'{"a": 1}') + 6)
    assert (handle.messages_out, handle.bytes_out) == (1, 3)


def test_messages_reach_on_message_with_the_sender_in_order() -> None:
    net, _, events, clients, _ = setup(2)
    for i in range(50):
        clients[i % 2].send({"i": i})
    net.flush()
    by_sender: dict[str, list[int]] = {}
    for cid, m in events.messages:
        by_sender.setdefault(cid, []).append(m["i"])
    assert by_sender == {
        events.connected[0].id: list(range(0, 50, 2)),
        events.connected[1].id: list(range(1, 50, 2)),
    }


def test_disconnect_removes_the_handle_and_reports_peer_closed() -> None:
    net, server, events, clients, _ = setup(2)
    first = events.connected[0]
    clients[0].stop()
    net.flush()
    assert list(server.clients) == [events.connected[1]]
    assert events.closed == [(first, CloseReason.PEER_CLOSED)]
    assert not first.connected and first.close_reason is CloseReason.PEER_CLOSED


def test_error_close_reason() -> None:
    net, _, events, _, _ = setup(1)
    net.break_connections()
    assert events.closed[0][1] is CloseReason.ERROR
    assert events.closed[0][0].close_failure.check(ConnectionLost)


def test_handle_close_is_reported_as_closed() -> None:
    net, _, events, clients, _ = setup(1)
    events.connected[0].close()
    net.flush()
    assert events.closed[0][1] is CloseReason.CLOSED
    assert not clients[0].connected


def test_when_closed() -> None:
    net, _, events, clients, _ = setup(1)
    handle = events.connected[0]
    fired: list[object] = []
    handle.when_closed().addCallback(fired.append)
    assert fired == []
    clients[0].stop()
    net.flush()
    assert fired == [None]
    handle.when_closed().addCallback(fired.append)
    assert fired == [None, None]


# -- sending -----------------------------------------------------------------


def test_broadcast_encodes_once_and_excludes() -> None:
    net, server, events, clients, inboxes = setup(3)
    calls = []
    real_encode = server.codec.encode

    class CountingCodec:
        name = "json"

        def encode(self, m: Any) -> bytes:
            calls.append(m)
            return real_encode(m)

        decode = server.codec.decode

    server.options = Options.build(server.options, messageDataType=CountingCodec())
    sent = server.broadcast({"all": 1})
    sent_excluding = server.broadcast({"some": 2}, exclude=events.connected[0])
    sent_by_id = server.broadcast(
        {"few": 3}, exclude=[events.connected[1].id, events.connected[2]]
    )
    net.flush()
    assert (sent, sent_excluding, sent_by_id) == (3, 2, 1)
    assert len(calls) == 3
    assert inboxes[0] == [{"all": 1}, {"few": 3}]
    assert inboxes[1] == [{"all": 1}, {"some": 2}]
    assert inboxes[2] == [{"all": 1}, {"some": 2}]


def _write_calls(handle: ClientHandle) -> list[bytes]:
    """
    Record every C{write} made to C{handle}'s transport from now on.
    """
    transport = handle.protocol.transport  # type: ignore[union-attr]
    calls: list[bytes] = []
    real_write = transport.write

    def write(data: bytes) -> None:
        calls.append(data)
        real_write(data)

    transport.write = write
    return calls


def test_small_broadcasts_in_one_turn_are_one_write_per_client() -> None:
    net, server, events, _, inboxes = setup(3, messageDataType="string")
    writes = [_write_calls(h) for h in events.connected]
    sent = [server.broadcast(f"n{i}") for i in range(100)]
    assert sent == [3] * 100
    assert writes == [[], [], []]  # batched until the turn ends
    net.flush()
    assert [len(w) for w in writes] == [1, 1, 1]
    assert writes[0][0] == writes[1][0] == writes[2][0]
    assert inboxes == [[f"n{i}" for i in range(100)]] * 3
    totals = [(h.messages_out, h.bytes_out) for h in events.connected]
    assert totals == [(100, sum(len(f"n{i}") for i in range(100)))] * 3


def test_batched_broadcasts_keep_their_order_with_other_sends() -> None:
    net, server, events, _, inboxes = setup(2, messageDataType="string")
    first = events.connected[0]
    server.broadcast("b1")
    first.send("direct")  # the batch goes first
    server.broadcast("b2")
    server.broadcast("b3", exclude=events.connected[1])
    server.broadcast("x" * 20_000)  # a larger payload: written at once
    server.broadcast("b4")
    first.close()  # after what was broadcast to it
    net.flush()
    assert inboxes[0] == ["b1", "direct", "b2", "b3", "x" * 20_000, "b4"]
    assert inboxes[1] == ["b1", "b2", "x" * 20_000, "b4"]


def test_a_closing_client_last_in_line_does_not_stop_the_batch() -> None:
    clock = MemoryReactorClock()
    server = CommsServerFactory("string", reactor=clock)
    first, last = server.buildProtocol(None), server.buildProtocol(None)
    first.makeConnection(StringTransport())
    last.makeConnection(StringTransport())
    last.close()
    assert server.broadcast("only first") == 1
    clock.advance(0)
    assert reference_parse(first.transport.value()) == [b"only first"]
    assert reference_parse(last.transport.value()) == []


def test_a_client_gets_no_broadcast_made_before_it_connected() -> None:
    clock = MemoryReactorClock()
    server = CommsServerFactory("string", reactor=clock)
    early = server.buildProtocol(None)
    early.makeConnection(StringTransport())
    assert server.broadcast("before") == 1
    late = server.buildProtocol(None)  # connects in the same turn
    late.makeConnection(StringTransport())
    assert server.broadcast("after") == 2
    clock.advance(0)
    assert reference_parse(early.transport.value()) == [b"before", b"after"]
    assert reference_parse(late.transport.value()) == [b"after"]


def test_broadcast_refuses_bad_messages_before_sending_anything() -> None:
    net, server, _, _, inboxes = setup(2, max_message_size=100)
    with pytest.raises(UnsupportedTypeError):
        server.broadcast({1, 2})
    with pytest.raises(MessageTooLargeError):
        server.broadcast(["x" * 200])
    net.flush()
    assert inboxes == [[], []]


def test_send_by_handle_and_id() -> None:
    net, server, events, _, inboxes = setup(2)
    server.send(events.connected[0], "1")
    server.send(events.connected[1].id, "2")
    net.flush()
    assert inboxes == [[1], [2]]


def test_send_to_a_gone_client_raises() -> None:
    net, server, events, clients, _ = setup(1)
    handle = events.connected[0]
    clients[0].stop()
    net.flush()
    with pytest.raises(ClientGoneError, match=handle.id):
        server.send(handle, {"x": 1})
    with pytest.raises(ClientGoneError):
        server.send(handle.id, {"x": 1})
    with pytest.raises(ClientGoneError):
        handle.send({"x": 1})
    with pytest.raises(ClientGoneError):
        server.send("no-such-id", {})


def test_sending_after_close_raises_never_drops() -> None:
    net, _, events, _, _ = setup(1)
    handle = events.connected[0]
    handle.close()
    with pytest.raises(ClientGoneError):
        handle.send({"late": True})


# -- callbacks ---------------------------------------------------------------


def test_a_raising_callback_is_logged_and_others_still_run() -> None:
    net, server, events, clients, _ = setup(1)

    def broken(client: ClientHandle, message: Any) -> None:
        raise RuntimeError("boom")

    server.on_message.insert(0, broken)
    with capturedLogs() as logged:
        clients[0].send({"a": 1})
        clients[0].send({"b": 2})
        net.flush()
    assert [m for _, m in events.messages] == [{"a": 1}, {"b": 2}]
    failures = [e for e in logged if "log_failure" in e]
    assert len(failures) == 2
    assert failures[0]["log_failure"].check(RuntimeError)


def test_constructor_callbacks() -> None:
    got = []
    server = CommsServerFactory(
        reactor=MemoryReactorClock(), on_message=lambda c, m: got.append(m)
    )
    assert server.on_message and server.on_connect == []


def test_decode_errors_reach_the_hook_and_the_client_stays() -> None:
    server = CommsServerFactory(reactor=MemoryReactorClock())
    events = Events(server)
    proto = server.buildProtocol(None)
    t = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 5555))
    proto.makeConnection(t)
    proto.dataReceived(reference_frame(b"{bad") + reference_frame(b'{"ok": 1}'))
    handle = events.connected[0]
    assert events.decode_errors == [(handle.id, b"{bad")]
    assert events.messages == [(handle.id, {"ok": 1})]
    assert handle.connected and not t.disconnecting


# -- protection --------------------------------------------------------------


def test_max_clients_closes_extra_connections_with_a_logged_reason() -> None:
    with capturedLogs() as logged:
        net, server, events, clients, _ = setup(3, max_clients=2)
    assert len(server.clients) == 2
    assert server.rejected == 1
    assert [c.connected for c in clients] == [True, True, False]
    assert len(events.connected) == 2
    assert any("maximum of" in e["log_format"] for e in logged)
    # A slot frees up: the next client is accepted.
    clients[0].stop()
    net.flush()
    late = CommsClientFactory(reactor=net.reactor)
    late.connectTCP("127.0.0.1", 6000)
    net.flush()
    assert late.connected and len(server.clients) == 2


def test_idle_timeout_closes_silent_clients() -> None:
    net, server, events, clients, _ = setup(2, idle_timeout=10)
    net.advance(6)
    clients[0].send({"still": "here"})
    net.flush()
    net.advance(6)
    assert [r for _, r in events.closed] == [CloseReason.IDLE_TIMEOUT]
    assert events.closed[0][0] is events.connected[1]
    net.advance(10)
    assert [r for _, r in events.closed] == [CloseReason.IDLE_TIMEOUT] * 2


def test_idle_timeout_is_suspended_while_we_pause_reading() -> None:
    clock = MemoryReactorClock()
    server = CommsServerFactory(reactor=clock, idle_timeout=5)
    events = Events(server)
    proto = server.buildProtocol(None)
    proto.makeConnection(StringTransport())
    proto.pauseProducing()
    clock.advance(60)
    assert events.closed == [] and not proto.transport.disconnecting
    proto.resumeProducing()
    clock.advance(4.9)
    assert not proto.transport.disconnecting
    clock.advance(0.2)
    assert proto.transport.disconnecting
    assert proto.closeReason is CloseReason.IDLE_TIMEOUT


def _paused_client(
    **kw: Any,
) -> tuple[CommsServerFactory, CommsProtocol, StringTransport]:
    server = CommsServerFactory("binary", reactor=MemoryReactorClock(), **kw)
    Events(server)
    proto = server.buildProtocol(None)
    t = StringTransport()
    proto.makeConnection(t)
    t.producer.pauseProducing()  # the transport's write buffer is full
    return server, proto, t


def test_outbound_limit_defaults_and_validation() -> None:
    server = CommsServerFactory(reactor=MemoryReactorClock(), max_message_size=1000)
    assert server.options.connection.effective_outbound_limit == 1000 + 1024 * 1024
    with pytest.raises(ValueError, match="at least max_message_size"):
        CommsServerFactory(max_message_size=1000, outbound_limit=1000)


def test_slow_consumer_is_closed_and_others_unaffected() -> None:
    server, slow, t = _paused_client(max_message_size=100, outbound_limit=250)
    fast = server.buildProtocol(None)
    ft = StringTransport()
    fast.makeConnection(ft)
    with capturedLogs() as logged:
        for _ in range(3):
            server.broadcast(b"x" * 80)  # 84 bytes a frame: the 3rd exceeds 250
    assert t.disconnecting and slow.closeReason is CloseReason.SLOW_CONSUMER
    assert reference_parse(ft.value()) == [b"x" * 80] * 3
    assert any("slow consumer" in e["log_format"] for e in logged)
    with pytest.raises(ClientGoneError):
        slow.receiver.send(b"more")


def test_a_batch_written_to_a_client_that_paused_meanwhile_meets_its_limit() -> None:
    clock = MemoryReactorClock()
    server = CommsServerFactory(
        "binary", reactor=clock, max_message_size=100, outbound_limit=250
    )
    Events(server)
    slow, fast = server.buildProtocol(None), server.buildProtocol(None)
    slow.makeConnection(StringTransport())
    fast.makeConnection(StringTransport())
    for _ in range(3):
        assert server.broadcast(b"x" * 80) == 2  # batched: nobody is paused
    slow.transport.producer.pauseProducing()  # then its buffer fills
    with capturedLogs() as logged:
        clock.advance(0)
    assert slow.closeReason is CloseReason.SLOW_CONSUMER  # 252 bytes > 250
    assert reference_parse(fast.transport.value()) == [b"x" * 80] * 3
    assert any("slow consumer" in e["log_format"] for e in logged)


def test_slow_consumer_direct_send_raises() -> None:
    server, slow, t = _paused_client(max_message_size=100, outbound_limit=250)
    handle = slow.receiver
    handle.send(b"x" * 80)
    handle.send(b"x" * 80)
    with pytest.raises(SlowConsumerError, match="outbound limit of 250"):
        handle.send(b"x" * 80)
    assert slow.closeReason is CloseReason.SLOW_CONSUMER


def test_slow_consumer_raise_policy_keeps_the_connection() -> None:
    server, slow, t = _paused_client(
        max_message_size=100, outbound_limit=250, slow_consumer_policy="raise"
    )
    handle = slow.receiver
    handle.send(b"x" * 80)
    handle.send(b"x" * 80)
    with pytest.raises(SlowConsumerError):
        handle.send(b"x" * 80)
    assert not t.disconnecting and handle.connected
    drained: list[object] = []
    slow.whenDrained().addCallback(drained.append)
    t.producer.resumeProducing()  # the peer read everything
    assert drained == [None]
    handle.send(b"x" * 80)
    assert len(reference_parse(t.value())) == 3


def test_when_drained_fails_when_the_connection_closes() -> None:
    _, slow, _ = _paused_client()
    d = slow.whenDrained()
    slow.connectionLost(Failure(ConnectionLost()))
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(ConnectionError)


# -- stopping ----------------------------------------------------------------


def test_stop_closes_every_client_with_server_stopping() -> None:
    net, server, events, clients, _ = setup(2)
    done: list[object] = []
    server.stop().addCallback(done.append)
    net.flush()
    assert done
    assert [r for _, r in events.closed] == [CloseReason.SERVER_STOPPING] * 2
    assert len(server.clients) == 0
    assert not any(c.connected for c in clients)
    late = CommsClientFactory(reactor=net.reactor)
    late.connectTCP("127.0.0.1", 6000)
    net.flush()
    assert not late.connected  # no longer listening


# -- listening -----------------------------------------------------------------


def test_server_endpoint_defaults_backlog() -> None:
    reactor = MemoryReactorClock()
    for where in (6000, "6000", "tcp:6000", "tcp:6000:interface=127.0.0.1"):
        server_endpoint(reactor, where).listen(CommsServerFactory(reactor=reactor))
    server_endpoint(reactor, ("127.0.0.1", 6001)).listen(CommsServerFactory())
    server_endpoint(reactor, "tcp:6002:backlog=7").listen(CommsServerFactory())
    backlogs = [backlog for (_, _, backlog, _) in reactor.tcpServers]
    assert backlogs == [DEFAULT_BACKLOG] * 5 + [7]
    assert reactor.tcpServers[4][3] == "127.0.0.1"


def test_server_endpoint_ipv6_and_unix() -> None:
    reactor = MemoryReactorClock()
    server_endpoint(reactor, ("::1", 6000)).listen(CommsServerFactory())
    server_endpoint(reactor, "unix:/tmp/x.sock").listen(CommsServerFactory())
    assert reactor.tcpServers[0][3] == "::1"
    assert reactor.unixServers[0][0] == "/tmp/x.sock"
    assert reactor.unixServers[0][2] == DEFAULT_BACKLOG


def test_server_endpoint_rejects_nonsense() -> None:
    with pytest.raises(TypeError):
        server_endpoint(MemoryReactorClock(), 1.5)  # type: ignore[arg-type]


def test_registry_is_replaceable() -> None:
    class Recording(LocalClientRegistry):
        def __init__(self) -> None:
            super().__init__()
            self.broadcasts: list[bytes] = []

        def broadcast(self, frame: Any, exclude: Any) -> int:
            self.broadcasts.append(frame.payload)
            return super().broadcast(frame, exclude)

    registry = Recording()
    net = MemoryNetwork()
    server = CommsServerFactory(reactor=net.reactor, registry=registry)
    server.listen(6000)
    client = CommsClientFactory(reactor=net.reactor)
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    assert len(registry) == 1
    server.broadcast([1])
    assert registry.broadcasts == [b"[1]"]


def test_stop_fires_with_none_and_listen_again_serves_normally() -> None:
    net, server, events, clients, _ = setup(1)
    done: list[object] = []
    server.stop().addCallback(done.append)
    net.flush()
    assert done == [None]
    server.listen(6000)
    late = CommsClientFactory(reactor=net.reactor)
    late.connectTCP("127.0.0.1", 6000)
    net.flush()
    assert late.connected and len(server.clients) == 1


def _tls_handshaking(
    **kw: Any,
) -> tuple[MemoryReactorClock, CommsProtocol, Events, TCPStringTransport]:
    from twisted.internet.interfaces import INegotiated
    from zope.interface import directlyProvides

    clock = MemoryReactorClock()
    server = CommsServerFactory(reactor=clock, **kw)
    events = Events(server)
    proto = server.buildProtocol(None)
    t = TCPStringTransport()
    directlyProvides(t, INegotiated)  # a TLS connection, handshake pending
    proto.makeConnection(t)
    return clock, proto, events, t


def test_a_tls_handshake_that_never_completes_is_aborted() -> None:
    clock, proto, events, t = _tls_handshaking(handshake_timeout=5)
    clock.advance(4.9)
    assert not t.disconnecting
    with capturedLogs() as logged:
        clock.advance(0.2)
    assert t.disconnecting
    assert proto.closeReason is CloseReason.HANDSHAKE_TIMEOUT
    assert any("handshake timeout" in e["log_format"] for e in logged)
    assert events.connected == []


def test_a_completed_handshake_stops_the_handshake_timer() -> None:
    clock, proto, events, t = _tls_handshaking()  # the default: 10 s
    clock.advance(9)
    proto.handshakeCompleted()
    clock.advance(60)
    assert not t.disconnecting
    assert len(events.connected) == 1
    assert clock.getDelayedCalls() == []


def test_handshake_timeout_none_and_validation() -> None:
    clock, proto, _, t = _tls_handshaking(handshake_timeout=None)
    clock.advance(3600)
    assert not t.disconnecting
    with pytest.raises(ValueError, match="handshake_timeout"):
        CommsServerFactory(handshake_timeout=-1)


def test_stop_aborts_connections_that_are_not_clients_yet() -> None:
    from twisted.internet.interfaces import INegotiated
    from zope.interface import directlyProvides

    server = CommsServerFactory(reactor=MemoryReactorClock())
    events = Events(server)
    proto = server.buildProtocol(None)
    t = TCPStringTransport()
    directlyProvides(t, INegotiated)  # a TLS handshake that never completes
    proto.makeConnection(t)
    assert events.connected == []
    done: list[object] = []
    server.stop().addCallback(done.append)
    assert t.disconnecting and proto.closeReason is CloseReason.SERVER_STOPPING
    proto.connectionLost(Failure(ConnectionLost()))
    assert done == [None] and events.closed == []


_MEASURE_PER_CONNECTION = """
import gc, tracemalloc
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogBeginner
from twcomms.server import CommsServerFactory

# Log events (one per connection) are kept by whatever observes them (before
# logging begins, Twisted buffers them): the log's memory, not the
# connection's.
globalLogBeginner.beginLoggingTo(
    [lambda event: None], discardBuffer=True, redirectStandardIO=False
)
n = 500
server = CommsServerFactory(reactor=MemoryReactorClock())
transports = [StringTransport() for _ in range(n)]
protocols = []
ours = [tracemalloc.Filter(True, "*/twcomms/*")]  # not Twisted's objects
gc.collect()
tracemalloc.start()
before = tracemalloc.take_snapshot().filter_traces(ours)
for t in transports:
    proto = server.buildProtocol(None)
    proto.makeConnection(t)
    protocols.append(proto)
gc.collect()
after = tracemalloc.take_snapshot().filter_traces(ours)
assert len(server.clients) == n
print(sum(d.size_diff for d in after.compare_to(before, "filename")) / n)
"""


def test_a_connection_costs_little_memory_besides_its_transport() -> None:
    """
    What twcomms itself allocates per server connection (protocol, handle,
    write monitor, registry entries) stays small: 10,000 clients are a
    design target (benchmarks.peers E). Shared per-format header packers,
    one registry hook for all, and waiter lists made only when needed keep
    it under 1 KiB on CPython 3.11 (it was 1.2 KiB). Measured in a fresh
    interpreter: instance dictionaries grow once other code has set their
    attributes in other orders, which would make the figure depend on the
    tests run before.
    """
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _MEASURE_PER_CONNECTION],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    per_connection = float(out)
    assert 0 < per_connection < 1100, per_connection
