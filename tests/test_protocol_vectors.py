"""
The extended protocol's test vectors (C{docs/protocol.md}, "Extensions",
"Test vectors") against the implementation, so the page and the code
cannot drift apart: each vector is read out of the page, regenerated from
the inputs the page describes and compared byte for byte, then fed to a
real server or client connection (in memory, on a test clock) to check
what it makes of it and what it writes back.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from twcomms.client.extended import ask_room
from twcomms.connection import CloseReason, CommsProtocol, negotiation
from twcomms.connection.negotiation import ClientHello
from twcomms.errors import DecodeError, RemoteError
from twcomms.options import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_HEARTBEAT_TIMEOUT,
    ExtensionOptions,
)
from twcomms.server import ClientHandle, CommsServerFactory
from twcomms.wire.codecs import get_codec
from twcomms.wire.extended import (
    ANSWER_MAGIC,
    HELLO_MAGIC,
    MAX_EXTENDED_MESSAGE,
    MAX_HELLO,
    MAX_ROOM_LENGTH,
    VERSION,
    Hello,
    Kind,
    control_frame,
    decode_error,
    encode_error,
    encode_hello,
    parse_hello,
)
from twcomms.wire.format import BIG_ENDIAN, LITTLE_ENDIAN, header_struct

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

# A vector is a fenced block "```hex name=NAME": hex bytes, and after "#"
# on a line a note.
_BLOCK = re.compile(r"^```hex name=([a-z0-9-]+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def read_vectors(text: str) -> dict[str, bytes]:
    """
    The vectors of a page: name -> the bytes of its block.
    """
    vectors: dict[str, bytes] = {}
    for name, block in _BLOCK.findall(text):
        assert name not in vectors, f"two vectors named {name!r}"
        hexes = " ".join(line.split("#", 1)[0] for line in block.splitlines())
        vectors[name] = bytes.fromhex(hexes)
    return vectors


DOC_TEXT = DOC.read_text(encoding="utf-8")
VECTORS = read_vectors(DOC_TEXT)

# -- the inputs the page describes ---------------------------------------------

JSON = get_codec("json")
NONCE = bytes(range(16))
HELLO_FEATURES: dict[str, dict[str, Any]] = {
    "heartbeat": {},
    "request": {},
    "rooms": {},
}
ANSWER_FEATURES: dict[str, dict[str, Any]] = {
    "heartbeat": {"interval": 25.0, "timeout": 20.0},
    "request": {"max_in_flight": 256},
    "rooms": {},
}
QUESTION = {"q": 1}
REPLY = {"a": 2}
NO_HANDLER = ("NoHandler", "this peer answers no requests")
CREDENTIALS = {"token": "s3cret"}
IDENTITY = "alice"
ROOM = "lab"


def plain(order: str, payload: bytes) -> bytes:
    return header_struct(order).pack(len(payload)) + payload


def control(
    order: str, kind: Kind, body: bytes, request_id: int | None = None
) -> bytes:
    return b"".join(control_frame(kind, body, order, request_id))


LE, BE = LITTLE_ENDIAN, BIG_ENDIAN

#: Each TCP vector, made by the code from the inputs above.
EXPECTED = {
    "hello-le": plain(LE, encode_hello(NONCE, HELLO_FEATURES)),
    "answer-le": plain(LE, encode_hello(NONCE, ANSWER_FEATURES, answer=True)),
    "message-le": plain(LE, JSON.encode(QUESTION)),
    "ping-le": control(LE, Kind.PING, b""),
    "pong-le": control(LE, Kind.PONG, b""),
    "request-le": control(LE, Kind.REQUEST, JSON.encode(QUESTION), 1),
    "reply-le": control(LE, Kind.REPLY, JSON.encode_value(REPLY), 1),
    "error-le": control(LE, Kind.ERROR, encode_error(*NO_HANDLER), 1),
    "auth-le": control(LE, Kind.AUTH, JSON.encode(CREDENTIALS), 1),
    "auth-reply-le": control(LE, Kind.REPLY, IDENTITY.encode(), 1),
    "join-le": control(LE, Kind.JOIN, ROOM.encode(), 2),
    "join-reply-le": control(LE, Kind.REPLY, b"\x01", 2),
    "leave-le": control(LE, Kind.LEAVE, ROOM.encode(), 3),
    "leave-reply-le": control(LE, Kind.REPLY, b"\x01", 3),
    "request-be": control(BE, Kind.REQUEST, JSON.encode(QUESTION), 1),
    "reply-be": control(BE, Kind.REPLY, JSON.encode_value(REPLY), 1),
}

#: The WebSocket mapping's examples (specified, implemented by the
#: gateway): derived from the TCP frames by the mapping's rules.
WEBSOCKET = {
    "ws-request": EXPECTED["request-le"][4:],
    "ws-ping": EXPECTED["ping-le"][4:],
    "ws-binary-message": b"\x00" + b"\x01\x02\x03",
}


def vector(name: str) -> bytes:
    assert name in VECTORS, f"docs/protocol.md has no vector {name!r}"
    return VECTORS[name]


# -- connections in memory -----------------------------------------------------


class Receiver:
    """
    A client connection's receiver that records what happens.
    """

    def __init__(self, handler: Any = None) -> None:
        self.started = False
        self.messages: list[Any] = []
        self.closed: list[CloseReason] = []
        if handler is not None:
            self.requestReceived = handler

    def startReceivingMessages(self, sender: CommsProtocol) -> None:
        self.started = True

    def messageReceived(self, message: Any) -> None:
        self.messages.append(message)

    def messageDecodeFailed(self, error: DecodeError) -> None:
        raise AssertionError(f"unexpected decode error: {error}")

    def stopReceivingMessages(self, reason: CloseReason, failure: Failure) -> None:
        self.closed.append(reason)


def server(
    byte_order: str = "little", **keywords: Any
) -> tuple[CommsServerFactory, CommsProtocol, StringTransport]:
    factory = CommsServerFactory("json", byte_order, reactor=Clock(), **keywords)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return factory, proto, transport


def client(
    monkeypatch: pytest.MonkeyPatch,
    features: dict[str, dict[str, Any]],
    credentials: bytes | None = None,
    byte_order: str = "little",
    receiver: Receiver | None = None,
) -> tuple[CommsProtocol, Receiver, StringTransport]:
    monkeypatch.setattr(negotiation, "new_nonce", lambda: NONCE)
    receiver = receiver if receiver is not None else Receiver()
    hello = ClientHello(features, 5.0, credentials, ExtensionOptions())
    proto = CommsProtocol(
        receiver, "json", byte_order, clock=Clock(), negotiation=hello
    )
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, receiver, transport


def written(transport: StringTransport) -> bytes:
    """
    What was written since the last call.
    """
    data = transport.value()
    transport.clear()
    return data


def feed(proto: CommsProtocol, data: bytes, *, bytewise: bool = False) -> None:
    """
    Give C{data} to C{proto}: at once, or a byte at a time (every header
    and body split across reads).
    """
    if not bytewise:
        proto.dataReceived(data)
        return
    for i in range(len(data)):
        proto.dataReceived(data[i : i + 1])


def result(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


# -- the page and the code agree -----------------------------------------------


def test_the_page_holds_each_vector_once() -> None:
    assert set(VECTORS) == set(EXPECTED) | set(WEBSOCKET)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_vector_is_what_the_code_writes(name: str) -> None:
    assert vector(name).hex(" ") == EXPECTED[name].hex(" ")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_vector_header_announces_the_rest(name: str) -> None:
    data = vector(name)
    order = BE if name.endswith("-be") else LE
    (length,) = header_struct(order).unpack_from(data)
    control_bit = name not in ("hello-le", "answer-le", "message-le")
    assert bool(length & 0x80000000) == control_bit
    assert length & 0x7FFFFFFF == len(data) - 4


@pytest.mark.parametrize("name", sorted(WEBSOCKET))
def test_websocket_example_follows_the_mapping(name: str) -> None:
    assert vector(name) == WEBSOCKET[name]


def test_hello_and_answer_parse_back() -> None:
    hello = vector("hello-le")[4:]
    answer = vector("answer-le")[4:]
    assert parse_hello(hello) == Hello(VERSION, NONCE, HELLO_FEATURES)
    assert parse_hello(answer, answer=True) == Hello(VERSION, NONCE, ANSWER_FEATURES)
    # Each is only what it is.
    assert parse_hello(answer) is None
    assert parse_hello(hello, answer=True) is None
    assert parse_hello(vector("message-le")[4:]) is None


def test_error_body_parses_back() -> None:
    assert decode_error(vector("error-le")[9:]) == NO_HANDLER


def test_default_server_grants_the_answer_features() -> None:
    factory, _, _ = server()
    assert factory.access.grant(Hello(VERSION, NONCE, HELLO_FEATURES)) == (
        ANSWER_FEATURES
    )


def test_page_states_the_constants() -> None:
    text = DOC_TEXT
    assert HELLO_MAGIC.hex(" ") in text
    assert ANSWER_MAGIC.hex(" ") in text
    assert f"{MAX_EXTENDED_MESSAGE:,}" in text
    assert f"{MAX_HELLO:,}" in text
    assert f"1 to {MAX_ROOM_LENGTH} characters" in text
    assert f"`heartbeat_interval` {DEFAULT_HEARTBEAT_INTERVAL:g} s" in text
    assert f"`heartbeat_timeout` {DEFAULT_HEARTBEAT_TIMEOUT:g} s" in text
    for kind in Kind:
        assert f"| `0x{kind:02x}` | `{kind.name}` |" in text, kind


# -- a server reads and writes them --------------------------------------------


def test_server_answers_the_hello_with_the_answer() -> None:
    _, proto, transport = server()
    feed(proto, vector("hello-le"))
    assert written(transport) == vector("answer-le")
    assert proto.extended
    assert proto.channel is not None
    assert proto.channel.features == ANSWER_FEATURES


def test_server_answers_ping_request_and_message() -> None:
    received: list[Any] = []

    def on_request(client: ClientHandle, message: Any) -> Any:
        return REPLY if message == QUESTION else None

    _, proto, transport = server(
        on_request=on_request,
        on_message=lambda client, message: received.append(message),
    )
    feed(proto, vector("hello-le"))
    written(transport)
    feed(proto, vector("ping-le"))
    assert written(transport) == vector("pong-le")
    feed(proto, vector("request-le"), bytewise=True)
    assert written(transport) == vector("reply-le")
    feed(proto, vector("message-le"), bytewise=True)
    assert received == [QUESTION]
    proto.sendMessage(QUESTION)
    assert written(transport) == vector("message-le")
    assert proto.channel is not None
    assert proto.channel.badFrames == 0


def test_server_without_handler_answers_the_error() -> None:
    _, proto, transport = server()
    feed(proto, vector("hello-le") + vector("request-le"))
    assert written(transport) == vector("answer-le") + vector("error-le")


def test_server_big_endian() -> None:
    _, proto, transport = server("big", on_request=lambda client, message: REPLY)
    feed(proto, plain(BE, vector("hello-le")[4:]))
    assert written(transport) == plain(BE, vector("answer-le")[4:])
    feed(proto, vector("request-be"))
    assert written(transport) == vector("reply-be")


def test_server_authenticates_and_joins() -> None:
    def authenticate(credentials: Any, client: ClientHandle) -> str | None:
        return IDENTITY if credentials == CREDENTIALS else None

    factory, proto, transport = server(authenticate=authenticate)
    hello = encode_hello(NONCE, {**HELLO_FEATURES, "auth": {}})
    feed(proto, plain(LE, hello))
    answer = parse_hello(written(transport)[4:], answer=True)
    assert answer is not None
    assert answer.features["auth"] == {"required": False}
    feed(proto, vector("auth-le"))
    assert written(transport) == vector("auth-reply-le")
    assert proto.identity == IDENTITY
    feed(proto, vector("join-le"))
    assert written(transport) == vector("join-reply-le")
    handle = proto.receiver
    assert isinstance(handle, ClientHandle)
    assert factory.rooms_of(handle) == {ROOM}
    feed(proto, vector("leave-le"))
    assert written(transport) == vector("leave-reply-le")
    assert factory.rooms_of(handle) == frozenset()


# -- a client reads and writes them --------------------------------------------


def test_client_writes_the_hello_and_takes_the_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proto, receiver, transport = client(monkeypatch, HELLO_FEATURES)
    assert written(transport) == vector("hello-le")
    assert not receiver.started
    feed(proto, vector("answer-le"), bytewise=True)
    assert receiver.started
    assert proto.channel is not None
    assert proto.channel.features == ANSWER_FEATURES
    assert written(transport) == b""


def test_client_holds_messages_until_the_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proto, receiver, transport = client(monkeypatch, HELLO_FEATURES)
    feed(proto, vector("message-le"))
    assert receiver.messages == []
    feed(proto, vector("answer-le") + vector("message-le"))
    assert receiver.messages == [QUESTION, QUESTION]


def test_client_answers_ping_and_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    proto, _, transport = client(monkeypatch, HELLO_FEATURES)
    feed(proto, vector("answer-le"))
    written(transport)
    feed(proto, vector("ping-le"))
    assert written(transport) == vector("pong-le")
    d = proto.request(QUESTION)
    assert written(transport) == vector("request-le")
    feed(proto, vector("reply-le"), bytewise=True)
    assert result(d) == REPLY


def test_client_gets_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    proto, _, transport = client(monkeypatch, HELLO_FEATURES)
    feed(proto, vector("answer-le"))
    d = proto.request(QUESTION)
    feed(proto, vector("error-le"))
    with pytest.raises(RemoteError) as caught:
        result(d)
    assert (caught.value.type, caught.value.remote_message) == NO_HANDLER


def test_client_answers_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = Receiver(handler=lambda message: REPLY if message == QUESTION else 0)
    proto, _, transport = client(monkeypatch, HELLO_FEATURES, receiver=receiver)
    feed(proto, vector("answer-le"))
    written(transport)
    feed(proto, vector("request-le"))
    assert written(transport) == vector("reply-le")


def test_client_big_endian(monkeypatch: pytest.MonkeyPatch) -> None:
    proto, _, transport = client(monkeypatch, HELLO_FEATURES, byte_order="big")
    assert written(transport) == plain(BE, vector("hello-le")[4:])
    feed(proto, plain(BE, vector("answer-le")[4:]))
    d = proto.request(QUESTION)
    assert written(transport) == vector("request-be")
    feed(proto, vector("reply-be"))
    assert result(d) == REPLY


def test_client_authenticates_and_joins(monkeypatch: pytest.MonkeyPatch) -> None:
    features = {**HELLO_FEATURES, "auth": {}}
    proto, receiver, transport = client(
        monkeypatch, features, credentials=JSON.encode(CREDENTIALS)
    )
    written(transport)
    granted = {**ANSWER_FEATURES, "auth": {"required": False}}
    feed(proto, plain(LE, encode_hello(NONCE, granted, answer=True)))
    assert written(transport) == vector("auth-le")
    assert not receiver.started
    feed(proto, vector("auth-reply-le"))
    assert receiver.started
    assert proto.identity == IDENTITY
    joined = ask_room(proto, ROOM, True, None)
    assert written(transport) == vector("join-le")
    feed(proto, vector("join-reply-le"))
    assert result(joined) is True
    left = ask_room(proto, ROOM, False, None)
    assert written(transport) == vector("leave-le")
    feed(proto, vector("leave-reply-le"))
    assert result(left) is True
