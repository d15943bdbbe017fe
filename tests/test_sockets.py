"""
Real-socket tests: servers and clients on 127.0.0.1 (and a UNIX socket),
driven by the global reactor that pytest-twisted runs.

Rules every test here keeps:
  - it binds a free port (port 0) and reads the port it got;
  - every wait is bounded (L{bounded}), so a bug fails the test instead of
    hanging the run;
  - it synchronises on Deferreds (connect/close/message events), never on
    sleeps; the few short C{deferLater} waits only check that something
    does I{not} happen;
  - whatever it opened is closed by the C{cleanup} fixture (clients first,
    then servers: last registered, first closed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, ssl, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import CannotListenError
from twisted.python.failure import Failure

from harness.procs import child_env
from harness.wire import frame, header, split
from tests.tls_helpers import TLSFiles, make_tls_files
from twcomms.client import CommsClientFactory, GaveUpError
from twcomms.connection import CloseReason, CommsProtocol
from twcomms.errors import ClientGoneError
from twcomms.server import DEFAULT_BACKLOG, ClientHandle, CommsServerFactory

#: Seconds any single wait may take before the test fails.
TIMEOUT = 10.0
#: A free TCP port on the loopback interface.
LOCAL_TCP = "tcp:0:interface=127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def bounded(d: defer.Deferred[Any], timeout: float = TIMEOUT) -> defer.Deferred[Any]:
    """
    A new Deferred with C{d}'s result, or failing with C{TimeoutError} after
    C{timeout} seconds.

    C{d} itself is not cancelled: C{d.addTimeout()} would cancel it, and a
    cancelled C{DeferredList} with C{consumeErrors=True} (what
    C{CommsServerFactory.stop()} returns) I{succeeds} with a list of
    C{CancelledError} failures, so a hung stop() would pass unnoticed.
    """
    result: defer.Deferred[Any] = defer.Deferred()

    def done(outcome: Any) -> None:
        if not result.called:
            result.callback(outcome)

    d.addBoth(done)
    return result.addTimeout(timeout, reactor)


def pause(seconds: float) -> defer.Deferred[None]:
    """
    Let the reactor run for C{seconds}. Only to check that something does
    not happen; never to wait for something that should.
    """
    return task.deferLater(reactor, seconds, lambda: None)


class Events:
    """
    A callable that records what it is called with (one argument as is,
    several as a tuple) and hands out Deferreds for "N calls so far".
    """

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._waiters: list[tuple[int, defer.Deferred[list[Any]]]] = []

    def __call__(self, *args: Any) -> None:
        self.items.append(args[0] if len(args) == 1 else args)
        self._fire()

    def __len__(self) -> int:
        return len(self.items)

    def wait(self, count: int = 1, timeout: float = TIMEOUT) -> defer.Deferred[Any]:
        """
        A Deferred firing with the first C{count} items once there are that
        many (bounded by C{timeout}).
        """
        d: defer.Deferred[list[Any]] = defer.Deferred()
        self._waiters.append((count, d))
        self._fire()
        return bounded(d, timeout)

    def _fire(self) -> None:
        ready = [(n, d) for n, d in self._waiters if len(self.items) >= n]
        self._waiters = [(n, d) for n, d in self._waiters if len(self.items) < n]
        for n, d in ready:
            d.callback(self.items[:n])


class RawPeer(protocol.Protocol):
    """
    A raw TCP peer: writes whatever bytes a test gives it and splits what it
    receives into frames itself (independently of twcomms).
    """

    def __init__(self, byte_order: str = "little") -> None:
        self.byte_order = byte_order
        self.raw = b""  # everything received
        self.frames = Events()  # each complete payload
        self.lost_reason: Failure | None = None
        self._unparsed = b""
        self._lost: list[defer.Deferred[None]] = []

    def dataReceived(self, data: bytes) -> None:
        self.raw += data
        payloads, self._unparsed = split(self._unparsed + data, self.byte_order)
        for payload in payloads:
            self.frames(payload)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lost_reason = reason
        waiters, self._lost = self._lost, []
        for d in waiters:
            d.callback(None)

    def send_frame(self, payload: bytes) -> None:
        self.transport.write(frame(payload, self.byte_order))

    def when_lost(self, timeout: float = TIMEOUT) -> defer.Deferred[Any]:
        """
        Fires (with None) once the connection is lost; see C{lost_reason}.
        """
        if self.lost_reason is not None:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._lost.append(d)
        return bounded(d, timeout)

    def close(self) -> defer.Deferred[Any]:
        if self.lost_reason is None:
            self.transport.abortConnection()
        return self.when_lost()


class TrackingServer(CommsServerFactory):
    """
    A server factory that also keeps every protocol it built, including
    connections that never became clients (a failed TLS handshake, a
    rejected client), so a test can wait for those to close too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.built: list[CommsProtocol] = []
        self.built_events = Events()

    def buildProtocol(self, addr: Any) -> CommsProtocol:
        proto = super().buildProtocol(addr)
        self.built.append(proto)
        self.built_events(proto)
        return proto


Cleanup = Callable[[Callable[[], Any]], None]


@pytest_twisted.async_yield_fixture
async def cleanup() -> Any:
    """
    Register callables (returning Deferreds or not) to run after the test,
    last registered first; each is bounded in time.
    """
    stack: list[Callable[[], Any]] = []
    yield stack.append
    errors = []
    for f in reversed(stack):
        try:
            await bounded(defer.maybeDeferred(f))
        except Exception as e:
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def short_tmp() -> Iterator[str]:
    """
    A short directory under /tmp (a UNIX socket path must fit in ~107
    bytes; pytest's tmp_path may not).
    """
    path = tempfile.mkdtemp(prefix="twc", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@defer.inlineCallbacks
def start_server(
    cleanup: Cleanup, where: Any = LOCAL_TCP, factory: type = TrackingServer, **kw: Any
) -> Any:
    """
    Start a server factory listening on C{where}; return C{(server, port)}
    where C{port} is the port number (or the listening port for UNIX).
    """
    server = factory(**kw)
    listening = yield bounded(server.listen(where))
    cleanup(server.stop)
    host = listening.getHost()
    return server, getattr(host, "port", listening)


def start_client(cleanup: Cleanup, port: int, **kw: Any) -> CommsClientFactory:
    """
    A client connecting over TCP to 127.0.0.1:C{port}; stopped after the
    test.
    """
    client = CommsClientFactory(**kw)
    client.connectTCP("127.0.0.1", port)
    cleanup(client.stop)
    return client


@defer.inlineCallbacks
def connect_raw(cleanup: Cleanup, port: int, byte_order: str = "little") -> Any:
    """
    Connect a L{RawPeer} to 127.0.0.1:C{port}; aborted after the test.
    """
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=TIMEOUT)
    peer = yield bounded(connectProtocol(endpoint, RawPeer(byte_order)))
    cleanup(peer.close)
    return peer


def local_port(client: CommsClientFactory) -> int:
    assert client.connection is not None
    return int(client.connection.transport.getHost().port)


def handle_for(server: CommsServerFactory, client: CommsClientFactory) -> ClientHandle:
    """
    The server's handle for C{client} (matched by the client's local port).
    """
    port = local_port(client)
    (handle,) = [h for h in server.clients if h.port == port]
    return handle


def reference_payload(data_type: str, message: Any) -> bytes:
    """
    What the original library puts on the wire for C{message}.
    """
    if data_type == "json":
        return json.dumps(message).encode("utf-8")
    if data_type == "string":
        return str(message).encode("utf-8")
    return bytes(message)


# -- TCP round trips -------------------------------------------------------

ROUND_TRIP_CASES = [
    ("json", {"k": "v", "n": [1, 2.5, None, True], "u": "héllo ✓"}),
    ("json", [1, "two", {"3": 4}, []]),
    ("string", "héllo wörld ✓ — a string message"),
    ("binary", bytes(range(256)) * 4),
]


@pytest.mark.parametrize("byte_order", ["little", "big"])
@pytest.mark.parametrize(("data_type", "message"), ROUND_TRIP_CASES)
@pytest_twisted.inlineCallbacks
def test_tcp_round_trip(
    cleanup: Cleanup, data_type: str, message: Any, byte_order: str
) -> Any:
    """
    A message goes to the server and back, for each data type and byte
    order; the handle's address, port and counters are right.
    """
    received = Events()
    connects = Events()
    server, port = yield start_server(
        cleanup,
        messageDataType=data_type,
        byteOrder=byte_order,
        on_connect=connects,
        on_message=lambda client, msg: (received(client, msg), client.send(msg)),
    )
    replies = Events()
    client = start_client(
        cleanup,
        port,
        messageDataType=data_type,
        byteOrder=byte_order,
        on_message=replies,
    )
    yield bounded(client.whenConnected())
    (handle,) = yield connects.wait(1)

    client.send(message)
    [(_, reply)] = yield replies.wait(1)
    assert reply == message
    assert type(reply) is type(message)
    [(from_handle, got)] = received.items
    assert from_handle is handle
    assert got == message

    size = len(reference_payload(data_type, message))
    assert handle.address == "127.0.0.1"
    assert handle.port == local_port(client)
    assert handle.connected
    assert (handle.messages_in, handle.messages_out) == (1, 1)
    assert (handle.bytes_in, handle.bytes_out) == (size, size)
    proto = client.connection
    assert proto is not None
    assert (proto.messagesSent, proto.messagesReceived) == (1, 1)
    assert (proto.bytesSent, proto.bytesReceived) == (size, size)
    assert list(server.clients) == [handle]

    yield bounded(client.stop())
    yield bounded(handle.when_closed())
    assert handle.close_reason is CloseReason.PEER_CLOSED
    assert len(server.clients) == 0


@pytest.mark.parametrize("byte_order", ["little", "big"])
@pytest_twisted.inlineCallbacks
def test_wire_format_from_a_raw_peer(cleanup: Cleanup, byte_order: str) -> Any:
    """
    Frames built by hand (as the original library and its Unity peers
    build them) are understood, and the reply is the same bytes.
    """
    server, port = yield start_server(
        cleanup, byteOrder=byte_order, on_message=lambda c, m: c.send(m)
    )
    peer = yield connect_raw(cleanup, port, byte_order)
    payload = json.dumps({"from": "raw", "n": 1}).encode()
    # Header and payload in separate, split-up writes.
    data = frame(payload, byte_order)
    peer.transport.write(data[:2])
    peer.transport.write(data[2:9])
    peer.transport.write(data[9:])
    yield peer.frames.wait(1)
    assert peer.raw == data


@pytest_twisted.inlineCallbacks
def test_many_small_messages_in_order(cleanup: Cleanup) -> Any:
    """
    10,000 small json messages from one client arrive whole and in order,
    and so do the 10,000 echoes.
    """
    count = 10_000
    received = Events()
    server, port = yield start_server(
        cleanup,
        on_message=lambda client, msg: (received(msg), client.send(msg)),
    )
    replies = Events()
    client = start_client(cleanup, port, on_message=lambda c, m: replies(m))
    yield bounded(client.whenConnected())
    for i in range(count):
        client.send({"i": i, "pad": "x" * (i % 17)})
    got = yield received.wait(count)
    assert [m["i"] for m in got] == list(range(count))
    echoed = yield replies.wait(count)
    assert [m["i"] for m in echoed] == list(range(count))
    handle = handle_for(server, client)
    assert handle.messages_in == handle.messages_out == count
    assert handle.protocol is not None and handle.protocol.decodeErrors == 0


@pytest_twisted.inlineCallbacks
def test_five_mib_binary_message_intact(cleanup: Cleanup) -> Any:
    """
    A 5 MiB binary message arrives intact, both ways.
    """
    blob = os.urandom(5 * 1024 * 1024)
    received = Events()
    server, port = yield start_server(
        cleanup,
        messageDataType="binary",
        on_message=lambda client, msg: (received(msg), client.send(msg)),
    )
    replies = Events()
    client = start_client(
        cleanup, port, messageDataType="binary", on_message=lambda c, m: replies(m)
    )
    yield bounded(client.whenConnected())
    client.send(blob)
    [got] = yield received.wait(1)
    assert len(got) == len(blob)
    assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
    [echo] = yield replies.wait(1)
    assert echo == blob
    assert handle_for(server, client).bytes_in == len(blob)


# -- several clients ----------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_broadcast_exclude_send_and_gone_client(cleanup: Cleanup) -> Any:
    """
    broadcast() reaches every client but the excluded one; send() reaches
    one client by id; a client that left raises ClientGoneError.
    """
    connects = Events()
    server, port = yield start_server(cleanup, on_connect=connects)
    inboxes = [Events() for _ in range(3)]
    clients = []
    for inbox in inboxes:
        client = start_client(cleanup, port, on_message=lambda c, m, i=inbox: i(m))
        yield bounded(client.whenConnected())
        clients.append(client)
    yield connects.wait(3)
    handles = [handle_for(server, c) for c in clients]
    assert len({h.id for h in handles}) == 3

    assert server.broadcast({"all": "but 0"}, exclude=handles[0]) == 2
    # A direct message to client 0 after the broadcast: it must be the first
    # thing client 0 gets (the broadcast, sent earlier on the same
    # connection, would otherwise have come first).
    server.send(handles[0].id, {"direct": 0})
    assert (yield inboxes[0].wait(1)) == [{"direct": 0}]
    assert (yield inboxes[1].wait(1)) == [{"all": "but 0"}]
    assert (yield inboxes[2].wait(1)) == [{"all": "but 0"}]

    # exclude by id, several at once
    assert server.broadcast({"only": 2}, exclude=[handles[0].id, handles[1]]) == 1
    assert (yield inboxes[2].wait(2))[1] == {"only": 2}

    # Client 2 leaves.
    yield bounded(clients[2].stop())
    yield bounded(handles[2].when_closed())
    assert handles[2].close_reason is CloseReason.PEER_CLOSED
    assert not handles[2].connected
    with pytest.raises(ClientGoneError):
        server.send(handles[2].id, {"too": "late"})
    with pytest.raises(ClientGoneError):
        server.send(handles[2], {"too": "late"})
    with pytest.raises(ClientGoneError):
        handles[2].send({"too": "late"})
    with pytest.raises(ClientGoneError):
        server.send("no-such-client", {"x": 1})
    assert server.broadcast({"after": "leave"}) == 2
    assert (yield inboxes[1].wait(2))[1] == {"after": "leave"}
    assert len(inboxes[2]) == 2


# -- other transports and listening ---------------------------------------


@pytest_twisted.inlineCallbacks
def test_unix_socket_round_trip(short_tmp: str, cleanup: Cleanup) -> Any:
    # short_tmp before cleanup: it is torn down after cleanup has stopped the
    # server (which unlinks the socket file).
    path = os.path.join(short_tmp, "c.sock")
    connects = Events()
    server, _ = yield start_server(
        cleanup,
        f"unix:{path}",
        on_connect=connects,
        on_message=lambda client, msg: client.send({"echo": msg}),
    )
    replies = Events()
    client = CommsClientFactory(on_message=lambda c, m: replies(m))
    client.connectUNIX(path)
    cleanup(client.stop)
    yield bounded(client.whenConnected())
    (handle,) = yield connects.wait(1)
    client.send({"over": "unix"})
    assert (yield replies.wait(1)) == [{"echo": {"over": "unix"}}]
    assert handle.port == 0
    assert handle.messages_in == 1
    assert client.address == path


@pytest.mark.parametrize(
    ("where", "backlog"),
    [
        ("tcp:0:interface=127.0.0.1:backlog=2000", 2000),
        (LOCAL_TCP, DEFAULT_BACKLOG),
        (("127.0.0.1", 0), DEFAULT_BACKLOG),
    ],
)
@pytest_twisted.inlineCallbacks
def test_listen_backlog(cleanup: Cleanup, where: Any, backlog: int) -> Any:
    """
    A description's backlog is used; otherwise twcomms' default (not
    Twisted's 50). The server works either way.
    """
    server = CommsServerFactory(on_message=lambda c, m: c.send(m))
    listening = yield bounded(server.listen(where))
    cleanup(server.stop)
    assert listening.backlog == backlog
    assert listening.getHost().host == "127.0.0.1"
    replies = Events()
    client = start_client(
        cleanup, listening.getHost().port, on_message=lambda c, m: replies(m)
    )
    yield bounded(client.whenConnected())
    client.send([1, 2, 3])
    assert (yield replies.wait(1)) == [[1, 2, 3]]


@pytest_twisted.inlineCallbacks
def test_port_in_use_fails_to_listen(cleanup: Cleanup) -> Any:
    server, port = yield start_server(cleanup)
    other = CommsServerFactory()
    for where in (("127.0.0.1", port), f"tcp:{port}:interface=127.0.0.1"):
        with pytest.raises(CannotListenError):
            yield bounded(other.listen(where))
    assert other.ports == []


# -- TLS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="module")
def tls(tls_dir: Path) -> TLSFiles:
    """
    A CA and a server certificate for localhost / 127.0.0.1.
    """
    return make_tls_files(str(tls_dir), "good")


@pytest.fixture(scope="module")
def other_ca(tls_dir: Path) -> TLSFiles:
    """
    An unrelated CA (a client trusting only it must refuse the server).
    """
    return make_tls_files(str(tls_dir), "other")


#: Twisted's ssl: endpoint hands pyOpenSSL X509/PKey objects to OpenSSL,
#: which pyOpenSSL 26 deprecates; not twcomms' doing.
tls_warnings = pytest.mark.filterwarnings(
    "ignore:Passing pyOpenSSL (X509|PKey) objects is deprecated:DeprecationWarning"
)


@tls_warnings
@pytest.mark.parametrize("trust", ["path", "certificate", "bundle"])
@pytest.mark.parametrize("hostname", ["localhost", None])
@pytest_twisted.inlineCallbacks
def test_tls_verified_connection(
    cleanup: Cleanup,
    tls: TLSFiles,
    other_ca: TLSFiles,
    tls_dir: Path,
    trust: str,
    hostname: str | None,
) -> Any:
    """
    A client that trusts the server's CA connects over TLS, verifying the
    certificate for C{localhost} (or for the IP address it connected to),
    and messages flow both ways.
    """
    connects = Events()
    server, port = yield start_server(
        cleanup,
        tls.ssl_description(),
        on_connect=connects,
        on_message=lambda client, msg: client.send({"tls echo": msg}),
    )
    trust_root: Any = tls.ca_pem
    if trust == "certificate":
        trust_root = ssl.Certificate.loadPEM(Path(tls.ca_pem).read_bytes())
    elif trust == "bundle":
        # A CA bundle whose right certificate is not the first one.
        bundle = tls_dir / "bundle.pem"
        bundle.write_bytes(
            Path(other_ca.ca_pem).read_bytes() + Path(tls.ca_pem).read_bytes()
        )
        trust_root = str(bundle)
    replies = Events()
    client = CommsClientFactory(on_message=lambda c, m: replies(m))
    client.connectSSL("127.0.0.1", port, trust_root=trust_root, hostname=hostname)
    cleanup(client.stop)
    proto = yield bounded(client.whenConnected())
    (handle,) = yield connects.wait(1)
    client.send({"secret": 42})
    assert (yield replies.wait(1)) == [{"tls echo": {"secret": 42}}]
    assert proto.transport.getPeerCertificate() is not None
    assert handle.address == "127.0.0.1"
    assert handle.port == local_port(client)
    assert handle.messages_in == 1

    yield bounded(client.stop())
    yield bounded(handle.when_closed())
    assert handle.close_reason is CloseReason.PEER_CLOSED


@tls_warnings
@pytest_twisted.inlineCallbacks
def test_tls_untrusted_certificate_fails(
    cleanup: Cleanup, tls: TLSFiles, other_ca: TLSFiles
) -> Any:
    """
    A client that does not trust the server's CA gives up with a
    GaveUpError carrying the TLS failure; the server never sees a client.
    """
    connects = Events()
    messages = Events()
    server, port = yield start_server(
        cleanup, tls.ssl_description(), on_connect=connects, on_message=messages
    )
    closes = Events()
    client = CommsClientFactory(autoReconnect=False, on_close=closes)
    client.connectSSL("127.0.0.1", port, trust_root=other_ca.ca_pem)
    cleanup(client.stop)
    with pytest.raises(GaveUpError) as caught:
        yield bounded(client.whenConnected())
    assert caught.value.failure is not None
    assert "certificate verify failed" in str(caught.value)
    assert "certificate verify failed" in caught.value.failure.getErrorMessage()
    assert client.connection is None
    assert client.failures == 1
    yield bounded(client.whenStopped())
    assert len(closes) == 0  # it never was a connection

    # The server side of that connection closes without ever becoming a
    # client.
    [proto] = yield server.built_events.wait(1)
    handle = proto.receiver
    yield bounded(handle.when_closed())
    assert handle.close_reason is CloseReason.ERROR
    assert not handle.connected
    assert len(connects) == 0 and len(messages) == 0
    assert len(server.clients) == 0


@tls_warnings
@pytest_twisted.inlineCallbacks
def test_tls_port_refuses_plain_tcp(cleanup: Cleanup, tls: TLSFiles) -> Any:
    """
    Plain-TCP peers on the TLS port (a raw frame, and a plain twcomms
    client) are disconnected and never become clients nor deliver a
    message.
    """
    connects = Events()
    messages = Events()
    server, port = yield start_server(
        cleanup, tls.ssl_description(), on_connect=connects, on_message=messages
    )

    peer = yield connect_raw(cleanup, port)
    peer.send_frame(json.dumps({"plain": "frame"}).encode())
    yield peer.when_lost()
    [raw_server_side] = yield server.built_events.wait(1)
    yield bounded(raw_server_side.receiver.when_closed())
    assert raw_server_side.receiver.close_reason is CloseReason.ERROR

    # A plain twcomms client believes it connected (TCP did), sends, and is
    # then disconnected by the server.
    closes = Events()
    client = start_client(cleanup, port, on_close=closes)
    yield bounded(client.whenConnected())
    client.send({"plain": "client"})
    [(_, reason)] = yield closes.wait(1)
    assert reason in (CloseReason.PEER_CLOSED, CloseReason.ERROR)
    [_, client_server_side] = yield server.built_events.wait(2)
    yield bounded(client_server_side.receiver.when_closed())

    assert len(connects) == 0
    assert len(messages) == 0
    assert len(server.clients) == 0
    assert client.connection is None


@tls_warnings
@pytest_twisted.inlineCallbacks
def test_tls_port_aborts_a_peer_that_never_handshakes(
    cleanup: Cleanup, tls: TLSFiles
) -> Any:
    """
    A peer that opens a TCP connection to the TLS port and says nothing is
    aborted after the handshake timeout, and never becomes a client.
    """
    connects = Events()
    server, port = yield start_server(
        cleanup, tls.ssl_description(), handshake_timeout=0.3, on_connect=connects
    )
    peer = yield connect_raw(cleanup, port)
    yield peer.when_lost()
    [server_side] = yield server.built_events.wait(1)
    yield bounded(server_side.receiver.when_closed())
    assert server_side.closeReason is CloseReason.HANDSHAKE_TIMEOUT
    assert len(connects) == 0
    assert len(server.clients) == 0


# -- reconnection -------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_reconnects_to_a_restarted_server(cleanup: Cleanup) -> Any:
    """
    The server stops (closing its clients) and a new one listens on the
    same port: the client reconnects and messages flow again. After
    client.stop() nothing is retried.
    """
    echo = {"on_message": lambda client, msg: client.send(msg)}
    first, port = yield start_server(cleanup, **echo)
    connected = Events()
    closed = Events()
    replies = Events()
    client = start_client(
        cleanup,
        port,
        autoReconnect=True,
        initial_delay=0.05,
        max_delay=0.2,
        on_connect=connected,
        on_close=closed,
        on_message=lambda c, m: replies(m),
    )
    yield connected.wait(1)
    client.send({"n": 1})
    yield replies.wait(1)

    first_handle = next(iter(first.clients))
    yield bounded(first.stop())
    assert first_handle.close_reason is CloseReason.SERVER_STOPPING
    [(_, reason)] = yield closed.wait(1)
    assert reason is CloseReason.PEER_CLOSED

    second_connects = Events()
    second, port2 = yield start_server(
        cleanup, ("127.0.0.1", port), on_connect=second_connects, **echo
    )
    assert port2 == port
    yield connected.wait(2)
    yield second_connects.wait(1)
    client.send({"n": 2})
    assert (yield replies.wait(2))[1] == {"n": 2}
    assert all(d <= 0.2 for d in client.scheduled_delays)

    yield bounded(client.stop())
    yield bounded(client.whenStopped())
    assert client.connection is None
    assert not client.continueTrying
    assert client._callID is None  # no reconnection scheduled
    delays = list(client.scheduled_delays)
    yield pause(0.5)  # more than max_delay: a reconnection would have happened
    assert len(connected) == 2
    assert len(second_connects) == 1
    assert client.scheduled_delays == delays
    assert len(second.clients) == 0


# -- limits -------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_idle_timeout_closes_a_silent_client(cleanup: Cleanup) -> Any:
    """
    A client that sends nothing for idle_timeout is closed (reason idle
    timeout); one that keeps sending stays.
    """
    connects = Events()
    closes = Events()
    server, port = yield start_server(
        cleanup, idle_timeout=0.4, on_connect=connects, on_close=closes
    )
    silent_closed = Events()
    silent = start_client(cleanup, port, on_close=silent_closed)
    yield bounded(silent.whenConnected())
    chatty = start_client(cleanup, port)
    yield bounded(chatty.whenConnected())
    yield connects.wait(2)
    silent_handle = handle_for(server, silent)
    chatty_handle = handle_for(server, chatty)

    pings = task.LoopingCall(chatty.send, {"ping": 1})
    pings.start(0.05)
    try:
        [(handle, reason)] = yield closes.wait(1)
    finally:
        pings.stop()
    assert handle is silent_handle
    assert reason is CloseReason.IDLE_TIMEOUT
    assert silent_handle.close_reason is CloseReason.IDLE_TIMEOUT
    yield silent_closed.wait(1)
    assert chatty_handle.connected
    assert chatty.connected
    assert list(server.clients) == [chatty_handle]


@pytest_twisted.inlineCallbacks
def test_max_clients_rejects_the_second_client(cleanup: Cleanup) -> Any:
    connects = Events()
    closes = Events()
    server, port = yield start_server(
        cleanup, max_clients=1, on_connect=connects, on_close=closes
    )
    first = start_client(cleanup, port)
    yield bounded(first.whenConnected())
    yield connects.wait(1)

    second_closed = Events()
    second = start_client(cleanup, port, on_close=second_closed)
    [(_, reason)] = yield second_closed.wait(1)
    assert reason is CloseReason.PEER_CLOSED
    [_, rejected] = yield server.built_events.wait(2)
    yield bounded(rejected.receiver.when_closed())
    assert rejected.closeReason is CloseReason.MAX_CLIENTS

    assert server.rejected == 1
    assert len(server.clients) == 1
    assert len(connects) == 1
    assert len(closes) == 0  # the rejected one never was a client
    assert first.connected
    assert second.connection is None


# -- bad input ------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_oversize_header_closes_only_that_connection(cleanup: Cleanup) -> Any:
    limit = 1024
    connects = Events()
    closes = Events()
    messages = Events()
    server, port = yield start_server(
        cleanup,
        max_message_size=limit,
        on_connect=connects,
        on_close=closes,
        on_message=lambda client, msg: (messages(msg), client.send(msg)),
    )
    good_replies = Events()
    good = start_client(
        cleanup, port, max_message_size=limit, on_message=lambda c, m: good_replies(m)
    )
    yield bounded(good.whenConnected())
    peer = yield connect_raw(cleanup, port)
    yield connects.wait(2)
    (bad_handle,) = [h for h in server.clients if h.port != local_port(good)]

    peer.transport.write(header(limit + 1) + b"x" * 100)
    yield peer.when_lost()
    [(handle, reason)] = yield closes.wait(1)
    assert handle is bad_handle
    assert reason is CloseReason.OVERSIZE
    assert bad_handle.messages_in == 0
    assert len(messages) == 0

    good.send({"still": "working"})
    assert (yield good_replies.wait(1)) == [{"still": "working"}]
    # The largest allowed message still goes through.
    big = {"s": "y" * (limit - len('{"s": ""}'))}
    assert len(json.dumps(big)) == limit
    good.send(big)
    assert (yield good_replies.wait(2))[1] == big
    assert list(server.clients) == [handle_for(server, good)]


@pytest_twisted.inlineCallbacks
def test_decode_error_keeps_the_connection(cleanup: Cleanup) -> Any:
    decode_errors = Events()
    messages = Events()
    connects = Events()
    server, port = yield start_server(
        cleanup,
        on_connect=connects,
        on_decode_error=decode_errors,
        on_message=lambda client, msg: (messages(client, msg), client.send(msg)),
    )
    peer = yield connect_raw(cleanup, port)
    (handle,) = yield connects.wait(1)
    peer.send_frame(b"{not json")
    peer.send_frame(b"\xff\xfe")
    peer.send_frame(json.dumps({"ok": 1}).encode())

    [(h1, e1), (h2, e2)] = yield decode_errors.wait(2)
    assert h1 is handle and h2 is handle
    assert e1.payload == b"{not json"
    assert e2.payload == b"\xff\xfe"
    [(h3, msg)] = yield messages.wait(1)
    assert h3 is handle and msg == {"ok": 1}
    assert (yield peer.frames.wait(1)) == [b'{"ok": 1}']
    assert handle.connected
    assert peer.lost_reason is None
    assert handle.messages_in == 3
    assert handle.protocol is not None and handle.protocol.decodeErrors == 2


# -- closing with a write monitor registered ------------------------------------
#
# CommsProtocol registers a streaming producer on its transport to watch its
# write buffer. A transport does not act on loseConnection() while a producer
# is registered: TLS never shuts down, and TCP whose producer was paused
# resumes it instead of closing once the buffer drains. These tests hung
# (each close never happened) until CommsProtocol unregistered its monitor
# before closing.


def abort_leftovers(server: TrackingServer) -> None:
    """
    Abort every server-side connection still open, so that a regression in
    the tests below fails fast instead of stalling the cleanup.
    """
    for proto in server.built:
        if proto.transport is not None and proto.receiver.close_failure is None:
            proto.transport.abortConnection()


@pytest_twisted.inlineCallbacks
def test_close_after_a_large_send_closes(cleanup: Cleanup) -> Any:
    """
    close() right after a send that filled the transport's buffer (its
    producer is paused) closes once the data is written, and the data
    arrives whole.
    """
    closes = Events()
    blob = os.urandom(1024 * 1024)

    def send_and_close(client: ClientHandle) -> None:
        client.send(blob)
        assert client.protocol is not None and client.protocol.writePaused
        client.close()

    server, port = yield start_server(
        cleanup, messageDataType="binary", on_connect=send_and_close, on_close=closes
    )
    cleanup(lambda: abort_leftovers(server))
    received = Events()
    client_closed = Events()
    start_client(
        cleanup,
        port,
        messageDataType="binary",
        on_message=lambda c, m: received(m),
        on_close=client_closed,
    )
    assert (yield received.wait(1)) == [blob]
    [(_, reason)] = yield closes.wait(1, timeout=3)
    assert reason is CloseReason.CLOSED
    [(_, reason)] = yield client_closed.wait(1, timeout=3)
    assert reason is CloseReason.PEER_CLOSED


@tls_warnings
@pytest_twisted.inlineCallbacks
def test_tls_client_stop_closes_the_connection(cleanup: Cleanup, tls: TLSFiles) -> Any:
    connects = Events()
    server, port = yield start_server(
        cleanup, tls.ssl_description(), on_connect=connects
    )
    cleanup(lambda: abort_leftovers(server))
    client = CommsClientFactory()
    client.connectSSL("127.0.0.1", port, trust_root=tls.ca_pem, hostname="localhost")
    cleanup(client.stop)
    yield bounded(client.whenConnected())
    (handle,) = yield connects.wait(1)
    yield bounded(client.stop(), timeout=3)
    yield bounded(handle.when_closed(), timeout=3)
    assert handle.close_reason is CloseReason.PEER_CLOSED


@tls_warnings
@pytest_twisted.inlineCallbacks
def test_server_stop_with_a_tls_client_completes(
    cleanup: Cleanup, tls: TLSFiles
) -> Any:
    connects = Events()
    server, port = yield start_server(
        cleanup, tls.ssl_description(), on_connect=connects
    )
    cleanup(lambda: abort_leftovers(server))
    closes = Events()
    client = CommsClientFactory(on_close=closes)
    client.connectSSL("127.0.0.1", port, trust_root=tls.ca_pem, hostname="localhost")
    cleanup(client.stop)
    yield bounded(client.whenConnected())
    (handle,) = yield connects.wait(1)
    yield bounded(server.stop(), timeout=3)
    assert handle.close_reason is CloseReason.SERVER_STOPPING
    [(_, reason)] = yield closes.wait(1)
    assert reason is CloseReason.PEER_CLOSED


@tls_warnings
@pytest_twisted.inlineCallbacks
def test_tls_max_clients_and_oversize_close(cleanup: Cleanup, tls: TLSFiles) -> Any:
    """
    Over TLS too, a client over max_clients is closed at once and an
    oversize header closes its connection.
    """
    connects = Events()
    closes = Events()
    server, port = yield start_server(
        cleanup,
        tls.ssl_description(),
        max_clients=1,
        max_message_size=100,
        on_connect=connects,
        on_close=closes,
    )
    cleanup(lambda: abort_leftovers(server))

    def tls_client(**kw: Any) -> CommsClientFactory:
        client = CommsClientFactory(max_message_size=1000, **kw)
        client.connectSSL(
            "127.0.0.1", port, trust_root=tls.ca_pem, hostname="localhost"
        )
        cleanup(client.stop)
        return client

    first = tls_client()
    yield bounded(first.whenConnected())
    (handle,) = yield connects.wait(1)

    second_closed = Events()
    tls_client(on_close=second_closed)
    yield second_closed.wait(1, timeout=3)
    assert server.rejected == 1

    first.send({"x": "x" * 200})  # over the server's 100 bytes
    [(closed, reason)] = yield closes.wait(1, timeout=3)
    assert closed is handle
    assert reason is CloseReason.OVERSIZE
    yield bounded(first.whenDisconnected(), timeout=3)
    assert len(server.clients) == 0


# -- stopping before the first connection completes ---------------------------


@pytest_twisted.inlineCallbacks
def test_stop_while_connecting_does_not_connect(cleanup: Cleanup) -> Any:
    connects = Events()
    server, port = yield start_server(cleanup, on_connect=connects)
    cleanup(lambda: abort_leftovers(server))
    client = CommsClientFactory(autoReconnect=True)
    connector = client.connectTCP("127.0.0.1", port)
    cleanup(client.stop)
    yield bounded(client.stop())
    # whenStopped fired: the attempt must have been called off.
    assert connector.state == "disconnected"
    yield pause(0.3)
    assert len(connects) == 0
    assert client.connection is None


# -- examples -------------------------------------------------------------------


class ExampleProcess(protocol.ProcessProtocol):
    """
    An example script run with this interpreter; its output collected,
    waitable by pattern.
    """

    def __init__(self) -> None:
        self.out = ""
        self.err = ""
        self.exit_code: int | None = None
        self._patterns: list[tuple[re.Pattern[str], int, defer.Deferred[Any]]] = []
        self._ended: list[defer.Deferred[int | None]] = []
        self.finished = False

    def outReceived(self, data: bytes) -> None:
        self.out += data.decode("utf-8", "replace")
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.err += data.decode("utf-8", "replace")

    def processEnded(self, reason: Failure) -> None:
        self.exit_code = reason.value.exitCode
        self.finished = True
        waiters, self._ended = self._ended, []
        for d in waiters:
            d.callback(self.exit_code)
        for _, _, d in self._patterns:
            d.errback(AssertionError(f"process ended; output:\n{self.out}{self.err}"))
        self._patterns = []

    def wait_output(self, pattern: str, count: int = 1) -> defer.Deferred[Any]:
        """
        Fires with the list of matches once C{pattern} occurs C{count} times.
        """
        d: defer.Deferred[Any] = defer.Deferred()
        self._patterns.append((re.compile(pattern, re.M), count, d))
        self._check()
        return bounded(d)

    def wait_ended(self, timeout: float = TIMEOUT) -> defer.Deferred[Any]:
        if self.finished:
            return defer.succeed(self.exit_code)
        d: defer.Deferred[int | None] = defer.Deferred()
        self._ended.append(d)
        return bounded(d, timeout)

    def _check(self) -> None:
        keep = []
        for regex, count, d in self._patterns:
            found = list(regex.finditer(self.out))
            if len(found) >= count:
                d.callback(found[:count])
            else:
                keep.append((regex, count, d))
        self._patterns = keep

    def stop(self) -> defer.Deferred[Any]:
        """
        Terminate it (SIGTERM, then SIGKILL if it lingers) and wait.
        """
        if self.finished:
            return defer.succeed(self.exit_code)
        self.transport.signalProcess("TERM")
        d = self.wait_ended(5)

        def kill(f: Failure) -> Any:
            if not self.finished:
                self.transport.signalProcess("KILL")
            return self.wait_ended(5)

        return d.addErrback(kill)


def run_example(cleanup: Cleanup, name: str, *args: str) -> ExampleProcess:
    proc = ExampleProcess()
    env = child_env()
    reactor.spawnProcess(
        proc,
        sys.executable,
        [sys.executable, str(EXAMPLES / name), *args],
        env=env,
        path=str(REPO),
    )
    cleanup(proc.stop)
    return proc


@pytest_twisted.inlineCallbacks
def test_example_server_relays_to_other_clients(cleanup: Cleanup) -> Any:
    proc = run_example(cleanup, "twisted_server.py", "--port", "0")
    [match] = yield proc.wait_output(r"^listening on 127\.0\.0\.1:(\d+)$")
    port = int(match.group(1))
    inbox_a, inbox_b = Events(), Events()
    a = start_client(cleanup, port, on_message=lambda c, m: inbox_a(m))
    b = start_client(cleanup, port, on_message=lambda c, m: inbox_b(m))
    yield bounded(a.whenConnected())
    yield bounded(b.whenConnected())
    yield proc.wait_output(r"^connected: 127\.0\.0\.1:\d+ ", 2)

    a.send({"from": "a"})
    assert (yield inbox_b.wait(1)) == [{"from": "a"}]
    b.send({"from": "b"})
    # a never got its own message: b's is the first thing it receives.
    assert (yield inbox_a.wait(1)) == [{"from": "b"}]

    yield bounded(a.stop())
    yield bounded(b.stop())
    closed = yield proc.wait_output(r"^closed: .*: (.+)$", 2)
    assert [m.group(1) for m in closed] == ["peer closed", "peer closed"]
    assert (yield proc.stop()) == 0
    assert "Traceback" not in proc.err


@pytest.mark.parametrize(
    ("name", "expected_replies"),
    [("twisted_echo_client.py", 3), ("twisted_client_service.py", 2)],
)
@pytest_twisted.inlineCallbacks
def test_example_clients_against_an_echo_server(
    cleanup: Cleanup, name: str, expected_replies: int
) -> Any:
    messages = Events()
    closes = Events()
    server, port = yield start_server(
        cleanup,
        on_close=closes,
        on_message=lambda client, msg: (messages(msg), client.send(msg)),
    )
    proc = run_example(cleanup, name, "--port", str(port))
    code = yield proc.wait_ended(20)
    assert code == 0, proc.out + proc.err
    assert len(re.findall(r"^reply: ", proc.out, re.M)) == expected_replies
    assert proc.out.rstrip().endswith("done")
    assert len(messages) == expected_replies
    [(_, reason)] = yield closes.wait(1)
    assert reason is CloseReason.PEER_CLOSED


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("twisted_echo_client.py", ()),
        ("twisted_client_service.py", ("--attempts", "2")),
    ],
)
@pytest_twisted.inlineCallbacks
def test_example_clients_fail_cleanly_without_a_server(
    cleanup: Cleanup, name: str, args: tuple[str, ...]
) -> Any:
    # A port that was free a moment ago: nothing listens there now.
    server, port = yield start_server(cleanup)
    yield bounded(server.stop())
    proc = run_example(cleanup, name, "--port", str(port), *args)
    code = yield proc.wait_ended(20)
    assert code == 1
    assert "could not connect" in proc.err
    assert "Traceback" not in proc.err
