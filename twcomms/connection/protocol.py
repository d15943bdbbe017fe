"""
The message protocol: framing (L{twcomms.wire.framing}) plus a codec
(L{twcomms.wire.codecs}), dispatching decoded messages to a
L{MessageReceiver}; its writes go through a L{FrameWriter}.

The layers, as in Twisted's AMP::

    bytes --FrameReceiver--> payloads --Codec--> messages --> MessageReceiver
    messages --Codec--> payloads --FrameWriter--> bytes

L{CommsProtocol} is the only class that knows all of them. The receiver is
the application side: the server factory's per-client handle, the client
factory's connection, or your own object. It gets the protocol (a
L{MessageSender}) when the connection starts.

Thread: the reactor thread only.

(Over 500 lines: one class, the connection -- its lifecycle, receiving,
reading paused by reason, sending, closing, and the extended protocol's
entry points; each is worked out in its own module: L{FrameWriter},
L{twcomms.connection.queue}, L{Channel}, L{twcomms.connection.negotiation},
L{twcomms.connection.timers}.)
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener, INegotiated, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from twcomms.connection.channel import Channel
from twcomms.connection.interfaces import CloseReason, MessageReceiver, PauseReason
from twcomms.connection.negotiation import Negotiation
from twcomms.connection.timers import Timeout, default_reactor
from twcomms.connection.writer import FrameWriter
from twcomms.errors import (
    ConnectionClosedError,
    DecodeError,
    NotConnectedError,
    NotNegotiatedError,
)
from twcomms.options import ConnectionOptions, SlowConsumerPolicy
from twcomms.wire.codecs import Codec
from twcomms.wire.extended import CONTROL_OVERHEAD, MAX_EXTENDED_MESSAGE
from twcomms.wire.framing import Frame, FrameReceiver, describe_peer

__all__ = ["CommsProtocol"]


@implementer(IHandshakeListener)
class CommsProtocol(FrameReceiver):
    """
    One twcomms connection: frames, encodes and decodes messages, and hands
    decoded messages to its L{MessageReceiver}.

    @ivar receiver: where decoded messages go.
    @ivar options: its L{ConnectionOptions}.
    @ivar codec: the L{Codec} for this connection's message data type.
    @ivar writer: the L{FrameWriter} every write goes through, once
        connected (L{None} before).
    @ivar closeReason: why the connection closed or is closing, once known.
    @ivar messagesReceived: complete frames received (decoded or not).
    @ivar bytesReceived: payload bytes in those frames.
    @ivar decodeErrors: frames that failed to decode.
    @ivar channel: the extended protocol's L{Channel} once agreed; L{None}
        on a plain connection (the original's frames, for life).
    @ivar identity: who the connection authenticated as, if it did.
    @ivar answer: the hello's answer a server sent, once extended (the
        last plain frame it writes: a transport that maps frames, as the
        WebSocket gateway does, switches mapping after it).
    @ivar negotiation: how the connection starts (a hello sent or
        recognised) while it does: until then frames go to it, not to the
        receiver (a server's first frame; a client's until the answer).
        L{None} once the connection is plain or extended.
    @ivar negotiationError: why a client's negotiation failed, if it did.
    """

    closeReason: CloseReason | None = None
    writer: FrameWriter | None = None
    channel: Channel | None = None
    identity: str | None = None
    answer: bytes | None = None
    negotiationError: Exception | None = None
    _closing = False
    _begun = False
    # The channel's silence timer (heartbeats), reset by every read.
    _silence: Timeout | None = None
    # Messages held while paused reading on for replies (see below).
    _held: list[Any] | None = None
    _heldFrom = 0
    _idle: Timeout | None = None
    _handshake: Timeout | None = None
    # Why reading is paused (PauseReason or a caller's own name); a set
    # only while paused.
    _pauses: set[str] | None = None

    def __init__(
        self,
        receiver: MessageReceiver,
        messageDataType: str | Codec = "json",
        byteOrder: str = "little",
        *,
        options: ConnectionOptions | None = None,
        clock: IReactorTime | None = None,
        negotiation: Negotiation | None = None,
        **keywords: Any,
    ) -> None:
        """
        @param receiver: where decoded messages go.
        @param messageDataType: C{"json"}, C{"string"}, C{"binary"} or a
            L{Codec} (when C{options} is not given).
        @param byteOrder: C{"little"} (default) or C{"big"} (likewise).
        @param options: the connection's options, made once by a factory
            for all its connections. Without it, they are made from
            C{messageDataType}, C{byteOrder} and C{keywords} (any field of
            L{ConnectionOptions}: C{max_message_size}, C{idle_timeout},
            C{outbound_limit}, ...).
        @param clock: the clock for timeouts (default: the reactor).
        @param negotiation: how the connection starts: a client's or a
            server's hello (L{twcomms.connection.negotiation}); L{None}:
            plain from the start.
        """
        if options is None:
            options = ConnectionOptions(
                messageDataType=messageDataType, byteOrder=byteOrder, **keywords
            )
        elif keywords:
            raise TypeError("CommsProtocol takes options= or keywords, not both")
        self.receiver = receiver
        self._messageReceived = receiver.messageReceived
        self.options = options
        self._decode = options.codec.decode
        self._encode = options.codec.encode
        # Set on the instance only where they differ from the class's
        # defaults: every attribute is 8 bytes per connection (10,000
        # connections are a design target).
        if options.structFormat != self.structFormat:
            self.structFormat = options.structFormat
        if options.max_message_size != self.MAX_LENGTH:
            self.MAX_LENGTH = options.max_message_size
        self._clock = clock
        self.negotiation = negotiation
        self.messagesReceived = 0
        self.bytesReceived = 0
        self.decodeErrors = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} peer={self.peer} codec={self.codec.name}>"

    @property
    def codec(self) -> Codec:
        """
        The L{Codec} of this connection's message data type.
        """
        return self.options.codec

    @property
    def clock(self) -> IReactorTime:
        """
        The clock of this connection's timers (the reactor, or a test's).
        """
        if self._clock is None:
            self._clock = default_reactor()
        return self._clock

    @property
    def peer(self) -> str:
        """
        The peer's address, printable (C{host:port}, or a UNIX path).
        """
        return describe_peer(self.transport)

    @property
    def closing(self) -> bool:
        """
        Whether the connection is closed or closing (no more sends).
        """
        return self._closing

    # Options, read back (the Twisted-level names of earlier versions).

    @property
    def idleTimeout(self) -> float | None:
        return self.options.idle_timeout

    @property
    def handshakeTimeout(self) -> float | None:
        return self.options.handshake_timeout

    @property
    def outboundLimit(self) -> int:
        return self.options.effective_outbound_limit

    @property
    def slowConsumerPolicy(self) -> SlowConsumerPolicy:
        return self.options.slow_consumer_policy

    # Counters of what was sent (kept by the writer).

    @property
    def messagesSent(self) -> int:
        return self.writer.messagesSent if self.writer is not None else 0

    @property
    def bytesSent(self) -> int:
        return self.writer.bytesSent if self.writer is not None else 0

    # -- connection ---------------------------------------------------------

    def connectionMade(self) -> None:
        options = self.options
        writer = self.writer = FrameWriter(
            self.transport,
            self,
            self.structFormat,
            self.MAX_LENGTH,
            options.effective_outbound_limit,
            options.slow_consumer_policy,
            options.stall_timeout,
            self.clock,
        )
        writer.register()
        if options.idle_timeout is not None:
            self._idle = Timeout(
                options.idle_timeout, self.timeoutConnection, self.clock
            )
            self._idle.start()
        if not INegotiated.providedBy(self.transport):
            self._begin()
        elif options.handshake_timeout is not None:
            self._handshake = Timeout(
                options.handshake_timeout, self._handshakeTimedOut, self.clock
            )
            self._handshake.start()

    def _handshakeTimedOut(self) -> None:
        self._log.warn(
            "closing connection from {peer}: its TLS handshake did not "
            "complete within {timeout} seconds (handshake timeout)",
            peer=self.peer,
            timeout=self.handshakeTimeout,
        )
        self.abort(CloseReason.HANDSHAKE_TIMEOUT)

    def handshakeCompleted(self) -> None:
        """
        Over TLS, the connection counts as made once the handshake is done:
        a peer whose certificate is refused never becomes a client.
        """
        if self._handshake is not None:
            self._handshake.stop()
        if not self._begun and not self._closing:
            self._begin()

    def _begin(self) -> None:
        self._begun = True
        if self.negotiation is None:
            self.startReceiving()
        else:
            self.negotiation.begin(self)

    def startReceiving(self) -> None:
        """
        Give the connection to the receiver (once negotiation, if any, is
        done).
        """
        self.receiver.startReceivingMessages(self)

    # -- the extended protocol ---------------------------------------------

    @property
    def extended(self) -> bool:
        """
        Whether the extended protocol was agreed on this connection.
        """
        return self.channel is not None

    def extend(
        self, features: dict[str, dict[str, Any]], answer: bytes | None = None
    ) -> None:
        """
        The extended protocol is agreed with C{features}: control frames are
        read and may be sent from now on. A server first writes C{answer},
        the last plain frame it sends that is not a message.
        """
        limit = min(self.MAX_LENGTH, MAX_EXTENDED_MESSAGE)
        self.MAX_LENGTH = limit
        if answer is not None:
            self.answer = answer
            self._writeUncounted(answer)
        writer = self._writer()
        writer.maxLength = limit
        self.controlLimit = limit + CONTROL_OVERHEAD
        assert self.negotiation is not None
        channel = Channel(self, features, self.negotiation.options)
        self.channel = channel
        channel.startHeartbeats(ping=answer is not None)
        self._silence = channel.silence

    def writeHello(self, hello: bytes) -> None:
        """
        Write a client's hello (the first frame).
        """
        self._writeUncounted(hello)

    def _writeUncounted(self, payload: bytes) -> None:
        # A hello or its answer: a plain frame but no message. The peer
        # does not count it received, so it is not counted sent either.
        writer = self._writer()
        writer.sendString(payload)
        writer.messagesSent -= 1
        writer.bytesSent -= len(payload)

    def controlReceived(self, body: bytes) -> None:
        assert self.channel is not None  # controlLimit is 0 until extend()
        self.channel.controlReceived(body)

    def writeControl(
        self, kind: int, body: bytes, request_id: int | None = None
    ) -> None:
        """
        Write one control frame (see L{FrameWriter.writeControl}).
        """
        self._writer().writeControl(kind, body, request_id)

    def request(self, message: Any, timeout: float | None = -1.0) -> Deferred[Any]:
        """
        Send C{message} as a request; a L{Deferred} firing with the peer's
        reply (decoded as a message), or failing with C{RemoteError} (the
        peer's handler raised), C{RequestTimeoutError} (after C{timeout}
        seconds; default the C{request_timeout} option, L{None}: no limit),
        or C{ConnectionClosedError}.

        @raise NotNegotiatedError: a plain connection (the peer is not an
            extended twcomms peer) or one that did not agree requests.
        @raise ConnectionClosedError: the connection is closed or closing.
        """
        channel = self.channel
        if channel is None:
            raise NotNegotiatedError(
                f"{self.peer} is a plain connection (no extensions agreed): "
                f"request() needs a twcomms peer on both ends with extensions "
                f"(Client(extensions=True)); send() works with any peer"
            )
        self._writer()  # raises if closed
        if timeout is not None and timeout < 0:
            timeout = channel.options.request_timeout
        return channel.request(message, timeout)

    def timeoutConnection(self) -> None:
        """
        The peer sent nothing for L{idleTimeout} seconds: abort the
        connection with close reason C{idle timeout}.
        """
        self._log.info(
            "closing connection from {peer}: nothing received for "
            "{timeout} seconds (idle timeout)",
            peer=self.peer,
            timeout=self.idleTimeout,
        )
        self.abort(CloseReason.IDLE_TIMEOUT)

    # -- receiving ----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        idle = self._idle
        if idle is not None:
            idle.reset()
        silence = self._silence
        if silence is not None:
            silence.reset()
        super().dataReceived(data)

    def stringReceived(self, string: bytes) -> None:
        negotiation = self.negotiation
        if negotiation is not None:
            negotiation.frameReceived(self, string)
            return
        self.messagesReceived += 1
        self.bytesReceived += len(string)
        try:
            message = self._decode(string)
        except DecodeError as e:
            self.decodeErrors += 1
            self._log.info(
                "message from {peer} did not decode: {error}",
                peer=self.peer,
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
        if self.writer is not None:
            self.writer.unregister()
        self.abort(CloseReason.OVERSIZE)

    # -- pausing reading, by reason -------------------------------------------

    @property
    def readPausedFor(self) -> frozenset[str]:
        """
        The reasons reading is paused for now (empty: reading).
        """
        return frozenset(self._pauses or ())

    def pauseReading(self, reason: str) -> None:
        """
        Stop reading from the peer for C{reason} (a L{PauseReason}, or a
        name of your own) until L{resumeReading} with the same reason.
        Reading resumes only when no reason holds. Pausing twice for one
        reason is the same as once. While paused, data already read is kept
        (and delivered on resuming), and the idle timer stops: the peer is
        not idle, we are not listening.
        """
        pauses = self._pauses
        if pauses is None:
            pauses = self._pauses = set()
        first = not pauses
        pauses.add(reason)
        if first:
            if self._idle is not None:
                self._idle.stop()
            if self._silence is not None:
                self._silence.stop()
            if self.channel is not None and self.channel.pending:
                self._readForReplies()
            else:
                FrameReceiver.pauseProducing(self)

    def resumeReading(self, reason: str) -> None:
        """
        C{reason} no longer holds: read again if no other reason does.
        Resuming for a reason that does not hold does nothing.
        """
        pauses = self._pauses
        if not pauses or reason not in pauses:
            return
        pauses.discard(reason)
        if pauses:
            return
        self._pauses = None
        if not self._closing:
            if self._idle is not None:
                self._idle.start()
            if self._silence is not None:
                self._silence.start()
        self._deliverHeld()
        if not self._pauses and self.paused:
            FrameReceiver.resumeProducing(self)

    # -- replies while paused ---------------------------------------------
    #
    # A request's reply must arrive even while reading is paused (a
    # threaded client's callbacks behind, one of them blocked in request()
    # for that very reply): so while requests wait, a paused connection
    # still reads, dispatches control frames, and holds the messages read
    # meanwhile, in order -- up to max_message_size bytes of them; past
    # that it stops reading for real (the requests then time out).

    def _readForReplies(self) -> None:
        if self._held is None:
            self._held = []
            self._heldFrom = self.bytesReceived
            self._messageReceived = self._holdMessage

    def _holdMessage(self, message: Any) -> None:
        assert self._held is not None
        self._held.append(message)
        over = self.bytesReceived - self._heldFrom > self.options.max_message_size
        if over and not self.paused:
            FrameReceiver.pauseProducing(self)

    def replay(self, payloads: list[bytes]) -> None:
        """
        Receive C{payloads} as if they had just been read (the messages a
        client held while negotiating): delivered in order, or held from
        the first one on if the receiver has paused reading meanwhile.
        """
        for payload in payloads:
            if self._closing:
                return
            if self._pauses:
                self._readForReplies()  # (holds; delivered on resuming)
            self.stringReceived(payload)

    def requestsPending(self) -> None:
        """
        The channel has a request waiting for its reply (there was none):
        if reading is paused, read on for the reply, holding messages.
        """
        if self._pauses and self.paused and not self._closing:
            self._readForReplies()
            FrameReceiver.resumeProducing(self)

    def requestsSettled(self) -> None:
        """
        No request waits for a reply any more: if reading is paused, stop
        reading for real.
        """
        if self._pauses and not self.paused and self.transport is not None:
            FrameReceiver.pauseProducing(self)

    def _deliverHeld(self) -> None:
        held = self._held
        if held is None:
            return
        self._held = None
        self._messageReceived = deliver = self.receiver.messageReceived
        for i, message in enumerate(held):
            deliver(message)
            if self._pauses:
                # Paused again: the rest stays held, ahead of what follows.
                rest = held[i + 1 :]
                if self._held is None:
                    self._held = rest
                    self._heldFrom = self.bytesReceived
                    self._messageReceived = self._holdMessage
                else:
                    self._held[:0] = rest
                return

    def pauseProducing(self) -> None:
        """
        C{IPushProducer}: L{pauseReading} for L{PauseReason.PRODUCER}.
        """
        self.pauseReading(PauseReason.PRODUCER)

    def resumeProducing(self) -> None:
        """
        C{IPushProducer}: L{resumeReading} for L{PauseReason.PRODUCER}.
        """
        self.resumeReading(PauseReason.PRODUCER)

    # -- sending (through the writer) ---------------------------------------

    def _writer(self) -> FrameWriter:
        writer = self.writer
        if writer is None or self._closing:
            raise self.closedError()
        return writer

    @property
    def writePaused(self) -> bool:
        """
        Whether the peer is not keeping up with what we send (see
        L{FrameWriter.writePaused}).
        """
        return self.writer is not None and self.writer.writePaused

    def whenDrained(self) -> Deferred[None]:
        """
        See L{FrameWriter.whenDrained}.
        """
        if self.writer is None:
            return fail(self.closedError())
        return self.writer.whenDrained()

    def sendMessage(self, message: Any) -> None:
        """
        Encode C{message} with this connection's codec and send it.

        @raise ConnectionClosedError: the connection is closed or closing.
        @raise EncodeError: the message cannot be encoded.
        @raise MessageTooLargeError: it is over the maximum message size.
        @raise SlowConsumerError: the peer's outbound limit would be exceeded.
        """
        self._writer().sendString(self._encode(message))

    def sendString(self, string: bytes) -> None:
        """
        Send one already-encoded payload (see L{FrameWriter.sendString}).
        """
        self._writer().sendString(string)

    def sendStrings(self, strings: list[bytes]) -> None:
        """
        Send several payloads in one write (see L{FrameWriter.sendStrings}).
        """
        self._writer().sendStrings(strings)

    def writeFrame(self, frame: Frame) -> None:
        """
        Write an already-built L{Frame} (see L{FrameWriter.writeFrame}).
        """
        self._writer().writeFrame(frame)

    # -- closing ------------------------------------------------------------

    def close(self, reason: CloseReason = CloseReason.CLOSED) -> None:
        """
        Close the connection once what was sent has been written. Further
        sends raise L{ConnectionClosedError}. Closing twice does nothing.
        """
        if self._closing:
            return
        writer = self.writer
        if writer is not None and writer.beforeWrite is not None:
            # Broadcasts batched before this close go first (a registry
            # skips connections already closing).
            writer.beforeWrite()
        self._markClosing(reason)
        if writer is not None:
            writer.closeWhenWritten()
        elif self.transport is not None:
            self.transport.loseConnection()

    def abort(self, reason: CloseReason) -> None:
        """
        Close the connection now, discarding what is not yet written.
        """
        self._markClosing(reason)
        if self.writer is not None:
            self.writer.discard()
        if self.transport is not None:
            self.transport.abortConnection()

    def _markClosing(self, reason: CloseReason) -> None:
        self._closing = True
        if self.closeReason is None:
            self.closeReason = reason

    def closedError(self) -> NotConnectedError:
        """
        The exception for a send on this connection when it is not open.
        """
        if self.transport is None:
            return NotConnectedError(
                "not connected yet; wait for the connection before sending"
            )
        return ConnectionClosedError(
            f"connection to {self.peer} is closed "
            f"({self.closeReason or 'closing'}); nothing was sent"
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        if self._idle is not None:
            self._idle.stop()
        if self._handshake is not None:
            self._handshake.stop()
        if self.negotiation is not None:
            self.negotiation.connectionLost()
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
                peer=self.peer,
                incomplete=incomplete,
            )
            self._dropPartialFrame()
        self._stash = None
        if self.writer is not None:
            self.writer.connectionLost()
        if self.channel is not None:
            self.channel.connectionLost(self.closeReason)
        self.receiver.stopReceivingMessages(self.closeReason, reason)
