"""
The write path of one connection: L{FrameWriter}.

Every byte a connection sends goes through it, whoever sends: the
protocol's own C{sendMessage}, a server's broadcast batches
(L{FrameWriter.writeFrames}), the threaded API's send batches
(L{FrameWriter.sendStrings}), a file streamed by C{twcomms send --file}
(L{FrameWriter.streamPayload}). In one place it

  - frames payloads (header and payload in one write up to 16 KiB, as two
    buffers above, never copying a large payload to prepend 4 bytes);
  - enforces the outbound limit (bytes queued while the transport asks us
    to pause) with the connection's slow-consumer policy;
  - writes payloads over 4 MiB in 1 MiB slices as the socket drains;
  - tells when the transport's buffer has drained (L{whenDrained});
  - runs C{beforeWrite} first, so a server's batched broadcasts keep their
    order with everything else sent to this peer.

Thread: the reactor thread only.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from twcomms.connection.interfaces import CloseReason
from twcomms.errors import NotConnectedError, PayloadSourceError, SlowConsumerError
from twcomms.options import SlowConsumerPolicy
from twcomms.wire.framing import JOIN_LIMIT, Frame, check_size, header_struct

__all__ = ["STREAM_ABOVE", "STREAM_SLICE", "FrameWriter", "WriterOwner"]

#: Payloads larger than this are written in slices as the socket drains:
#: Twisted would otherwise copy one whole into a new buffer before sending
#: (the largest cost of sending a big message), doubling the sender's memory.
STREAM_ABOVE = 4 * 1024 * 1024
#: The size of those slices.
STREAM_SLICE = 1024 * 1024

_log = Logger()


class WriterOwner(Protocol):
    """
    What a L{FrameWriter} needs of its connection.
    """

    @property
    def peer(self) -> str:
        """
        The peer, printable, for messages.
        """

    def abort(self, reason: CloseReason) -> None:
        """
        Close the connection now, discarding what is not written.
        """

    def closedError(self) -> NotConnectedError:
        """
        The exception for a write on a closed connection.
        """


class _Source:
    """
    A payload read from elsewhere as the socket drains
    (L{FrameWriter.streamPayload}).
    """

    __slots__ = ("done", "progress", "read", "remaining", "size")

    def __init__(
        self,
        size: int,
        read: Callable[[int], bytes],
        progress: Callable[[int, int], object] | None,
    ) -> None:
        self.size = size
        self.remaining = size
        self.read = read
        self.progress = progress
        self.done: Deferred[None] = Deferred()


@implementer(IPushProducer)
class FrameWriter:
    """
    Writes frames to one transport. Registered with it as a streaming
    producer only to learn when its write buffer is full (L{pauseProducing})
    and when it has drained (L{resumeProducing}).

    @ivar beforeWrite: called before anything is written or the writer
        closes (a server's registry writes the broadcasts it batched this
        turn, so this peer's messages stay in order); L{None}: nothing.
    @ivar closed: no more writes are accepted (the connection is closing).
    @ivar messagesSent: frames accepted for sending.
    @ivar bytesSent: payload bytes in those frames.
    @ivar outboundLimit: bytes that may queue while the transport asks us
        to pause; L{None}: no limit.
    @ivar policy: what happens past it (L{SlowConsumerPolicy}).
    @ivar writePaused: whether the transport's write buffer is full, or a
        large message is still being written in slices: the peer is not
        keeping up (see L{whenDrained}). A plain attribute, kept up to date
        here: a broadcast reads it for every client.
    """

    __slots__ = (
        "_closeWhenWritten",
        "_drainWaiters",
        "_owner",
        "_pack",
        "_paused",
        "_queuedWhilePaused",
        "_registered",
        "_streaming",
        "beforeWrite",
        "bytesSent",
        "closed",
        "maxLength",
        "messagesSent",
        "outboundLimit",
        "policy",
        "transport",
        "writePaused",
    )

    def __init__(
        self,
        transport: Any,
        owner: WriterOwner,
        structFormat: str,
        maxLength: int,
        outboundLimit: int | None,
        policy: SlowConsumerPolicy,
    ) -> None:
        self.transport = transport
        self._owner = owner
        self._pack = header_struct(structFormat).pack  # shared per format
        self.maxLength = maxLength
        self.outboundLimit = outboundLimit
        self.policy = policy
        self.beforeWrite: Callable[[], None] | None = None
        self.closed = False
        self.messagesSent = 0
        self.bytesSent = 0
        self._paused = False
        self.writePaused = False
        self._queuedWhilePaused = 0
        # Parts waiting behind a large payload written in slices.
        self._streaming: collections.deque[Any] | None = None
        self._closeWhenWritten = False
        # whenDrained() waiters; a list only while someone waits.
        self._drainWaiters: list[Deferred[None]] | None = None
        self._registered = False

    # -- the transport's producer interface -------------------------------

    def register(self) -> None:
        """
        Register with the transport, to hear when it is full or drained.
        """
        self.transport.registerProducer(self, True)
        self._registered = True

    def unregister(self) -> None:
        """
        Unregister from the transport. A transport with a registered
        producer does not close on C{loseConnection} until it is
        unregistered (and, if it was paused when the buffer drains, resumes
        it instead of closing).
        """
        if self._registered:
            self._registered = False
            self.transport.unregisterProducer()

    def pauseProducing(self) -> None:
        """
        The transport's write buffer is full.
        """
        self._paused = True
        self.writePaused = True

    def resumeProducing(self) -> None:
        """
        The transport's write buffer has drained.
        """
        self._paused = False
        self._queuedWhilePaused = 0
        if self._streaming is not None:
            self._pump()
            if self._paused or self._streaming is not None:
                return
        self.writePaused = False
        waiters = self._drainWaiters
        if waiters:
            self._drainWaiters = None
            for d in waiters:
                d.callback(None)

    def stopProducing(self) -> None:
        pass

    # -- state --------------------------------------------------------------

    def whenDrained(self) -> Deferred[None]:
        """
        A L{Deferred} that fires when the write buffer has drained (at once
        if it is not full). It fails with L{ConnectionClosedError} if the
        connection closes first.
        """
        if not self.writePaused:
            return succeed(None)
        if self.closed and self._streaming is None:
            return fail(self._owner.closedError())
        d: Deferred[None] = Deferred()
        if self._drainWaiters is None:
            self._drainWaiters = []
        self._drainWaiters.append(d)
        return d

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
        if self._streaming is not None or length > STREAM_ABOVE:
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
        Write an already-built L{Frame} (a broadcast: built once, written to
        many connections); its size was checked when it was built.
        """
        self._admit(frame.size)
        parts = frame.parts
        if self._streaming is not None or frame.size > STREAM_ABOVE:
            self._stream(parts)
        elif len(parts) == 1:
            self.transport.write(parts[0])
        else:
            self.transport.writeSequence(parts)
        self.messagesSent += 1
        self.bytesSent += len(frame.payload)

    def writeFrames(self, data: bytes, count: int, payloadBytes: int) -> None:
        """
        Write C{count} whole frames already joined into C{data} (a batch of
        broadcasts), holding C{payloadBytes} of payload.
        """
        self._admit(len(data))
        if self._streaming is not None:
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
        source = _Source(size, read, progress)
        self._stream((self._pack(size), source))
        self.messagesSent += 1
        self.bytesSent += size
        return source.done

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

    def _stream(self, parts: Iterable[Any]) -> None:
        """
        Queue C{parts} behind what is being streamed, and write what the
        transport will take.
        """
        if self._streaming is None:
            self._streaming = collections.deque()
            self.writePaused = True
        streaming = self._streaming
        for part in parts:
            if type(part) is not _Source and len(part) > STREAM_ABOVE:
                part = memoryview(part)
            streaming.append(part)
        self._pump()

    def _pump(self) -> None:
        """
        Write queued parts until the transport asks us to pause; called
        again when it drains.
        """
        streaming = self._streaming
        transport = self.transport
        while streaming and not self._paused:
            part = streaming[0]
            kind = type(part)
            if kind is memoryview:
                transport.write(part[:STREAM_SLICE].tobytes())
                rest = part[STREAM_SLICE:]
                if rest.nbytes:
                    streaming[0] = rest
                else:
                    streaming.popleft()
            elif kind is _Source:
                if not self._pumpSource(part):
                    return
                if not part.remaining:
                    streaming.popleft()
                    part.done.callback(None)
            else:
                transport.write(part)
                streaming.popleft()
        if not streaming and streaming is self._streaming:
            self._streaming = None
            self.writePaused = self._paused
            if self._closeWhenWritten:
                self._closeWhenWritten = False
                self.unregister()
                transport.loseConnection()

    def _pumpSource(self, source: _Source) -> bool:
        """
        Write the next slice of C{source}; C{False} if it failed (the
        connection is then aborted).
        """
        want = min(STREAM_SLICE, source.remaining)
        try:
            chunk = source.read(want)
        except Exception as e:
            return self._sourceFailed(
                source, PayloadSourceError(f"reading failed: {e}")
            )
        if not chunk or len(chunk) > want:
            done = source.size - source.remaining
            return self._sourceFailed(
                source,
                PayloadSourceError(
                    f"the source ended after {done} of {source.size} bytes "
                    f"announced; the connection was aborted and nothing was "
                    f"delivered"
                    if not chunk
                    else f"the source returned {len(chunk)} bytes where at most "
                    f"{want} were asked for"
                ),
            )
        self.transport.write(chunk)
        source.remaining -= len(chunk)
        if source.progress is not None:
            source.progress(source.size - source.remaining, source.size)
        return True

    def _sourceFailed(self, source: _Source, error: PayloadSourceError) -> bool:
        # The header promised more: the frame cannot be completed. Abort,
        # so the receiver discards the partial message (a graceful close
        # would leave it waiting for the rest).
        source.done.errback(error)
        self._owner.abort(CloseReason.CLOSED)
        return False

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

    def discard(self) -> None:
        """
        The connection is aborted or lost: forget what was not written.
        Streamed sources fail; drain waiters fail when the connection is
        lost (L{connectionLost}).
        """
        self.closed = True
        streaming, self._streaming = self._streaming, None
        self.writePaused = self._paused
        self._closeWhenWritten = False
        for part in streaming or ():
            if type(part) is _Source and not part.done.called:
                part.done.errback(self._owner.closedError())

    def connectionLost(self) -> None:
        """
        The connection is gone: fail every drain waiter.
        """
        self.discard()
        waiters, self._drainWaiters = self._drainWaiters, None
        for d in waiters or ():
            d.errback(self._owner.closedError())
