"""
The extended protocol on the Twisted API, in memory (L{MemoryNetwork}) with
a fake clock: negotiation (and its fallbacks), heartbeats, request/reply in
both directions, authentication (with its throttle and timeouts) and rooms
joined by the client. Every timing is checked on the fake clock, at the
moment it is due and just before.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import provider

from twcomms.client import CommsClientFactory
from twcomms.connection import CloseReason, CommsProtocol
from twcomms.errors import (
    AuthenticationError,
    ClientGoneError,
    ConnectionClosedError,
    ExtensionsRefusedError,
    GaveUpError,
    InvalidRoomError,
    MessageTooLargeError,
    NotConnectedError,
    NotNegotiatedError,
    RemoteError,
    RequestTimeoutError,
)
from twcomms.options import Options
from twcomms.server import ClientHandle, CommsServerFactory
from twcomms.testing import MemoryNetwork
from twcomms.wire.extended import HELLO_MAGIC, Kind

# -- helpers -------------------------------------------------------------------


def results(d: Deferred[Any]) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


E = TypeVar("E", bound=BaseException)


def failed_with(r: list[Any], kind: type[E]) -> E:
    """
    The exception that C{r} (a L{results} list) failed with, checked to be
    a C{kind}.
    """
    assert len(r) == 1 and isinstance(r[0], Failure), r
    error = r[0].value
    assert isinstance(error, kind), error
    return error


def remote_type(r: list[Any]) -> str:
    """
    The type of the error reply C{r} (a L{results} list) failed with.
    """
    return failed_with(r, RemoteError).type


def serve(net: MemoryNetwork, **kw: Any) -> CommsServerFactory:
    server = CommsServerFactory(reactor=net.reactor, **kw)
    server.listen(6000)
    net.flush()
    return server


def client_for(
    net: MemoryNetwork, *, connect: bool = True, **kw: Any
) -> tuple[CommsClientFactory, list[Any]]:
    """
    An extended client (unless told otherwise) and its inbox, connected
    and flushed.
    """
    inbox: list[Any] = []
    kw.setdefault("extensions", True)
    client = CommsClientFactory(
        reactor=net.reactor, on_message=lambda c, m: inbox.append(m), **kw
    )
    if connect:
        client.connectTCP("127.0.0.1", 6000)
        net.flush()
    return client, inbox


def only(server: CommsServerFactory) -> ClientHandle:
    (handle,) = list(server.clients)
    return handle


def handles(server: CommsServerFactory) -> list[ClientHandle]:
    """
    Every connection's handle, registered or not (under require_auth a
    connection is not a client until it authenticates).
    """
    return [p.receiver for p in server.connections]  # type: ignore[misc]


def proto_of(client: CommsClientFactory) -> CommsProtocol:
    assert client.connection is not None
    return client.connection


def count_writes(proto: CommsProtocol) -> list[bytes]:
    """
    Record what C{proto} writes to its transport (and still write it).
    """
    transport = proto.transport
    calls: list[bytes] = []
    write, write_sequence = transport.write, transport.writeSequence

    def counted(data: bytes) -> None:
        calls.append(data)
        write(data)

    def counted_sequence(parts: list[bytes]) -> None:
        calls.append(b"".join(parts))
        write_sequence(parts)

    transport.write = counted
    transport.writeSequence = counted_sequence
    return calls


def advance_until(net: MemoryNetwork, done: Any, limit: float, step: float) -> None:
    """
    Move the clock in C{step}s (pumping between them, so pings and pongs
    flow as they would) until C{done()} or C{limit} seconds have passed.
    """
    start = net.reactor.seconds()
    while not done() and net.reactor.seconds() - start < limit:
        net.advance(step)


def held_handler(store: list[tuple[Any, Deferred[Any]]]) -> Any:
    """
    A request handler that answers with a Deferred kept in C{store}.
    """

    def handler(who: Any, message: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        store.append((message, d))
        return d

    return handler


@pytest.fixture
def log_text() -> Iterator[list[str]]:
    """
    Everything logged (Twisted's global log) while the test runs, as text:
    each event formatted, its failure's traceback, and the repr of its
    fields.
    """
    lines: list[str] = []

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))
        failure = event.get("log_failure")
        if failure is not None:
            lines.append(failure.getTraceback())
        lines.extend(repr(value) for value in event.values())

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


# -- negotiation ---------------------------------------------------------------


def test_agreed_features_are_the_same_on_both_ends() -> None:
    """
    A client asking for everything (credentials included) gets every
    feature; both ends agree on the same features and parameters (the
    server's default heartbeat, its request limit, auth not required).
    """
    net = MemoryNetwork()
    server = serve(net, authenticate=lambda cred, h: "ann")
    client, _ = client_for(net, credentials={"user": "ann"})
    handle = only(server)
    assert client.connected and handle.extended and proto_of(client).extended
    assert handle.protocol is not None and handle.protocol.channel is not None
    ours = proto_of(client).channel
    assert ours is not None
    assert sorted(ours.features) == ["auth", "heartbeat", "request", "rooms"]
    assert ours.features == handle.protocol.channel.features
    assert ours.features["heartbeat"] == {"interval": 25.0, "timeout": 20.0}
    assert ours.features["request"] == {"max_in_flight": 256}
    assert ours.features["auth"] == {"required": False}


def test_no_auth_without_credentials_no_heartbeats_without_interval() -> None:
    """
    Without credentials the client does not ask for auth; with
    heartbeat_interval=None it does not ask for heartbeats, and then a
    silent client is never closed by the server.
    """
    net = MemoryNetwork()
    closes: list[CloseReason] = []
    server = serve(
        net, authenticate=lambda cred, h: "ann", on_close=lambda h, r: closes.append(r)
    )
    client, _ = client_for(net, heartbeat_interval=None)
    handle = only(server)
    assert handle.protocol is not None and handle.protocol.channel is not None
    assert sorted(handle.protocol.channel.features) == ["request", "rooms"]
    proto_of(client).pauseReading("test")
    advance_until(net, lambda: bool(closes), limit=200, step=10)
    assert closes == [] and handle.connected


def test_credentials_to_a_server_without_auth_fail_and_stop_trying() -> None:
    """
    Credentials given but the server offers no authentication: the client
    fails with AuthenticationError (NotNegotiated) instead of carrying on
    unauthenticated, and does not retry even with autoReconnect.
    """
    net = MemoryNetwork()
    connects: list[ClientHandle] = []
    serve(net, on_connect=connects.append)
    client, _ = client_for(
        net, connect=False, credentials={"user": "ann"}, autoReconnect=True
    )
    connected = results(client.whenConnected())
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    assert failed_with(connected, AuthenticationError).type == "NotNegotiated"
    net.advance(120)
    assert len(connects) == 1 and not client.connected


def test_extensions_true_fails_after_exactly_the_extension_timeout() -> None:
    """
    A server with accept_extensions=False never answers the hello: the
    client fails whenConnected() with ExtensionsRefusedError at
    extension_timeout, not a moment before, and closes its connection with
    reason extension timeout. (The server got the hello as a message that
    did not decode, as a plain server would.)
    """
    net = MemoryNetwork()
    decode_errors: list[Any] = []
    serve(
        net,
        accept_extensions=False,
        on_decode_error=lambda h, e: decode_errors.append(e),
    )
    client, _ = client_for(net, connect=False, extension_timeout=3.0)
    connected = results(client.whenConnected())
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    proto = net.pumps[-1].client
    net.advance(2.75)
    assert connected == [] and not proto.closing
    net.advance(0.25)
    assert net.reactor.seconds() == 3.0
    error = failed_with(connected, ExtensionsRefusedError)
    assert "extensions='prefer'" in str(error)
    assert proto.closeReason == CloseReason.EXTENSION_TIMEOUT
    assert not client.connected and results(client.whenStopped()) == [None]
    assert len(decode_errors) == 1


def test_prefer_falls_back_to_plain_at_once_and_stays_plain() -> None:
    """
    extensions="prefer" against a server that does not answer: at
    extension_timeout the client connects again at once, plain; the plain
    connection works, and a later reconnection is plain from the start
    (plain_only stays set: no second hello, no second stall).
    """
    net = MemoryNetwork()
    decode_errors: list[Any] = []
    serve(
        net,
        accept_extensions=False,
        on_message=lambda h, m: h.send({"echo": m}),
        on_decode_error=lambda h, e: decode_errors.append(e),
    )
    connected_at: list[float] = []
    client, inbox = client_for(
        net,
        connect=False,
        extensions="prefer",
        extension_timeout=3.0,
        autoReconnect=True,
        initial_delay=0.5,
        jitter=0,
        on_connect=lambda c: connected_at.append(net.reactor.seconds()),
    )
    connected = results(client.whenConnected())
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    net.advance(2.75)
    assert connected == [] and not client.plain_only
    net.advance(0.25)
    assert connected_at == [3.0]
    assert connected == [client.connection]
    assert client.plain_only and not proto_of(client).extended
    client.send({"n": 1})
    net.flush()
    assert inbox == [{"echo": {"n": 1}}]

    net.break_connections()
    assert not client.connected
    net.advance(0.5)
    assert connected_at == [3.0, 3.5]  # the reconnect delay, no stall
    assert client.plain_only and not proto_of(client).extended
    assert len(decode_errors) == 1  # one hello only, on the first attempt


def test_a_plain_client_is_unaffected() -> None:
    """
    A client without extensions connects at once (no stall), exchanges
    messages, is never pinged nor closed for silence; request() either way
    and join() fail with NotNegotiatedError, and nothing is sent.
    """
    net = MemoryNetwork()
    server = serve(
        net,
        on_message=lambda h, m: h.send({"echo": m}),
        on_request=lambda h, m: "never",
        heartbeat_interval=1.0,
        heartbeat_timeout=1.0,
    )
    client, inbox = client_for(net, extensions=False)
    assert client.connected and net.reactor.seconds() == 0
    handle = only(server)
    assert not handle.extended and not proto_of(client).extended
    client.send([1])
    net.flush()
    assert inbox == [{"echo": [1]}]

    assert handle.protocol is not None
    writes = count_writes(handle.protocol)
    asked = results(server.request(handle, {"q": 1}))
    failed_with(asked, NotNegotiatedError)
    ours = results(client.request({"q": 1}))
    failed_with(ours, NotNegotiatedError)
    joined = results(client.join("lab"))
    failed_with(joined, NotNegotiatedError)

    proto_of(client).pauseReading("test")  # silent, and not reading pings
    net.advance(30)
    assert handle.connected and client.connected
    assert writes == []  # no ping, no request


def test_messages_sent_before_the_hello_was_read_arrive_after_on_connect() -> None:
    """
    The server sends to (and broadcasts to) a new connection before it has
    read the client's hello: the client holds those messages until the
    answer, then delivers them after on_connect, in the order sent.
    """
    net = MemoryNetwork()
    events: list[Any] = []
    server: CommsServerFactory

    def greet(handle: ClientHandle) -> None:
        assert not handle.extended  # the hello is not read yet
        handle.send({"n": 1})
        server.broadcast({"n": 2})
        handle.send({"n": 3})

    server = serve(net, on_connect=greet)
    client = CommsClientFactory(
        reactor=net.reactor,
        extensions=True,
        on_connect=lambda c: events.append("connect"),
        on_message=lambda c, m: events.append(m),
    )
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    assert proto_of(client).extended
    assert events == ["connect", {"n": 1}, {"n": 2}, {"n": 3}]


def test_the_hello_and_its_answer_are_not_counted_as_messages() -> None:
    """
    The hello and the answer are plain frames but no messages: neither end
    counts them, so what one end counts sent the other counts received.
    """
    net = MemoryNetwork()
    server = serve(net, on_message=lambda h, m: h.send(m))
    client, inbox = client_for(net)
    handle = only(server)
    ours = proto_of(client)
    assert (ours.messagesSent, ours.messagesReceived) == (0, 0)
    assert (handle.messages_in, handle.messages_out) == (0, 0)
    client.send([1, 2])
    net.flush()
    assert inbox == [[1, 2]]
    assert (ours.messagesSent, ours.bytesSent) == (handle.messages_in, handle.bytes_in)
    assert (handle.messages_out, handle.bytes_out) == (1, 6)
    assert (ours.messagesReceived, ours.bytesReceived) == (1, 6)
    assert server.totals() == (1, 6, 1, 6)


def test_an_invalid_hello_makes_the_connection_plain() -> None:
    """
    A plain client whose first message starts with the hello's magic but is
    not a valid hello gets it delivered as a message; the connection is
    plain.
    """
    net = MemoryNetwork()
    got: list[Any] = []
    server = serve(net, messageDataType="binary", on_message=lambda h, m: got.append(m))
    client, _ = client_for(net, extensions=False, messageDataType="binary")
    fake = HELLO_MAGIC + b"\x01" + b"n" * 16 + b"not json"
    client.send(fake)
    client.send(b"second")
    net.flush()
    assert got == [fake, b"second"]
    assert not only(server).extended


# -- heartbeats ----------------------------------------------------------------

HEARTBEAT = {"heartbeat_interval": 2.0, "heartbeat_timeout": 3.0}


def test_a_client_that_stops_answering_is_closed_at_interval_plus_timeout() -> None:
    """
    The client stops reading (so it never sees the pings and never
    answers); its own silence check is suspended, the server's is not: the
    server closes it with heartbeat timeout at interval + timeout after the
    last byte it received, not before.
    """
    net = MemoryNetwork()
    closes: list[tuple[CloseReason, float]] = []
    serve(
        net,
        on_close=lambda h, r: closes.append((r, net.reactor.seconds())),
        **HEARTBEAT,
    )
    client, _ = client_for(net)
    proto_of(client).pauseReading("test")
    for _ in range(9):
        net.advance(0.5)
    assert closes == [] and client.connected  # t = 4.5
    net.advance(0.5)
    assert closes == [(CloseReason.HEARTBEAT_TIMEOUT, 5.0)]
    assert not client.connected


def test_pings_keep_an_idle_connection_open() -> None:
    """
    Neither side sends a message for many times interval + timeout: the
    server's pings and the client's answers keep both silence checks
    satisfied.
    """
    net = MemoryNetwork()
    closes: list[Any] = []
    server = serve(net, on_close=lambda h, r: closes.append(r), **HEARTBEAT)
    client, _ = client_for(net, on_close=lambda c, r: closes.append(r))
    handle = only(server)
    assert handle.protocol is not None
    pings = count_writes(handle.protocol)
    pongs = count_writes(proto_of(client))
    advance_until(net, lambda: bool(closes), limit=30, step=0.5)
    assert closes == [] and client.connected and handle.connected
    assert len(pings) == len(pongs) == 15  # a ping every 2 s, each answered
    assert handle.messages_out == 0 and handle.messages_in == 0


def test_a_client_closes_a_server_that_went_silent() -> None:
    """
    The client checks silence too: a server whose bytes no longer arrive
    (its writes vanish) is closed by the client with heartbeat timeout at
    interval + timeout.
    """
    net = MemoryNetwork()
    server = serve(net, **HEARTBEAT)
    closes: list[tuple[CloseReason, float]] = []
    client, _ = client_for(
        net, on_close=lambda c, r: closes.append((r, net.reactor.seconds()))
    )
    transport = only(server).protocol.transport  # type: ignore[union-attr]
    transport.write = lambda data: None
    transport.writeSequence = lambda parts: None
    advance_until(net, lambda: bool(closes), limit=20, step=0.5)
    assert closes == [(CloseReason.HEARTBEAT_TIMEOUT, 5.0)]


def test_a_server_not_reading_does_not_close_a_silent_client() -> None:
    """
    While the server has paused reading, its silence check waits: a client
    that is silent (not reading either) is kept for as long as the pause
    lasts, and closed interval + timeout after the server reads again.
    """
    net = MemoryNetwork()
    closes: list[tuple[CloseReason, float]] = []
    server = serve(
        net,
        on_close=lambda h, r: closes.append((r, net.reactor.seconds())),
        **HEARTBEAT,
    )
    client, _ = client_for(net)
    handle = only(server)
    assert handle.protocol is not None
    handle.protocol.pauseReading("test")
    proto_of(client).pauseReading("test")
    advance_until(net, lambda: bool(closes), limit=50, step=0.5)
    assert closes == [] and handle.connected
    handle.protocol.resumeReading("test")
    net.advance(4.5)
    assert closes == []
    net.advance(0.5)
    assert closes == [(CloseReason.HEARTBEAT_TIMEOUT, 55.0)]


@pytest.mark.parametrize(
    ("asked", "granted"),
    [
        ((4.0, 2.0), (4.0, 2.0)),  # shorter than the server's: granted
        ((0.25, 0.5), (1.0, 1.0)),  # not under 1 s
        ((60.0, 60.0), (10.0, 8.0)),  # longer: the server's
    ],
)
def test_the_heartbeat_a_client_asks_for_is_clamped(
    asked: tuple[float, float], granted: tuple[float, float]
) -> None:
    """
    A client may ask for a shorter heartbeat interval and timeout than the
    server's (at least 1 s), never longer: both ends agree the granted
    values, and the server closes a silent client at their sum.
    """
    net = MemoryNetwork()
    closes: list[float] = []
    server = serve(
        net,
        heartbeat_interval=10.0,
        heartbeat_timeout=8.0,
        on_close=lambda h, r: closes.append(net.reactor.seconds()),
    )
    client, _ = client_for(net, heartbeat_interval=asked[0], heartbeat_timeout=asked[1])
    want = {"interval": granted[0], "timeout": granted[1]}
    theirs = only(server).protocol.channel  # type: ignore[union-attr]
    ours = proto_of(client).channel
    assert theirs is not None and ours is not None
    assert theirs.features["heartbeat"] == want == ours.features["heartbeat"]
    proto_of(client).pauseReading("test")
    advance_until(net, lambda: bool(closes), limit=30, step=0.25)
    assert closes == [granted[0] + granted[1]]


# -- request/reply -------------------------------------------------------------


def test_request_reply_both_ways() -> None:
    """
    The client asks the server and the server asks the client (by handle
    and by id); each reply is the first handler's answer, and requests are
    not delivered as messages.
    """
    net = MemoryNetwork()
    messages: list[Any] = []
    server = serve(
        net,
        on_request=lambda h, m: {"server got": m},
        on_message=lambda h, m: messages.append(m),
    )
    client, inbox = client_for(net, on_request=lambda c, m: ["client got", m])
    handle = only(server)
    a = results(client.request({"q": 1}))
    b = results(server.request(handle, 5))
    c = results(server.request(handle.id, ["x"]))
    net.flush()
    assert a == [{"server got": {"q": 1}}]
    assert b == [["client got", 5]]
    assert c == [["client got", ["x"]]]
    assert messages == [] and inbox == []


@pytest.mark.parametrize("byte_order", ["little", "big"])
@pytest.mark.parametrize(
    ("data_type", "message"), [("json", [1, "a"]), ("string", "s"), ("binary", b"b")]
)
def test_requests_rooms_and_auth_in_every_mode(
    data_type: str, message: Any, byte_order: str
) -> None:
    """
    Control frames follow the connection's byte order and requests its
    codec: in each data type and byte order, credentials decode on the
    server, requests both ways come back as sent, and a join works.
    """
    net = MemoryNetwork()
    server = serve(
        net,
        messageDataType=data_type,
        byteOrder=byte_order,
        on_request=lambda h, m: m,
        authenticate=lambda credentials, h: "ann" if credentials == message else None,
    )
    client, _ = client_for(
        net,
        messageDataType=data_type,
        byteOrder=byte_order,
        credentials=message,
        on_request=lambda c, m: m,
    )
    assert client.identity == "ann"
    ups = [results(client.request(message)) for _ in range(300)]
    down = results(server.request(only(server), message))
    joined = results(client.join("lab"))
    net.flush()
    assert all(r == [message] for r in ups)
    assert down == [message] and joined == [True]


def test_a_hundred_requests_in_flight_are_matched_whatever_the_reply_order() -> None:
    """
    100 requests each way are in flight at once; the handlers answer in
    reverse (client to server) and shuffled (server to client) order, and
    each request gets its own reply.
    """
    net = MemoryNetwork()
    at_server: list[tuple[Any, Deferred[Any]]] = []
    at_client: list[tuple[Any, Deferred[Any]]] = []
    server = serve(net, on_request=held_handler(at_server))
    client, _ = client_for(net, on_request=held_handler(at_client))
    handle = only(server)
    ups = [results(client.request({"i": i})) for i in range(100)]
    downs = [results(server.request(handle, {"i": i})) for i in range(100)]
    net.flush()
    assert len(at_server) == len(at_client) == 100
    assert proto_of(client).channel.pending == 100  # type: ignore[union-attr]
    assert all(r == [] for r in ups + downs)
    for message, d in reversed(at_server):
        d.callback({"up": message["i"] * 2})
    shuffled = list(at_client)
    random.Random(7).shuffle(shuffled)
    for message, d in shuffled:
        d.callback({"down": message["i"] * 3})
    net.flush()
    assert [r for (r,) in ups] == [{"up": i * 2} for i in range(100)]
    assert [r for (r,) in downs] == [{"down": i * 3} for i in range(100)]
    assert proto_of(client).channel.pending == 0  # type: ignore[union-attr]
    assert proto_of(client).channel.unknownReplies == 0  # type: ignore[union-attr]


def test_request_timeout_and_a_late_reply_is_counted() -> None:
    """
    A request fails with RequestTimeoutError at its timeout (the
    request_timeout option by default; None waits for ever); a reply that
    arrives afterwards is counted as unknown and dropped.
    """
    net = MemoryNetwork()
    held: list[tuple[Any, Deferred[Any]]] = []
    serve(net, on_request=held_handler(held))
    client, _ = client_for(net, request_timeout=4.0)
    default = results(client.request(1))
    short = results(client.request(2, timeout=1.0))
    forever = results(client.request(3, timeout=None))
    net.advance(0.75)
    assert default == short == forever == []
    net.advance(0.25)
    failed_with(short, RequestTimeoutError)
    net.advance(2.75)
    assert default == []
    net.advance(0.25)
    failed_with(default, RequestTimeoutError)
    channel = proto_of(client).channel
    assert channel is not None and channel.pending == 1
    for message, d in held:
        d.callback(message * 10)
    net.flush()
    assert channel.unknownReplies == 2
    assert forever == [30]
    assert client.connected


def test_closing_fails_every_pending_request_at_once(log_text: list[str]) -> None:
    """
    The connection closes with requests pending both ways: every one fails
    with ConnectionClosedError then, without waiting for a timeout; a
    handler answering afterwards does nothing (no error, logged or not).
    """
    net = MemoryNetwork()
    at_server: list[tuple[Any, Deferred[Any]]] = []
    at_client: list[tuple[Any, Deferred[Any]]] = []
    server = serve(net, on_request=held_handler(at_server))
    client, _ = client_for(net, on_request=held_handler(at_client))
    handle = only(server)
    ups = [results(client.request(i)) for i in range(3)]
    downs = [results(server.request(handle, i)) for i in range(2)]
    net.flush()
    now = net.reactor.seconds()
    handle.close()
    net.flush()
    assert net.reactor.seconds() == now
    for r in ups + downs:
        failed_with(r, ConnectionClosedError)
    assert "3 requests unanswered" in str(failed_with(ups[0], Exception))
    for _, d in at_server + at_client:
        d.callback("too late")  # nobody to answer: dropped
    net.advance(60)  # past the requests' default timeout
    gc.collect()
    assert all(len(r) == 1 for r in ups + downs)
    assert not [line for line in log_text if "Unhandled" in line]


def test_a_raising_handler_sends_its_type_and_message_but_no_traceback() -> None:
    """
    A handler that raises (or whose Deferred fails) answers with an error
    reply: RemoteError with the exception's type name and message, no
    traceback. A handler may refuse with a RemoteError of its own type; an
    answer that cannot be encoded is an error too. The connection stays
    up.
    """
    net = MemoryNetwork()

    def handler(h: ClientHandle, m: Any) -> Any:
        if m == ["raise"]:
            raise ValueError("bad input 42")
        if m == ["fail"]:
            return fail(KeyError("missing"))
        if m == ["refuse"]:
            raise RemoteError("Forbidden", "not you")
        if m == ["unencodable"]:
            return object()
        return "fine"

    serve(net, on_request=handler)
    client, _ = client_for(net)
    raised = results(client.request(["raise"]))
    failed = results(client.request(["fail"]))
    refused = results(client.request(["refuse"]))
    unencodable = results(client.request(["unencodable"]))
    net.flush()
    error = failed_with(raised, RemoteError)
    assert type(error) is RemoteError
    assert (error.type, error.remote_message) == ("ValueError", "bad input 42")
    assert "Traceback" not in str(error) and ".py" not in str(error)
    error = failed_with(failed, RemoteError)
    assert (error.type, error.remote_message) == ("KeyError", "'missing'")
    error = failed_with(refused, RemoteError)
    assert (error.type, error.remote_message) == ("Forbidden", "not you")
    assert remote_type(unencodable) == "UnsupportedTypeError"
    again = results(client.request(["ok"]))
    net.flush()
    assert again == ["fine"]


def test_a_handler_returning_none_passes_to_the_next() -> None:
    """
    Handlers are asked in order; one returning None (or a Deferred firing
    None) passes to the next, and the first other answer is the reply
    (later handlers are not called). If all return None, the reply is None.
    """
    net = MemoryNetwork()
    calls: list[str] = []

    def first(h: ClientHandle, m: Any) -> None:
        calls.append("first")

    def second(h: ClientHandle, m: Any) -> Deferred[None]:
        calls.append("second")
        return succeed(None)

    def third(h: ClientHandle, m: Any) -> Any:
        calls.append("third")
        return None if m == ["nobody"] else {"third": m}

    def fourth(h: ClientHandle, m: Any) -> str:
        calls.append("fourth")
        return "fourth"

    serve(net, on_request=[first, second, third, fourth])
    client, _ = client_for(net)
    answered = results(client.request(["q"]))
    net.flush()
    assert answered == [{"third": ["q"]}]
    assert calls == ["first", "second", "third"]

    net2 = MemoryNetwork()
    serve(net2, on_request=[first, second])
    client2, _ = client_for(net2)
    nothing = results(client2.request(["nobody"]))
    net2.flush()
    assert nothing == [None]


def test_no_handlers_answers_no_handler() -> None:
    """
    A peer with no on_request handlers answers every request with the error
    NoHandler, both ways.
    """
    net = MemoryNetwork()
    server = serve(net)
    client, _ = client_for(net)
    up = results(client.request(1))
    down = results(server.request(only(server), 1))
    net.flush()
    for r in (up, down):
        assert remote_type(r) == "NoHandler"


def test_max_requests_in_flight_refuses_with_too_many_requests() -> None:
    """
    With max_requests_in_flight=2 on the server, a third request while two
    are being answered gets TooManyRequests at once; once one is answered,
    a new one is served. A handler that raises frees its place too.
    """
    net = MemoryNetwork()
    held: list[tuple[Any, Deferred[Any]]] = []
    server = serve(net, max_requests_in_flight=2, on_request=held_handler(held))
    client, _ = client_for(net)
    a = results(client.request(["a"]))
    b = results(client.request(["b"]))
    c = results(client.request(["c"]))
    net.flush()
    assert a == b == [] and [m for m, _ in held] == [["a"], ["b"]]
    assert remote_type(c) == "TooManyRequests"
    channel = only(server).protocol.channel  # type: ignore[union-attr]
    assert channel is not None and channel.requestsRefused == 1
    held[0][1].errback(RuntimeError("handler broke"))
    net.flush()
    assert remote_type(a) == "RuntimeError"
    d = results(client.request(["d"]))
    net.flush()
    assert [m for m, _ in held] == [["a"], ["b"], ["d"]]
    held[1][1].callback("B")
    held[2][1].callback("D")
    net.flush()
    assert (b, d) == (["B"], ["D"])
    assert channel.requestsRefused == 1


def test_a_request_over_the_maximum_size_fails_before_anything_is_written() -> None:
    """
    A request whose message is over max_message_size fails with
    MessageTooLargeError and nothing is written (either way); one of
    exactly the maximum goes through. A reply over the maximum is answered
    with an error instead.
    """
    net = MemoryNetwork()
    server = serve(
        net,
        max_message_size=1000,
        on_request=lambda h, m: "y" * 2000 if m == ["big reply"] else len(m[0]),
    )
    client, _ = client_for(net, max_message_size=1000, on_request=lambda c, m: "ok")
    handle = only(server)
    assert handle.protocol is not None
    ours, theirs = count_writes(proto_of(client)), count_writes(handle.protocol)
    up = results(client.request(["x" * 997]))  # 1001 bytes of JSON
    down = results(server.request(handle, ["x" * 997]))
    failed_with(up, MessageTooLargeError)
    failed_with(down, MessageTooLargeError)
    assert ours == theirs == []
    assert proto_of(client).channel.pending == 0  # type: ignore[union-attr]
    assert handle.protocol.channel.pending == 0  # type: ignore[union-attr]
    exact = results(client.request(["x" * 996]))  # exactly 1000 bytes
    big = results(client.request(["big reply"]))
    net.flush()
    assert exact == [996]
    assert remote_type(big) == "MessageTooLargeError"
    assert client.connected and handle.connected


def test_request_when_not_connected_fails_not_connected() -> None:
    """
    request() before connecting and after the connection is gone fails with
    NotConnectedError; the server's request() to a client that is gone
    fails with ClientGoneError.
    """
    net = MemoryNetwork()
    server = serve(net)
    client, _ = client_for(net, connect=False)
    before = results(client.request(1))
    failed_with(before, NotConnectedError)
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    handle = only(server)
    client.stop()
    net.flush()
    after = results(client.request(1))
    failed_with(after, NotConnectedError)
    gone = results(server.request(handle, 1))
    failed_with(gone, ClientGoneError)


# -- authentication ------------------------------------------------------------

SECRET = "pw-7f3a9c-never-log-me"
USERS = {"ann": SECRET}


def check_password(credentials: Any, handle: ClientHandle) -> str | None:
    if USERS.get(credentials.get("user")) == credentials.get("pw"):
        return str(credentials["user"])
    return None


def test_authentication_sets_the_identity_on_both_ends() -> None:
    """
    authenticate() gets the decoded credentials and the handle; its answer
    is the identity on the server's handle and on the client.
    """
    net = MemoryNetwork()
    seen: list[tuple[Any, ClientHandle]] = []

    def authenticate(credentials: Any, handle: ClientHandle) -> str | None:
        seen.append((credentials, handle))
        return check_password(credentials, handle)

    server = serve(net, authenticate=authenticate)
    client, _ = client_for(net, credentials={"user": "ann", "pw": SECRET})
    handle = only(server)
    assert client.connected
    assert client.identity == "ann" and handle.identity == "ann"
    assert seen == [({"user": "ann", "pw": SECRET}, handle)]


def test_require_auth_registers_the_client_only_once_authenticated() -> None:
    """
    With require_auth (and authenticate returning a Deferred), the server's
    on_connect fires only once authenticate answers; until then the
    connection is no client: broadcasts do not reach it (not even later),
    and the client's whenConnected waits.
    """
    net = MemoryNetwork()
    pending: list[Deferred[str]] = []
    connects: list[ClientHandle] = []

    def authenticate(credentials: Any, handle: ClientHandle) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        pending.append(d)
        return d

    server = serve(
        net, require_auth=True, authenticate=authenticate, on_connect=connects.append
    )
    client, inbox = client_for(net, connect=False, credentials={"user": "ann"})
    connected = results(client.whenConnected())
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    assert len(pending) == 1
    assert connects == [] and len(server.clients) == 0 and connected == []
    assert server.broadcast({"early": 1}) == 0
    net.flush()
    pending[0].callback("ann")
    net.flush()
    assert connects == [only(server)] and connected == [client.connection]
    assert client.identity == "ann"
    assert server.broadcast({"late": 2}) == 1
    net.flush()
    assert inbox == [{"late": 2}]


@pytest.mark.parametrize("require_auth", [False, True])
def test_refused_credentials_fail_and_the_client_stops_trying(
    require_auth: bool,
) -> None:
    """
    Refused credentials: whenConnected() fails with AuthenticationError,
    the server closes the connection with reason auth failed, and the
    client does not try again even with autoReconnect.
    """
    net = MemoryNetwork()
    seen: list[ClientHandle] = []

    def authenticate(credentials: Any, handle: ClientHandle) -> str | None:
        seen.append(handle)
        return check_password(credentials, handle)

    serve(net, authenticate=authenticate, require_auth=require_auth)
    client, _ = client_for(
        net,
        connect=False,
        credentials={"user": "ann", "pw": "wrong"},
        autoReconnect=True,
    )
    connected = results(client.whenConnected())
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    error = failed_with(connected, AuthenticationError)
    assert error.type == "AuthenticationFailed"
    (handle,) = seen
    assert handle.close_reason == CloseReason.AUTH_FAILED
    net.advance(300)
    assert len(seen) == 1 and not client.connected
    assert results(client.whenStopped()) == [None]


def test_authenticate_raising_or_failing_refuses() -> None:
    """
    authenticate() raising, or returning a failing Deferred, refuses the
    credentials (the client is told only that they were refused).
    """
    net = MemoryNetwork()

    def authenticate(credentials: Any, handle: ClientHandle) -> Any:
        if credentials == {"how": "raise"}:
            raise RuntimeError("the user database is down")
        return fail(RuntimeError("the user database is down"))

    serve(net, authenticate=authenticate)
    for how in ("raise", "fail"):
        client, _ = client_for(net, connect=False, credentials={"how": how})
        connected = results(client.whenConnected())
        client.connectTCP("127.0.0.1", 6000)
        net.flush()
        error = failed_with(connected, AuthenticationError)
        assert (error.type, error.remote_message) == (
            "AuthenticationFailed",
            "credentials refused",
        )


def test_failed_authentications_are_throttled_per_address() -> None:
    """
    After auth_max_failures failures from one address within
    auth_failure_window, further attempts (even with good credentials) are
    refused with TooManyFailures without calling authenticate; once the
    window has passed since the first failure, they are checked again.
    """
    net = MemoryNetwork()
    calls: list[Any] = []

    def authenticate(credentials: Any, handle: ClientHandle) -> str | None:
        calls.append(credentials)
        return check_password(credentials, handle)

    serve(net, authenticate=authenticate, auth_max_failures=3, auth_failure_window=60)

    def attempt(password: str) -> list[Any]:
        client, _ = client_for(
            net, connect=False, credentials={"user": "ann", "pw": password}
        )
        connected = results(client.whenConnected())
        client.connectTCP("127.0.0.1", 6000)
        net.flush()
        return connected

    def refusal(connected: list[Any]) -> str:
        return failed_with(connected, AuthenticationError).type

    for _ in range(3):
        assert refusal(attempt("wrong")) == "AuthenticationFailed"
    assert len(calls) == 3
    net.advance(10)
    assert refusal(attempt(SECRET)) == "TooManyFailures"
    assert len(calls) == 3
    net.advance(49.5)  # t = 59.5
    assert refusal(attempt(SECRET)) == "TooManyFailures"
    assert len(calls) == 3
    net.advance(0.5)  # t = 60: the first failure leaves the window
    (accepted,) = attempt(SECRET)
    assert isinstance(accepted, CommsProtocol) and accepted.identity == "ann"
    assert len(calls) == 4


@pytest.mark.parametrize("ended_by", ["auth timeout", "client gone"])
def test_an_authentication_decided_after_the_connection_closed_registers_nobody(
    ended_by: str,
) -> None:
    """
    Under require_auth, authenticate() answers (yes) only after the
    connection has closed -- the auth timeout closed it, or the client went
    away: the closed connection does not become a client (no on_connect, no
    entry in clients, nothing for broadcasts to skip).
    """
    net = MemoryNetwork()
    pending: list[Deferred[str]] = []
    connects: list[ClientHandle] = []

    def authenticate(credentials: Any, handle: ClientHandle) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        pending.append(d)
        return d

    server = serve(
        net,
        require_auth=True,
        authenticate=authenticate,
        auth_timeout=5.0,
        on_connect=connects.append,
    )
    client, _ = client_for(net, credentials={"user": "ann"}, extension_timeout=30.0)
    (handle,) = handles(server)
    if ended_by == "auth timeout":
        net.advance(5.0)
        assert handle.close_reason == CloseReason.AUTH_TIMEOUT
    else:
        client.stop()
        net.flush()
        assert handle.close_reason == CloseReason.PEER_CLOSED
    pending[0].callback("ann")
    net.flush()
    assert connects == [] and list(server.clients) == []
    assert server.broadcast({"n": 1}) == 0


def test_a_client_gives_up_when_its_credentials_are_never_decided() -> None:
    """
    The server answers the hello but authenticate() never answers: the
    client waits extension_timeout for the decision, then gives up (the
    failure says the reply timed out) and closes the connection.
    """
    net = MemoryNetwork()
    serve(net, authenticate=lambda credentials, handle: Deferred())
    client, _ = client_for(
        net, connect=False, credentials={"user": "ann"}, extension_timeout=3.0
    )
    connected = results(client.whenConnected())
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    proto = net.pumps[-1].client
    net.advance(2.75)
    assert connected == [] and not proto.closing
    net.advance(0.25)
    gave_up = failed_with(connected, GaveUpError)
    assert gave_up.failure is not None
    assert gave_up.failure.check(RequestTimeoutError)
    assert proto.closing and not client.connected


def test_require_auth_closes_a_listening_plain_client_at_the_auth_timeout() -> None:
    """
    Under require_auth a plain client that only listens is never a client:
    broadcasts skip it, and it is closed with reason auth timeout at
    auth_timeout, not before.
    """
    net = MemoryNetwork()
    connects: list[ClientHandle] = []
    server = serve(
        net,
        require_auth=True,
        authenticate=check_password,
        auth_timeout=5.0,
        on_connect=connects.append,
    )
    plain, plain_inbox = client_for(net, extensions=False)
    assert plain.connected  # as far as it knows
    assert server.broadcast({"n": 1}) == 0
    [watched] = handles(server)
    net.advance(4.5)
    assert watched.close_reason is None
    net.advance(0.5)
    assert watched.close_reason is CloseReason.AUTH_TIMEOUT
    assert not plain.connected
    assert connects == [] and plain_inbox == []


def test_require_auth_refuses_an_extended_client_without_credentials_at_once() -> None:
    """
    The answer says authentication is required even to a client that did
    not ask for it: one without credentials fails at once with
    AuthenticationError (CredentialsRequired), not after auth_timeout, and
    stops trying.
    """
    net = MemoryNetwork()
    connects: list[ClientHandle] = []
    serve(
        net,
        require_auth=True,
        authenticate=check_password,
        auth_timeout=5.0,
        on_connect=connects.append,
    )
    extended, inbox = client_for(net, connect=False, autoReconnect=True)
    connected = results(extended.whenConnected())
    extended.connectTCP("127.0.0.1", 6000)
    net.flush()
    error = failed_with(connected, AuthenticationError)
    assert error.type == "CredentialsRequired"
    assert "credentials" in str(error)
    assert not extended.connected and not extended.continueTrying
    assert connects == [] and inbox == []


def test_require_auth_closes_a_plain_client_that_sends() -> None:
    """
    Under require_auth a plain client that sends a message is closed at
    once with reason auth failed; the message is not delivered.
    """
    net = MemoryNetwork()
    messages: list[Any] = []
    server = serve(
        net,
        require_auth=True,
        authenticate=check_password,
        on_message=lambda h, m: messages.append(m),
    )
    client, _ = client_for(net, extensions=False)
    (handle,) = handles(server)
    client.send({"let me": "in"})
    net.flush()
    assert handle.close_reason == CloseReason.AUTH_FAILED
    assert messages == [] and not client.connected


def test_credentials_are_never_logged(log_text: list[str]) -> None:
    """
    Through a successful authentication, a refusal, an authenticate() that
    raises, credentials that do not decode (a client in string mode, the
    server in json) and a throttled attempt, the password appears in no
    log event, on either end (what is logged about them is there).
    """
    net = MemoryNetwork()

    def authenticate(credentials: Any, handle: ClientHandle) -> str | None:
        if credentials.get("user") == "crash":
            raise RuntimeError("the user database is down")
        return check_password(credentials, handle)

    serve(net, authenticate=authenticate, auth_max_failures=3)
    for user in ("ann", "bob", "crash"):
        client_for(net, credentials={"user": user, "pw": SECRET})
    client_for(net, messageDataType="string", credentials=SECRET)
    client_for(net, credentials={"user": "ann", "pw": SECRET})
    gc.collect()  # (a Deferred's unhandled failure is logged when collected)
    text = "\n".join(log_text)
    assert "authenticated as ann" in text
    assert "authenticate() raised" in text
    assert "credentials did not decode" in text
    assert "too many failed attempts" in text
    assert SECRET not in text


# -- rooms ---------------------------------------------------------------------


def test_a_client_joins_and_leaves_rooms() -> None:
    """
    join() and leave() answer whether they changed anything; the server
    sees the membership, and a room broadcast reaches the client only
    while it is a member. Disconnecting leaves every room.
    """
    net = MemoryNetwork()
    server = serve(net)
    client, inbox = client_for(net)
    handle = only(server)
    first = results(client.join("lab"))
    again = results(client.join("lab"))
    other = results(client.join("hall"))
    net.flush()
    assert (first, again, other) == ([True], [False], [True])
    assert server.rooms_of(handle) == {"lab", "hall"}
    assert server.members("lab") == [handle]
    assert server.broadcast({"to": "lab"}, room="lab") == 1
    net.flush()
    assert inbox == [{"to": "lab"}]
    left = results(client.leave("lab"))
    left_again = results(client.leave("lab"))
    net.flush()
    assert (left, left_again) == ([True], [False])
    assert server.rooms_of(handle) == {"hall"} and server.members("lab") == []
    assert server.broadcast({"to": "lab"}, room="lab") == 0
    net.flush()
    assert inbox == [{"to": "lab"}]
    client.stop()
    net.flush()
    assert server.rooms() == []


def test_the_room_policy_can_refuse_joining_and_leaving() -> None:
    """
    room_policy(handle, room, joining) is asked for every join and leave;
    a refusal fails the client's Deferred with RemoteError RoomRefused and
    changes nothing.
    """
    net = MemoryNetwork()
    asked: list[tuple[ClientHandle, str, bool]] = []

    def policy(handle: ClientHandle, room: str, joining: bool) -> bool:
        asked.append((handle, room, joining))
        return room != "secret" and not (room == "jail" and not joining)

    server = serve(net, room_policy=policy)
    client, _ = client_for(net)
    handle = only(server)
    secret = results(client.join("secret"))
    jail = results(client.join("jail"))
    escape = results(client.leave("jail"))
    net.flush()
    assert remote_type(secret) == "RoomRefused"
    assert jail == [True]
    assert remote_type(escape) == "RoomRefused"
    assert server.rooms_of(handle) == {"jail"}
    assert asked == [
        (handle, "secret", True),
        (handle, "jail", True),
        (handle, "jail", False),
    ]


def test_invalid_room_names_are_refused() -> None:
    """
    The client checks a room name before sending (InvalidRoomError, nothing
    written); the server checks what arrives all the same (RemoteError
    InvalidRoomError), without asking its policy.
    """
    net = MemoryNetwork()
    asked: list[str] = []

    def policy(handle: ClientHandle, room: str, joining: bool) -> bool:
        asked.append(room)
        return True

    server = serve(net, room_policy=policy)
    client, _ = client_for(net)
    writes = count_writes(proto_of(client))
    local = results(client.join("has space"))
    failed_with(local, InvalidRoomError)
    assert writes == []
    channel = proto_of(client).channel
    assert channel is not None
    raw = [
        results(channel.ask(Kind.JOIN, body, None))
        for body in (b"has space", b"\xff\xfe", b"", b"x" * 129)
    ]
    net.flush()
    for r in raw:
        assert remote_type(r) == "InvalidRoomError"
    assert asked == [] and server.rooms() == []


def test_a_room_policy_may_answer_later() -> None:
    """
    A policy returning a Deferred: the join waits for it, then succeeds
    (True) or is refused (False); a policy that fails answers with its
    error. A join allowed after the client has gone puts nobody in the room.
    """
    net = MemoryNetwork()
    decisions: list[Deferred[bool]] = []

    def policy(handle: ClientHandle, room: str, joining: bool) -> Deferred[bool]:
        d: Deferred[bool] = Deferred()
        decisions.append(d)
        return d

    server = serve(net, room_policy=policy)
    client, _ = client_for(net)
    handle = only(server)
    yes = results(client.join("a"))
    no = results(client.join("b"))
    broken = results(client.join("c"))
    net.flush()
    assert len(decisions) == 3 and yes == no == broken == []
    decisions[0].callback(True)
    decisions[1].callback(False)
    decisions[2].errback(RuntimeError("policy store down"))
    net.flush()
    assert yes == [True] and server.rooms_of(handle) == {"a"}
    assert remote_type(no) == "RoomRefused"
    assert remote_type(broken) == "RuntimeError"

    late = results(client.join("d"))
    net.flush()
    client.stop()
    net.flush()
    decisions[3].callback(True)
    net.flush()
    failed_with(late, ConnectionClosedError)
    assert server.rooms() == []


class _ClosesOnHello(Protocol):
    """
    What an original Python Comms server in json or string mode does with a
    hello: its read loop fails to decode the frame and closes the
    connection. Other frames are kept.
    """

    def dataReceived(self, data: bytes) -> None:
        if HELLO_MAGIC in data:
            self.transport.loseConnection()
        else:
            self.factory.received.append(data)  # type: ignore[attr-defined]


def test_prefer_falls_back_to_plain_when_the_server_closes_on_the_hello() -> None:
    """
    With extensions="prefer", a server that closes the connection on the
    hello (the original library does) gets a plain connection at once;
    once that plain connection has stayed up, the client stays plain on
    later reconnects (one hello per client, not per reconnect).
    """
    net = MemoryNetwork()
    original = Factory.forProtocol(_ClosesOnHello)
    original.received = []  # type: ignore[attr-defined]
    net.reactor.listenTCP(6000, original)
    client, _ = client_for(net, extensions="prefer", autoReconnect=True)
    assert client.connected and not proto_of(client).extended
    assert not client.plain_only  # not yet: a full twcomms server closes too
    net.advance(1.0)  # STABLE_AFTER: the plain connection stays up
    assert client.plain_only
    client.send({"x": 1})
    net.flush()
    assert original.received == [b'\x08\x00\x00\x00{"x": 1}']  # type: ignore[attr-defined]
    net.break_connections()
    net.advance(2.0)
    net.flush()
    assert client.connected and not proto_of(client).extended
    assert original.received[-1] == b'\x08\x00\x00\x00{"x": 1}'  # no hello was seen


def test_prefer_keeps_asking_a_full_twcomms_server() -> None:
    """
    A full twcomms server (max_clients) closes every connection at once: a
    "prefer" client's plain attempt is closed too, so it does not conclude
    the server lacks extensions, and asks again on its next attempt.
    """
    net = MemoryNetwork()
    server = serve(net, max_clients=0)
    client, _ = client_for(net, extensions="prefer", autoReconnect=True)
    net.advance(0.1)
    net.flush()
    assert not client.plain_only
    server.options = Options.build(server.options, max_clients=None)
    for _ in range(6):
        net.advance(8.0)
        net.flush()
    assert client.connected and proto_of(client).extended
    assert not client.plain_only


def _replier(net: MemoryNetwork) -> tuple[CommsServerFactory, list[Deferred[Any]]]:
    """
    A server whose request handler answers only when the test fires the
    Deferred it returns (kept in the list).
    """
    answers: list[Deferred[Any]] = []

    def later(handle: ClientHandle, message: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        answers.append(d)
        return d

    return serve(net, on_request=later), answers


def test_a_reply_arrives_while_reading_is_paused() -> None:
    """
    A client paused reading (its callbacks are behind) while it waits for a
    reply: the reply still arrives; the messages that came with it are held
    and delivered, in order, once reading resumes. (A threaded callback
    blocked in request() would otherwise wait for a reply nobody reads.)
    """
    net = MemoryNetwork()
    server, answers = _replier(net)
    client, inbox = client_for(net)
    proto = proto_of(client)
    reply = results(client.request(["q"]))
    net.flush()
    proto.pauseReading("behind")
    for n in range(5):
        server.broadcast([n])
    net.flush()
    assert not proto.paused  # reading on while the reply is awaited
    server.broadcast([5])
    answers[0].callback("the answer")
    net.flush()
    assert reply == ["the answer"]
    assert proto.paused  # answered: paused for real now
    assert inbox == []  # held: reading is paused for the application
    proto.resumeReading("behind")
    assert inbox == [[n] for n in range(6)]
    # No request waits any more: a new pause stops reading for real.
    proto.pauseReading("behind")
    assert proto.paused
    server.broadcast(["later"])
    net.flush()
    proto.resumeReading("behind")
    net.flush()
    assert inbox[-1] == ["later"]


def test_a_request_made_while_paused_still_gets_its_reply() -> None:
    """
    Reading was paused for real (no request waited); a request made then
    reads on for its reply, holding messages, and stops reading again once
    it is answered.
    """
    net = MemoryNetwork()
    server, answers = _replier(net)
    client, inbox = client_for(net)
    proto = proto_of(client)
    proto.pauseReading("behind")
    server.broadcast(["before"])
    net.flush()
    assert proto.paused and inbox == []
    reply = results(client.request(["q"]))
    net.flush()
    assert not proto.paused  # reading on, for the reply
    answers[0].callback("yes")
    net.flush()
    assert reply == ["yes"]
    assert proto.paused  # answered: paused for real again
    proto.resumeReading("behind")
    net.flush()
    assert inbox == [["before"]]


def test_messages_held_for_a_reply_are_bounded() -> None:
    """
    While reading on for a reply, at most max_message_size bytes of
    messages are held; past that, reading stops for real (and the request
    times out rather than memory growing).
    """
    net = MemoryNetwork()
    server, answers = _replier(net)
    client, inbox = client_for(net, max_message_size=1000, request_timeout=5.0)
    proto = proto_of(client)
    reply = results(client.request(["q"]))
    net.flush()
    proto.pauseReading("behind")
    for n in range(30):
        server.broadcast(["x" * 90, n])  # ~100 bytes each
    net.flush()
    assert proto.paused  # the cap stopped reading
    received = proto.bytesReceived
    net.flush()
    assert proto.bytesReceived == received
    net.advance(5.0)
    assert failed_with(reply, RequestTimeoutError)
    proto.resumeReading("behind")
    net.flush()
    assert [m[1] for m in inbox] == list(range(30))  # nothing lost, in order


def test_messages_held_during_the_hello_respect_a_pause_made_on_connect() -> None:
    """
    Messages the server sent before reading the hello are delivered after
    on_connect -- but if on_connect paused reading, they wait for the
    resume like any other, in order.
    """
    net = MemoryNetwork()
    server = serve(net)
    server.on_connect.append(lambda h: [h.send([n]) for n in range(3)])
    inbox: list[Any] = []
    client = CommsClientFactory(
        reactor=net.reactor,
        extensions=True,
        on_connect=lambda c: c.connection.pauseReading("not yet"),
        on_message=lambda c, m: inbox.append(m),
    )
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    server.broadcast(["after"])
    net.flush()
    assert client.connected and inbox == []
    proto_of(client).resumeReading("not yet")
    net.flush()
    assert inbox == [[0], [1], [2], ["after"]]
