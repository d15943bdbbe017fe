"""
Client and Server lifecycle: reconnection, errors when not connected or
closed, refused connections, ports in use, and blocking calls made on the
reactor thread.
"""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet.error import CannotListenError

from twcomms.errors import ConnectionClosedError, NotConnectedError
from twcomms.threaded import Client, FlowControl, ReactorThreadError, Server
from twcomms.threaded.eventloop import get_event_loop

from .raw import WAIT, assert_empty, get


@pytest.fixture
def refusing_port() -> Iterator[socket.socket]:
    """
    A socket bound to a free port but not listening: connects are refused.
    The test may listen() on it later to see whether anything still tries.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def on_reactor_thread(f: Callable[[], Any]) -> Any:
    """
    Run C{f} inside a callLater on the reactor thread; return what it
    returned or raised (a blocking call there must raise, not deadlock).
    """
    reactor = get_event_loop().reactor
    assert reactor is not None and reactor.running
    out: queue.Queue[Any] = queue.Queue()

    def run() -> None:
        try:
            out.put(("returned", f()))
        except BaseException as e:
            out.put(("raised", e))

    reactor.callFromThread(reactor.callLater, 0, run)
    return get(out, "result from the reactor thread")


# -- reconnection -----------------------------------------------------------


def test_reconnects_after_server_restart(make_server, make_client):
    server = make_server()
    port = server.port
    client = make_client(
        port, autoReconnect=True, initial_delay=0.05, max_delay=0.2, connect=False
    )
    connects: queue.Queue[Any] = queue.Queue()
    closes: queue.Queue[Any] = queue.Queue()
    client.add_onconnect_callback(connects.put)
    client.add_onclose_callback(closes.put)
    replies: queue.Queue[Any] = queue.Queue()
    client.add_onmessage_callback(replies.put)
    client.connect(timeout=WAIT)
    assert get(connects, "first connect") is client

    server.stop(timeout=WAIT)
    assert get(closes, "close after the server stopped") is client
    assert not client.connected
    # While reconnecting, send() does not raise: the message waits for the
    # next connection (FlowControl's offline queue).
    client.send({"while": "down"})

    server2 = make_server("127.0.0.1", port, start=False)
    got: queue.Queue[Any] = queue.Queue()
    server2.add_onmessage_callback(
        lambda c, m: (got.put(m), c.send(m)), with_sender=True
    )
    server2.start(timeout=WAIT)
    start = time.monotonic()
    assert get(connects, "second connect") is client
    assert time.monotonic() - start < 5
    assert client.connected
    client.send({"again": True})
    assert get(got, "message queued while down") == {"while": "down"}
    assert get(got, "message after reconnect") == {"again": True}
    assert get(replies, "first reply") == {"while": "down"}
    assert get(replies, "reply after reconnect") == {"again": True}
    assert len(server2.clients) == 1  # one connection, not two


def test_auto_reconnect_connect_waits_for_a_late_server(
    make_server, make_client, refusing_port
):
    port = refusing_port.getsockname()[1]
    refusing_port.close()
    client = make_client(
        port, autoReconnect=True, initial_delay=0.05, max_delay=0.2, connect=False
    )
    connects: queue.Queue[Any] = queue.Queue()
    client.add_onconnect_callback(connects.put)
    client.connect(wait=False)
    # Sending while reconnecting does not raise (it is not "not connected
    # and not reconnecting"): it waits for the connection.
    client.send({"early": 1})
    server = make_server("127.0.0.1", port, start=False)
    got: queue.Queue[Any] = queue.Queue()
    server.add_onmessage_callback(got.put)
    server.start(timeout=WAIT)
    assert get(connects, "connect once the server is up") is client
    assert client.connected
    client.send({"late": 2})
    assert get(got, "message sent before the server was up") == {"early": 1}
    assert get(got, "message sent after") == {"late": 2}


def test_client_close_stops_reconnecting(make_server, make_client):
    server = make_server()
    port = server.port
    client = make_client(port, autoReconnect=True, initial_delay=0.05, max_delay=0.1)
    server.stop(timeout=WAIT)
    client.close(timeout=WAIT)
    assert client.wait(WAIT)
    server2 = make_server("127.0.0.1", port, start=False)
    connected: queue.Queue[Any] = queue.Queue()
    server2.add_onconnect_callback(connected.put)
    server2.start(timeout=WAIT)
    assert_empty(connected, "connection after close()", timeout=0.5)


# -- sending when not connected ---------------------------------------------


def test_send_after_close_raises(make_server, make_client):
    server = make_server()
    client = make_client(server.port)
    client.close(timeout=WAIT)
    with pytest.raises(ConnectionClosedError):
        client.send({"x": 1})
    with pytest.raises(ConnectionError):  # the built-in it also is
        client.send({"x": 1})
    client.close(timeout=WAIT)  # closing twice does nothing


def test_send_after_close_with_auto_reconnect_raises(make_server, make_client):
    server = make_server()
    client = make_client(server.port, autoReconnect=True, initial_delay=0.05)
    client.close(timeout=WAIT)
    with pytest.raises(ConnectionClosedError):
        client.send({"x": 1})


def test_send_before_connect_raises(make_server, make_client):
    server = make_server()
    client = make_client(server.port, connect=False)
    with pytest.raises(NotConnectedError):
        client.send({"x": 1})


def test_send_after_server_went_away_raises(make_server, make_client):
    server = make_server()
    client = make_client(server.port)
    closed: queue.Queue[Any] = queue.Queue()
    client.add_onclose_callback(closed.put)
    server.stop(timeout=WAIT)
    get(closed, "close callback")
    with pytest.raises(NotConnectedError):
        client.send({"x": 1})
    assert client.wait(WAIT)  # closed for good without autoReconnect


def test_send_while_connecting_without_auto_reconnect_raises(
    make_client, refusing_port
):
    client = make_client(refusing_port.getsockname()[1], connect=False)
    client.connect(wait=False)
    with pytest.raises(NotConnectedError):
        client.send({"x": 1})


# -- refused / port in use -----------------------------------------------------


def test_connect_refused_raises_promptly_and_nothing_retries(
    make_client, refusing_port
):
    port = refusing_port.getsockname()[1]
    client = make_client(port, connect=False)
    start = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        client.connect(timeout=WAIT)
    assert time.monotonic() - start < 5
    assert isinstance(info.value, NotConnectedError)
    assert "refused" in str(info.value).lower()
    assert not client.connected
    assert get_event_loop().wait_released(client, WAIT)
    assert client.wait(0)
    # Nothing keeps trying: once the port listens, no connection arrives.
    refusing_port.listen(1)
    refusing_port.settimeout(0.5)
    with pytest.raises(socket.timeout):
        refusing_port.accept()[0].close()


def test_connect_again_after_a_refused_connect(make_server, make_client, refusing_port):
    port = refusing_port.getsockname()[1]
    client = make_client(port, connect=False)
    with pytest.raises(ConnectionError):
        client.connect(timeout=WAIT)
    refusing_port.close()
    server = make_server("127.0.0.1", port)
    got: queue.Queue[Any] = queue.Queue()
    server.add_onmessage_callback(got.put)
    try:
        client.connect(timeout=WAIT)
        client.send({"second": "try"})
        assert get(got, "message after the second connect") == {"second": "try"}
    finally:
        client.close(timeout=WAIT)


def test_background_connect_refused_closes_the_client(make_client, refusing_port):
    client = make_client(refusing_port.getsockname()[1], connect=False)
    client.connect(wait=False)
    try:
        assert client.wait(5), "Client.wait() did not return"
        assert get_event_loop().wait_released(client, WAIT)
    finally:
        client.close(timeout=WAIT)


def test_reconnect_gives_up_after_max_retries(make_server, make_client):
    server = make_server()
    client = make_client(
        server.port,
        autoReconnect=True,
        initial_delay=0.02,
        max_delay=0.05,
        max_retries=2,
    )
    server.stop(timeout=WAIT)
    try:
        assert client.wait(5), "Client.wait() did not return after giving up"
        assert get_event_loop().wait_released(client, WAIT)
    finally:
        client.close(timeout=WAIT)


def test_start_on_a_port_in_use_raises_promptly(make_server):
    first = make_server()
    second = make_server("127.0.0.1", first.port, start=False)
    start = time.monotonic()
    with pytest.raises(CannotListenError):
        second.start(timeout=WAIT)
    assert time.monotonic() - start < 5
    assert not second.started
    assert second not in get_event_loop().open_objects()
    # The first server is unaffected.
    with socket.create_connection(("127.0.0.1", first.port), timeout=WAIT):
        pass


# -- blocking calls on the reactor thread -------------------------------------


def test_blocking_calls_on_the_reactor_thread_raise(make_server, make_client):
    server = make_server()
    client = make_client(server.port)
    probe_server = make_server()
    probe_client = make_client(server.port)
    try:
        for name, call in [
            ("Client.close", probe_client.close),
            ("Server.stop", probe_server.stop),
            ("Server.start", Server("127.0.0.1", 0).start),
            ("Client.connect", Client("127.0.0.1", server.port).connect),
        ]:
            kind, value = on_reactor_thread(call)
            assert kind == "raised", f"{name} on the reactor thread returned"
            assert isinstance(value, ReactorThreadError), (name, value)
            assert isinstance(value, RuntimeError)
    finally:
        probe_client.close()
        probe_server.stop()
    # send/broadcast never wait for the reactor: they work there.
    got: queue.Queue[Any] = queue.Queue()
    client.add_onmessage_callback(got.put)
    kind, value = on_reactor_thread(lambda: server.broadcast({"from": "reactor"}))
    assert kind == "returned", value
    kind, value = on_reactor_thread(lambda: client.send({"from": "reactor"}))
    assert kind == "returned", value
    assert get(got, "broadcast made on the reactor thread") == {"from": "reactor"}


def test_client_close_on_reactor_thread_leaves_client_usable(make_server, make_client):
    server = make_server()
    closed: queue.Queue[Any] = queue.Queue()
    got: queue.Queue[Any] = queue.Queue()
    server.add_onclose_callback(closed.put)
    server.add_onmessage_callback(got.put)
    client = make_client(server.port)
    kind, error = on_reactor_thread(client.close)
    assert isinstance(error, ReactorThreadError)
    try:
        # Nothing happened: still open and usable...
        client.send({"still": "open"})
        assert get(got, "message after the refused close") == {"still": "open"}
        # ...and close() from a proper thread really closes it.
        client.close(timeout=WAIT)
        get(closed, "server sees the client close", timeout=5)
    finally:
        # Private: the bug leaves the connection up with no public way to
        # close it.
        get_event_loop().call(client._factory.stop, timeout=WAIT)


def test_server_stop_on_reactor_thread_leaves_server_running(make_server):
    server = make_server()
    kind, error = on_reactor_thread(server.stop)
    assert isinstance(error, ReactorThreadError)
    try:
        assert server.started, "server says it is stopped after a refused stop()"
        server.stop(timeout=WAIT)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=WAIT).close()
    finally:
        # Private: the bug leaves it listening with no public way to stop.
        get_event_loop().call(server._factory.stop, timeout=WAIT)


def test_client_context_manager(make_server):
    server = make_server()
    got: queue.Queue[Any] = queue.Queue()
    server.add_onmessage_callback(got.put)
    with Client("127.0.0.1", server.port) as client:
        assert client.connected
        client.send({"in": "with"})
        assert get(got, "message") == {"in": "with"}
    assert not client.connected
    with pytest.raises(ConnectionClosedError):
        client.send({"x": 1})


@pytest.mark.parametrize("side", ["client", "server"])
def test_send_on_the_reactor_thread_never_waits(make_server, make_client, side):
    """
    The contract: send and broadcast never wait for the reactor. Sending
    past the send high-water mark from one reactor callback must not block
    the reactor (it cannot drain while it runs the callback).
    """
    flow = FlowControl(
        send_high_water=64 * 1024, send_low_water=16 * 1024, send_timeout=2
    )
    server = make_server(flow=flow)
    connected: queue.Queue[Any] = queue.Queue()
    server.add_onconnect_callback(connected.put)
    client = make_client(server.port, flow=flow)
    handle = get(connected, "connect callback")
    got: queue.Queue[Any] = queue.Queue()
    if side == "client":
        server.add_onmessage_callback(got.put)
        send = client.send
    else:
        client.add_onmessage_callback(got.put)
        send = handle.send
    n, pad = 10, "x" * 16_000

    def send_all() -> float:
        start = time.monotonic()
        for i in range(n):
            send({"i": i, "pad": pad})
        return time.monotonic() - start

    kind, value = on_reactor_thread(send_all)
    assert kind == "returned", value
    assert value < 1, f"the reactor was blocked {value:.1f} s"
    assert [get(got, "message")["i"] for _ in range(n)] == list(range(n))


def test_close_during_background_connect_leaves_no_connection(make_server):
    """
    close() right after connect(wait=False): whether or not the attempt
    completed first, nothing stays connected (a connection made by the
    attempt is closed, never leaked).
    """
    server = make_server()
    connects: queue.Queue[Any] = queue.Queue()
    closes: queue.Queue[Any] = queue.Queue()
    server.add_onconnect_callback(connects.put)
    server.add_onclose_callback(closes.put)
    for _ in range(20):
        client = Client("127.0.0.1", server.port)
        client.connect(wait=False)
        client.close(timeout=WAIT)
        assert not client.connected
        with pytest.raises(ConnectionClosedError):
            client.send({"x": 1})
    made = 0
    while True:
        try:
            connects.get(timeout=0.5)
        except queue.Empty:
            break
        made += 1
    for _ in range(made):
        get(closes, "close of a connection made during close()")
    assert server.clients == []
