"""
Tests for L{twcomms.wire.framing}: in memory, no reactor.
"""

from __future__ import annotations

import struct
import tracemalloc

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.protocols.basic import StringTooLongError
from twisted.protocols.test.test_basic import IntNTestCaseMixin, TestMixin
from twisted.trial.unittest import SynchronousTestCase

from harness.transport import TCPStringTransport
from harness.wire import frame as reference_frame
from harness.wire import parse as reference_parse
from twcomms.errors import MessageTooLargeError
from twcomms.wire.framing import (
    BIG_ENDIAN,
    DEFAULT_MAX_MESSAGE_SIZE,
    LARGE_READ_SIZE,
    LITTLE_ENDIAN,
    FrameReceiver,
    frame_header,
    struct_format,
)


class Recorder(FrameReceiver):
    """
    Records what it receives.
    """

    def __init__(self, byte_order: str = "little") -> None:
        self.structFormat = struct_format(byte_order)
        self.received: list[bytes] = []
        self.limits: list[int] = []

    def stringReceived(self, string: bytes) -> None:
        self.received.append(string)


def connected(byte_order: str = "little", transport=None) -> Recorder:
    r = Recorder(byte_order)
    r.makeConnection(transport if transport is not None else StringTransport())
    return r


# -- Twisted's own tests for Int32StringReceiver-style protocols ------------


class _TwistedLittle(TestMixin, FrameReceiver):
    pass


class _TwistedBig(TestMixin, FrameReceiver):
    structFormat = BIG_ENDIAN


class TwistedIntNTestsLittleEndian(SynchronousTestCase, IntNTestCaseMixin):
    """
    Twisted's C{IntNTestCaseMixin}, applied to L{FrameReceiver}.
    """

    protocol = _TwistedLittle
    strings = [b"a", b"b" * 16, b""]
    illegalStrings = [b"\x00\x00\x00\x10aaaaaa", b"\xff\xff\xff\xff"]
    partialStrings = [b"\x00\x00\x00", b"hello there", b"", b"\x05\x00\x00\x00abcd"]


class TwistedIntNTestsBigEndian(SynchronousTestCase, IntNTestCaseMixin):
    protocol = _TwistedBig
    strings = [b"a", b"b" * 16, b""]
    illegalStrings = [b"\x10\x00\x00\x00aaaaaa"]
    partialStrings = [b"\x00\x00\x00", b"hello there", b""]

    def test_data(self) -> None:
        """
        Big-endian frames are byte-identical to Twisted's Int32StringReceiver.
        """
        r = self.getProtocol()
        r.sendString(b"foo")
        self.assertEqual(r.transport.value(), b"\x00\x00\x00\x03foo")
        r.dataReceived(b"\x00\x00\x00\x04ubar")
        self.assertEqual(r.received, [b"ubar"])


# -- wire format -------------------------------------------------------------


def test_default_byte_order_is_little_endian() -> None:
    assert FrameReceiver.structFormat == LITTLE_ENDIAN
    r = connected()
    r.sendString(b"hello")
    assert r.transport.value() == b"\x05\x00\x00\x00hello"


def test_struct_format_rejects_unknown_byte_order() -> None:
    with pytest.raises(ValueError, match="'little' or 'big'"):
        struct_format("network")


def test_frame_header() -> None:
    assert frame_header(258) == b"\x02\x01\x00\x00"
    assert frame_header(258, "big") == b"\x00\x00\x01\x02"


@pytest.mark.parametrize("byte_order", ["little", "big"])
def test_independent_encoder_round_trip(byte_order: str) -> None:
    """
    Frames built by C{struct.pack} are received; frames sent parse with
    C{struct.unpack}.
    """
    payloads = [b"", b"x", b"\x00" * 3, bytes(range(256)) * 300, b"end"]
    r = connected(byte_order)
    r.dataReceived(b"".join(reference_frame(p, byte_order) for p in payloads))
    assert r.received == payloads
    for p in payloads:
        r.sendString(p)
    assert reference_parse(r.transport.value(), byte_order) == payloads


def test_zero_length_frame_is_a_message() -> None:
    r = connected()
    r.dataReceived(b"\x00\x00\x00\x00" * 3)
    assert r.received == [b"", b"", b""]
    assert r.incompleteFrameBytes == 0


@settings(max_examples=300, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), max_size=20),
    byte_order=st.sampled_from(["little", "big"]),
    data=st.data(),
)
def test_any_chunking_delivers_every_message_once_in_order(
    payloads: list[bytes], byte_order: str, data: st.DataObject
) -> None:
    stream = b"".join(reference_frame(p, byte_order) for p in payloads)
    cuts = sorted(
        data.draw(st.lists(st.integers(0, len(stream)), max_size=40), label="cuts")
    )
    r = connected(byte_order)
    previous = 0
    for cut in [*cuts, len(stream)]:
        r.dataReceived(stream[previous:cut])
        previous = cut
    assert r.received == payloads
    assert r.incompleteFrameBytes == 0


def test_split_at_every_byte_boundary() -> None:
    payloads = [b"", b"a", b"bc" * 10, b"", b"\xff" * 70_000, b"z"]
    stream = b"".join(reference_frame(p) for p in payloads)
    for cut in range(len(stream) + 1):
        r = connected()
        r.dataReceived(stream[:cut])
        r.dataReceived(stream[cut:])
        assert r.received == payloads, cut


def test_one_byte_at_a_time() -> None:
    payloads = [b"", b"abc", b"d" * 1000]
    stream = b"".join(reference_frame(p, "big") for p in payloads)
    r = connected("big")
    for i in range(len(stream)):
        r.dataReceived(stream[i : i + 1])
    assert r.received == payloads


def test_large_message_in_many_chunks_is_intact() -> None:
    payload = bytes(range(256)) * (4 * 1024 * 5)  # 5 MiB
    stream = reference_frame(payload) + reference_frame(b"after")
    r = connected()
    for i in range(0, len(stream), 65536):
        r.dataReceived(stream[i : i + 65536])
    assert r.received == [payload, b"after"]
    assert type(r.received[0]) is bytes


def test_large_message_costs_about_its_size_in_memory() -> None:
    """
    Each chunk is copied once into the message and the message becomes its
    C{bytes} without another copy: the peak is about one message, not the
    two a list of chunks joined at the end would cost.
    """
    size = 16 * 1024 * 1024
    r = connected()
    chunk = bytearray(b"x" * 65536)
    r.dataReceived(struct.pack("<I", size))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(size // len(chunk)):
            r.dataReceived(bytes(chunk))  # a fresh read, as a transport's
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert len(r.received) == 1 and len(r.received[0]) == size
    assert type(r.received[0]) is bytes
    assert peak < 1.4 * size, peak / size


class _SocketLikeTransport(TCPStringTransport):
    """
    A transport with Twisted's socket C{bufferSize} class attribute.
    """

    bufferSize = 65536


def test_large_payload_is_read_in_large_chunks_until_complete() -> None:
    transport = _SocketLikeTransport()
    r = connected(transport=transport)
    r.MAX_LENGTH = 1 << 30
    r.dataReceived(reference_frame(b"small"))
    assert transport.bufferSize == 65536
    payload = b"y" * (LARGE_READ_SIZE + 1)
    stream = reference_frame(payload) + reference_frame(b"next")
    r.dataReceived(stream[:1000])
    assert transport.bufferSize == LARGE_READ_SIZE
    r.dataReceived(stream[1000:])
    assert r.received == [b"small", payload, b"next"]
    assert transport.bufferSize == 65536


def test_large_read_ends_with_a_dropped_frame() -> None:
    transport = _SocketLikeTransport()
    r = connected(transport=transport)
    r.MAX_LENGTH = 1 << 30
    r.dataReceived(struct.pack("<I", LARGE_READ_SIZE + 1) + b"abc")
    assert transport.bufferSize == LARGE_READ_SIZE
    r._dropPartialFrame()
    assert r.incompleteFrameBytes == 0
    assert transport.bufferSize == 65536


def test_no_large_reads_without_a_socket_buffer_size() -> None:
    r = connected()  # StringTransport: no bufferSize, as TLS
    r.MAX_LENGTH = 1 << 30
    r.dataReceived(struct.pack("<I", LARGE_READ_SIZE + 1) + b"abc")
    assert not hasattr(r.transport, "bufferSize")
    assert r.incompleteFrameBytes == 7


def test_partial_frame_is_reported() -> None:
    r = connected()
    r.dataReceived(b"\x0a\x00")
    assert r.incompleteFrameBytes == 2
    r.dataReceived(b"\x00\x00abc")
    assert r.incompleteFrameBytes == 7
    r.dataReceived(b"defghij")
    assert r.received == [b"abcdefghij"]
    assert r.incompleteFrameBytes == 0


# -- limits ------------------------------------------------------------------


def test_default_max_message_size_is_64_mib() -> None:
    assert DEFAULT_MAX_MESSAGE_SIZE == FrameReceiver.MAX_LENGTH == 64 * 1024 * 1024


def test_oversized_header_closes_once_and_discards_the_rest() -> None:
    r = connected()
    r.MAX_LENGTH = 10
    r.dataReceived(reference_frame(b"ok"))
    with capturedLogs() as events:
        r.dataReceived(struct.pack("<I", 11) + b"x" * 5)
        r.dataReceived(b"x" * 6 + reference_frame(b"never"))
        r.dataReceived(struct.pack("<I", 0xFFFFFFFF))
    assert r.received == [b"ok"]
    assert r.transport.disconnecting
    assert r.incompleteFrameBytes == 0
    warnings = [e for e in events if "maximum message size" in e["log_format"]]
    assert len(warnings) == 1
    assert warnings[0]["length"] == 11


def test_length_limit_exceeded_is_called_once() -> None:
    r = connected()
    r.MAX_LENGTH = 10
    r.lengthLimitExceeded = r.limits.append  # type: ignore[method-assign]
    r.dataReceived(struct.pack("<I", 11))
    r.dataReceived(struct.pack("<I", 12))
    assert r.limits == [11]


def test_header_for_a_huge_message_holds_only_what_arrived() -> None:
    """
    A header announcing 1 GiB followed by 10 bytes costs about 10 bytes.
    """
    r = connected()
    r.MAX_LENGTH = 0xFFFFFFFF
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        r.dataReceived(struct.pack("<I", 1 << 30) + b"0123456789")
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert r.incompleteFrameBytes == 14
    assert held < 4096, held


def test_send_over_the_limit_raises_before_writing() -> None:
    r = connected()
    r.MAX_LENGTH = 10
    with pytest.raises(MessageTooLargeError, match="over the maximum") as info:
        r.sendString(b"x" * 11)
    assert r.transport.value() == b""
    assert info.value.size == 11 and info.value.limit == 10
    # Code written for Twisted's class catches StringTooLongError.
    assert isinstance(info.value, StringTooLongError)
    assert isinstance(info.value, ValueError)


def test_large_payload_is_written_without_joining_the_header() -> None:
    writes: list[tuple[str, object]] = []

    class Recording(StringTransport):
        def write(self, data: bytes) -> None:
            writes.append(("write", data))
            super().write(data)

        def writeSequence(self, seq) -> None:  # type: ignore[no-untyped-def]
            writes.append(("writeSequence", list(seq)))
            super().writeSequence(seq)

    r = connected(transport=Recording())
    big = b"y" * 1_000_000
    r.sendString(big)
    r.sendString(b"small")
    assert writes[0][0] == "writeSequence"
    header, payload = writes[0][1]  # type: ignore[misc]
    assert header == struct.pack("<I", len(big)) and payload is big
    assert writes[1] == ("write", reference_frame(b"small"))


# -- transports --------------------------------------------------------------


def test_tcp_nodelay_on_tcp_transports() -> None:
    t = TCPStringTransport()
    connected(transport=t)
    assert t.noDelay


def test_no_tcp_options_on_other_transports() -> None:
    # StringTransport does not provide ITCPTransport (as a UNIX socket does
    # not); setTcpNoDelay must not be called on it.
    connected(transport=StringTransport())


# -- pausing -----------------------------------------------------------------


def test_pause_inside_callback_keeps_the_rest_in_order() -> None:
    class Pauser(Recorder):
        def stringReceived(self, string: bytes) -> None:
            super().stringReceived(string)
            if string == b"pause":
                self.pauseProducing()

    r = Pauser()
    t = StringTransport()
    r.makeConnection(t)
    r.dataReceived(
        reference_frame(b"a") + reference_frame(b"pause") + reference_frame(b"b")
    )
    assert r.received == [b"a", b"pause"]
    assert t.producerState == "paused"
    r.dataReceived(reference_frame(b"c") + reference_frame(b"pause")[:3])
    assert r.received == [b"a", b"pause"]
    r.resumeProducing()
    assert r.received == [b"a", b"pause", b"b", b"c"]
    assert t.producerState == "producing"
    r.dataReceived(reference_frame(b"pause")[3:] + reference_frame(b"d"))
    assert r.received == [b"a", b"pause", b"b", b"c", b"pause"]
    r.resumeProducing()
    assert r.received == [b"a", b"pause", b"b", b"c", b"pause", b"d"]


def test_stop_producing() -> None:
    r = connected()
    r.stopProducing()
    assert r.paused
    assert r.transport.producerState == "stopped"


def test_no_tcp_options_on_unix_sockets() -> None:
    """
    Twisted's UNIX transports provide ITCPTransport too; NODELAY means
    nothing there (and older Twisted raises), so it is not set.
    """
    from twisted.internet.address import UNIXAddress

    t = TCPStringTransport(hostAddress=UNIXAddress(b"/tmp/x.sock"))
    connected(transport=t)
    assert not t.noDelay and not t.keepAlive


@pytest_twisted.ensureDeferred
async def test_set_read_size_changes_what_twisted_reads() -> None:
    """
    What set_read_size relies on (Twisted has no method for it): a TCP
    transport reads at most C{bufferSize} bytes per read, looking it up
    on every read, so setting it on the instance takes effect at the next
    read, and setting the old value back restores it.
    """
    from twisted.internet import defer, protocol, reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

    from twcomms.wire.framing import set_read_size

    chunk = 256 * 1024
    reads: list[int] = []
    phase_done: list[defer.Deferred[None]] = []

    connected: defer.Deferred[None] = defer.Deferred()

    class Reader(protocol.Protocol):
        expected = 0

        def connectionMade(self) -> None:
            connected.callback(None)

        def dataReceived(self, data: bytes) -> None:
            reads.append(len(data))
            self.expected -= len(data)
            if self.expected == 0:
                phase_done.pop(0).callback(None)

    readers: list[Reader] = []

    def build() -> Reader:
        r = Reader()
        readers.append(r)
        return r

    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        protocol.Factory.forProtocol(build)
    )
    sender = await TCP4ClientEndpoint(
        reactor, "127.0.0.1", port.getHost().port
    ).connect(protocol.Factory.forProtocol(protocol.Protocol))
    try:
        await connected
        reader = readers[0]
        transport = reader.transport
        default = transport.bufferSize  # type: ignore[union-attr]

        async def phase(size: int) -> list[int]:
            reads.clear()
            done: defer.Deferred[None] = defer.Deferred()
            phase_done.append(done)
            reader.expected = chunk
            sender.transport.write(b"x" * chunk)
            await done
            return list(reads)

        assert set_read_size(transport, 1000) == default
        small = await phase(1000)
        assert max(small) <= 1000 and len(small) >= chunk // 1000
        assert set_read_size(transport, default) == 1000
        restored = await phase(default)
        assert max(restored) > 1000
        assert set_read_size(object(), 5) is None  # nothing to set: untouched
    finally:
        sender.transport.loseConnection()
        for r in readers:
            r.transport.loseConnection()  # type: ignore[union-attr]
        await port.stopListening()
