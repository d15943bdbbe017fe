"""
The message protocol: framing (L{twcomms.wire.framing}) plus a codec
(L{twcomms.wire.codecs}), dispatching decoded messages to a L{MessageReceiver}.

The layers, as in Twisted's AMP::

    bytes --FrameReceiver--> payloads --Codec--> messages --> MessageReceiver

L{CommsProtocol} is the only class that knows all three. The receiver is the
application side: the server factory's per-client handle, the client
factory's connection, or your own object. It gets the protocol (a
L{MessageSender}) when the connection starts.

Thread: the reactor thread only.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    INegotiated,
    IReactorTime,
)
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from twcomms.errors import (
    ConnectionClosedError,
    DecodeError,
    NotConnectedError,
    SlowConsumerError,
)
from twcomms.wire.codecs import Codec, get_codec
from twcomms.wire.framing import (
    _JOIN_LIMIT,
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_FRAME_PAYLOAD,
    Frame,
    FrameReceiver,
    _peer,
    _struct,
    check_size,
    struct_format,
)

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_OUTBOUND_HEADROOM",
    "CloseReason",
    "CommsProtocol",
    "ConnectionOptions",
    "MessageReceiver",
    "MessageSender",
    "SlowConsumerPolicy",
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
    #: The TLS handshake did not complete within the handshake timeout.
    HANDSHAKE_TIMEOUT = "handshake timeout"
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
        gave C{connectionLost}. Also called, without a
        L{startReceivingMessages} before it, when a TLS connection fails its
        handshake.
        """


#: Payloads larger than this are written in slices as the socket drains.
STREAM_ABOVE = 4 * 1024 * 1024
_STREAM_SLICE = 1024 * 1024

#: The default outbound limit is the maximum message size plus this.
DEFAULT_OUTBOUND_HEADROOM = 1024 * 1024

#: Seconds a TLS connection may take to complete its handshake before it is
#: aborted (close reason C{handshake timeout}): a peer that opens a TLS
#: connection and says nothing is not a client yet, and would otherwise be
#: held, uncounted by C{max_clients}, for as long as it likes.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0


def cancel_call(call: IDelayedCall | None) -> None:
    """
    Cancel C{call} (a timer) if it is still pending; nothing if it is
    L{None}, has run, or was cancelled.
    """
    if call is not None and call.active():
        call.cancel()


def default_reactor() -> Any:
    """
    The global reactor, imported only when first needed (importing twcomms
    must not install a reactor: twistd and tests choose their own).
    """
    from twisted.internet import reactor

    return reactor


def validate_timeout(value: float | None, name: str) -> float | None:
    """
    Check an optional timeout in seconds: L{None} or a positive number.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None")
    if not value > 0:
        raise ValueError(f"{name} must be positive (seconds), or None; not {value}")
    return float(value)


def validate_outbound_limit(limit: int | None, max_message_size: int) -> int | None:
    """
    Check an outbound limit: L{None}, or an int of at least one whole frame
    of the maximum message size.
    """
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError("outbound_limit must be an int (bytes) or None")
    if limit < max_message_size + 4:
        raise ValueError(
            f"outbound_limit ({limit}) must be at least max_message_size + 4 "
            f"({max_message_size + 4}): one largest message must fit"
        )
    return limit


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


class SlowConsumerPolicy(str, enum.Enum):
    """
    What happens when a peer's outbound limit would be exceeded.
    """

    #: Abort the connection (close reason C{slow consumer}) and raise
    #: L{SlowConsumerError} for the message that did not fit. The default.
    CLOSE = "close"
    #: Keep the connection; raise L{SlowConsumerError} for each message that
    #: does not fit until the peer reads again.
    RAISE = "raise"

    def __str__(self) -> str:
        return self.value


class _WriteMonitor:
    """
    The streaming producer a L{CommsProtocol} registers with its transport,
    only to learn when the transport's write buffer is full (paused) and
    when it has drained (resumed).
    """

    __slots__ = ("_proto",)

    def __init__(self, proto: CommsProtocol) -> None:
        self._proto = proto

    def pauseProducing(self) -> None:
        self._proto._writePaused = True

    def resumeProducing(self) -> None:
        proto = self._proto
        proto._writePaused = False
        proto._queuedWhilePaused = 0
        if proto._streaming is not None:
            proto._pump()
            if proto._writePaused or proto._streaming is not None:
                return
        waiters = proto._drainWaiters
        if waiters:
            proto._drainWaiters = None
            for d in waiters:
                d.callback(None)

    def stopProducing(self) -> None:
        pass


@implementer(IHandshakeListener)
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
    @ivar outboundLimit: bytes that may be queued to the peer while its
        transport has asked us to pause; L{None} for no limit.
    @ivar slowConsumerPolicy: what happens when that limit would be exceeded.
    """

    closeReason: CloseReason | None = None
    _closing = False
    _started = False
    _monitor: _WriteMonitor | None = None
    # Parts waiting behind a large payload being written in slices.
    _streaming: collections.deque[bytes | memoryview] | None = None
    # Called before anything is written (and before closing): a server's
    # registry writes the broadcasts it batched this turn, to keep order.
    _beforeWrite: Callable[[], None] | None = None
    _closeWhenStreamed = False
    _writePaused = False
    _queuedWhilePaused = 0
    # whenDrained() waiters; a list only while someone waits.
    _drainWaiters: list[Deferred[None]] | None = None
    #: Seconds a TLS handshake may take (L{DEFAULT_HANDSHAKE_TIMEOUT});
    #: L{None}: no limit. Set by the factories from C{handshake_timeout}.
    handshakeTimeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT
    _handshakeCall: IDelayedCall | None = None

    def __init__(
        self,
        receiver: MessageReceiver,
        messageDataType: str | Codec = "json",
        byteOrder: str = "little",
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        idle_timeout: float | None = None,
        outbound_limit: int | None = None,
        slow_consumer_policy: SlowConsumerPolicy | str = SlowConsumerPolicy.CLOSE,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param receiver: where decoded messages go.
        @param messageDataType: C{"json"}, C{"string"}, C{"binary"} or a
            L{Codec}.
        @param byteOrder: C{"little"} (default) or C{"big"}.
        @param max_message_size: the largest payload sent or accepted, bytes.
        @param idle_timeout: close the connection (reason C{idle timeout})
            when the peer sends nothing for this many seconds; not counted
            while we have paused reading. L{None}: never.
        @param outbound_limit: see L{outboundLimit}; at least
            C{max_message_size}.
        @param slow_consumer_policy: see L{SlowConsumerPolicy}.
        @param clock: the clock for the idle timeout (default: the reactor).
        """
        self.receiver = receiver
        self._messageReceived = receiver.messageReceived
        self.codec = get_codec(messageDataType)
        self._decode = self.codec.decode
        self._encode = self.codec.encode
        self.structFormat = struct_format(byteOrder)
        self._packHeader = _struct(self.structFormat).pack  # shared per format
        self.MAX_LENGTH = validate_max_message_size(max_message_size)
        self.outboundLimit = validate_outbound_limit(outbound_limit, self.MAX_LENGTH)
        self.slowConsumerPolicy = SlowConsumerPolicy(slow_consumer_policy)
        self.idleTimeout = validate_timeout(idle_timeout, "idle_timeout")
        self._clock = clock
        self._idleCall: IDelayedCall | None = None
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

    @property
    def writePaused(self) -> bool:
        """
        Whether the transport's write buffer is full (or a large message is
        still being written in slices): the peer is not keeping up with what
        we send. See L{whenDrained}.
        """
        return self._writePaused or self._streaming is not None

    def whenDrained(self) -> Deferred[None]:
        """
        A L{Deferred} that fires when the transport's write buffer has
        drained (at once if it is not full). It fails with
        L{ConnectionClosedError} if the connection closes first.
        """
        if not self.writePaused:
            return succeed(None)
        if self._closing and self._streaming is None:
            return fail(self._closedError())
        d: Deferred[None] = Deferred()
        if self._drainWaiters is None:
            self._drainWaiters = []
        self._drainWaiters.append(d)
        return d

    # -- connection ---------------------------------------------------------

    def connectionMade(self) -> None:
        self._monitor = _WriteMonitor(self)
        self.transport.registerProducer(self._monitor, True)
        self._startIdleTimer()
        if not INegotiated.providedBy(self.transport):
            self._started = True
            self.receiver.startReceivingMessages(self)
        elif self.handshakeTimeout is not None:
            if self._clock is None:
                self._clock = default_reactor()
            self._handshakeCall = self._clock.callLater(
                self.handshakeTimeout, self._handshakeTimedOut
            )

    def _handshakeTimedOut(self) -> None:
        self._handshakeCall = None
        self._log.warn(
            "closing connection from {peer}: its TLS handshake did not "
            "complete within {timeout} seconds (handshake timeout)",
            peer=_peer(self),
            timeout=self.handshakeTimeout,
        )
        self.abort(CloseReason.HANDSHAKE_TIMEOUT)

    def _stopHandshakeTimer(self) -> None:
        cancel_call(self._handshakeCall)
        self._handshakeCall = None

    def handshakeCompleted(self) -> None:
        """
        Over TLS, the connection counts as made once the handshake is done:
        a peer whose certificate is refused never becomes a client.
        """
        self._stopHandshakeTimer()
        if not self._started and not self._closing:
            self._started = True
            self.receiver.startReceivingMessages(self)

    def _startIdleTimer(self) -> None:
        if self.idleTimeout is None or self._idleCall is not None:
            return
        if self._clock is None:
            self._clock = default_reactor()
        self._idleCall = self._clock.callLater(self.idleTimeout, self._idleTimedOut)

    def _stopIdleTimer(self) -> None:
        cancel_call(self._idleCall)
        self._idleCall = None

    def _idleTimedOut(self) -> None:
        self._idleCall = None
        self.timeoutConnection()

    def timeoutConnection(self) -> None:
        """
        The peer sent nothing for L{idleTimeout} seconds: abort the
        connection with close reason C{idle timeout}.
        """
        self._log.info(
            "closing connection from {peer}: nothing received for "
            "{timeout} seconds (idle timeout)",
            peer=_peer(self),
            timeout=self.idleTimeout,
        )
        self.abort(CloseReason.IDLE_TIMEOUT)

    # -- receiving ----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        idle = self._idleCall
        if idle is not None:
            idle.reset(self.idleTimeout)  # type: ignore[arg-type]
        super().dataReceived(data)

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
        self._messageReceived(message)

    def lengthLimitExceeded(self, length: int) -> None:
        """
        Abort the connection (close reason C{oversize}): the stream cannot be
        trusted any more, and a graceful close would wait for a peer that
        may never read what is queued to it.
        """
        self._logLengthLimit(length)
        self._unregisterWriteMonitor()
        self.abort(CloseReason.OVERSIZE)

    def pauseProducing(self) -> None:
        """
        Stop reading from the peer (and stop its idle timer: it is not idle,
        we are not listening).
        """
        self._stopIdleTimer()
        super().pauseProducing()

    def resumeProducing(self) -> None:
        if not self._closing:
            self._startIdleTimer()
        super().resumeProducing()

    # -- sending ------------------------------------------------------------

    def sendMessage(self, message: Any) -> None:
        """
        Encode C{message} with this connection's codec and send it.

        @raise ConnectionClosedError: the connection is closed or closing.
        @raise EncodeError: the message cannot be encoded.
        @raise MessageTooLargeError: it is over the maximum message size.
        @raise SlowConsumerError: the peer's outbound limit would be exceeded.
        """
        if self._closing or self.transport is None:
            raise self._closedError()
        self.sendString(self._encode(message))

    def sendString(self, string: bytes) -> None:
        """
        Send one already-encoded payload.

        @raise ConnectionClosedError: the connection is closed or closing.
        @raise MessageTooLargeError: it is over the maximum message size.
        @raise SlowConsumerError: the peer's outbound limit would be exceeded.
        """
        length = len(string)
        if length > self.MAX_LENGTH:
            check_size(length, self.MAX_LENGTH)  # raises, with the message
        self._admit(length + 4)
        # FrameReceiver.sendString, inlined: this is the per-message path.
        header = self._packHeader(length)
        if self._streaming is not None or length > STREAM_ABOVE:
            self._stream((header, string))
        elif length <= _JOIN_LIMIT:
            self.transport.write(header + string)
        else:
            self.transport.writeSequence((header, string))
        self.messagesSent += 1
        self.bytesSent += length

    def sendStrings(self, strings: list[bytes]) -> None:
        """
        Send several already-encoded payloads, in order, in one write (a
        batch from another thread). All or nothing: a payload over the
        maximum size, a closed connection or the outbound limit raises
        before anything is written.
        """
        limit = self.MAX_LENGTH
        pack = self._packHeader
        parts: list[bytes] = []
        total = 0
        largest = 0
        for string in strings:
            length = len(string)
            if length > limit:
                check_size(length, limit)  # raises, with the message
            parts.append(pack(length))
            parts.append(string)
            total += length
            largest = max(largest, length)
        self._admit(total + 4 * len(strings))
        if self._streaming is not None or largest > STREAM_ABOVE:
            self._stream(parts)
        else:
            # One joined write: Twisted's writeSequence loops over the parts
            # twice in Python, and its doWrite joins them anyway.
            self.transport.write(b"".join(parts))
        self.messagesSent += len(strings)
        self.bytesSent += total

    def writeFrame(self, frame: Frame) -> None:
        """
        Write an already-built L{Frame} (for broadcasts: built once, written
        to many connections). Its size was checked when it was built.

        @raise ConnectionClosedError: the connection is closed or closing.
        @raise SlowConsumerError: the peer's outbound limit would be exceeded.
        """
        self._admit(frame.size)
        if self._streaming is not None or frame.size > STREAM_ABOVE:
            self._stream(frame.parts)
        else:
            super().writeFrame(frame)
        self.messagesSent += 1
        self.bytesSent += len(frame.payload)

    def writeFrames(self, data: bytes, count: int, payloadBytes: int) -> None:
        """
        Write C{count} whole frames, already joined into C{data} (a batch of
        broadcasts), holding C{payloadBytes} of payload.

        @raise ConnectionClosedError: the connection is closed or closing.
        @raise SlowConsumerError: the peer's outbound limit would be exceeded.
        """
        self._admit(len(data))
        if self._streaming is not None:
            self._stream((data,))
        else:
            self.transport.write(data)
        self.messagesSent += count
        self.bytesSent += payloadBytes

    def _admit(self, size: int) -> None:
        """
        Check that C{size} more bytes may be written now; count them if the
        transport is paused. First, whatever must go before this write
        (L{_beforeWrite}) is written.
        """
        if self._beforeWrite is not None:
            self._beforeWrite()
        if self._closing or self.transport is None:
            raise self._closedError()
        if self._writePaused:
            queued = self._queuedWhilePaused
            limit = self.outboundLimit
            if limit is not None and queued + size > limit:
                error = SlowConsumerError(_peer(self), queued, size, limit)
                if self.slowConsumerPolicy is SlowConsumerPolicy.CLOSE:
                    self._log.warn(
                        "closing connection to {peer}: slow consumer "
                        "({queued} bytes queued, outbound limit {limit})",
                        peer=_peer(self),
                        queued=queued,
                        limit=limit,
                    )
                    self.abort(CloseReason.SLOW_CONSUMER)
                raise error
            self._queuedWhilePaused = queued + size

    def _stream(self, parts: Iterable[bytes]) -> None:
        """
        Queue C{parts} behind what is being streamed, and write what the
        transport will take. A payload over 4 MiB is written in 1 MiB slices
        as the socket drains: Twisted would otherwise copy it whole into one
        new buffer before sending (the largest cost of sending a big
        message), and the sender's memory would double.
        """
        if self._streaming is None:
            self._streaming = collections.deque()
        streaming = self._streaming
        for part in parts:
            streaming.append(memoryview(part) if len(part) > STREAM_ABOVE else part)
        self._pump()

    def _pump(self) -> None:
        """
        Write queued parts until the transport asks us to pause. Reactor
        thread; called again by the write monitor when the socket drains.
        """
        streaming = self._streaming
        transport = self.transport
        while streaming and not self._writePaused:
            part = streaming[0]
            if type(part) is memoryview:
                transport.write(part[:_STREAM_SLICE].tobytes())
                rest = part[_STREAM_SLICE:]
                if rest.nbytes:
                    streaming[0] = rest
                else:
                    streaming.popleft()
            else:
                transport.write(part)
                streaming.popleft()
        if not streaming:
            self._streaming = None
            if self._closeWhenStreamed:
                self._closeWhenStreamed = False
                self._unregisterWriteMonitor()
                transport.loseConnection()

    # -- closing ------------------------------------------------------------

    def close(self, reason: CloseReason = CloseReason.CLOSED) -> None:
        """
        Close the connection once what was sent has been written. Further
        sends raise L{ConnectionClosedError}. Closing twice does nothing.
        """
        if self._closing:
            return
        if self._beforeWrite is not None:
            self._beforeWrite()
        self._markClosing(reason)
        if self.transport is not None:
            if self._streaming is not None:
                # Finish writing what was sent first (the monitor keeps
                # pumping it); then close.
                self._closeWhenStreamed = True
                return
            self._unregisterWriteMonitor()
            self.transport.loseConnection()

    def _unregisterWriteMonitor(self) -> None:
        """
        A transport with a registered producer does not close on
        C{loseConnection} until the producer is unregistered (and, if the
        producer was paused when the buffer drains, it resumes the producer
        instead of closing). Unregister ours before closing.
        """
        if self._monitor is not None:
            self._monitor = None
            self.transport.unregisterProducer()

    def abort(self, reason: CloseReason) -> None:
        """
        Close the connection now, discarding what is not yet written.
        """
        self._markClosing(reason)
        self._streaming = None
        self._closeWhenStreamed = False
        if self.transport is not None:
            self.transport.abortConnection()

    def _markClosing(self, reason: CloseReason) -> None:
        self._closing = True
        if self.closeReason is None:
            self.closeReason = reason

    def _closedError(self) -> NotConnectedError:
        if self.transport is None:
            return NotConnectedError(
                "not connected yet; wait for the connection before sending"
            )
        return ConnectionClosedError(
            f"connection to {_peer(self)} is closed "
            f"({self.closeReason or 'closing'}); nothing was sent"
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self._streaming = None
        self._stopIdleTimer()
        self._stopHandshakeTimer()
        if self.closeReason is None:
            self.closeReason = (
                CloseReason.PEER_CLOSED
                if reason.check(ConnectionDone)
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
            self._dropPartialFrame()
        self._stash = None
        waiters, self._drainWaiters = self._drainWaiters, None
        for d in waiters or ():
            d.errback(self._closedError())
        self.receiver.stopReceivingMessages(self.closeReason, reason)


class ConnectionOptions:
    """
    The per-connection options a factory gives every L{CommsProtocol} it
    builds, validated once (shared by the server and client factories).

    @ivar codec: the L{Codec}.
    @ivar byteOrder: C{"little"} or C{"big"}.
    @ivar max_message_size: largest payload accepted or sent.
    @ivar idle_timeout: seconds of silence before closing, or L{None}.
    @ivar handshake_timeout: seconds a TLS handshake may take, or L{None}.
    @ivar outbound_limit: bytes that may queue to a peer that does not read.
    @ivar slow_consumer_policy: what happens past it.
    """

    codec: Codec
    byteOrder: str
    max_message_size: int
    idle_timeout: float | None
    handshake_timeout: float | None
    outbound_limit: int | None
    slow_consumer_policy: SlowConsumerPolicy

    def _setConnectionOptions(
        self,
        messageDataType: str | Codec,
        byteOrder: str,
        max_message_size: int,
        idle_timeout: float | None,
        outbound_limit: int | None,
        slow_consumer_policy: SlowConsumerPolicy | str,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        self.codec = get_codec(messageDataType)
        struct_format(byteOrder)  # validates
        self.byteOrder = byteOrder
        self.max_message_size = validate_max_message_size(max_message_size)
        self.idle_timeout = validate_timeout(idle_timeout, "idle_timeout")
        self.handshake_timeout = validate_timeout(
            handshake_timeout, "handshake_timeout"
        )
        self.outbound_limit = validate_outbound_limit(
            self.max_message_size + DEFAULT_OUTBOUND_HEADROOM
            if outbound_limit is None
            else outbound_limit,
            self.max_message_size,
        )
        self.slow_consumer_policy = SlowConsumerPolicy(slow_consumer_policy)

    def _buildCommsProtocol(
        self, receiver: MessageReceiver, clock: IReactorTime | None
    ) -> CommsProtocol:
        proto = CommsProtocol(
            receiver,
            self.codec,
            self.byteOrder,
            max_message_size=self.max_message_size,
            idle_timeout=self.idle_timeout,
            outbound_limit=self.outbound_limit,
            slow_consumer_policy=self.slow_consumer_policy,
            clock=clock,
        )
        proto.handshakeTimeout = self.handshake_timeout
        return proto
