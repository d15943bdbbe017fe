"""
The extended protocol over real sockets, at the byte level: plain peers
(the original's format, as Unity clients speak it) beside extended clients
get exactly the bytes they always got; hello and answer lookalikes relayed
as messages confuse nobody; hostile input has its documented outcome and
leaves the other clients alone.

Every server listens on 127.0.0.1, port 0. Raw peers are Twisted protocols
written here (as in C{tests/test_sockets.py}) that frame by hand with
L{harness.wire}; every wait is bounded, and the test synchronises on
events (frames received, connections closed, callbacks), never on sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from harness.stress.measure import LogWatch
from harness.wire import frame, header_struct, scan
from tests import test_sockets
from tests.test_sockets import (
    TIMEOUT,
    Cleanup,
    Events,
    RawPeer,
    TrackingServer,
    bounded,
    handle_for,
    start_client,
    start_server,
)
from tests.test_sockets import reference_payload as payload_of
from twcomms.client import CommsClientFactory
from twcomms.connection import CloseReason, CommsProtocol
from twcomms.connection import negotiation as negotiation_module
from twcomms.errors import AuthenticationError, ExtensionsRefusedError
from twcomms.server import ClientHandle, CommsServerFactory
from twcomms.wire.extended import (
    ANSWER_MAGIC,
    CONTROL_BIT,
    HELLO_MAGIC,
    NONCE_SIZE,
    WITH_ID,
    Kind,
    encode_hello,
    new_nonce,
    parse_hello,
)

#: The fixture that closes what a test opened (see C{tests/test_sockets.py}).
cleanup = test_sockets.cleanup

# -- raw peers -----------------------------------------------------------------


class WirePeer(RawPeer):
    """
    A raw peer that also reads control frames (a length with the top bit
    set): each complete frame is recorded in C{events} as C{("msg",
    payload)} or C{("ctl", kind, request_id or None, rest)}.
    """

    def __init__(self, byte_order: str = "little") -> None:
        super().__init__(byte_order)
        self.header = header_struct(byte_order)
        self.events = Events()
        self.control_events = Events()  # the control frames only
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.raw += data
        self._buffer += data
        while len(self._buffer) >= 4:
            (length,) = self.header.unpack_from(self._buffer)
            size = length & 0x7FFFFFFF
            if len(self._buffer) < 4 + size:
                return
            body = self._buffer[4 : 4 + size]
            self._buffer = self._buffer[4 + size :]
            if not length & CONTROL_BIT:
                self.events(("msg", body))
                self.frames(body)
                continue
            kind = body[0]
            if kind in WITH_ID:
                (request_id,) = self.header.unpack_from(body, 1)
                event = ("ctl", kind, request_id, body[5:])
            else:
                event = ("ctl", kind, None, body[1:])
            self.events(event)
            self.control_events(event)

    def control(self, body: bytes) -> bytes:
        """
        The bytes of a control frame whose body (kind included) is C{body}.
        """
        return self.header.pack(CONTROL_BIT | len(body)) + body

    def request_frame(self, kind: int, request_id: int, rest: bytes) -> bytes:
        return self.control(bytes([kind]) + self.header.pack(request_id) + rest)


@defer.inlineCallbacks
def connect_peer(cleanup: Cleanup, port: int, peer: RawPeer) -> Any:
    """
    Connect C{peer} to 127.0.0.1:C{port}; aborted after the test.
    """
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=TIMEOUT)
    yield bounded(connectProtocol(endpoint, peer))
    peer.port = peer.transport.getHost().port  # type: ignore[attr-defined]
    cleanup(peer.close)
    return peer


@defer.inlineCallbacks
def raw_handshake(peer: WirePeer, features: dict[str, dict[str, Any]]) -> Any:
    """
    Send a valid hello from C{peer} as its first frame and wait for the
    answer (which must be the first thing it receives); return the parsed
    answer.
    """
    assert not peer.events.items
    nonce = new_nonce()
    peer.send_frame(encode_hello(nonce, features))
    [event] = yield peer.events.wait(1)
    assert event[0] == "msg", event
    answer = parse_hello(event[1], answer=True)
    assert answer is not None, event
    assert answer.nonce == nonce
    return answer


@defer.inlineCallbacks
def wait_for(events: Events, item: Any, most: int = 10_000) -> Any:
    """
    Wait until C{item} is among C{events} (among other things arriving
    meanwhile), for at most C{most} more events, each bounded in time.
    """
    for _ in range(most):
        if item in events.items:
            return
        yield events.wait(len(events) + 1)
    raise AssertionError(f"{item!r} not among {most} events")


def server_handle(server: CommsServerFactory, peer: RawPeer) -> ClientHandle:
    """
    The server's registered handle for a raw peer (by its local port).
    """
    (handle,) = [h for h in server.clients if h.port == peer.port]
    return handle


def server_protocol(server: TrackingServer, peer: RawPeer) -> CommsProtocol:
    """
    The server's protocol for a raw peer, registered as a client or not.
    """
    (proto,) = [p for p in server.built if p.receiver.port == peer.port]
    return proto


def plain_frames(raw: bytes, byte_order: str) -> list[bytes]:
    """
    The payloads of a plain peer's whole received stream, checking that no
    header has the control bit set and nothing is left over.
    """
    payloads, end, control = scan(raw, 0x7FFFFFFF, byte_order)
    assert not control, f"a control frame reached a plain peer at byte {end}"
    assert end == len(raw), "a partial frame was left over"
    return payloads


def stream(payloads: list[bytes], byte_order: str = "little") -> bytes:
    """
    Plain frames of C{payloads}, as the original library writes them.
    """
    return b"".join(frame(p, byte_order) for p in payloads)


# -- the data types ---------------------------------------------------------

BYTE_ORDERS = ["little", "big"]
DATA_TYPES = ["json", "string", "binary"]


def message_of(data_type: str, tag: str) -> Any:
    """
    A message of C{data_type} carrying C{tag}, with non-ASCII text (json,
    string) or every byte value (binary).
    """
    if data_type == "json":
        return {"tag": tag, "text": "héllo wörld ✓", "n": [1, 2.5, None, True]}
    if data_type == "string":
        return f"{tag}: héllo wörld ✓"
    return tag.encode() + bytes(range(256))


def answer_of(data_type: str, message: Any) -> Any:
    """
    What the request handlers here answer to C{message}.
    """
    if data_type == "json":
        return {"answer": message}
    if data_type == "string":
        return "answer to " + message
    return b"answer to " + bytes(message)


# -- 1. plain peers beside extended ones, byte for byte -------------------------


class Counted:
    """
    Control frames of one kind seen on a protocol's channel, countable.
    """

    def __init__(self, proto: CommsProtocol, kind: int) -> None:
        self.kind = kind
        self.seen = Events()
        channel = proto.channel
        assert channel is not None
        original = channel.controlReceived

        def received(body: bytes) -> None:
            if body[:1] == bytes([kind]):
                self.seen(bytes(body))
            original(body)

        channel.controlReceived = received  # type: ignore[method-assign]


@defer.inlineCallbacks
def plain_scenario(
    cleanup: Cleanup,
    data_type: str,
    byte_order: str,
    *,
    accept_extensions: bool,
) -> Any:
    """
    A receive-only plain peer and a send-first plain peer on a server (with
    an extended client beside them when C{accept_extensions}); return what
    the two plain peers received, raw.

    The server echoes every message to its sender and broadcasts to all
    and to a room; with the extended client, meanwhile: heartbeats every
    0.2 s (at least three answered), a request each way, a room joined and
    a broadcast to it.
    """
    msg = lambda tag: message_of(data_type, tag)  # noqa: E731
    connects = Events()
    server_messages = Events()

    def echo(client: ClientHandle, message: Any) -> None:
        server_messages((client, message))
        client.send(message)

    server, port = yield start_server(
        cleanup,
        messageDataType=data_type,
        byteOrder=byte_order,
        accept_extensions=accept_extensions,
        heartbeat_interval=0.2,
        on_connect=connects,
        on_message=echo,
        on_request=lambda client, m: answer_of(data_type, m),
    )
    extended: CommsClientFactory | None = None
    ext_inbox = Events()
    if accept_extensions:
        extended = start_client(
            cleanup,
            port,
            messageDataType=data_type,
            byteOrder=byte_order,
            extensions=True,
            heartbeat_interval=0.2,
            on_message=lambda c, m: ext_inbox(m),
            on_request=lambda c, m: answer_of(data_type, m),
        )
        yield bounded(extended.whenConnected())
        yield connects.wait(1)
    listener = yield connect_peer(cleanup, port, RawPeer(byte_order))
    sender = yield connect_peer(cleanup, port, RawPeer(byte_order))
    yield connects.wait(3 if extended else 2)
    listener_handle = server_handle(server, listener)
    sender_handle = server_handle(server, sender)

    # The send-first peer's first frame: a message, echoed.
    sender.send_frame(payload_of(data_type, msg("first")))
    yield sender.frames.wait(1)

    if extended is not None:
        ext_handle = handle_for(server, extended)
        assert ext_handle.protocol is not None
        assert extended.connection is not None
        pongs = Counted(ext_handle.protocol, Kind.PONG)
        pings = Counted(extended.connection, Kind.PING)
        assert (yield bounded(extended.join("lobby"))) is True
        asked, answered = yield bounded(
            defer.gatherResults(
                [
                    server.request(ext_handle, msg("server asks")),
                    extended.request(msg("client asks")),
                ]
            )
        )
        assert asked == answer_of(data_type, msg("server asks"))
        assert answered == answer_of(data_type, msg("client asks"))

    server.broadcast(msg("all 1"))
    if extended is not None:
        server.broadcast(msg("room"), room="lobby")
        extended.send(msg("from extended"))
    yield sender.frames.wait(2)
    yield listener.frames.wait(1)

    # Heartbeats going on (and a message from the plain peer meanwhile).
    sender.send_frame(payload_of(data_type, msg("second")))
    yield sender.frames.wait(3)
    if extended is not None:
        yield pings.seen.wait(3)
        yield pongs.seen.wait(3)
        assert set(pings.seen.items) == {bytes([Kind.PING])}
        assert set(pongs.seen.items) == {bytes([Kind.PONG])}
        # Another request each way, between heartbeats.
        asked, answered = yield bounded(
            defer.gatherResults(
                [
                    server.request(ext_handle, msg("server again")),
                    extended.request(msg("client again")),
                ]
            )
        )
        assert asked == answer_of(data_type, msg("server again"))
        assert answered == answer_of(data_type, msg("client again"))

    server.broadcast(msg("all 2"))
    server.broadcast(msg("end"))
    yield listener.frames.wait(3)
    yield sender.frames.wait(5)

    if extended is not None:
        got = yield ext_inbox.wait(5)
        assert got == [
            msg("all 1"),
            msg("room"),
            msg("from extended"),
            msg("all 2"),
            msg("end"),
        ]
        assert ext_handle.extended
    assert [m for who, m in server_messages.items if who is sender_handle] == [
        msg("first"),
        msg("second"),
    ]
    for handle in (listener_handle, sender_handle):
        assert not handle.extended
        assert handle.protocol is not None and handle.protocol.channel is None
        assert handle.protocol.controlLimit == 0
    assert listener.lost_reason is None and sender.lost_reason is None
    return listener.raw, sender.raw


@pytest.mark.parametrize("byte_order", BYTE_ORDERS)
@pytest.mark.parametrize("data_type", DATA_TYPES)
@pytest_twisted.inlineCallbacks
def test_plain_peers_get_the_original_bytes(
    cleanup: Cleanup, data_type: str, byte_order: str
) -> Any:
    """
    Plain peers receive exactly the frames they would from a server with
    extensions off -- only the messages addressed to them, never a control
    frame -- while an extended client beside them does heartbeats,
    requests both ways and room traffic.
    """
    ext_listener, ext_sender = yield plain_scenario(
        cleanup, data_type, byte_order, accept_extensions=True
    )
    off_listener, off_sender = yield plain_scenario(
        cleanup, data_type, byte_order, accept_extensions=False
    )
    assert ext_listener == off_listener
    assert ext_sender == off_sender

    def expected(*tags: str) -> bytes:
        return stream(
            [payload_of(data_type, message_of(data_type, t)) for t in tags],
            byte_order,
        )

    assert ext_listener == expected("all 1", "all 2", "end")
    assert ext_sender == expected("first", "all 1", "second", "all 2", "end")
    plain_frames(ext_listener, byte_order)
    plain_frames(ext_sender, byte_order)


# -- 2. hello and answer lookalikes relayed by a binary hub -----------------------


@defer.inlineCallbacks
def start_hub(cleanup: Cleanup, **kw: Any) -> Any:
    """
    A binary server relaying every message to every other client and
    answering requests with C{b"re: "} and the request's first 64 bytes.
    Return C{(server, port, messages, connects, closes)}; C{messages}
    records C{(handle, message)}.
    """
    messages = Events()
    connects = Events()
    closes = Events()
    hub: list[CommsServerFactory] = []

    def relay(client: ClientHandle, message: bytes) -> None:
        messages((client, message))
        hub[0].broadcast(message, exclude=client)

    kw.setdefault("on_request", lambda client, m: b"re: " + m[:64])
    server, port = yield start_server(
        cleanup,
        messageDataType="binary",
        on_message=relay,
        on_connect=connects,
        on_close=closes,
        **kw,
    )
    hub.append(server)
    return server, port, messages, connects, closes


class Bystanders:
    """
    A plain raw peer and an extended client on a hub, which exchange
    messages (and the extended one a request) on demand.
    """

    plain: RawPeer
    extended: CommsClientFactory

    def __init__(self, byte_order: str) -> None:
        self.byte_order = byte_order
        self.inbox = Events()  # what the extended client receives
        self.connects = Events()
        self.rounds = 0

    @defer.inlineCallbacks
    def connect(self, cleanup: Cleanup, port: int, **kw: Any) -> Any:
        self.extended = start_client(
            cleanup,
            port,
            messageDataType="binary",
            byteOrder=self.byte_order,
            extensions=True,
            on_connect=self.connects,
            on_message=lambda c, m: self.inbox(m),
            **kw,
        )
        yield bounded(self.extended.whenConnected())
        self.plain = yield connect_peer(cleanup, port, RawPeer(self.byte_order))
        return self

    @defer.inlineCallbacks
    def exchange(self) -> Any:
        """
        The plain peer sends a message (relayed to the extended client),
        the extended one answers (relayed to the plain peer) and makes a
        request. Return the two messages.
        """
        self.rounds += 1
        a = b"from plain %d" % self.rounds
        b = b"from extended %d" % self.rounds
        before_ext, before_plain = len(self.inbox), len(self.plain.frames)
        self.plain.send_frame(a)
        got = yield self.inbox.wait(before_ext + 1)
        assert got[-1] == a
        self.extended.send(b)
        got = yield self.plain.frames.wait(before_plain + 1)
        assert got[-1] == b
        reply = yield bounded(self.extended.request(b"ask %d" % self.rounds))
        assert reply == b"re: ask %d" % self.rounds
        assert self.extended.connected
        assert self.plain.lost_reason is None
        return a, b


def others_round(n: int) -> list[bytes]:
    """
    The two messages of L{Bystanders.exchange}'s round C{n}.
    """
    return [b"from plain %d" % n, b"from extended %d" % n]


@pytest_twisted.inlineCallbacks
def test_hub_relays_hello_and_answer_lookalikes(
    cleanup: Cleanup, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """
    A plain client's later frames that start with the hello or the answer
    magic -- even complete, valid ones, even an answer carrying the
    extended client's own nonce -- are messages: the hub relays them, the
    plain peers get exactly those bytes, and the extended client gets them
    as ordinary messages, its connection up and not renegotiated.
    """
    nonces: list[bytes] = []

    def recorded_nonce() -> bytes:
        nonces.append(new_nonce())
        return nonces[-1]

    monkeypatch.setattr(negotiation_module, "new_nonce", recorded_nonce)
    server, port, messages, connects, _ = yield start_hub(cleanup)
    ext_inbox = Events()
    ext_connects = Events()
    extended = start_client(
        cleanup,
        port,
        messageDataType="binary",
        extensions=True,
        on_connect=ext_connects,
        on_message=lambda c, m: ext_inbox(m),
    )
    proto = yield bounded(extended.whenConnected())
    channel = proto.channel
    assert channel is not None
    features = dict(channel.features)
    [nonce] = nonces
    sender = yield connect_peer(cleanup, port, RawPeer())
    listener = yield connect_peer(cleanup, port, RawPeer())
    yield connects.wait(3)

    lookalikes = [
        HELLO_MAGIC,
        HELLO_MAGIC + b" and then some",
        ANSWER_MAGIC,
        ANSWER_MAGIC + b" and then some",
        encode_hello(new_nonce(), {"request": {}, "heartbeat": {"interval": 1}}),
        encode_hello(new_nonce(), {"rooms": {}}, answer=True),
        # The extended client's own nonce, in a valid answer.
        encode_hello(nonce, {"request": {}, "rooms": {}}, answer=True),
        encode_hello(nonce, {}, answer=True, version=2),
    ]
    sent = [b"a plain first frame", *lookalikes]
    for payload in sent:
        sender.send_frame(payload)
    assert (yield listener.frames.wait(len(sent))) == sent
    assert (yield ext_inbox.wait(len(sent))) == sent
    assert [m for _, m in messages.items] == sent

    # The extended client relays a valid hello too: a message for all.
    hello = encode_hello(new_nonce(), {"request": {}})
    extended.send(hello)
    assert (yield sender.frames.wait(1)) == [hello]
    assert (yield listener.frames.wait(len(sent) + 1))[-1] == hello

    # The extended connection is the one it was: same protocol, channel and
    # features, connected once, requests still answered.
    assert extended.connection is proto
    assert proto.channel is channel
    assert channel.features == features
    assert proto.negotiation is None
    assert len(ext_connects) == 1
    assert nonces == [nonce]
    assert (yield bounded(extended.request(b"still there?"))) == b"re: still there?"
    assert channel.badFrames == 0 and channel.unknownReplies == 0

    # The plain peers stayed plain and got exactly the frames.
    assert listener.raw == stream([*sent, hello], "little")
    assert sender.raw == stream([hello], "little")
    for peer in (sender, listener):
        assert not server_handle(server, peer).extended
        assert peer.lost_reason is None
    assert len(ext_inbox) == len(sent)


# -- 3. hostile input ------------------------------------------------------------

_NONCE = b"n" * NONCE_SIZE

MALFORMED_HELLOS = {
    "magic only": HELLO_MAGIC,
    "magic and garbage": HELLO_MAGIC + b"\x00\x01garbage\xff" * 3,
    "too short": HELLO_MAGIC + b"\x01" + _NONCE,
    "version 0": HELLO_MAGIC + b"\x00" + _NONCE + b"{}",
    "features not JSON": HELLO_MAGIC + b"\x01" + _NONCE + b"{garbage",
    "features not UTF-8": HELLO_MAGIC + b"\x01" + _NONCE + b"\xff\xfe",
    "features a list": HELLO_MAGIC + b"\x01" + _NONCE + b"[]",
    "a feature not an object": HELLO_MAGIC + b"\x01" + _NONCE + b'{"request": 1}',
    "over 4096 bytes": encode_hello(_NONCE, {"pad": {"x": "y" * 5000}}),
}


@pytest.mark.parametrize("payload", MALFORMED_HELLOS.values(), ids=MALFORMED_HELLOS)
@pytest_twisted.inlineCallbacks
def test_malformed_hello_makes_a_plain_connection(
    cleanup: Cleanup, payload: bytes
) -> Any:
    """
    A first frame that starts with the hello magic but is no valid hello
    is a message (relayed by the binary hub); nothing is written back, and
    the connection is plain for life (a valid hello later is a message
    too).
    """
    server, port, messages, connects, _ = yield start_hub(cleanup)
    others = yield Bystanders("little").connect(cleanup, port)
    hostile = yield connect_peer(cleanup, port, WirePeer())
    yield connects.wait(3)
    handle = server_handle(server, hostile)

    hostile.send_frame(payload)
    [(who, got)] = yield messages.wait(1)
    assert who is handle and got == payload
    assert (yield others.inbox.wait(1)) == [payload]
    assert (yield others.plain.frames.wait(1)) == [payload]
    assert (yield others.exchange()) == tuple(others_round(1))

    later = encode_hello(new_nonce(), {"request": {}})
    hostile.send_frame(later)
    assert (yield messages.wait(4))[-1] == (handle, later)
    assert (yield others.inbox.wait(3))[-1] == later
    assert (yield others.plain.frames.wait(3))[-1] == later
    yield others.exchange()
    # Only the others' messages came back: no answer, no control frame.
    relayed = others_round(1) + others_round(2)
    assert (yield hostile.events.wait(4)) == [("msg", m) for m in relayed]
    assert hostile.raw == stream(relayed)
    assert not handle.extended and handle.protocol is not None
    assert handle.protocol.channel is None and handle.protocol.controlLimit == 0
    assert hostile.lost_reason is None


@pytest_twisted.inlineCallbacks
def test_valid_hello_as_a_later_frame_is_a_message(cleanup: Cleanup) -> Any:
    """
    A valid hello after the first frame is an ordinary message: delivered
    and relayed, nothing written back, the connection still plain.
    """
    server, port, messages, connects, _ = yield start_hub(cleanup)
    others = yield Bystanders("little").connect(cleanup, port)
    hostile = yield connect_peer(cleanup, port, WirePeer())
    yield connects.wait(3)
    handle = server_handle(server, hostile)

    hello = encode_hello(new_nonce(), {"request": {}, "heartbeat": {}, "rooms": {}})
    hostile.send_frame(b"first")
    hostile.send_frame(hello)
    got = yield messages.wait(2)
    assert got == [(handle, b"first"), (handle, hello)]
    assert (yield others.inbox.wait(2)) == [b"first", hello]
    assert (yield others.plain.frames.wait(2)) == [b"first", hello]
    yield others.exchange()
    assert (yield hostile.events.wait(2)) == [("msg", m) for m in others_round(1)]
    assert hostile.raw == stream(others_round(1), "little")
    assert not handle.extended
    assert handle.protocol is not None and handle.protocol.controlLimit == 0


@pytest_twisted.inlineCallbacks
def test_hello_to_a_server_with_extensions_off_is_a_message(
    cleanup: Cleanup,
) -> Any:
    """
    With accept_extensions=False, even a valid hello as the first frame is
    a message: relayed, never answered.
    """
    server, port, messages, connects, _ = yield start_hub(
        cleanup, accept_extensions=False
    )
    hostile = yield connect_peer(cleanup, port, WirePeer())
    plain = yield connect_peer(cleanup, port, RawPeer())
    yield connects.wait(2)
    handle = server_handle(server, hostile)
    hello = encode_hello(new_nonce(), {"request": {}, "heartbeat": {}})
    hostile.send_frame(hello)
    assert (yield messages.wait(1)) == [(handle, hello)]
    assert (yield plain.frames.wait(1)) == [hello]
    plain.send_frame(b"reply")
    assert (yield hostile.events.wait(1)) == [("msg", b"reply")]
    assert hostile.raw == stream([b"reply"])
    assert not handle.extended
    assert handle.protocol is not None and handle.protocol.controlLimit == 0


class FakeServer(WirePeer):
    """
    A server written by hand: reads the client's hello (its first frame)
    and writes, in one write, the bytes C{respond(the hello's nonce)}.
    """

    def __init__(
        self, respond: Callable[[bytes], bytes], byte_order: str = "little"
    ) -> None:
        super().__init__(byte_order)
        self.respond = respond
        self.lost = Events()

    def dataReceived(self, data: bytes) -> None:
        first = not self.events.items
        super().dataReceived(data)
        if first and self.events.items:
            kind, payload = self.events.items[0]
            hello = parse_hello(payload)
            assert kind == "msg" and hello is not None
            self.transport.write(self.respond(hello.nonce))

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        super().connectionLost(reason)
        self.lost(reason)


def listen_fake(
    cleanup: Cleanup, respond: Callable[[bytes], bytes], byte_order: str = "little"
) -> tuple[list[FakeServer], int]:
    """
    Listen on 127.0.0.1 (port 0) with L{FakeServer}s; return the list they
    are put in as they connect, and the port.
    """
    built: list[FakeServer] = []

    class Factory(protocol.Factory):
        def buildProtocol(self, addr: Any) -> FakeServer:
            proto = FakeServer(respond, byte_order)
            built.append(proto)
            return proto

    port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")  # type: ignore[attr-defined]

    def stop() -> Any:
        for proto in built:
            if proto.transport is not None:
                proto.transport.abortConnection()
        return port.stopListening()

    cleanup(stop)
    return built, port.getHost().port


@pytest_twisted.inlineCallbacks
def test_answer_with_a_wrong_nonce_is_a_message(cleanup: Cleanup) -> Any:
    """
    An answer that does not echo the hello's nonce is not the answer: it is
    held and delivered as a message once the real answer (after it)
    completes the negotiation. Answers after that are messages too.
    """
    features = {"request": {"max_in_flight": 4}}
    wrong: list[bytes] = []

    def answers(nonce: bytes) -> list[bytes]:
        wrong.append(encode_hello(new_nonce(), features, answer=True))
        return [wrong[-1], encode_hello(nonce, features, answer=True)]

    fakes, port = listen_fake(cleanup, lambda nonce: stream(answers(nonce)))
    log: list[Any] = []
    events = Events()

    def record(*what: Any) -> None:
        log.append(what)
        events(what)

    client = start_client(
        cleanup,
        port,
        messageDataType="binary",
        extensions=True,
        extension_timeout=5.0,
        on_connect=lambda c: record("connect"),
        on_message=lambda c, m: record("message", m),
    )
    proto = yield bounded(client.whenConnected())
    yield events.wait(2)
    [fake] = fakes
    assert log == [("connect",), ("message", wrong[0])]
    assert proto.extended
    assert proto.channel is not None and proto.channel.features == features

    # The right answer again, after negotiation: a message, nothing more.
    hello = parse_hello(fake.events.items[0][1])
    assert hello is not None
    again = encode_hello(hello.nonce, {}, answer=True)
    fake.send_frame(again)
    assert (yield events.wait(3))[2] == ("message", again)
    assert client.connection is proto
    assert proto.channel is not None and proto.channel.features == features
    assert len([e for e in log if e == ("connect",)]) == 1


@pytest_twisted.inlineCallbacks
def test_only_wrong_answers_refuse_extensions(cleanup: Cleanup) -> Any:
    """
    With only answers that do not echo the nonce (and a malformed one),
    the client fails with ExtensionsRefusedError after extension_timeout;
    it never counted as connected and delivered nothing.
    """
    timeout = 0.5

    def answers(nonce: bytes) -> list[bytes]:
        other = bytes(b ^ 0xFF for b in nonce)
        return [
            encode_hello(other, {"request": {}}, answer=True),
            ANSWER_MAGIC + b"garbage",
            encode_hello(new_nonce(), {}, answer=True),
        ]

    fakes, port = listen_fake(cleanup, lambda nonce: stream(answers(nonce)))
    connected = Events()
    inbox = Events()
    closes = Events()
    started = time.monotonic()
    client = start_client(
        cleanup,
        port,
        messageDataType="binary",
        extensions=True,
        extension_timeout=timeout,
        on_connect=connected,
        on_message=inbox,
        on_close=closes,
    )
    with pytest.raises(ExtensionsRefusedError):
        yield bounded(client.whenConnected())
    elapsed = time.monotonic() - started
    assert elapsed >= timeout - 0.05
    [fake] = fakes
    yield fake.lost.wait(1)
    assert len(fake.events) == 1  # the hello, and nothing after it
    assert len(connected) == 0
    assert len(inbox) == 0
    assert len(closes) == 0
    assert client.connection is None


#: The largest max_message_size: a plain frame may announce up to 4 GiB - 1.
HUGE_LIMIT = 0xFFFFFFFF


@pytest.mark.parametrize("limit", [None, HUGE_LIMIT], ids=["default", "4GiB"])
@pytest_twisted.inlineCallbacks
def test_control_frame_in_the_hellos_segment(
    cleanup: Cleanup, limit: int | None
) -> Any:
    """
    A control frame that arrives in the same read as the hello (sent
    without waiting for the answer) is read as one: the extended
    protocol is agreed from the hello on, whatever max_message_size (over
    2 GiB, a plain connection's header may have the top bit set).
    """
    kw = {} if limit is None else {"max_message_size": limit}
    server, port, messages, connects, closes = yield start_hub(cleanup, **kw)
    others = yield Bystanders("little").connect(cleanup, port)
    hostile = yield connect_peer(cleanup, port, WirePeer())
    yield connects.wait(3)
    nonce = new_nonce()
    hostile.transport.write(
        frame(encode_hello(nonce, {"request": {}}))
        + hostile.request_frame(Kind.REQUEST, 5, b"pipelined")
        + hostile.control(bytes([Kind.PING]) + b"are you there")
    )
    [answer, reply, pong] = yield hostile.events.wait(3)
    assert answer[0] == "msg"
    parsed = parse_hello(answer[1], answer=True)
    assert parsed is not None and parsed.nonce == nonce
    assert reply == ("ctl", Kind.REPLY, 5, b"re: pipelined")
    assert pong == ("ctl", Kind.PONG, None, b"are you there")
    handle = server_handle(server, hostile)
    assert handle.extended and handle.connected
    assert len(messages) == 0 and len(closes) == 0
    yield others.exchange()


@pytest.mark.parametrize("byte_order", BYTE_ORDERS)
@pytest.mark.parametrize("limit", [None, HUGE_LIMIT], ids=["default", "4GiB"])
@pytest_twisted.inlineCallbacks
def test_control_frame_in_the_answers_segment(
    cleanup: Cleanup, limit: int | None, byte_order: str
) -> Any:
    """
    A server's control frame that reaches the client in the same read as
    the answer (a ping or a request right behind it) is read as one, at any
    max_message_size; the client's reply carries the id in the
    connection's byte order.
    """
    server = WirePeer(byte_order)  # (only to build frames)
    request_id = 0x01020304

    def respond(nonce: bytes) -> bytes:
        answer = encode_hello(nonce, {"request": {}}, answer=True)
        return (
            stream([answer], byte_order)
            + server.control(bytes([Kind.PING]) + b"hb")
            + server.request_frame(Kind.REQUEST, request_id, b"question")
        )

    fakes, port = listen_fake(cleanup, respond, byte_order)
    kw = {} if limit is None else {"max_message_size": limit}
    client = start_client(
        cleanup,
        port,
        messageDataType="binary",
        byteOrder=byte_order,
        extensions=True,
        on_request=lambda c, m: b"answer to " + m,
        **kw,
    )
    proto = yield bounded(client.whenConnected())
    assert proto.extended
    [fake] = fakes
    [_, pong, reply] = yield fake.events.wait(3)
    assert pong == ("ctl", Kind.PONG, None, b"hb")
    assert reply == ("ctl", Kind.REPLY, request_id, b"answer to question")
    assert client.connected


CONTROL_GARBAGE = [
    bytes([0x7F]),  # an unknown kind
    bytes([0x7F]) + b"with a body",
    bytes([0]),  # kind 0 is no kind
    b"",  # an empty control frame
    bytes([Kind.REQUEST]),  # without its id
    bytes([Kind.REPLY, 1, 2, 3]),  # an id cut short
    bytes([Kind.AUTH]),
]


@pytest.mark.parametrize("byte_order", BYTE_ORDERS)
@pytest_twisted.inlineCallbacks
def test_malformed_control_frames_are_dropped_and_counted(
    cleanup: Cleanup, byte_order: str
) -> Any:
    """
    After a valid hello, control frames of an unknown kind, empty, or
    without their request id are dropped and counted (badFrames); the
    connection stays up and answers the next request, its id in the
    connection's byte order.
    """
    server, port, messages, connects, closes = yield start_hub(
        cleanup, byteOrder=byte_order
    )
    others = yield Bystanders(byte_order).connect(cleanup, port)
    hostile = yield connect_peer(cleanup, port, WirePeer(byte_order))
    yield connects.wait(3)
    answer = yield raw_handshake(hostile, {"request": {}})
    assert answer.features == {"request": {"max_in_flight": 256}}
    handle = server_handle(server, hostile)
    assert handle.extended
    proto = handle.protocol
    assert proto is not None and proto.channel is not None

    request_id = 0x01020304
    hostile.transport.write(
        b"".join(hostile.control(body) for body in CONTROL_GARBAGE)
        + hostile.request_frame(Kind.REQUEST, request_id, b"after the garbage")
    )
    [_, reply] = yield hostile.events.wait(2)
    assert reply == ("ctl", Kind.REPLY, request_id, b"re: after the garbage")
    assert proto.channel.badFrames == len(CONTROL_GARBAGE)
    assert proto.channel.unknownReplies == 0
    assert handle.connected and hostile.lost_reason is None
    assert len(messages) == 0 and len(closes) == 0

    yield others.exchange()
    got = yield hostile.events.wait(4)
    assert got[2:] == [("msg", m) for m in others_round(1)]
    assert handle.connected


@pytest.mark.parametrize(
    "announced",
    [
        pytest.param(lambda limit: CONTROL_BIT | (limit + 6), id="limit+6"),
        pytest.param(lambda limit: CONTROL_BIT | (1 << 20), id="1MiB"),
        pytest.param(lambda limit: 0xFFFFFFFF, id="all bits"),
    ],
)
@pytest_twisted.inlineCallbacks
def test_oversized_request_closes_the_connection(
    cleanup: Cleanup, announced: Callable[[int], int]
) -> Any:
    """
    A control frame longer than max_message_size + 5 (kind and id) closes
    the connection (reason oversize) at its header: nothing of it is
    buffered or handled. One of exactly max_message_size + 5 is answered.
    """
    limit = 1024
    requests = Events()

    def answer(client: ClientHandle, message: bytes) -> bytes:
        requests(message)
        return b"re: " + message[:64]

    server, port, messages, connects, closes = yield start_hub(
        cleanup, max_message_size=limit, on_request=answer
    )
    others = yield Bystanders("little").connect(cleanup, port, max_message_size=limit)
    hostile = yield connect_peer(cleanup, port, WirePeer())
    yield connects.wait(3)
    yield raw_handshake(hostile, {"request": {}})
    handle = server_handle(server, hostile)

    # The largest request accepted: a message of max_message_size bytes.
    largest = b"L" * limit
    hostile.transport.write(hostile.request_frame(Kind.REQUEST, 1, largest))
    [_, reply] = yield hostile.events.wait(2)
    assert reply == ("ctl", Kind.REPLY, 1, b"re: " + largest[:64])
    assert requests.items == [largest]

    with LogWatch() as log:
        length = announced(limit)
        hostile.transport.write(
            hostile.header.pack(length)
            + bytes([Kind.REQUEST])
            + hostile.header.pack(2)
            + b"x" * 4000
        )
        yield hostile.when_lost()
        [(closed, reason)] = yield closes.wait(1)
    assert closed is handle
    assert reason is CloseReason.OVERSIZE
    assert handle.close_reason is CloseReason.OVERSIZE
    # At its header: handled as nothing, and nothing of it kept (a frame
    # in progress at the close would have been logged as discarded).
    assert requests.items == [largest]
    assert len(messages) == 0
    assert log.warnings("message header announced", length=length)
    assert not log.warnings("ended in the middle of a message")
    assert handle.protocol is not None and handle.protocol.incompleteFrameBytes == 0
    assert len(hostile.events) == 2  # the answer and the one reply

    yield others.exchange()
    assert [h for h in server.clients] == [
        handle_for(server, others.extended),
        server_handle(server, others.plain),
    ]


@pytest_twisted.inlineCallbacks
def test_control_frame_on_a_plain_connection_is_oversize(cleanup: Cleanup) -> Any:
    """
    Without a hello, a header with the top bit set is no control frame: it
    is over the maximum message size, and closes the connection.
    """
    server, port, messages, connects, closes = yield start_hub(cleanup)
    others = yield Bystanders("little").connect(cleanup, port)
    hostile = yield connect_peer(cleanup, port, WirePeer())
    yield connects.wait(3)
    handle = server_handle(server, hostile)
    hostile.send_frame(b"plain first")
    yield messages.wait(1)
    hostile.transport.write(hostile.request_frame(Kind.REQUEST, 1, b"a request"))
    yield hostile.when_lost()
    [(closed, reason)] = yield closes.wait(1)
    assert closed is handle and reason is CloseReason.OVERSIZE
    assert hostile.raw == b""
    yield others.exchange()


@pytest_twisted.inlineCallbacks
def test_a_flood_of_unknown_replies_is_counted(cleanup: Cleanup) -> Any:
    """
    10,000 replies whose ids match no request are dropped and counted; the
    connection stays and answers a request, and the other clients' round
    trips still work.
    """
    count = 10_000
    server, port, messages, connects, closes = yield start_hub(cleanup)
    others = yield Bystanders("little").connect(cleanup, port)
    hostile = yield connect_peer(cleanup, port, WirePeer())
    yield connects.wait(3)
    yield raw_handshake(hostile, {"request": {}})
    handle = server_handle(server, hostile)
    proto = handle.protocol
    assert proto is not None and proto.channel is not None

    flood = b"".join(
        hostile.request_frame(Kind.REPLY, 1_000_000 + i, b"unasked %d" % i)
        for i in range(count)
    )
    hostile.transport.write(flood + hostile.request_frame(Kind.REQUEST, 9, b"hi"))
    # Meanwhile, another client's round trip.
    yield others.exchange()
    [reply] = yield hostile.control_events.wait(1)
    assert reply == ("ctl", Kind.REPLY, 9, b"re: hi")
    assert proto.channel.unknownReplies == count
    assert proto.channel.badFrames == 0
    assert handle.connected and hostile.lost_reason is None
    assert len(closes) == 0
    yield others.exchange()


@pytest_twisted.inlineCallbacks
def test_credential_brute_force_is_throttled(cleanup: Cleanup) -> Any:
    """
    After auth_max_failures refusals from one address, further attempts --
    right credentials included -- are refused with TooManyFailures without
    the authenticate callable being called; each refused connection closes
    (reason auth failed), and the other clients are unaffected.
    """
    max_failures = 3
    calls: list[bytes] = []

    def authenticate(credentials: bytes, client: ClientHandle) -> str | None:
        calls.append(credentials)
        return "alice" if credentials == b"right" else None

    server, port, messages, connects, closes = yield start_hub(
        cleanup, authenticate=authenticate, auth_max_failures=max_failures
    )
    others = yield Bystanders("little").connect(cleanup, port)
    yield connects.wait(2)

    @defer.inlineCallbacks
    def attempt(credentials: bytes) -> Any:
        before = len(closes)
        client = start_client(
            cleanup,
            port,
            messageDataType="binary",
            extensions=True,
            credentials=credentials,
        )
        with pytest.raises(AuthenticationError) as refused:
            yield bounded(client.whenConnected())
        [(_, reason)] = (yield closes.wait(before + 1))[before:]
        assert reason is CloseReason.AUTH_FAILED
        assert client.connection is None
        return refused.value.type

    for i in range(max_failures):
        assert (yield attempt(b"wrong %d" % i)) == "AuthenticationFailed"
        assert len(calls) == i + 1
    for credentials in (b"wrong again", b"and again", b"right"):
        assert (yield attempt(credentials)) == "TooManyFailures"
    assert calls == [b"wrong %d" % i for i in range(max_failures)]

    yield others.exchange()
    assert len(messages) == 2


@pytest_twisted.inlineCallbacks
def test_parallel_credential_guesses_are_throttled_too(cleanup: Cleanup) -> Any:
    """
    Guesses sent at once on many connections from one address, to an
    authenticate that answers later (a Deferred), get no more checks than
    auth_max_failures: the others wait for those outcomes and are then
    refused unchecked (TooManyFailures). Right credentials among them are
    not refused for the others' sake (see the next test).
    """
    max_failures = 3
    attempts = 12
    calls: list[bytes] = []
    answers: list[defer.Deferred[str | None]] = []

    def authenticate(credentials: bytes, client: ClientHandle) -> Any:
        calls.append(credentials)
        d: defer.Deferred[str | None] = defer.Deferred()
        answers.append(d)
        return d

    server, port, messages, connects, closes = yield start_hub(
        cleanup, authenticate=authenticate, auth_max_failures=max_failures
    )
    arrived = Events()  # AUTH requests the server received
    control_request = server.access.controlRequest

    def spy(client: ClientHandle, kind: Kind, body: bytes) -> Any:
        arrived(kind)
        return control_request(client, kind, body)

    server.access.controlRequest = spy  # type: ignore[method-assign]
    others = yield Bystanders("little").connect(cleanup, port)
    yield connects.wait(2)
    guesses = [
        start_client(
            cleanup,
            port,
            messageDataType="binary",
            extensions=True,
            credentials=b"guess %d" % i,
        )
        for i in range(attempts)
    ]
    outcomes = defer.DeferredList(
        [g.whenConnected() for g in guesses], consumeErrors=True
    )
    # Every guess arrived; only max_failures reached authenticate.
    assert (yield arrived.wait(attempts)) == [Kind.AUTH] * attempts
    assert len(calls) == max_failures
    yield others.exchange()
    for d in answers:
        d.callback(None)
    results = yield bounded(outcomes)
    refusals = [
        r.value.type for ok, r in results if not ok and r.check(AuthenticationError)
    ]
    assert len(refusals) == attempts
    assert refusals.count("AuthenticationFailed") == max_failures
    assert refusals.count("TooManyFailures") == attempts - max_failures
    assert len(calls) == max_failures
    yield others.exchange()


@pytest_twisted.inlineCallbacks
def test_right_credentials_wait_for_the_checks_in_progress(cleanup: Cleanup) -> Any:
    """
    An attempt that arrives while the checks in progress could use up the
    failures allowed waits for their outcome rather than being refused: if
    they succeed, it is checked (and accepted) in turn.
    """
    pending: dict[bytes, defer.Deferred[str | None]] = {}

    def authenticate(credentials: bytes, client: ClientHandle) -> Any:
        pending[credentials] = defer.Deferred()
        return pending[credentials]

    server, port, messages, connects, closes = yield start_hub(
        cleanup, authenticate=authenticate, auth_max_failures=2
    )
    arrived = Events()
    control_request = server.access.controlRequest

    def spy(client: ClientHandle, kind: Kind, body: bytes) -> Any:
        arrived(kind)
        return control_request(client, kind, body)

    server.access.controlRequest = spy  # type: ignore[method-assign]
    clients = {}
    for n, credentials in enumerate([b"wrong", b"alice", b"bob"], 1):
        clients[credentials] = start_client(
            cleanup,
            port,
            messageDataType="binary",
            extensions=True,
            credentials=credentials,
        )
        yield arrived.wait(n)
    # Two checks at a time at most (auth_max_failures): bob waits.
    assert list(pending) == [b"wrong", b"alice"]
    pending[b"alice"].callback("alice")
    assert (yield bounded(clients[b"alice"].whenConnected())).identity == "alice"
    assert list(pending) == [b"wrong", b"alice", b"bob"]
    pending[b"bob"].callback("bob")
    assert (yield bounded(clients[b"bob"].whenConnected())).identity == "bob"
    pending[b"wrong"].callback(None)
    with pytest.raises(AuthenticationError) as refused:
        yield bounded(clients[b"wrong"].whenConnected())
    assert refused.value.type == "AuthenticationFailed"


@pytest_twisted.inlineCallbacks
def test_unauthenticated_listener_times_out_and_hears_nothing(
    cleanup: Cleanup,
) -> Any:
    """
    On a server that requires authentication, peers that only listen -- a
    plain one, and one that sent a hello (without auth, or with it) -- are
    closed with reason auth timeout after auth_timeout, having received no
    broadcast meanwhile (the extended ones: the answer, and nothing else).
    Authenticated clients exchange messages throughout.
    """
    auth_timeout = 0.6
    server, port, messages, connects, closes = yield start_hub(
        cleanup,
        require_auth=True,
        auth_timeout=auth_timeout,
        authenticate=lambda credentials, client: (
            credentials.decode() if credentials.startswith(b"good") else None
        ),
    )
    inboxes = [Events(), Events()]
    members = []
    for i, inbox in enumerate(inboxes):
        member = start_client(
            cleanup,
            port,
            messageDataType="binary",
            extensions=True,
            credentials=b"good %d" % i,
            on_message=lambda c, m, inbox=inbox: inbox(m),
        )
        yield bounded(member.whenConnected())
        assert member.identity == f"good {i}"
        members.append(member)
    yield connects.wait(2)

    ticks = task.LoopingCall(lambda: server.broadcast(b"tick"))
    ticks.start(0.05)
    cleanup(lambda: ticks.running and ticks.stop())
    started = time.monotonic()
    silent = yield connect_peer(cleanup, port, WirePeer())
    helloed = yield connect_peer(cleanup, port, WirePeer())
    asked = yield connect_peer(cleanup, port, WirePeer())
    listeners = [silent, helloed, asked]
    yield raw_handshake(helloed, {"request": {}, "rooms": {}})
    answer = yield raw_handshake(asked, {"auth": {}, "request": {}})
    assert answer.features["auth"] == {"required": True}
    members[0].send(b"chat")
    yield wait_for(inboxes[1], b"chat")
    yield bounded(defer.gatherResults([p.when_lost() for p in listeners]))
    ticks.stop()
    elapsed = time.monotonic() - started
    assert elapsed >= auth_timeout - 0.05
    for peer in listeners:
        proto = server_protocol(server, peer)
        receiver = proto.receiver
        assert isinstance(receiver, ClientHandle)
        yield bounded(receiver.when_closed())
        assert proto.closeReason is CloseReason.AUTH_TIMEOUT
        assert not receiver.registered
    assert silent.raw == b""
    assert len(helloed.events) == 1 and len(asked.events) == 1  # the answer
    assert len(closes) == 0  # never clients, so no close events
    assert list(inboxes[1].items).count(b"tick") >= 1
    # The members still talk.
    members[1].send(b"still here")
    yield wait_for(inboxes[0], b"still here")
