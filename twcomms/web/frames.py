"""
One twcomms connection over WebSocket: L{MessageTransport} is the
transport of a L{CommsProtocol} whose peer is a WebSocket client, so the
whole connection layer (negotiation, the extended protocol, limits,
timers, the writer's outbound limit and stall eviction) serves it
unchanged. It translates, both ways, between the protocol's frames and
WebSocket messages, as C{docs/protocol.md} ("WebSocket mapping") says:

  - in: a WebSocket message becomes the frame it maps to (a 4-byte
    length, little-endian, then the payload; an extended connection's
    binary message is a control frame by its kind byte) and goes to the
    protocol's C{dataReceived}, so reading paused by reason and the
    size limits work as over TCP;
  - out: every frame the protocol writes becomes one WebSocket frame,
    written straight to the socket. A large payload streamed in slices
    by the writer goes out as one WebSocket frame whose header announces
    its whole length, the slices passed through as they come: no payload
    is copied or reassembled to be sent.

Server-to-client WebSocket frames are unmasked, so writing them here is a
header per message (RFC 6455 section 5.2); autobahn's own C{sendMessage}
costs a Python call chain and a join per message, and cannot take a
payload in slices without its streaming API's per-slice calls. autobahn
still owns everything else: the handshake, reading, limits, pings and
the closing handshake. Its own frames (a pong, a close) wait while one of
ours is half written (L{MessageTransport.holdWrite}).

Thread: the reactor thread only.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.interfaces import IPushProducer, ITransport
from zope.interface import implementer

from twcomms.connection import CloseReason
from twcomms.wire.extended import CONTROL_BIT
from twcomms.wire.framing import JOIN_LIMIT

if TYPE_CHECKING:
    from twcomms.connection import CommsProtocol

__all__ = [
    "BINARY",
    "CLOSE_CODES",
    "TEXT",
    "MessageTransport",
    "WebSocketEnd",
    "ws_header",
]

#: WebSocket opcodes of data frames.
TEXT = 0x1
BINARY = 0x2

#: The WebSocket close code each close reason is sent with (the reason's
#: text goes with it). RFC 6455 section 7.4.1, and 1013 from the IANA
#: registry ("try again later").
CLOSE_CODES: dict[CloseReason, int] = {
    CloseReason.CLOSED: 1000,
    CloseReason.PEER_CLOSED: 1000,
    CloseReason.IDLE_TIMEOUT: 1000,
    CloseReason.HEARTBEAT_TIMEOUT: 1000,
    CloseReason.SERVER_STOPPING: 1001,
    CloseReason.EXTENSION_TIMEOUT: 1002,
    CloseReason.HANDSHAKE_TIMEOUT: 1002,
    CloseReason.SLOW_CONSUMER: 1008,
    CloseReason.AUTH_FAILED: 1008,
    CloseReason.AUTH_TIMEOUT: 1008,
    CloseReason.OVERSIZE: 1009,
    CloseReason.ERROR: 1011,
    CloseReason.MAX_CLIENTS: 1013,
}

_LENGTH = struct.Struct("<I")
_H7 = struct.Struct("!BB")
_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")
# The first byte of the extended hello's answer; no UTF-8 text starts
# with it, so a text connection sends that frame as binary.
_NOT_TEXT = 0xFF


def ws_header(opcode: int, length: int) -> bytes:
    """
    The header of one final, unmasked WebSocket frame of C{length} bytes.
    """
    if length < 126:
        return _H7.pack(0x80 | opcode, length)
    if length < 0x10000:
        return _H16.pack(0x80 | opcode, 126, length)
    return _H64.pack(0x80 | opcode, 127, length)


class WebSocketEnd(Protocol):
    """
    What L{MessageTransport} needs of the WebSocket protocol it serves:
    autobahn's C{WebSocketServerProtocol} (L{twcomms.web.gateway}).
    """

    transport: Any

    def sendCloseFrame(
        self,
        code: int | None = None,
        reasonUtf8: bytes | None = None,
        isReply: bool = False,
    ) -> None:
        """
        Start the closing handshake with any close code (autobahn's
        C{sendClose} takes only 1000 and 3000-4999, an application's).
        """


@implementer(ITransport, IPushProducer)
class MessageTransport:
    """
    The transport of one L{CommsProtocol} on a WebSocket connection (see
    the module docstring).

    @ivar protocol: the connection it carries.
    @ivar text: whether messages are text messages (json and string
        connections) or binary ones.
    """

    disconnecting = False

    def __init__(self, end: WebSocketEnd, text: bool) -> None:
        self._end = end
        self._socket = end.transport
        self.text = text
        self.protocol: CommsProtocol | None = None
        # The out-path's place in the protocol's stream of frames: a
        # header's first bytes, or how much of a payload is still to come.
        self._head = b""
        self._left = 0
        # autobahn's own frames, held while one of ours is half written.
        self._held: list[bytes] = []
        self._lost = False
        # Whether the frames written now are the extended protocol's: from
        # the frame after the hello's answer on (the protocol's channel is
        # set when the answer is queued, which may be before it is written).
        self._extended = False

    # -- in: WebSocket messages to frames ---------------------------------------

    def messageReceived(self, payload: bytes, isBinary: bool) -> None:
        """
        One WebSocket message from the peer (delivered while closing, as
        TCP's data is, until the socket is gone).
        """
        if self._lost:
            return
        protocol = self.protocol
        assert protocol is not None
        if isBinary and protocol.channel is not None:
            if payload[:1] == b"\x00":
                payload = payload[1:]  # a binary message
            else:
                # A control frame (kind, then the body as over TCP); an
                # empty or unknown one is counted and dropped there.
                protocol.dataReceived(
                    _LENGTH.pack(CONTROL_BIT | len(payload)) + payload
                )
                return
        length = len(payload)
        if length <= JOIN_LIMIT:
            protocol.dataReceived(_LENGTH.pack(length) + payload)
        else:
            protocol.dataReceived(_LENGTH.pack(length))
            protocol.dataReceived(payload)

    # -- out: frames to WebSocket frames ----------------------------------------

    def write(self, data: bytes) -> None:
        # The common case first: one whole small frame, not the answer (no
        # parse loop, one write). Profiled: the loop and its join were
        # about 8% of a small echoed message's cost.
        size = len(data)
        if (
            4 < size <= JOIN_LIMIT
            and not (self._left or self._head or self._held or self._lost)
            and _LENGTH.unpack_from(data)[0] == size - 4
        ):
            if self._extended:
                if self.text:
                    head = ws_header(TEXT, size - 4)
                else:
                    head = ws_header(BINARY, size - 3) + b"\x00"
                self._socket.write(head + data[4:])
                return
            if data[4] != _NOT_TEXT:
                opcode = TEXT if self.text else BINARY
                self._socket.write(ws_header(opcode, size - 4) + data[4:])
                return
        self.writeSequence((data,))

    def writeSequence(self, data: Any) -> None:
        if self._lost:
            return
        if len(data) > 1 and sum(len(p) for p in data) <= JOIN_LIMIT:
            data = (b"".join(data),)  # (a frame's header and payload together)
        out: list[bytes] = []
        for part in data:
            self._translate(part, out)
        if len(out) == 1:
            self._socket.write(out[0])
        elif out:
            if sum(len(p) for p in out) <= JOIN_LIMIT:
                self._socket.write(b"".join(out))
            else:
                self._socket.writeSequence(out)
        if self._held and not self.midFrame:
            held, self._held = self._held, []
            for frame in held:
                self._socket.write(frame)

    def _translate(self, part: bytes, out: list[bytes]) -> None:
        size = len(part)
        offset = 0
        left = self._left
        if left:
            if left >= size:
                out.append(part)
                self._left = left - size
                return
            out.append(part[:left])
            offset = left
            self._left = 0
        while offset < size:
            if self._head or size - offset < 4:
                need = 4 - len(self._head)
                self._head += part[offset : offset + need]
                offset += need
                if len(self._head) < 4:
                    return
                (word,) = _LENGTH.unpack(self._head)
                self._head = b""
            else:
                (word,) = _LENGTH.unpack_from(part, offset)
                offset += 4
            prefix = b""
            length = word
            if self._extended:
                if word & CONTROL_BIT:
                    length = word & ~CONTROL_BIT
                    opcode = BINARY
                elif self.text:
                    opcode = TEXT
                else:
                    opcode = BINARY
                    prefix = b"\x00"
            elif offset < size and part[offset] == _NOT_TEXT:
                # Binary whatever the data type: no text starts with 0xFF,
                # and the extended hello's answer does.
                opcode = BINARY
                answer = self.protocol.answer if self.protocol is not None else None
                if answer is not None and part[offset : offset + length] == answer:
                    # The last plain frame: extended frames follow.
                    self._extended = True
            else:
                opcode = TEXT if self.text else BINARY
            end = offset + length
            out.append(ws_header(opcode, length + len(prefix)) + prefix)
            if end <= size:
                out.append(part if offset == 0 and end == size else part[offset:end])
                offset = end
            else:
                if offset < size:
                    out.append(part[offset:] if offset else part)
                self._left = end - size
                return

    @property
    def midFrame(self) -> bool:
        """
        Whether one of our frames is half written (its payload is streaming).
        """
        return bool(self._left or self._head)

    def holdWrite(self, data: bytes) -> bool:
        """
        Hold autobahn's own frame C{data} while one of ours is half
        written; C{False}: nothing is, write it now.
        """
        if not self.midFrame:
            return False
        self._held.append(data)
        return True

    # -- closing ------------------------------------------------------------

    def _closeCode(self) -> tuple[int, str]:
        reason = self.protocol.closeReason if self.protocol is not None else None
        if reason is None:
            return 1000, str(CloseReason.CLOSED)
        return CLOSE_CODES.get(reason, 1000), str(reason)

    def loseConnection(self) -> None:
        """
        Close with the code of the protocol's close reason (the closing
        handshake; autobahn drops the socket after the peer's answer or
        its close timeout).
        """
        if self._lost or self.disconnecting:
            return
        self.disconnecting = True
        self._sendClose()

    def _sendClose(self) -> None:
        code, reason = self._closeCode()
        self._end.sendCloseFrame(code, reason.encode(), False)

    def abortConnection(self) -> None:
        """
        Close now: the close frame still goes out (the page learns why),
        unless the peer is not reading (a slow consumer) or a frame is half
        written, where the socket is dropped at once.
        """
        if self._lost:
            return
        reason = self.protocol.closeReason if self.protocol is not None else None
        if self.midFrame or reason is CloseReason.SLOW_CONSUMER:
            self._lost = True
            self._socket.abortConnection()
            return
        self.disconnecting = True
        self._sendClose()

    def connectionLost(self) -> None:
        """
        The WebSocket connection is gone: nothing more is written.
        """
        self._lost = True
        self._held = []

    # -- the rest of ITransport and IPushProducer: the socket's ----------------

    def getPeer(self) -> Any:
        return self._socket.getPeer()

    def getHost(self) -> Any:
        return self._socket.getHost()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._socket.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._socket.unregisterProducer()

    def pauseProducing(self) -> None:
        self._socket.pauseProducing()

    def resumeProducing(self) -> None:
        self._socket.resumeProducing()

    def stopProducing(self) -> None:
        self._socket.stopProducing()
