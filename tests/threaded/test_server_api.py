"""
The threaded Server's API: addressing clients, callbacks and their
threads, the original's signatures and README snippets.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from typing import Any

import pytest

from harness.wire import frame
from twcomms.errors import ClientGoneError
from twcomms.threaded import Client, ConnectedClient, Server
from twcomms.threaded.eventloop import get_event_loop

from .raw import WAIT, assert_empty, get, raw_connect, recv_frame

REACTOR_THREAD = "twcomms-reactor"


def _connect_raw(server: Server, connected: queue.Queue[Any]) -> Any:
    """
    Connect a raw socket and return it with the server's handle for it.
    """
    sock = raw_connect(server.port)
    handle = get(connected, "connect callback")
    assert handle.port == sock.getsockname()[1]
    return sock, handle


# -- sendTo ---------------------------------------------------------------


def test_sendTo_by_handle_id_and_index(make_server):
    server = make_server()
    connected: queue.Queue[ConnectedClient] = queue.Queue()
    server.add_onconnect_callback(connected.put)
    a, ha = _connect_raw(server, connected)
    b, hb = _connect_raw(server, connected)
    with a, b:
        assert server.clients == [ha, hb]  # connection order
        server.sendTo({"to": "a by handle"}, ha)
        server.sendTo({"to": "b by id"}, hb.id)
        server.sendTo({"to": "a by index"}, 0)
        server.sendTo({"to": "b by index"}, 1)
        assert recv_frame(a) == b'{"to": "a by handle"}'
        assert recv_frame(a) == b'{"to": "a by index"}'
        assert recv_frame(b) == b'{"to": "b by id"}'
        assert recv_frame(b) == b'{"to": "b by index"}'


def test_sendTo_gone_client_and_bad_index(make_server):
    server = make_server()
    connected: queue.Queue[ConnectedClient] = queue.Queue()
    closed: queue.Queue[ConnectedClient] = queue.Queue()
    server.add_onconnect_callback(connected.put)
    server.add_onclose_callback(closed.put)
    a, ha = _connect_raw(server, connected)
    b, hb = _connect_raw(server, connected)
    with b:
        a.close()
        assert get(closed, "close callback") is ha
        assert not ha.connected
        assert ha.close_reason is not None
        with pytest.raises(ClientGoneError):
            server.sendTo({"x": 1}, ha)
        with pytest.raises(ClientGoneError):
            server.sendTo({"x": 1}, ha.id)
        with pytest.raises(ClientGoneError):
            ha.send({"x": 1})
        with pytest.raises(ClientGoneError):
            server.sendTo({"x": 1}, "no-such-id")
        # Indices shift as clients leave (the original's meaning).
        assert server.clients == [hb]
        server.sendTo({"now": "index 0 is b"}, 0)
        assert recv_frame(b) == b'{"now": "index 0 is b"}'
        for bad in (1, 5, -1):
            with pytest.raises(IndexError):
                server.sendTo({"x": 1}, bad)
        with pytest.raises(TypeError):
            server.sendTo({"x": 1}, True)


def test_sendTo_with_no_clients_raises_index_error(make_server):
    server = make_server()
    with pytest.raises(IndexError):
        server.sendTo({"x": 1})


def test_broadcast_with_exclude(make_server):
    server = make_server()
    connected: queue.Queue[ConnectedClient] = queue.Queue()
    server.add_onconnect_callback(connected.put)
    a, ha = _connect_raw(server, connected)
    b, hb = _connect_raw(server, connected)
    with a, b:
        server.broadcast({"all": 1})
        server.broadcast({"not a": 1}, exclude=ha)
        server.broadcast({"not b": 1}, exclude=[hb.id])
        assert recv_frame(a) == b'{"all": 1}'
        assert recv_frame(a) == b'{"not b": 1}'
        assert recv_frame(b) == b'{"all": 1}'
        assert recv_frame(b) == b'{"not a": 1}'


def test_server_closes_one_client(make_server, make_client):
    server = make_server()
    connected: queue.Queue[ConnectedClient] = queue.Queue()
    server.add_onconnect_callback(connected.put)
    client = make_client(server.port)
    client_closed: queue.Queue[Client] = queue.Queue()
    got: queue.Queue[Any] = queue.Queue()
    client.add_onclose_callback(client_closed.put)
    client.add_onmessage_callback(got.put)
    handle = get(connected, "connect callback")
    handle.send({"bye": True})
    handle.close()
    assert get(got, "message sent before close") == {"bye": True}
    assert get(client_closed, "client close callback") is client
    assert client.wait(WAIT)


# -- connect / close callbacks ----------------------------------------------


def test_connect_callback_sends_a_welcome_like_the_original(make_server, make_client):
    """
    The original's example sends from the connect callback, on the object
    it was given.
    """
    server = make_server()
    connected: queue.Queue[ConnectedClient] = queue.Queue()
    server.add_onconnect_callback(lambda c: c.send({"welcome": c.port}))
    server.add_onconnect_callback(connected.put)
    client = make_client(server.port, connect=False)
    got: queue.Queue[Any] = queue.Queue()
    client.add_onmessage_callback(got.put)
    client.connect(timeout=WAIT)
    handle = get(connected, "connect callback")
    assert get(got, "welcome") == {"welcome": handle.port}


def test_connect_and_close_callbacks_get_the_right_objects(make_server, make_client):
    server = make_server()
    events: queue.Queue[Any] = queue.Queue()
    server.add_onconnect_callback(lambda c: events.put(("server-connect", c)))
    server.add_onclose_callback(lambda c: events.put(("server-close", c)))
    sock = raw_connect(server.port)
    local_port = sock.getsockname()[1]
    kind, handle = get(events, "server connect callback")
    assert kind == "server-connect"
    assert isinstance(handle, ConnectedClient)
    assert handle.address == "127.0.0.1"
    assert handle.port == local_port
    assert isinstance(handle.id, str) and handle.id
    assert handle.connected
    sock.close()
    kind, closed = get(events, "server close callback")
    assert (kind, closed) == ("server-close", handle)
    assert not handle.connected

    # A Client's callbacks get the Client itself, which knows the server.
    client = make_client(server.port, connect=False)
    client.add_onconnect_callback(lambda c: events.put(("client-connect", c)))
    client.add_onclose_callback(lambda c: events.put(("client-close", c)))
    client.connect(timeout=WAIT)
    seen = {get(events, "connect callbacks") for _ in range(2)}
    assert ("client-connect", client) in seen
    assert (client.address, client.port) == ("127.0.0.1", server.port)
    other = next(c for kind, c in seen if kind == "server-connect")
    assert other.id != handle.id
    client.close(timeout=WAIT)
    seen = {get(events, "close callbacks") for _ in range(2)}
    assert ("client-close", client) in seen
    assert ("server-close", other) in seen


# -- callbacks: errors, blocking, threads -----------------------------------


def test_raising_callback_is_logged_and_nothing_stops(make_server, make_client, caplog):
    caplog.set_level(logging.INFO, logger="twcomms")
    server = make_server()
    first: queue.Queue[Any] = queue.Queue()
    second: queue.Queue[Any] = queue.Queue()

    def bad(message):
        first.put(message)
        if message.get("boom"):
            raise RuntimeError("callback exploded on purpose")

    server.add_onmessage_callback(bad)
    server.add_onmessage_callback(second.put)
    client = make_client(server.port)
    for message in ({"i": 0}, {"boom": True}, {"i": 1}, {"boom": True}, {"i": 2}):
        client.send(message)
    expected = [{"i": 0}, {"boom": True}, {"i": 1}, {"boom": True}, {"i": 2}]
    assert [get(first, "first callback") for _ in expected] == expected
    assert [get(second, "second callback") for _ in expected] == expected

    raised = [
        r
        for r in caplog.records
        if r.exc_info and r.exc_info[0] is RuntimeError and r.name.startswith("twcomms")
    ]
    assert len(raised) == 2, caplog.text
    assert raised[0].levelno >= logging.ERROR
    assert "callback exploded on purpose" in caplog.text
    assert "Traceback" in caplog.text
    assert "bad" in raised[0].getMessage()  # names the callback

    # The connection is still up: a reply still gets through.
    replies: queue.Queue[Any] = queue.Queue()
    client.add_onmessage_callback(replies.put)
    server.broadcast({"still": "alive"})
    assert get(replies, "reply") == {"still": "alive"}


def test_raising_client_callback_is_logged(make_server, make_client, caplog):
    caplog.set_level(logging.INFO, logger="twcomms")
    server = make_server()
    client = make_client(server.port)
    got: queue.Queue[Any] = queue.Queue()

    def bad(message):
        raise ValueError("client callback exploded")

    client.add_onmessage_callback(bad)
    client.add_onmessage_callback(got.put)
    server.broadcast({"a": 1})
    server.broadcast({"a": 2})
    assert get(got, "message") == {"a": 1}
    assert get(got, "message") == {"a": 2}
    errors = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ValueError]
    assert len(errors) == 2, caplog.text


def test_blocked_callback_holds_up_only_its_connection(make_server):
    server = make_server()
    connected: queue.Queue[ConnectedClient] = queue.Queue()
    server.add_onconnect_callback(connected.put)
    release = threading.Event()
    blocked = threading.Event()
    got: dict[str, queue.Queue[Any]] = {}
    ids: dict[str, str] = {}

    def on_message(client, message):
        if message == {"slow": 0}:
            blocked.set()
            assert release.wait(WAIT), "never released"
        got[client.id].put(message)

    server.add_onmessage_callback(on_message, with_sender=True)
    slow, hs = _connect_raw(server, connected)
    fast, hf = _connect_raw(server, connected)
    for name, h in (("slow", hs), ("fast", hf)):
        ids[name] = h.id
        got[h.id] = queue.Queue()
    try:
        for i in range(5):
            slow.sendall(frame(b'{"slow": %d}' % i))
        assert blocked.wait(WAIT), "the slow callback never ran"
        for i in range(50):
            fast.sendall(frame(b'{"fast": %d}' % i))
        for i in range(50):
            assert get(got[ids["fast"]], "fast message") == {"fast": i}
        assert_empty(got[ids["slow"]], "slow message while blocked")
        release.set()
        for i in range(5):
            assert get(got[ids["slow"]], "slow message") == {"slow": i}
    finally:
        release.set()
        slow.close()
        fast.close()


def test_callbacks_never_run_on_the_reactor_thread(make_server, make_client):
    server = make_server()
    names: queue.Queue[tuple[str, str, bool]] = queue.Queue()
    loop = get_event_loop()

    def record(event: str):
        return lambda *args: names.put(
            (event, threading.current_thread().name, loop.in_reactor_thread())
        )

    server.add_onconnect_callback(record("server connect"))
    server.add_onmessage_callback(record("server message"))
    server.add_onmessage_callback(lambda c, m: c.send(m), with_sender=True)
    server.add_onclose_callback(record("server close"))
    client = make_client(server.port, connect=False)
    client.add_onconnect_callback(record("client connect"))
    client.add_onmessage_callback(record("client message"))
    client.add_onclose_callback(record("client close"))
    client.connect(timeout=WAIT)
    client.send({"ping": 1})
    events = [get(names, "callback") for _ in range(4)]
    client.close(timeout=WAIT)
    events += [get(names, "close callback") for _ in range(2)]
    assert {e for e, _, _ in events} == {
        "server connect",
        "server message",
        "server close",
        "client connect",
        "client message",
        "client close",
    }
    for event, name, on_reactor in events:
        assert not on_reactor, event
        assert name != REACTOR_THREAD, event
        assert name != threading.main_thread().name, event
    if loop.owns_thread:
        # The library's reactor thread exists and is the one named so.
        assert any(t.name == REACTOR_THREAD for t in threading.enumerate())
    else:
        # A reactor that was already running (pytest-twisted's) is used.
        assert loop.reactor.running


def test_callback_can_call_blocking_methods(make_server, make_client):
    """
    Callbacks run on worker threads, so a callback may call the blocking
    methods (here: a message callback closes its own client).
    """
    server = make_server()
    client = make_client(server.port)
    outcome: queue.Queue[Any] = queue.Queue()

    def on_message(message):
        try:
            client.close(timeout=WAIT)
            outcome.put("closed")
        except BaseException as e:
            outcome.put(e)

    client.add_onmessage_callback(on_message)
    server.broadcast({"close": "yourself"})
    assert get(outcome, "close from a callback") == "closed"
    assert client.wait(WAIT)


# -- the original's API -------------------------------------------------------


def test_readme_server_snippet_all_interfaces_port_0(make_server):
    server = make_server("0.0.0.0", 0)
    assert server.port > 0
    got: queue.Queue[Any] = queue.Queue()
    server.add_onmessage_callback(got.put)
    with raw_connect(server.port) as sock:
        sock.sendall(frame(b'{"via": "0.0.0.0"}'))
        assert get(got, "message") == {"via": "0.0.0.0"}


def test_positional_arguments_in_the_originals_order(make_server, make_client):
    # Server(address, port, messageDataType, byteOrder, sendMostRecent)
    server = make_server("127.0.0.1", 0, "string", "big", False)
    assert (server.messageDataType, server.byteOrder) == ("string", "big")
    assert server.sendMostRecent is False
    got: queue.Queue[Any] = queue.Queue()
    server.add_onmessage_callback(
        lambda c, m: (got.put(m), c.send(m)), with_sender=True
    )
    # Client(address, port, controlledByServer, connection, messageDataType,
    #        byteOrder, sendMostRecent, autoReconnect)
    client = make_client(server.port, False, None, "string", "big", True, False)
    assert (client.messageDataType, client.byteOrder) == ("string", "big")
    assert client.sendMostRecent is True
    assert client.autoReconnect is False
    replies: queue.Queue[Any] = queue.Queue()
    client.add_onmessage_callback(replies.put)
    client.send("big-endian text")
    assert get(got, "message") == "big-endian text"
    assert get(replies, "reply") == "big-endian text"
    # And big-endian really is on the wire.
    with raw_connect(server.port) as sock:
        sock.sendall(frame(b"raw big", "big"))
        assert get(got, "raw message") == "raw big"
        assert recv_frame(sock, "big") == b"raw big"


def test_keyword_arguments_of_the_readme(make_server, make_client):
    server = make_server(
        address="127.0.0.1", port=0, messageDataType="json", byteOrder="little"
    )
    client = make_client(
        port=server.port,
        messageDataType="json",
        autoReconnect=True,
        byteOrder="little",
        controlledByServer=False,
        connection=None,
    )
    assert client.connected


def test_send_most_recent_is_accepted(make_server, make_client):
    server = make_server(sendMostRecent=True)
    got: queue.Queue[Any] = queue.Queue()
    server.add_onmessage_callback(got.put)
    client = make_client(server.port, sendMostRecent=True)
    for i in range(3):
        client.send({"i": i})
    # It does nothing: every message arrives (the original's behaviour).
    assert [get(got, "message") for _ in range(3)] == [{"i": i} for i in range(3)]


@pytest.mark.parametrize("kind", ["server", "client"])
def test_remove_callbacks_by_function_and_index(kind, make_server, make_client):
    server = make_server()
    obj: Any = server if kind == "server" else make_client(server.port)
    for event in ("onconnect", "onclose", "onmessage"):
        add = getattr(obj, f"add_{event}_callback")
        remove = getattr(obj, f"remove_{event}_callback")

        def f(*args):
            pass

        def g(*args):
            pass

        add(f)
        add(g)
        assert remove(f) is True
        assert remove(f) is False  # already gone
        assert remove(index=0) is True  # g
        assert remove(index=0) is False  # empty
        add(f)
        assert remove(None, 5) is False
        assert remove(None, 0) is True


def test_removed_callback_is_not_called(make_server, make_client):
    server = make_server()
    kept: queue.Queue[Any] = queue.Queue()
    removed: queue.Queue[Any] = queue.Queue()
    server.add_onmessage_callback(removed.put)
    server.add_onmessage_callback(kept.put)
    assert server.remove_onmessage_callback(removed.put) is True
    client = make_client(server.port)
    client.send({"x": 1})
    assert get(kept, "message") == {"x": 1}
    assert removed.empty()


def test_add_non_callable_raises(make_server):
    server = make_server(start=False)
    with pytest.raises(TypeError):
        server.add_onmessage_callback("not callable")


# -- lifecycle helpers ---------------------------------------------------------


def test_context_manager_wait_and_clients(make_client):
    with Server("127.0.0.1", 0) as server:
        assert server.started and server.port > 0
        connected: queue.Queue[Any] = queue.Queue()
        server.add_onconnect_callback(connected.put)
        assert server.clients == []
        c1 = make_client(server.port)
        h1 = get(connected, "first connect")
        c2 = make_client(server.port)
        h2 = get(connected, "second connect")
        assert server.clients == [h1, h2]
        assert server.wait(0.05) is False  # running
        c1.close(timeout=WAIT)
        assert c1.wait(WAIT)
        c2.close(timeout=WAIT)
        # stop() from another thread ends wait()
        stopper = threading.Thread(target=server.stop, kwargs={"timeout": WAIT})
        stopper.start()
        assert server.wait(WAIT) is True
        stopper.join(WAIT)
    assert not server.started
    assert server.clients == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=WAIT).close()


def test_stop_closes_clients_after_pending_sends(make_server, make_client):
    server = make_server()
    client = make_client(server.port)
    got: queue.Queue[Any] = queue.Queue()
    closed: queue.Queue[Any] = queue.Queue()
    client.add_onmessage_callback(got.put)
    client.add_onclose_callback(closed.put)
    for i in range(100):
        server.broadcast({"i": i})
    server.stop(timeout=WAIT)
    assert [get(got, "message") for _ in range(100)] == [{"i": i} for i in range(100)]
    assert get(closed, "client close callback") is client
    assert client.wait(WAIT)
    assert not client.connected


def test_server_restart_same_object(make_server, make_client):
    server = make_server()
    got: queue.Queue[Any] = queue.Queue()
    server.add_onmessage_callback(got.put)
    server.stop(timeout=WAIT)
    server.start(timeout=WAIT)
    client = make_client(server.port)
    client.send({"after": "restart"})
    assert get(got, "message") == {"after": "restart"}


# -- browsers ---------------------------------------------------------------


def test_a_browser_and_a_seed_style_tcp_client_talk_through_a_threaded_server(
    make_server,
):
    # Server(web=...) as a seed user would write it, plus one argument.
    from harness.websocket import TEXT, RawWebSocket

    server = make_server(web="tcp:0:interface=127.0.0.1")
    assert server.web_port is not None and server.web_port != server.port
    messages: queue.Queue[Any] = queue.Queue()
    connected: queue.Queue[ConnectedClient] = queue.Queue()
    server.add_onconnect_callback(connected.put)
    server.add_onmessage_callback(messages.put)
    ws = RawWebSocket(server.web_port)
    browser = get(connected, "the browser's connect")
    sock, _ = _connect_raw(server, connected)
    with sock:
        ws.send_text('{"from": "browser"}')
        assert get(messages, "the browser's message") == {"from": "browser"}
        server.sendTo({"to": "browser"}, browser)
        server.broadcast({"to": "all"})
        assert ws.recv() == (TEXT, b'{"to": "browser"}')
        assert ws.recv() == (TEXT, b'{"to": "all"}')
        assert recv_frame(sock) == b'{"to": "all"}'
    ws.close()
