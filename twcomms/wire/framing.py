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

from io import BytesIO
from typing import Any, Final

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from twcomms.wire.extended import MAX_EXTENDED_MESSAGE
from twcomms.wire.format import (
    BIG_ENDIAN,
    DEFAULT_MAX_MESSAGE_SIZE,
    JOIN_LIMIT,
    LITTLE_ENDIAN,
    MAX_FRAME_PAYLOAD,
    ByteOrder,
    Frame,
    check_size,
    frame_header,
    header_struct,
    struct_format,
)
from twcomms.wire.transport import describe_peer, set_read_size

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

#: While a payload over L{LARGE_READ_SIZE} is arriving, a TCP or UNIX
#: transport reads up to this many bytes at a time instead of Twisted's
#: 64 KiB (fewer, larger reads; measured in C{benchmarks.peers} scenario D).
#: Other connections wait for at most one such read. (Twisted's
#: C{bufferSize} is also the write buffer size over which it pauses a
#: producer, so meanwhile up to this much may queue before the peer counts
#: as not reading; the outbound limit still applies.)
LARGE_READ_SIZE: Final = 1024 * 1024


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
    #: The largest control frame body accepted (see L{controlReceived});
    #: 0, the default, accepts none: a header with the top bit set is then
    #: just over C{MAX_LENGTH}.
    controlLimit: int = 0

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
    # Whether the payload in progress is a control frame's body.
    _controlBody: bool = False

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

    def controlReceived(self, body: bytes) -> None:
        """
        One complete control frame arrived (a header with the top bit set,
        on a connection whose L{controlLimit} allows it): C{body} is what
        follows the header (see L{twcomms.wire.extended}).
        """
        raise NotImplementedError

    def _controlLength(self, length: int) -> int:
        """
        The body length of a control frame's header, or -1 if C{length} is
        no control header this connection accepts.
        """
        limit = self.controlLimit
        if limit and length & 0x80000000 and length & 0x7FFFFFFF <= limit:
            return length & 0x7FFFFFFF
        return -1

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
        # A header over this is checked in full (rare: a control frame, a
        # message over 2 GiB that MAX_LENGTH allows, or an oversized one).
        # Capped at what an extended connection allows, so the cap still
        # holds when a frame of this very chunk (a hello, an answer) lowers
        # MAX_LENGTH to that and makes the headers after it control frames.
        limit = min(self.MAX_LENGTH, MAX_EXTENDED_MESSAGE)
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
            if self._controlBody:
                self._controlBody = False
                self.controlReceived(payload)
            else:
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
            control = False
            if length > limit:
                clen = self._controlLength(length)
                if clen >= 0:
                    length = clen
                    control = True
                elif length > self.MAX_LENGTH:
                    self._discardRest(length)
                    return
            offset = need
            end = offset + length
            if end > size:
                self._startPayload(data[offset:] if offset < size else b"", length)
                self._controlBody = control
                return
            if control:
                self.controlReceived(data[offset:end])
            else:
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
                # (Rare: a control frame, a message over 2 GiB, or the end
                # of the stream.)
                clen = self._controlLength(length)
                if clen >= 0:
                    start = offset + plen
                    end = start + clen
                    if end > size:
                        self._startPayload(data[start:], clen)
                        self._controlBody = True
                        return
                    self.controlReceived(data[start:end])
                    offset = end
                    if self._discarding:
                        return
                    continue
                if length > self.MAX_LENGTH:
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
        self._controlBody = False
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
