"""
The queue of bytes waiting for one peer: L{OutboundQueue}, the base of
L{twcomms.connection.writer.FrameWriter}.

Registered with the transport as a streaming producer, it learns when the
transport's buffer is full (L{OutboundQueue.pauseProducing}) and when it
has drained (L{OutboundQueue.resumeProducing}). While it is full, bytes
wait here, not in the transport: a large payload goes a slice at a time,
so the peer's progress shows at least once per slice; the queue's size is
what a broadcaster paces itself by (L{OutboundQueue.whenBelow}); and a
queue that makes no progress for C{stallTimeout} seconds closes its
connection as a slow consumer.

Thread: the reactor thread only.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from twcomms.connection.interfaces import CloseReason
from twcomms.connection.timers import Timeout, default_reactor
from twcomms.errors import NotConnectedError, PayloadSourceError

__all__ = [
    "STREAM_ABOVE",
    "STREAM_SLICE",
    "OutboundQueue",
    "PayloadSource",
    "WriterOwner",
]

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


class PayloadSource:
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
class OutboundQueue:
    """
    Bytes waiting for one transport, and what is known of its peer's
    progress.

    @ivar transport: the transport.
    @ivar closed: no more writes are accepted (the connection is closing).
    @ivar writePaused: whether the transport's write buffer is full, or a
        large message is still being written in slices: the peer is not
        keeping up (see L{whenDrained}). A plain attribute, kept up to date
        here: a broadcast reads it for every client.
    @ivar stallTimeout: seconds the queue may go without draining a single
        byte before the connection is closed (reason C{slow consumer});
        L{None}: never. A peer that reads, however slowly, makes progress at
        least once per slice (1 MiB) it takes.
    """

    __slots__ = (
        "_belowWaiters",
        "_clock",
        "_closeWhenWritten",
        "_drainWaiters",
        "_owner",
        "_paused",
        "_queued",
        "_queuedWhilePaused",
        "_registered",
        "_stall",
        "_streaming",
        "closed",
        "stallTimeout",
        "transport",
        "writePaused",
    )

    def __init__(
        self,
        transport: Any,
        owner: WriterOwner,
        stallTimeout: float | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        self.transport = transport
        self._owner = owner
        self.closed = False
        self._paused = False
        self.writePaused = False
        # Bytes admitted while the transport was full, since it last
        # drained (what the outbound limit bounds).
        self._queuedWhilePaused = 0
        # Parts waiting for the transport (it is full, or a large payload is
        # being written in slices), and the bytes of them held in memory.
        self._streaming: collections.deque[Any] | None = None
        self._queued = 0
        # Closes the connection when that queue makes no progress for
        # stallTimeout seconds; made when first needed.
        self.stallTimeout = stallTimeout
        self._clock = clock
        self._stall: Timeout | None = None
        # whenBelow() waiters, (mark, Deferred); a list only while some wait.
        self._belowWaiters: list[tuple[int, Deferred[None]]] | None = None
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

    def _stream(self, parts: Iterable[Any]) -> None:
        """
        Queue C{parts} behind what is being streamed, and write what the
        transport will take.
        """
        if self._streaming is None:
            self._streaming = collections.deque()
            self.writePaused = True
        streaming = self._streaming
        queued = 0
        for part in parts:
            if type(part) is not PayloadSource:
                size = len(part)
                queued += size
                if size > STREAM_SLICE:
                    # Written a slice at a time: the peer's progress shows
                    # at least once per slice (see stallTimeout).
                    part = memoryview(part)
            streaming.append(part)
        self._queued += queued
        if self._paused:
            # Nothing can be written now; the stall timer runs from the
            # first byte that waits.
            if self.stallTimeout is not None and (
                self._stall is None or not self._stall.running
            ):
                self._stallTimer().start()
            return
        self._pump()

    def _stallTimer(self) -> Timeout:
        if self._stall is None:
            clock = self._clock or default_reactor()
            assert self.stallTimeout is not None
            self._stall = Timeout(self.stallTimeout, self._stalled, clock)
        return self._stall

    def _pump(self) -> None:
        """
        Write queued parts until the transport asks us to pause; called
        again when it drains.
        """
        streaming = self._streaming
        transport = self.transport
        before = self._queued
        progress = False
        while streaming and not self._paused:
            part = streaming[0]
            kind = type(part)
            progress = True
            if kind is memoryview:
                piece = part[:STREAM_SLICE]
                self._queued -= piece.nbytes
                transport.write(piece.tobytes())
                rest = part[STREAM_SLICE:]
                if rest.nbytes:
                    streaming[0] = rest
                else:
                    streaming.popleft()
            elif kind is PayloadSource:
                if not self._pumpSource(part):
                    return
                if not part.remaining:
                    streaming.popleft()
                    part.done.callback(None)
            else:
                # Small parts (a flood of small messages) go out together,
                # up to a slice: one write, as the transport would have made.
                streaming.popleft()
                size = len(part)
                if streaming and size < STREAM_SLICE and type(streaming[0]) is bytes:
                    batch = [part]
                    while (
                        streaming
                        and type(streaming[0]) is bytes
                        and size + len(streaming[0]) <= STREAM_SLICE
                    ):
                        nxt = streaming.popleft()
                        batch.append(nxt)
                        size += len(nxt)
                    part = b"".join(batch)
                self._queued -= size
                transport.write(part)
        if streaming is not self._streaming:
            return  # aborted meanwhile
        if not streaming:
            self._streaming = None
            self.writePaused = self._paused
            if self._stall is not None:
                self._stall.stop()
            if self._closeWhenWritten:
                self._closeWhenWritten = False
                self.unregister()
                transport.loseConnection()
        elif self.stallTimeout is not None:
            # Data waits: closed if it makes no progress for stallTimeout.
            stall = self._stallTimer()
            if progress and stall.running:
                stall.reset()
            else:
                stall.start()
        if self._belowWaiters and self._queued < before:
            self._wakeBelow()

    def _stalled(self) -> None:
        peer = self._owner.peer
        _log.warn(
            "closing connection to {peer}: slow consumer ({queued} bytes have "
            "waited {timeout} seconds without a byte of them being read)",
            peer=peer,
            queued=self._queued,
            timeout=self.stallTimeout,
        )
        self._owner.abort(CloseReason.SLOW_CONSUMER)

    @property
    def queued(self) -> int:
        """
        Bytes held here waiting for the transport: it is full (the peer is
        not keeping up), or a large payload is being written in slices.
        """
        return self._queued

    def whenBelow(self, mark: int) -> Deferred[None]:
        """
        A L{Deferred} that fires once no more than C{mark} bytes wait here
        (at once if no more do now); it fails with L{ConnectionClosedError}
        if the connection closes first. A broadcaster that paces itself
        waits on these (L{twcomms.server.CommsServerFactory.whenDrained}).
        """
        if self._queued <= mark:
            return succeed(None)
        if self.closed and self._streaming is None:
            return fail(self._owner.closedError())
        d: Deferred[None] = Deferred()
        if self._belowWaiters is None:
            self._belowWaiters = []
        self._belowWaiters.append((mark, d))
        return d

    def _wakeBelow(self) -> None:
        waiters = self._belowWaiters or []
        queued = self._queued
        due = [d for mark, d in waiters if queued <= mark]
        if due:
            rest = [(m, d) for m, d in waiters if queued > m]
            self._belowWaiters = rest or None
            for d in due:
                d.callback(None)

    def _pumpSource(self, source: PayloadSource) -> bool:
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

    def _sourceFailed(self, source: PayloadSource, error: PayloadSourceError) -> bool:
        # The header promised more: the frame cannot be completed. Abort,
        # so the receiver discards the partial message (a graceful close
        # would leave it waiting for the rest).
        source.done.errback(error)
        self._owner.abort(CloseReason.CLOSED)
        return False

    # -- closing ------------------------------------------------------------

    def discard(self) -> None:
        """
        The connection is aborted or lost: forget what was not written.
        Streamed sources fail; drain waiters fail when the connection is
        lost (L{connectionLost}).
        """
        self.closed = True
        streaming, self._streaming = self._streaming, None
        self.writePaused = self._paused
        self._queued = 0
        self._closeWhenWritten = False
        if self._stall is not None:
            self._stall.stop()
        for part in streaming or ():
            if type(part) is PayloadSource and not part.done.called:
                part.done.errback(self._owner.closedError())
        below, self._belowWaiters = self._belowWaiters, None
        for _, d in below or ():
            d.errback(self._owner.closedError())

    def connectionLost(self) -> None:
        """
        The connection is gone: fail every drain waiter.
        """
        self.discard()
        waiters, self._drainWaiters = self._drainWaiters, None
        for d in waiters or ():
            d.errback(self._owner.closedError())
