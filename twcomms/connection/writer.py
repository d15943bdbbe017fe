"""
The write path of one connection: L{FrameWriter}.

Every byte a connection sends goes through it, whoever sends: the
protocol's own C{sendMessage}, a server's broadcast batches
(L{FrameWriter.writeFrames}), the threaded API's send batches
(L{FrameWriter.sendStrings}), a file streamed by C{twcomms send --file}
(L{FrameWriter.streamPayload}). In one place it

  - frames payloads (header and payload in one write up to 16 KiB, as two
    buffers above, never copying a large payload to prepend 4 bytes);
  - enforces the outbound limit (bytes admitted while the transport asks
    us to pause) with the connection's slow-consumer policy;
  - runs C{beforeWrite} first, so a server's batched broadcasts keep their
    order with everything else sent to this peer;
  - and, through its base L{OutboundQueue}, keeps what waits for a peer
    that is not keeping up: slices, progress, stalls, drain waiting.

Thread: the reactor thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twcomms.connection.interfaces import CloseReason
from twcomms.connection.queue import (
    STREAM_ABOVE,
    STREAM_SLICE,
    OutboundQueue,
    PayloadSource,
    WriterOwner,
)
from twcomms.errors import SlowConsumerError
from twcomms.options import SlowConsumerPolicy
from twcomms.wire.extended import control_frame
from twcomms.wire.framing import JOIN_LIMIT, Frame, check_size, header_struct

__all__ = [
    "STREAM_ABOVE",
    "STREAM_SLICE",
    "TRANSPORT_SHARE",
    "FrameWriter",
    "WriterOwner",
]

#: Bytes a full transport still takes directly (see L{FrameWriter}); the
#: rest waits in the connection's queue. One slice: the peer's progress
#: then shows at least once per slice and a bit.
TRANSPORT_SHARE = STREAM_SLICE

_log = Logger()


class FrameWriter(OutboundQueue):
    """
    Writes frames to one transport (see the module docstring).

    @ivar beforeWrite: called before anything is written or the writer
        closes (a server's registry writes the broadcasts it batched this
        turn, so this peer's messages stay in order); L{None}: nothing.
    @ivar messagesSent: frames accepted for sending.
    @ivar bytesSent: payload bytes in those frames.
    @ivar outboundLimit: bytes that may be admitted while the transport
        asks us to pause; L{None}: no limit.
    @ivar policy: what happens past it (L{SlowConsumerPolicy}).
    """

    __slots__ = (
        "_format",
        "_pack",
        "beforeWrite",
        "bytesSent",
        "maxLength",
        "messagesSent",
        "outboundLimit",
        "policy",
    )

    def __init__(
        self,
        transport: Any,
        owner: WriterOwner,
        structFormat: str,
        maxLength: int,
        outboundLimit: int | None,
        policy: SlowConsumerPolicy,
        stallTimeout: float | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__(transport, owner, stallTimeout, clock)
        self._pack = header_struct(structFormat).pack  # shared per format
        self._format = structFormat
        self.maxLength = maxLength
        self.outboundLimit = outboundLimit
        self.policy = policy
        self.beforeWrite: Callable[[], None] | None = None
        self.messagesSent = 0
        self.bytesSent = 0

    # -- writing ------------------------------------------------------------

    def sendString(self, string: bytes) -> None:
        """
        Send one payload as one frame.

        @raise ConnectionClosedError: the connection is closed or closing.
        @raise MessageTooLargeError: it is over the maximum message size.
        @raise SlowConsumerError: the outbound limit would be exceeded.
        """
        length = len(string)
        if length > self.maxLength:
            check_size(length, self.maxLength)  # raises, with the message
        self._admit(length + 4)
        header = self._pack(length)
        # (_mustQueue, inlined: this is the per-message path.)
        if (
            self._streaming is not None
            or self._queuedWhilePaused > TRANSPORT_SHARE
            or length > STREAM_ABOVE
        ):
            self._stream((header, string))
        elif length <= JOIN_LIMIT:
            self.transport.write(header + string)
        else:
            self.transport.writeSequence((header, string))
        self.messagesSent += 1
        self.bytesSent += length

    def sendStrings(self, strings: list[bytes]) -> None:
        """
        Send several payloads, in order, in one write (a batch from another
        thread). All or nothing: a payload over the maximum size, a closed
        connection or the outbound limit raises before anything is written.
        """
        limit = self.maxLength
        pack = self._pack
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
        if self._mustQueue() or largest > STREAM_ABOVE:
            self._stream(parts)
        else:
            # One joined write: Twisted's writeSequence loops over the parts
            # twice in Python, and its doWrite joins them anyway.
            self.transport.write(b"".join(parts))
        self.messagesSent += len(strings)
        self.bytesSent += total

    def writeFrame(self, frame: Frame) -> None:
        """
        Write an already-built L{Frame} (a broadcast: built once, written to
        many connections); its size was checked when it was built.
        """
        self._admit(frame.size)
        parts = frame.parts
        if self._mustQueue() or frame.size > STREAM_ABOVE:
            self._stream(parts)
        elif len(parts) == 1:
            self.transport.write(parts[0])
        else:
            self.transport.writeSequence(parts)
        self.messagesSent += 1
        self.bytesSent += len(frame.payload)

    def writeControl(
        self, kind: int, body: bytes, request_id: int | None = None
    ) -> None:
        """
        Write one control frame of an extended connection (see
        L{twcomms.wire.extended}); it is not counted as a message.

        @raise MessageTooLargeError: C{body} is over the maximum message size.
        """
        if len(body) > self.maxLength:
            check_size(len(body), self.maxLength)  # raises, with the message
        parts = control_frame(kind, body, self._format, request_id)
        size = sum(len(p) for p in parts)
        self._admit(size)
        if self._mustQueue() or size > STREAM_ABOVE:
            self._stream(parts)
        elif len(parts) == 1:
            self.transport.write(parts[0])
        else:
            self.transport.writeSequence(parts)

    def writeFrames(self, data: bytes, count: int, payloadBytes: int) -> None:
        """
        Write C{count} whole frames already joined into C{data} (a batch of
        broadcasts), holding C{payloadBytes} of payload.
        """
        self._admit(len(data))
        if self._mustQueue():
            self._stream((data,))
        else:
            self.transport.write(data)
        self.messagesSent += count
        self.bytesSent += payloadBytes

    def streamPayload(
        self,
        size: int,
        read: Callable[[int], bytes],
        progress: Callable[[int, int], object] | None = None,
    ) -> Deferred[None]:
        """
        Send one payload of C{size} bytes read from C{read(n)} (a file's
        C{read}) as the socket drains, in 1 MiB slices: a payload of any
        size costs one slice of memory. Other sends queue behind it, in
        order.

        @param progress: called with C{(done, size)} after each slice.
        @return: fires once the last slice is handed to the transport;
            fails with L{PayloadSourceError} if C{read} returns less (or
            more) than C{size} in all -- the connection is then aborted so
            the peer discards the partial message -- or with
            L{ConnectionClosedError} if the connection closes first.
        @raise MessageTooLargeError: C{size} is over the maximum.
        """
        check_size(size, self.maxLength)
        self._admit(4)
        source = PayloadSource(size, read, progress)
        self._stream((self._pack(size), source))
        self.messagesSent += 1
        self.bytesSent += size
        return source.done

    def _mustQueue(self) -> bool:
        """
        Whether what was just admitted waits in the queue rather than going
        to the transport: behind what already waits, or once more than
        L{TRANSPORT_SHARE} bytes went to the transport since it filled (up
        to that, a full transport takes them as it always did: the fast
        path, and fewer wake-ups; beyond it, the queue keeps the transport's
        buffer small, so the peer's progress shows).
        """
        return self._streaming is not None or self._queuedWhilePaused > TRANSPORT_SHARE

    def _admit(self, size: int) -> None:
        """
        Check that C{size} more bytes may be written now; count them if the
        transport is paused. First, whatever must go before this write
        (L{beforeWrite}) is written.
        """
        if self.beforeWrite is not None:
            self.beforeWrite()
        if self.closed:
            raise self._owner.closedError()
        if self._paused:
            queued = self._queuedWhilePaused
            limit = self.outboundLimit
            if limit is not None and queued + size > limit:
                peer = self._owner.peer
                error = SlowConsumerError(peer, queued, size, limit)
                if self.policy is SlowConsumerPolicy.CLOSE:
                    _log.warn(
                        "closing connection to {peer}: slow consumer "
                        "({queued} bytes queued, outbound limit {limit})",
                        peer=peer,
                        queued=queued,
                        limit=limit,
                    )
                    self._owner.abort(CloseReason.SLOW_CONSUMER)
                raise error
            self._queuedWhilePaused = queued + size

    # -- closing ------------------------------------------------------------

    def closeWhenWritten(self) -> None:
        """
        No more writes; close the connection once everything accepted has
        been handed to the transport (slices still being streamed first).
        """
        if self.beforeWrite is not None and not self.closed:
            self.beforeWrite()
        self.closed = True
        if self._streaming is not None:
            self._closeWhenWritten = True
            return
        self.unregister()
        self.transport.loseConnection()
