"""
Hostile framing: oversized headers (up to 0xFFFFFFFF), garbage, frames split
at every byte, many frames per segment, frames cut off by a close.

What must hold (docs/protocol.md, "Limits" and "Error outcomes"): every
complete frame before the first oversized header is delivered exactly once,
in order, and never a partial one; an oversized header closes the
connection once, with a logged reason, and nothing of it is buffered; a
frame cut off by a close is discarded with a logged byte count; other
clients are served throughout.

Most properties are checked in memory (a L{CommsProtocol} on a fake
transport, and L{twcomms.testing.MemoryNetwork}) with hypothesis; the same
garbage is then sent over real sockets by hundreds of connections while a
well-behaved client keeps getting echoes.
"""

from __future__ import annotations

import itertools
import random
import tracemalloc
from typing import Any

import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure

from harness.stress.garbage import (
    BIG_HEADERS,
    GARBAGE_LIMIT,
    check_memory_stream,
    garbage_plan,
    memory_connection,
)
from harness.stress.hostile_framing import fuzz_memory, garbage_sockets
from harness.stress.measure import LogWatch
from harness.stress.result import assert_held
from harness.stress.scale import Scale, current_scale
from harness.wire import frame, header
from harness.wire import outcome as reference_outcome
from twcomms.client import CommsClientFactory
from twcomms.connection import CloseReason
from twcomms.server import CommsServerFactory
from twcomms.testing import MemoryNetwork
from twcomms.wire.framing import MAX_FRAME_PAYLOAD

LIMIT = GARBAGE_LIMIT

fuzz = settings(
    max_examples=current_scale().hypothesis_examples,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

byte_orders = st.sampled_from(["little", "big"])
payloads = st.lists(
    st.one_of(
        st.binary(max_size=64),
        st.sampled_from([b"", b"\x00", b"\xff" * 4]),
        # Frames at the limit (cheap to generate: one repeated byte).
        st.tuples(st.integers(LIMIT - 2, LIMIT), st.integers(0, 255)).map(
            lambda t: bytes([t[1]]) * t[0]
        ),
    ),
    max_size=12,
)
#: Where to cut a stream (taken modulo its length).
cuts = st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=40)


def split(data: bytes, at: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in at} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@st.composite
def hostile_streams(draw: Any) -> bytes:
    """
    Valid frames, random bytes, oversized headers and half frames, mixed.
    """
    parts = draw(
        st.lists(
            st.one_of(
                payloads.map(lambda ps: b"".join(frame(p) for p in ps)),
                st.binary(max_size=200),
                st.sampled_from(BIG_HEADERS).map(header),
                st.integers(LIMIT + 1, MAX_FRAME_PAYLOAD).map(header),
                st.binary(min_size=1, max_size=100).map(lambda p: frame(p)[:-1]),
            ),
            max_size=8,
        )
    )
    return b"".join(parts)


# -- in memory --------------------------------------------------------------------


@fuzz
@given(payloads, cuts, byte_orders)
def test_valid_frames_survive_any_split(
    messages: list[bytes], at: list[int], byte_order: str
) -> None:
    """
    However a stream of valid frames is cut into reads, each payload is
    delivered exactly once, whole, in order; nothing is left buffered and
    the connection stays open.
    """
    stream = b"".join(frame(p, byte_order) for p in messages)
    proto, receiver, transport = memory_connection(LIMIT, "binary", byte_order)
    for piece in split(stream, at):
        proto.dataReceived(piece)
    assert receiver.messages == messages
    assert proto.incompleteFrameBytes == 0
    assert not transport.disconnecting


@fuzz
@given(hostile_streams(), cuts)
def test_hostile_stream_matches_the_reference_model(
    stream: bytes, at: list[int]
) -> None:
    """
    Any byte stream, cut anywhere: exactly the complete frames before the
    first oversized header are delivered; an oversized header closes the
    connection once with a logged reason and leaves nothing buffered; a
    frame cut off by the close is discarded with a logged byte count.
    """
    with LogWatch() as watch:
        problems = check_memory_stream(stream, split(stream, at), LIMIT, watch)
    assert problems == []


@fuzz
@given(st.binary(max_size=3000), cuts)
def test_random_bytes_match_the_reference_model(stream: bytes, at: list[int]) -> None:
    with LogWatch() as watch:
        problems = check_memory_stream(stream, split(stream, at), LIMIT, watch)
    assert problems == []


@fuzz
@given(
    st.one_of(
        st.sampled_from([*BIG_HEADERS, MAX_FRAME_PAYLOAD]),
        st.integers(2, MAX_FRAME_PAYLOAD),
    ),
    st.sampled_from([2, LIMIT, 64 * 1024 * 1024, MAX_FRAME_PAYLOAD - 1]),
    byte_orders,
    st.binary(max_size=500),
    cuts,
)
def test_oversized_header_closes_once_and_buffers_nothing(
    announced: int, limit: int, byte_order: str, junk: bytes, at: list[int]
) -> None:
    """
    A header over the limit (whatever the limit, 2 to 0xFFFFFFFF - 1, and
    either byte order) after a valid frame: the valid frame is delivered,
    the connection is closed once (reason oversize, one warning), nothing
    of the oversized message is held, and data arriving afterwards is
    ignored.
    """
    if announced <= limit:
        announced = limit + 1
    good = b"ok"
    stream = frame(good, byte_order) + header(announced, byte_order) + junk
    with LogWatch() as watch:
        proto, receiver, transport = memory_connection(limit, "binary", byte_order)
        for piece in split(stream, at):
            proto.dataReceived(piece)
        proto.dataReceived(frame(b"after", byte_order) * 3)
        assert receiver.messages == [good]
        assert transport.disconnecting
        assert proto.closeReason is CloseReason.OVERSIZE
        assert proto.incompleteFrameBytes == 0
        warnings = watch.warnings("header announced")
        assert [(w["length"], w["limit"]) for w in warnings] == [(announced, limit)]
        proto.connectionLost(Failure(ConnectionDone()))
        assert watch.warnings("middle of a message") == []
    assert receiver.stopped == [CloseReason.OVERSIZE]


def test_largest_header_at_the_largest_limit_holds_only_what_arrived() -> None:
    """
    With the limit at 0xFFFFFFFF, a header announcing 0xFFFFFFFF bytes is
    accepted; memory follows what arrived (14 bytes), not what was
    announced; the cut-off frame is discarded with a logged byte count.
    """
    tracemalloc.start()
    try:
        proto, receiver, transport = memory_connection(MAX_FRAME_PAYLOAD)
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        proto.dataReceived(header(MAX_FRAME_PAYLOAD) + b"0123456789")
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    assert proto.incompleteFrameBytes == 14
    assert receiver.messages == []
    assert not transport.disconnecting
    with LogWatch() as watch:
        proto.connectionLost(Failure(ConnectionDone()))
    assert [w["incomplete"] for w in watch.warnings("middle of a message")] == [14]
    assert receiver.stopped == [CloseReason.PEER_CLOSED]


def stream_of_awkward_frames() -> tuple[list[bytes], bytes]:
    messages = [b"", b"a", b"", b"bc" * 7, bytes(range(256)), b"z" * (LIMIT - 1), b"."]
    return messages, b"".join(frame(m) for m in messages)


def test_split_at_every_byte_boundary() -> None:
    """
    The stream cut in two at every byte, and fed one byte at a time.
    """
    messages, stream = stream_of_awkward_frames()
    for cut in range(len(stream) + 1):
        proto, receiver, _ = memory_connection(LIMIT)
        proto.dataReceived(stream[:cut])
        proto.dataReceived(stream[cut:])
        assert receiver.messages == messages, cut
        assert proto.incompleteFrameBytes == 0
    proto, receiver, _ = memory_connection(LIMIT)
    for i in range(len(stream)):
        proto.dataReceived(stream[i : i + 1])
    assert receiver.messages == messages


def test_split_in_three_at_every_pair_of_boundaries() -> None:
    messages = [b"", b"xy", b"", b"hello", b"!"]
    stream = b"".join(frame(m) for m in messages)
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            proto, receiver, _ = memory_connection(LIMIT)
            for piece in (stream[:i], stream[i:j], stream[j:]):
                proto.dataReceived(piece)
            assert receiver.messages == messages, (i, j)


def test_cut_off_by_a_close_at_every_byte() -> None:
    """
    The connection ends after any byte: the complete frames are delivered,
    never a partial one, and the discarded bytes are logged.
    """
    messages, stream = stream_of_awkward_frames()
    for cut in range(len(stream) + 1):
        expected, oversize, trailing = reference_outcome(stream[:cut], LIMIT)
        with LogWatch() as watch:
            proto, receiver, _ = memory_connection(LIMIT)
            proto.dataReceived(stream[:cut])
            proto.connectionLost(Failure(ConnectionDone()))
        assert receiver.messages == expected
        assert not oversize
        logged = [w["incomplete"] for w in watch.warnings("middle of a message")]
        assert logged == ([trailing] if trailing else []), cut
        assert receiver.stopped == [CloseReason.PEER_CLOSED]


def test_many_frames_in_one_segment() -> None:
    """
    100,000 frames in one read, then the same with a half frame at the end
    (completed by the next read).
    """
    messages = [str(i).encode() for i in range(100_000)]
    stream = b"".join(frame(m) for m in messages)
    proto, receiver, _ = memory_connection(LIMIT)
    proto.dataReceived(stream)
    assert receiver.messages == messages
    tail = frame(b"the last one")
    proto.dataReceived(stream + tail[:7])
    assert len(receiver.messages) == 200_000
    proto.dataReceived(tail[7:])
    assert receiver.messages[-1] == b"the last one"
    assert receiver.messages[100_000:-1] == messages


class PausingReceiver:
    """
    A receiver that pauses its protocol on every message whose first byte
    is even (as flow control does), so framing must keep the rest.
    """

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.proto: Any = None

    def startReceivingMessages(self, sender: Any) -> None:
        self.proto = sender

    def messageReceived(self, message: bytes) -> None:
        self.messages.append(message)
        if message and message[0] % 2 == 0:
            self.proto.pauseProducing()

    def messageDecodeFailed(self, error: Any) -> None:
        raise AssertionError(error)

    def stopReceivingMessages(self, reason: Any, failure: Any) -> None:
        pass


@fuzz
@given(payloads, cuts, st.lists(st.booleans(), max_size=40))
def test_pausing_while_framing_keeps_every_frame_in_order(
    messages: list[bytes], at: list[int], resume_after: list[bool]
) -> None:
    """
    Reads arrive while delivery is paused (the receive window's pause):
    they are kept, and after resuming every frame is delivered once, in
    order.
    """
    from harness.transport import TCPStringTransport
    from twcomms.connection import CommsProtocol

    receiver = PausingReceiver()
    proto = CommsProtocol(receiver, "binary", max_message_size=LIMIT)
    proto.makeConnection(TCPStringTransport())
    stream = b"".join(frame(m) for m in messages)
    for i, piece in enumerate(split(stream, at)):
        proto.dataReceived(piece)
        if i < len(resume_after) and resume_after[i] and proto.paused:
            proto.resumeProducing()
    for _ in range(len(messages) + 1):
        if proto.paused:
            proto.resumeProducing()
    assert not proto.paused
    assert receiver.messages == messages


def test_fuzz_memory_scenario(scale: Scale) -> None:
    """
    The stress scenario's in-memory part: thousands of seeded random
    streams (see L{harness.stress.garbage.garbage_stream}).
    """
    assert_held(fuzz_memory(scale))


# -- in memory, with other clients ---------------------------------------------------


class _Garbage(Protocol):
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)
        self.lost = False

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


def test_memory_network_garbage_among_good_clients() -> None:
    """
    On a L{MemoryNetwork}: 200 garbage connections write their pieces, one
    per network turn, interleaved with a well-behaved client's pings; the
    server delivers each exactly what the reference model says, closes the
    oversized ones, and echoes every ping.
    """
    net = MemoryNetwork()
    delivered: dict[str, list[bytes]] = {}
    reasons: dict[str, CloseReason] = {}
    handles: list[Any] = []
    good_id: list[str] = []

    def on_message(handle: Any, payload: bytes) -> None:
        if handle.id in good_id:
            handle.send(payload)
        else:
            delivered.setdefault(handle.id, []).append(payload)

    server = CommsServerFactory(
        "binary",
        max_message_size=LIMIT,
        reactor=net.reactor,
        on_connect=handles.append,
        on_message=on_message,
        on_close=lambda h, r: reasons.__setitem__(h.id, r),
    )
    server.listen(6000)
    echoes: list[bytes] = []
    good = CommsClientFactory(
        "binary",
        max_message_size=LIMIT,
        reactor=net.reactor,
        on_message=lambda c, m: echoes.append(m),
    )
    good.connectTCP("127.0.0.1", 6000)
    net.flush()
    good_id.append(handles[0].id)

    plan = garbage_plan(random.Random(5), 200, LIMIT)
    peers: list[tuple[str, bytes, _Garbage]] = []
    for kind, stream, pieces in plan:
        peer = _Garbage(pieces)
        factory = ClientFactory.forProtocol(lambda p=peer: p)
        net.reactor.connectTCP("127.0.0.1", 6000, factory)
        peers.append((kind, stream, peer))
    net.flush()
    garbage_handles = handles[1:]
    assert len(garbage_handles) == len(plan)
    pings = 0
    while any(p.pieces for _, _, p in peers):
        for _, _, peer in peers:
            if peer.pieces and not peer.lost:
                peer.transport.write(peer.pieces.pop(0))
            elif peer.pieces:
                peer.pieces.clear()
        good.send(f"ping {pings}".encode())
        pings += 1
        net.flush()
    for _, stream, peer in peers:
        _, oversize, _ = reference_outcome(stream, LIMIT)
        if not oversize and not peer.lost:
            peer.transport.loseConnection()
    net.flush()
    for (kind, stream, _), handle in zip(peers, garbage_handles, strict=True):
        expected, oversize, _ = reference_outcome(stream, LIMIT)
        assert delivered.get(handle.id, []) == expected, kind
        assert reasons[handle.id] is (
            CloseReason.OVERSIZE if oversize else CloseReason.PEER_CLOSED
        ), kind
    assert echoes == [f"ping {i}".encode() for i in range(pings)]
    assert [h.id for h in server.clients] == good_id


# -- real sockets -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_garbage_connections_over_real_sockets(scale: Scale) -> None:
    """
    Hundreds of garbage connections come and go over 127.0.0.1 while a
    well-behaved client keeps getting echoes (see
    L{harness.stress.hostile_framing.garbage_sockets}).
    """
    result = await garbage_sockets(scale)
    assert_held(result)
    assert result.details["echoes_during"] > 0
