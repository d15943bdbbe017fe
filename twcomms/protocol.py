"""
The message protocol: framing (L{twcomms.framing}) plus a codec
(L{twcomms.codecs}), dispatching decoded messages to a L{MessageReceiver}.

The layers, as in Twisted's AMP::

    bytes --FrameReceiver--> payloads --Codec--> messages --> MessageReceiver

L{CommsProtocol} is the only class that knows all three. The receiver is the
application side: the server factory's per-client handle, the client
factory's connection, or your own object. It gets the protocol (a
L{MessageSender}) when the connection starts.

Thread: the reactor thread only.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from twcomms.codecs import Codec, get_codec
from twcomms.errors import ConnectionClosedError, DecodeError
from twcomms.framing import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_FRAME_PAYLOAD,
    FrameReceiver,
    _peer,
    struct_format,
)

__all__ = [
    "CloseReason",
    "CommsProtocol",
    "MessageReceiver",
    "MessageSender",
    "validate_max_message_size",
]


class CloseReason(str, enum.Enum):
    """
    Why a connection closed, as given to close events.
    """

    #: The peer closed the connection cleanly.
    PEER_CLOSED = "peer closed"
    #: The connection failed (reset, TLS failure, ...); see the failure.
    ERROR = "error"
    #: The peer announced a message over the maximum message size.
    OVERSIZE = "oversize"
    #: The peer sent nothing for longer than the idle timeout.
    IDLE_TIMEOUT = "idle timeout"
    #: The peer did not read fast enough; its outbound limit was exceeded.
    SLOW_CONSUMER = "slow consumer"
    #: The server was stopping.
    SERVER_STOPPING = "server stopping"
    #: The server already had its maximum number of clients.
    MAX_CLIENTS = "max clients"
    #: This side closed the connection (C{close()}).
    CLOSED = "closed"

    def __str__(self) -> str:
        return self.value


class MessageSender(Protocol):
    """
    What a L{MessageReceiver} can do with its connection.
    """

    def sendMessage(self, message: Any) -> None:
        """
        Encode and send one message.

        @raise ConnectionClosedError: the connection is closed or closing.
        @raise EncodeError: the message cannot be encoded.
        @raise MessageTooLargeError: it is over the maximum message size.
        """

    def close(self, reason: CloseReason = CloseReason.CLOSED) -> None:
        """
        Close the connection after what was sent is written.
        """


class MessageReceiver(Protocol):
    """
    The application side of a connection: where decoded messages go.

    Every method is called on the reactor thread.
    """

    def startReceivingMessages(self, sender: CommsProtocol) -> None:
        """
        The connection is made; C{sender} sends on it.
        """

    def messageReceived(self, message: Any) -> None:
        """
        One decoded message arrived.
        """

    def messageDecodeFailed(self, error: DecodeError) -> None:
        """
        A complete frame arrived but did not decode. The connection stays up;
        C{error.payload} holds the raw bytes.
        """

    def stopReceivingMessages(self, reason: CloseReason, failure: Failure) -> None:
        """
        The connection is closed, for C{reason}; C{failure} is what Twisted
        gave C{connectionLost}.
        """


def validate_max_message_size(size: int) -> int:
    """
    Check a maximum message size: a positive int no larger than a 4-byte
    header can announce.

    @raise ValueError: it is not.
    """
    if not isinstance(size, int) or isinstance(size, bool):
        raise TypeError(f"max_message_size must be an int, not {type(size).__name__}")
    if not 0 < size <= MAX_FRAME_PAYLOAD:
        raise ValueError(
            f"max_message_size must be between 1 and {MAX_FRAME_PAYLOAD} "
            f"(what a 4-byte header can announce), not {size}"
        )
    return size


class CommsProtocol(FrameReceiver):
    """
    One twcomms connection: frames, encodes and decodes messages, and hands
    decoded messages to its L{MessageReceiver}.

    @ivar receiver: where decoded messages go.
    @ivar codec: the L{Codec} for this connection's message data type.
    @ivar closeReason: why the connection closed or is closing, once known.
    @ivar messagesReceived: complete frames received (decoded or not).
    @ivar bytesReceived: payload bytes in those frames.
    @ivar messagesSent: frames sent.
    @ivar bytesSent: payload bytes in those frames.
    @ivar decodeErrors: frames that failed to decode.
    """

    closeReason: CloseReason | None = None
    _closing = False

    def __init__(
        self,
        receiver: MessageReceiver,
        messageDataType: str | Codec = "json",
        byteOrder: str = "little",
        maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        """
        @param receiver: where decoded messages go.
        @param messageDataType: C{"json"}, C{"string"}, C{"binary"} or a
            L{Codec}.
        @param byteOrder: C{"little"} (default) or C{"big"}.
        @param maxMessageSize: the largest payload sent or accepted, bytes.
        """
        self.receiver = receiver
        self.codec = get_codec(messageDataType)
        self._decode = self.codec.decode
        self._encode = self.codec.encode
        self.structFormat = struct_format(byteOrder)
        self.MAX_LENGTH = validate_max_message_size(maxMessageSize)
        self.messagesReceived = 0
        self.bytesReceived = 0
        self.messagesSent = 0
        self.bytesSent = 0
        self.decodeErrors = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} peer={_peer(self)} codec={self.codec.name}>"

    @property
    def peer(self) -> str:
        """
        The peer's address, printable (C{host:port}, or a UNIX path).
        """
        return _peer(self)

    def connectionMade(self) -> None:
        self.receiver.startReceivingMessages(self)

    def stringReceived(self, string: bytes) -> None:
        self.messagesReceived += 1
        self.bytesReceived += len(string)
        try:
            message = self._decode(string)
        except DecodeError as e:
            self.decodeErrors += 1
            self._log.info(
                "message from {peer} did not decode: {error}",
                peer=_peer(self),
                error=e,
            )
            self.receiver.messageDecodeFailed(e)
            return
        self.receiver.messageReceived(message)

    def lengthLimitExceeded(self, length: int) -> None:
        self._markClosing(CloseReason.OVERSIZE)
        super().lengthLimitExceeded(length)

    def sendMessage(self, message: Any) -> None:
        """
        Encode C{message} with this connection's codec and send it.

        @raise ConnectionClosedError: the connection is closed or closing.
        @raise EncodeError: the message cannot be encoded.
        @raise MessageTooLargeError: it is over the maximum message size.
        """
        if self._closing or self.transport is None:
            raise self._closedError()
        self.sendString(self._encode(message))

    def sendString(self, string: bytes) -> None:
        """
        Send one already-encoded payload.

        @raise ConnectionClosedError: the connection is closed or closing.
        @raise MessageTooLargeError: it is over the maximum message size.
        """
        if self._closing or self.transport is None:
            raise self._closedError()
        super().sendString(string)
        self.messagesSent += 1
        self.bytesSent += len(string)

    def close(self, reason: CloseReason = CloseReason.CLOSED) -> None:
        """
        Close the connection once what was sent has been written. Further
        sends raise L{ConnectionClosedError}. Closing twice does nothing.
        """
        if self._closing:
            return
        self._markClosing(reason)
        if self.transport is not None:
            self.transport.loseConnection()

    def abort(self, reason: CloseReason) -> None:
        """
        Close the connection now, discarding what is not yet written.
        """
        self._markClosing(reason)
        if self.transport is not None:
            self.transport.abortConnection()

    def _markClosing(self, reason: CloseReason) -> None:
        self._closing = True
        if self.closeReason is None:
            self.closeReason = reason

    def _closedError(self) -> ConnectionClosedError:
        return ConnectionClosedError(
            f"connection to {_peer(self)} is closed "
            f"({self.closeReason or 'not connected'}); nothing was sent"
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        if self.closeReason is None:
            self.closeReason = (
                CloseReason.PEER_CLOSED
                if reason.check(ConnectionDone)  # type: ignore[no-untyped-call]
                else CloseReason.ERROR
            )
        incomplete = self.incompleteFrameBytes
        if incomplete:
            self._log.warn(
                "connection from {peer} ended in the middle of a message: "
                "{incomplete} bytes of it discarded",
                peer=_peer(self),
                incomplete=incomplete,
            )
            self._header = b""
            self._missing = -1
            self._pieces = []
        self._stash = None
        self.receiver.stopReceivingMessages(self.closeReason, reason)
