"""
Flow control between user threads and the reactor thread (private).

  - L{SendWindow}: bytes a connection has accepted from C{send()} and not
    yet handed to a socket that is keeping up. Over the high-water mark,
    C{send()} blocks until the window drains below the low-water mark (or
    its timeout passes, then it raises).
  - L{ReceiveWindow}: messages decoded and queued for the user's callbacks
    but not yet handled. Over the high-water mark (count or bytes), reading
    from that connection pauses; under the low-water mark it resumes. TCP
    then slows the sender; nothing is dropped.

Thread: each method says which thread calls it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from twcomms.errors import ConnectionClosedError, QueueFullError, SendTimeoutError
from twcomms.options import FlowControl

if TYPE_CHECKING:
    from twcomms.connection.protocol import CommsProtocol

__all__ = [
    "DrainTracker",
    "QueueFullError",
    "ReceiveWindow",
    "SendTimeoutError",
    "SendWindow",
]


class SendWindow:
    """
    Outbound bytes of one connection, with high/low water marks.

    @ivar pending: bytes accepted and not yet drained.
    """

    @classmethod
    def for_flow(cls, flow: FlowControl) -> SendWindow:
        """
        A window with C{flow}'s send marks and timeout.
        """
        return cls(flow.send_high_water, flow.send_low_water, flow.send_timeout)

    def __init__(self, high: int, low: int, timeout: float | None) -> None:
        if not 0 <= low <= high:
            raise ValueError(f"need 0 <= low water ({low}) <= high water ({high})")
        self.high = high
        self.low = low
        self.timeout = timeout
        self.pending = 0
        self._blocked = False
        self._closed: str | None = None
        # The common paths take the plain lock (a C-level context manager);
        # only waiting and waking go through the Condition built on it.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)

    def acquire(self, size: int, describe: Callable[[], str]) -> None:
        """
        Account for C{size} more bytes, first waiting while the window is
        over its high-water mark (until it drains to the low-water mark).
        Any thread but the reactor's.

        @param describe: names the peer in error messages.
        @raise SendTimeoutError: it did not drain within the timeout.
        @raise ConnectionClosedError: the connection closed while waiting.
        """
        with self._lock:
            if not self._blocked and self._closed is None:
                self.pending += size
                if self.pending > self.high:
                    self._blocked = True
                return
        with self._cond:
            if self._blocked:
                deadline = (
                    None if self.timeout is None else time.monotonic() + self.timeout
                )
                while self._blocked and self._closed is None:
                    remaining = (
                        None if deadline is None else deadline - time.monotonic()
                    )
                    if remaining is not None and remaining <= 0:
                        raise SendTimeoutError(
                            f"{describe()} is not reading: {self.pending} bytes "
                            f"are waiting to be sent (high-water mark "
                            f"{self.high}) and it did not catch up within "
                            f"{self.timeout} seconds; nothing was sent"
                        )
                    self._cond.wait(remaining)
            if self._closed is not None:
                raise ConnectionClosedError(
                    f"{describe()}: {self._closed}; nothing was sent"
                )
            self.pending += size
            if self.pending > self.high:
                self._blocked = True

    @property
    def blocked(self) -> bool:
        """
        Whether it is over its high-water mark and has not yet drained to
        its low-water mark (read without a lock: a hint, then
        L{wait_unblocked}).
        """
        return self._blocked

    def wait_unblocked(
        self, deadline: float | None, describe: Callable[[], str]
    ) -> bool:
        """
        Wait until it is not blocked (drained to its low-water mark);
        C{False} if the connection closed first. Any thread but the
        reactor's.

        @param deadline: a C{time.monotonic()} value, or L{None}: no limit.
        @raise SendTimeoutError: still blocked at C{deadline}.
        """
        with self._cond:
            while self._blocked and self._closed is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise SendTimeoutError(
                        f"{describe()} is not reading: {self.pending} bytes "
                        f"are waiting to be sent (high-water mark {self.high}) "
                        f"and it did not catch up within {self.timeout} "
                        f"seconds; nothing was sent"
                    )
                self._cond.wait(remaining)
            return self._closed is None

    def add(self, size: int) -> None:
        """
        Account for C{size} bytes without waiting (reactor thread, or a
        queue with its own bound). Any thread.
        """
        with self._lock:
            self.pending += size
            if self.pending > self.high:
                self._blocked = True

    def release(self, size: int) -> None:
        """
        C{size} bytes have drained. Any thread (the reactor's, usually).
        """
        with self._lock:
            self.pending = max(0, self.pending - size)
            if self._blocked and self.pending <= self.low:
                self._blocked = False
                self._cond.notify_all()

    def close(self, why: str) -> None:
        """
        The connection is gone: wake every waiting sender (they raise).
        """
        with self._cond:
            self._closed = why
            self.pending = 0
            self._blocked = False
            self._cond.notify_all()

    def reopen(self) -> None:
        """
        A new connection (after reconnecting) uses this window again.
        """
        with self._cond:
            self._closed = None


class ReceiveWindow:
    """
    Messages of one connection waiting for the user's callbacks, with
    high/low water marks by count and by bytes.

    Counters have a single writer each (the reactor thread counts what is
    queued, the worker thread what is handled), so no lock is needed.
    """

    def __init__(
        self,
        high_count: int,
        high_bytes: int,
        call_soon: Callable[[Callable[[], None]], None],
    ) -> None:
        self.high_count = high_count
        self.high_bytes = high_bytes
        self.low_count = high_count // 4
        self.low_bytes = high_bytes // 4
        self._call_soon = call_soon
        self.queued_count = 0
        self.queued_bytes = 0
        self.handled_count = 0
        self.handled_bytes = 0
        self.paused = False
        self._resume_requested = False
        self._pause: Callable[[], None] | None = None
        self._resume: Callable[[], None] | None = None
        self.pauses = 0

    @property
    def pending_count(self) -> int:
        return self.queued_count - self.handled_count

    @property
    def pending_bytes(self) -> int:
        return self.queued_bytes - self.handled_bytes

    def attach(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        """
        Pause and resume this connection's reading with these. Reactor
        thread.
        """
        self._pause, self._resume = pause, resume
        self.paused = False
        self._resume_requested = False

    def queued(self, size: int, count: int = 1) -> int:
        """
        C{count} messages of C{size} payload bytes in all were queued; pause
        reading if over the high-water mark. Reactor thread.

        @return: the cumulative byte count to hand to L{handled}.
        """
        self.queued_count += count
        self.queued_bytes += size
        if (
            not self.paused
            and (
                self.queued_count - self.handled_count > self.high_count
                or self.queued_bytes - self.handled_bytes > self.high_bytes
            )
            and self._pause is not None
        ):
            self.paused = True
            self.pauses += 1
            self._pause()
            # The worker may have handled everything between the check
            # above and the flag: then nobody would resume. Re-check now
            # that the flag is visible.
            if (
                self.queued_count - self.handled_count <= self.low_count
                and self.queued_bytes - self.handled_bytes <= self.low_bytes
            ):
                self._resume_now()
        return self.queued_bytes

    def handled(self, cumulative_bytes: int, count: int = 1) -> None:
        """
        C{count} messages were handled, up to C{cumulative_bytes} queued
        bytes. Worker thread.
        """
        self.handled_count += count
        self.handled_bytes = cumulative_bytes
        if (
            self.paused
            and not self._resume_requested
            and self.queued_count - self.handled_count <= self.low_count
            and self.queued_bytes - self.handled_bytes <= self.low_bytes
        ):
            self._resume_requested = True
            self._call_soon(self._resume_now)

    def _resume_now(self) -> None:
        # Reactor thread.
        self._resume_requested = False
        if self.paused:
            self.paused = False
            if self._resume is not None:
                self._resume()


class DrainTracker:
    """
    Writes one connection's payloads on the reactor thread and releases
    them from its L{SendWindow} once they are really on their way: at once
    if the transport is keeping up, else when its write buffer drains.

    Thread: the reactor thread only.
    """

    def __init__(self, window: SendWindow) -> None:
        self.window = window
        self._paused_bytes = 0
        self._sent_bytes = 0
        self._waiting = False

    def write(self, proto: CommsProtocol, payload: bytes) -> None:
        """
        Send C{payload} on C{proto} (exceptions propagate: nothing written).
        """
        proto.sendString(payload)
        self.track(proto, len(payload) + 4)

    def track(self, proto: CommsProtocol, size: int) -> None:
        """
        C{size} bytes were handed to C{proto} (by a send, or a broadcast):
        release them once they are on their way.
        """
        if proto.writePaused:
            self._paused_bytes += size
            if not self._waiting:
                self._waiting = True
                proto.whenDrained().addBoth(self._drained)
        else:
            # Released in one go by flushed(): one lock per batch.
            self._sent_bytes += size

    def flushed(self) -> None:
        """
        A batch of writes is done: release what went out.
        """
        size, self._sent_bytes = self._sent_bytes, 0
        if size:
            self.window.release(size)

    def write_many(self, proto: CommsProtocol, payloads: list[bytes]) -> None:
        """
        Send C{payloads} on C{proto} in one write (exceptions propagate:
        nothing written).
        """
        proto.sendStrings(payloads)
        self.track(proto, sum(len(p) for p in payloads) + 4 * len(payloads))

    def _drained(self, result: object) -> None:
        # Drained, or the connection closed (bytes in flight are then lost
        # with it, as the wire format has no acknowledgements).
        self._waiting = False
        size, self._paused_bytes = self._paused_bytes, 0
        self.window.release(size)
