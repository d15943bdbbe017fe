"""
Tests for L{twcomms.client}: in memory (L{MemoryNetwork}) with a fake clock;
reconnection delays are checked as scheduled, never by wall time.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from twcomms.client import STABLE_AFTER, CommsClientFactory, GaveUpError
from twcomms.connection import CloseReason, CommsProtocol
from twcomms.errors import ConnectionClosedError, NotConnectedError
from twcomms.server import CommsServerFactory
from twcomms.testing import MemoryNetwork


def results(d: Any) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


def make(
    net: MemoryNetwork, **kw: Any
) -> tuple[CommsClientFactory, list[str], list[Any]]:
    log: list[str] = []
    inbox: list[Any] = []
    client = CommsClientFactory(
        reactor=net.reactor,
        on_connect=lambda c: log.append("connect"),
        on_close=lambda c, r: log.append(f"close:{r}"),
        on_message=lambda c, m: inbox.append(m),
        **kw,
    )
    return client, log, inbox


def serve(net: MemoryNetwork, **kw: Any) -> CommsServerFactory:
    server = CommsServerFactory(reactor=net.reactor, **kw)
    server.listen(6000)
    net.flush()
    return server


def test_connect_send_receive() -> None:
    net = MemoryNetwork()
    server = serve(net, on_message=lambda c, m: c.send({"echo": m}))
    client, log, inbox = make(net)
    connected = results(client.whenConnected())
    client.connectTCP("127.0.0.1", 6000)
    assert connected == []
    net.flush()
    assert isinstance(connected[0], CommsProtocol)
    assert log == ["connect"] and client.connected
    client.send([1, 2])
    net.flush()
    assert inbox == [{"echo": [1, 2]}]
    assert len(server.clients) == 1


def test_send_when_not_connected_raises() -> None:
    client, _, _ = make(MemoryNetwork())
    with pytest.raises(NotConnectedError, match="whenConnected"):
        client.send({})


def test_unix_socket() -> None:
    net = MemoryNetwork()
    server = CommsServerFactory(reactor=net.reactor, on_message=lambda c, m: c.send(m))
    server.listen("unix:/tmp/twcomms-test.sock")
    client, _, inbox = make(net)
    client.connectUNIX("/tmp/twcomms-test.sock")
    net.flush()
    client.send({"u": 1})
    net.flush()
    assert inbox == [{"u": 1}]


def test_refused_without_auto_reconnect_fails_when_connected() -> None:
    net = MemoryNetwork()
    client, log, _ = make(net)
    connected = results(client.whenConnected())
    stopped = results(client.whenStopped())
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    assert isinstance(connected[0], Failure)
    assert connected[0].check(GaveUpError)
    assert "Connection was refused" in str(connected[0].value)
    assert connected[0].value.failure.check(ConnectionRefusedError)
    assert stopped == [None]
    assert net.reactor.getDelayedCalls() == []  # nothing scheduled
    assert log == []


def test_when_connected_after_giving_up_fails_at_once() -> None:
    net = MemoryNetwork()
    client, _, _ = make(net)
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    assert isinstance(results(client.whenConnected())[0], Failure)


# -- reconnection --------------------------------------------------------------


def test_initial_delay_and_backoff_are_applied_without_jitter() -> None:
    net = MemoryNetwork()
    client, _, _ = make(
        net, autoReconnect=True, initial_delay=0.5, factor=3, max_delay=10, jitter=0
    )
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    for _ in range(5):
        (call,) = net.reactor.getDelayedCalls()
        net.advance(call.getTime() - net.reactor.seconds())
    assert client.scheduled_delays[:5] == [0.5, 1.5, 4.5, 10.0, 10.0]


def test_jitter_spreads_delays_and_never_exceeds_max_delay() -> None:
    net = MemoryNetwork()
    client, _, _ = make(
        net,
        autoReconnect=True,
        initial_delay=1,
        factor=2,
        max_delay=4,
        jitter=0.5,
        rng=random.Random(1234),
    )
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    scheduled = []
    for _ in range(40):
        (call,) = net.reactor.getDelayedCalls()
        scheduled.append(call.getTime() - net.reactor.seconds())
        net.advance(scheduled[-1])
    assert scheduled == pytest.approx(client.scheduled_delays[:40])
    assert all(0 <= d <= 4 for d in scheduled)
    late = scheduled[5:]
    assert len({round(d, 6) for d in late}) > 20  # spread, not one value
    assert min(late) < 3.5 and max(late) == 4  # clamped after jitter


def test_same_seed_same_delays() -> None:
    delays = []
    for _ in range(2):
        net = MemoryNetwork()
        client, _, _ = make(net, autoReconnect=True, rng=random.Random(7))
        client.connectTCP("127.0.0.1", 6000)
        net.flush()
        for _ in range(4):
            (call,) = net.reactor.getDelayedCalls()
            net.advance(call.getTime() - net.reactor.seconds())
        delays.append(client.scheduled_delays)
    assert delays[0] == delays[1]


def test_delay_resets_after_a_successful_connection() -> None:
    net = MemoryNetwork()
    client, log, _ = make(
        net, autoReconnect=True, initial_delay=1, factor=2, max_delay=60, jitter=0
    )
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    net.advance(1)
    net.advance(2)
    net.advance(4)  # three failures so far: 1, 2, 4
    server = serve(net)
    net.advance(8)
    assert client.connected and log == ["connect"]
    net.advance(STABLE_AFTER)  # the connection has proved itself
    net.break_connections()
    assert log == ["connect", "close:error"]
    (call,) = net.reactor.getDelayedCalls()
    assert call.getTime() - net.reactor.seconds() == 1.0  # back to initial
    net.advance(1)
    assert log == ["connect", "close:error", "connect"]
    assert len(server.clients) == 1


def test_a_server_that_closes_at_once_is_retried_with_growing_delays() -> None:
    """
    A full server (max_clients) accepts and closes at once: each such
    connection counts as a failed attempt, so the delay keeps growing and
    max_retries applies, rather than retrying at initial_delay forever.
    """
    net = MemoryNetwork()
    serve(net, max_clients=0)
    client, log, _ = make(
        net,
        autoReconnect=True,
        initial_delay=1,
        factor=2,
        max_delay=60,
        jitter=0,
        max_retries=4,
    )
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    for _ in range(10):
        net.advance(100)
    assert client.scheduled_delays == [1.0, 2.0, 4.0, 8.0]
    assert results(client.whenStopped()) == [None]
    assert net.reactor.getDelayedCalls() == []


def test_reconnects_after_server_restart_and_messages_flow() -> None:
    net = MemoryNetwork()
    server = serve(net)
    client, log, inbox = make(net, autoReconnect=True, jitter=0, initial_delay=0.1)
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    server.stop()
    net.flush()
    assert log == ["connect", "close:peer closed"]
    net.advance(0.1)  # refused: nothing listens
    assert not client.connected
    server2 = serve(net, on_connect=lambda c: c.send(["hello"]))
    net.advance(0.2)
    assert log == ["connect", "close:peer closed", "connect"]
    assert inbox == [["hello"]]
    assert len(server2.clients) == 1


def test_max_retries() -> None:
    net = MemoryNetwork()
    client, _, _ = make(net, autoReconnect=True, jitter=0, max_retries=3)
    connected = results(client.whenConnected())
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    for _ in range(10):
        net.advance(100)
    assert client.scheduled_delays == [1.0, 2.0, 4.0]
    assert net.reactor.connectors[0].attempts == 4
    assert connected[0].check(GaveUpError)
    assert results(client.whenStopped()) == [None]


def test_stop_closes_the_connection_and_stops_retrying() -> None:
    net = MemoryNetwork()
    server = serve(net)
    client, log, _ = make(net, autoReconnect=True, jitter=0)
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    stopped = results(client.stop())
    assert stopped == []
    with pytest.raises(ConnectionClosedError):
        client.send({"after": "stop"})
    net.flush()
    assert stopped == [None]
    assert log == ["connect", "close:closed"]
    net.advance(1000)
    assert log == ["connect", "close:closed"]
    assert len(server.clients) == 0
    assert net.reactor.getDelayedCalls() == []


def test_stop_while_waiting_to_retry() -> None:
    net = MemoryNetwork()
    client, _, _ = make(net, autoReconnect=True)
    connected = results(client.whenConnected())
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    assert len(net.reactor.getDelayedCalls()) == 1
    assert results(client.stop()) == [None]
    assert net.reactor.getDelayedCalls() == []
    assert connected[0].check(GaveUpError)
    serve(net)
    net.advance(1000)
    assert not client.connected


def test_reset_delay_after_stop_does_not_re_enable_retrying() -> None:
    net = MemoryNetwork()
    client, _, _ = make(net, autoReconnect=True)
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    client.stop()
    client.resetDelay()
    assert not client.continueTrying


def test_when_disconnected() -> None:
    net = MemoryNetwork()
    serve(net)
    client, _, _ = make(net)
    assert results(client.whenDisconnected()) == [None]
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    closed = results(client.whenDisconnected())
    assert closed == []
    net.break_connections()
    assert closed == [CloseReason.ERROR]


def test_validation() -> None:
    with pytest.raises(ValueError):
        CommsClientFactory(initial_delay=5, max_delay=1)
    with pytest.raises(ValueError):
        CommsClientFactory(factor=0.5)
    with pytest.raises(ValueError):
        CommsClientFactory(max_retries=-1)
    with pytest.raises(ValueError, match="messageDataType"):
        CommsClientFactory("yaml")


def test_tls_connect_uses_verified_options() -> None:
    pytest.importorskip("OpenSSL")
    reactor = MemoryReactorClock()
    client = CommsClientFactory(reactor=reactor)
    client.connectSSL("localhost", 6001)
    host, port, factory, options, _, _ = reactor.sslClients[0]
    assert (host, port, factory) == ("localhost", 6001, client)
    assert type(options).__name__ == "ClientTLSOptions"
    assert options._hostname == "localhost"


def test_reconnecting_by_hand_without_auto_reconnect() -> None:
    net = MemoryNetwork()
    serve(net)
    client, log, _ = make(net)
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    net.break_connections()
    assert results(client.whenStopped()) == [None]
    connected = results(client.whenConnected())
    assert isinstance(connected[0], Failure)
    client.connectTCP("127.0.0.1", 6000)
    again = results(client.whenConnected())  # asked before it completes
    assert again == []
    net.flush()
    assert isinstance(again[0], CommsProtocol)
    assert log == ["connect", "close:error", "connect"]


def test_stop_while_the_first_attempt_is_in_flight() -> None:
    net = MemoryNetwork()
    server = serve(net)
    client, log, _ = make(net, autoReconnect=True)
    connector = client.connectTCP("127.0.0.1", 6000)
    client.stop()
    net.flush()
    assert connector.state == "disconnected"
    assert log == [] and len(server.clients) == 0
