"""
Pacing a broadcaster to its healthy clients: L{when_drained}.

A broadcast never blocks the reactor; a producer that broadcasts in a loop
waits on L{when_drained} (through C{CommsServerFactory.whenDrained}) and
so goes at the pace of the clients that keep up. A client that has
stopped reading does not hold it for long: its connection closes when its
queue makes no progress for C{stall_timeout} seconds (reason
C{slow consumer}), and a closed client counts as drained.

Thread: the reactor thread only.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.defer import Deferred, DeferredList, succeed

from twcomms.connection import FrameWriter

__all__ = ["when_drained"]


def when_drained(writers: Iterable[FrameWriter], high: int, low: int) -> Deferred[None]:
    """
    A L{Deferred} that fires at once if no writer has more than C{high}
    bytes waiting, else once every one has no more than C{low} waiting or
    has closed.
    """
    writers = [w for w in writers if not w.closed]
    if all(w.queued <= high for w in writers):
        return succeed(None)
    waits = [w.whenBelow(low) for w in writers if w.queued > low]
    # A client dropped meanwhile is drained for this purpose.
    done: Deferred[None] = DeferredList(waits, consumeErrors=True).addCallback(
        lambda _: None
    )
    return done
