"""
Wire framing: a 4-byte unsigned length prefix, then the payload.

L{FrameReceiver} is a drop-in for Twisted's
L{twisted.protocols.basic.Int32StringReceiver} (C{stringReceived},
C{sendString}, C{MAX_LENGTH}, C{lengthLimitExceeded}, C{structFormat},
C{prefixLength}, C{pauseProducing}/C{resumeProducing}) with three
differences:

  - Receiving is linear in the message size. Twisted's C{dataReceived}
    concatenates its whole buffer with every chunk, which is quadratic for a
    large message (twisted/twisted#6358). Here each chunk of a message in
    progress is copied once into a growing buffer, which becomes the
    payload's C{bytes} without another copy, and while a large message
    arrives the transport reads in bigger chunks (L{LARGE_READ_SIZE}).
  - Memory follows what arrived, not what a header announced: a header that
    announces 1 GiB followed by 10 bytes holds about 10 bytes.
  - A header over C{MAX_LENGTH} calls C{lengthLimitExceeded} exactly once;
    the rest of the stream is discarded unread (nothing of the oversized
    message is buffered) and, by default, the connection is closed.

The byte order is little-endian by default (the original library's and its
Unity peers'); L{BIG_ENDIAN} is the other choice. Both ends must agree.

The L{twisted.protocols.basic.Int32StringReceiver} C{recvd} compatibility
attribute is not supported.

Thread: the reactor thread only, like every Twisted protocol.
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Any, Final, Literal

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from twcomms.errors import MessageTooLargeError

__all__ = [
    "BIG_ENDIAN",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "JOIN_LIMIT",
    "LARGE_READ_SIZE",
    "LITTLE_ENDIAN",
    "MAX_FRAME_PAYLOAD",
    "ByteOrder",
    "Frame",
    "FrameReceiver",
    "check_size",
    "describe_peer",
    "frame_header",
    "header_struct",
    "set_read_size",
    "struct_format",
]

ByteOrder = Literal["little", "big"]

#: C{structFormat} for each byte order.
LITTLE_ENDIAN: Final = "<I"
BIG_ENDIAN: Final = ">I"

#: The default maximum message size: 64 MiB.
DEFAULT_MAX_MESSAGE_SIZE: Final = 64 * 1024 * 1024

#: The largest payload a 4-byte unsigned header can announce.
MAX_FRAME_PAYLOAD: Final = 0xFFFFFFFF

#: Payloads up to this size are written in one C{write} together with their
#: header (one small copy, one syscall); larger ones as two buffers so the
#: payload is never copied to prepend 4 bytes.
JOIN_LIMIT: Final = 16 * 1024

#: While a payload over L{LARGE_READ_SIZE} is arriving, a TCP or UNIX
#: transport reads up to this many bytes at a time instead of Twisted's
#: 64 KiB (fewer, larger reads; measured in C{benchmarks.peers} scenario D).
#: Other connections wait for at most one such read. (Twisted's
#: C{bufferSize} is also the write buffer size over which it pauses a
#: producer, so meanwhile up to this much may queue before the peer counts
#: as not reading; the outbound limit still applies.)
LARGE_READ_SIZE: Final = 1024 * 1024

_STRUCTS: dict[str, struct.Struct] = {}


def header_struct(fmt: str) -> struct.Struct:
    """
    The C{struct.Struct} for a header format, shared by every connection
    that uses it (one per format per process).
    """
    try:
        return _STRUCTS[fmt]
    except KeyError:
        s = _STRUCTS[fmt] = struct.Struct(fmt)
        return s


def struct_format(byte_order: str) -> str:
    """
    Return the C{structFormat} for C{byte_order} (C{"little"} or C{"big"}).

    @raise ValueError: any other value.
    """
    if byte_order == "little":
        return LITTLE_ENDIAN
    if byte_order == "big":
        return BIG_ENDIAN
    raise ValueError(f"unknown byteOrder {byte_order!r}; use 'little' or 'big'")


def frame_header(length: int, byte_order: str = "little") -> bytes:
    """
    Return the 4-byte header announcing a payload of C{length} bytes.
    """
    return header_struct(struct_format(byte_order)).pack(length)


class Frame:
    """
    One encoded frame, ready to write to any number of connections: the
    header is packed once and a small payload is joined to it once, so a
    broadcast costs one C{write} per client and no per-client copies.

    @ivar payload: the payload bytes.
    @ivar parts: what is written: C{(header + payload,)} for payloads up to
        16 KiB, C{(header, payload)} above (the payload is never copied).
    @ivar size: the frame size on the wire (header included).
    """

    __slots__ = ("parts", "payload", "size")

    def __init__(self, payload: bytes, structFormat: str = LITTLE_ENDIAN) -> None:
        header = header_struct(structFormat).pack(len(payload))
        self.payload = payload
        self.size = len(header) + len(payload)
        self.parts: tuple[bytes, ...] = (
            (header + payload,) if len(payload) <= JOIN_LIMIT else (header, payload)
        )

    def __repr__(self) -> str:
        return f"<Frame payload={len(self.payload)} bytes>"


def check_size(length: int, limit: int) -> None:
    """
    Raise L{MessageTooLargeError} if a payload of C{length} bytes is over
    C{limit} or over what a 4-byte header can announce.
    """
    if length > limit or length > MAX_FRAME_PAYLOAD:
        raise MessageTooLargeError(length, min(limit, MAX_FRAME_PAYLOAD))


class FrameReceiver(Protocol):
    """
    Receives and sends length-prefixed frames, in linear time.

    Subclasses override L{stringReceived}. See the module docstring for how
    this differs from Twisted's C{Int32StringReceiver}.

    @cvar structFormat: the C{struct} format of the length prefix; set it per
        instance to change the byte order (see L{struct_format}).
    @cvar prefixLength: the size of the length prefix, derived from
        C{structFormat}; kept for compatibility with Twisted's class.
    @cvar MAX_LENGTH: the largest payload accepted or sent, in bytes.
    @ivar paused: whether delivery is paused (see L{pauseProducing}).
    """

    structFormat: str = LITTLE_ENDIAN
    prefixLength: int = 4
    MAX_LENGTH: int = DEFAULT_MAX_MESSAGE_SIZE
    paused: bool = False

    # Twisted declares transport as ITransport | None; a connected frame
    # receiver uses producer and TCP methods too, so it is left untyped here.
    transport: Any

    _log = Logger()

    # Receive state. Exactly one of these describes a partial frame:
    #  - _header: 1 to prefixLength - 1 bytes of a header, or b"";
    #  - _missing >= 0: a header was read and _body holds the payload so
    #    far, _missing payload bytes still to come.
    # _body is a BytesIO: each read is copied into it once, and getvalue()
    # hands its buffer over as the payload's bytes (CPython does not copy
    # it again), so a large message costs one pass over fresh memory and
    # the read buffers are reused while it arrives.
    _header: bytes = b""
    _missing: int = -1
    _body: BytesIO | None = None
    # Whether the transport reads LARGE_READ_SIZE chunks for this payload.
    _largeRead: bool = False
    # Data that arrived while paused, processed on resumeProducing.
    _stash: list[bytes] | None = None
    # Set once the stream can no longer be framed (an oversized header).
    _discarding: bool = False
    # The transport's read size before a large payload raised it.
    _savedReadSize: int | None = None

    def makeConnection(self, transport: Any) -> None:
        """
        Turn on C{TCP_NODELAY} where the transport is TCP (a frame should
        leave now, not wait for Nagle and the peer's delayed ACK) and TCP
        keepalive (so a vanished peer is noticed eventually), then make the
        connection as usual.
        """
        if ITCPTransport.providedBy(transport) and isinstance(
            transport.getHost(), (IPv4Address, IPv6Address)
        ):
            # (Twisted's UNIX transports provide ITCPTransport too; the
            # options mean nothing there and older Twisted raises.)
            transport.setTcpNoDelay(True)
            transport.setTcpKeepAlive(True)
        super().makeConnection(transport)  # type: ignore[no-untyped-call]

    # -- receiving ----------------------------------------------------------

    def stringReceived(self, string: bytes) -> None:
        """
        Override this: one complete payload has arrived.
        """
        raise NotImplementedError

    def lengthLimitExceeded(self, length: int) -> None:
        """
        A header announced C{length} bytes, more than C{MAX_LENGTH}. Called
        at most once per connection; the rest of the stream is discarded.

        The default logs the reason and closes the connection.
        """
        self._logLengthLimit(length)
        self.transport.loseConnection()

    def _logLengthLimit(self, length: int) -> None:
        self._log.warn(
            "closing connection from {peer}: a message header announced "
            "{length} bytes, over the maximum message size of {limit}",
            peer=describe_peer(self.transport),
            length=length,
            limit=self.MAX_LENGTH,
        )

    @property
    def incompleteFrameBytes(self) -> int:
        """
        How many bytes of a frame that has not completed are held (header
        included). Non-zero when a connection ends mid-message.
        """
        if self._body is not None:
            return self.prefixLength + self._body.tell()
        return len(self._header)

    def dataReceived(self, data: bytes) -> None:
        """
        Frame C{data} and deliver each complete payload to
        L{stringReceived}, in order.
        """
        if self._discarding:
            return
        if self.paused:
            if self._stash is None:
                self._stash = []
            self._stash.append(data)
            return

        hdr = header_struct(self.structFormat)
        plen = hdr.size
        limit = self.MAX_LENGTH
        size = len(data)
        offset = 0

        if self._missing >= 0:
            # A payload is in progress.
            missing = self._missing
            body = self._body
            assert body is not None
            if size < missing:
                body.write(data)
                self._missing = missing - size
                return
            body.write(data if size == missing else memoryview(data)[:missing])
            self._body = None
            self._missing = -1
            if self._largeRead:
                self._endLargeRead()
            payload = body.getvalue()
            del body
            offset = missing
            self.stringReceived(payload)
            del payload
            if self._discarding:
                return
        elif self._header:
            # Part of a header is in hand.
            need = plen - len(self._header)
            if size < need:
                self._header += data
                return
            header = self._header + data[:need]
            self._header = b""
            (length,) = hdr.unpack(header)
            if length > limit:
                self._discardRest(length)
                return
            offset = need
            end = offset + length
            if end > size:
                self._startPayload(data[offset:] if offset < size else b"", length)
                return
            self.stringReceived(data[offset:end])
            offset = end
            if self._discarding:
                return

        # Whole frames straight out of this chunk.
        unpack_from = hdr.unpack_from
        string_received = self.stringReceived
        while True:
            if self.paused:
                if offset < size:
                    self._stash = [data[offset:]]
                return
            remaining = size - offset
            if remaining < plen:
                if remaining:
                    self._header = data[offset:]
                return
            (length,) = unpack_from(data, offset)
            if length > limit:
                self._discardRest(length)
                return
            start = offset + plen
            end = start + length
            if end > size:
                self._startPayload(data[start:], length)
                return
            string_received(data[start:end])
            offset = end
            if self._discarding:
                return

    def _startPayload(self, first: bytes, length: int) -> None:
        """
        A header announced C{length} bytes and only C{first} has arrived.
        """
        body = self._body = BytesIO()
        body.write(first)
        self._missing = length - len(first)
        if length > LARGE_READ_SIZE:
            self._startLargeRead()

    def _startLargeRead(self) -> None:
        """
        Read in L{LARGE_READ_SIZE} chunks until the payload in progress is
        complete, where the transport has Twisted's C{bufferSize} (TCP and
        UNIX sockets; not TLS, which decrypts in its own record sizes).
        """
        transport = self.transport
        current = getattr(transport, "bufferSize", 0)
        saved = set_read_size(transport, max(current, LARGE_READ_SIZE))
        if saved is not None:
            self._savedReadSize = saved
            self._largeRead = True

    def _endLargeRead(self) -> None:
        """
        Go back to the transport's own read size.
        """
        self._largeRead = False
        if self._savedReadSize is not None:
            set_read_size(self.transport, self._savedReadSize)
            self._savedReadSize = None

    def _discardRest(self, length: int) -> None:
        """
        An oversized header: stop framing this stream and tell
        L{lengthLimitExceeded}, once.
        """
        self._discarding = True
        self._dropPartialFrame()
        self._stash = None
        self.lengthLimitExceeded(length)

    def _dropPartialFrame(self) -> None:
        """
        Forget the frame in progress, if any (see L{incompleteFrameBytes}).
        """
        self._header = b""
        self._missing = -1
        self._body = None
        if self._largeRead:
            self._endLargeRead()

    # -- flow control (as twisted.protocols.basic._PauseableMixin) ----------

    def pauseProducing(self) -> None:
        """
        Stop delivering messages and stop reading from the transport. Data
        already read is kept and delivered after L{resumeProducing}.
        """
        self.paused = True
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        """
        Deliver the messages kept while paused, then read again.
        """
        self.paused = False
        stash, self._stash = self._stash, None
        if stash:
            for i, chunk in enumerate(stash):
                self.dataReceived(chunk)
                if self.paused:
                    # Paused again by a callback: keep the rest, in order.
                    if self._stash is None:
                        self._stash = []
                    self._stash.extend(stash[i + 1 :])
                    return
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        """
        Stop delivering for good and stop the transport.
        """
        self.paused = True
        self.transport.stopProducing()

    # -- sending ------------------------------------------------------------

    def sendString(self, string: bytes) -> None:
        """
        Send one payload as one frame.

        @raise MessageTooLargeError: C{string} is over C{MAX_LENGTH} (or over
            what the header can announce); nothing was written.
        """
        length = len(string)
        check_size(length, self.MAX_LENGTH)
        header = header_struct(self.structFormat).pack(length)
        if length <= JOIN_LIMIT:
            self.transport.write(header + string)
        else:
            self.transport.writeSequence((header, string))

    def writeFrame(self, frame: Frame) -> None:
        """
        Write an already-built L{Frame} (its size is not checked again; it
        must have been built with this connection's C{structFormat}).
        """
        parts = frame.parts
        if len(parts) == 1:
            self.transport.write(parts[0])
        else:
            self.transport.writeSequence(parts)


def set_read_size(transport: Any, size: int) -> int | None:
    """
    Make C{transport} read up to C{size} bytes per read; return the read
    size it had, to restore later with this function, or L{None} (and
    nothing is changed) where the transport has no read size to set.

    Twisted has no method for this. Its socket transports
    (C{twisted.internet.abstract.FileDescriptor}: TCP and UNIX) read
    C{bufferSize} bytes per C{doRead} and look the attribute up on every
    read, so setting it on the instance takes effect at the next read
    (C{tests/test_framing.py::test_set_read_size_changes_what_twisted_reads}
    pins that). TLS transports decrypt in their own record sizes and have
    no C{bufferSize}: left alone. (Twisted also uses C{bufferSize} as the
    write-buffer size over which it pauses a producer.)
    """
    current = getattr(transport, "bufferSize", None)
    if not isinstance(current, int) or isinstance(current, bool):
        return None
    transport.bufferSize = size
    return current


def describe_peer(transport: Any) -> str:
    """
    A printable peer address for log events: C{host:port}, a UNIX path.
    """
    if transport is None:
        return "<not connected>"
    try:
        peer = transport.getPeer()
    except Exception:
        return "<unknown peer>"
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    if host is not None and port is not None:
        return f"{host}:{port}"
    name = getattr(peer, "name", None)
    return str(name) if name else str(peer)
