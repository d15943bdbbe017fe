"""
L{Outbox}: what a node has published and the broker has not confirmed yet,
and what it confirmed lately -- the two things a node needs to lose nothing
when the broker goes away or comes back empty.

  - C{pending}: entries not yet confirmed, in publishing order. The first
    C{sent} of them were handed to the broker (in flight); the rest wait
    for it (it is away, or has too many in flight: one that stopped
    answering). Both parts are bounded by C{max_count} messages and
    C{max_bytes} bytes of payload: an entry that cannot wait is refused
    (the caller counts it as C{overflowed}; the first entry is always kept,
    whatever its size), so memory stays bounded and a
    refused message takes no sequence number -- each loss is counted once,
    where it happens, and never shows up again as a gap at the receivers.
  - C{recent}: the last entries the broker confirmed, within the same
    bounds. A broker that restarted empty lost what its subscribers had not
    read yet; these are published again (marked as replayed) and receivers
    drop what they already had by its sequence number.

Pure bookkeeping (no I/O, no clock): L{twcomms.backplane.base.Backplane}
drives it.

Thread: the reactor thread only.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from twcomms.backplane.envelope import Envelope

__all__ = ["Entry", "Outbox"]


@dataclass(eq=False)
class Entry:
    """
    One published message: its channel, its envelope (with the whole
    payload, even a large one: it is stored again if sent again), and
    whether it goes out as a replay.
    """

    channel: str
    envelope: Envelope
    replay: bool = False
    #: Where the broker put it, once it confirmed it (see
    #: L{Envelope.origin}).
    origin: bytes = b""

    @property
    def size(self) -> int:
        return len(self.envelope.payload)


class Outbox:
    """
    @ivar pending: the entries not confirmed, oldest first; the first
        C{sent} of them are in flight.
    """

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.pending: collections.deque[Entry] = collections.deque()
        self.sent = 0
        self.sent_bytes = 0
        self.waiting_bytes = 0
        self.recent: collections.deque[Entry] = collections.deque()
        self.recent_bytes = 0

    @property
    def waiting(self) -> int:
        return len(self.pending) - self.sent

    def fits(self, size: int) -> bool:
        """
        Whether one more entry of C{size} bytes may wait. (One always may,
        when none does: the node holds that message anyway, and a message
        over C{max_bytes} could otherwise never cross.)
        """
        waiting = len(self.pending) - self.sent
        return not waiting or (
            waiting < self.max_count and self.waiting_bytes + size <= self.max_bytes
        )

    def keep(self, entry: Entry) -> None:
        self.pending.append(entry)
        self.waiting_bytes += entry.size

    def next(self) -> Entry | None:
        """
        The oldest waiting entry, if the broker may take it now: what is in
        flight (sent, not confirmed: a broker that stopped answering) is
        held within the same bounds.
        """
        if self.sent == len(self.pending):
            return None
        entry = self.pending[self.sent]
        if self.sent and (
            self.sent >= self.max_count or self.sent_bytes + entry.size > self.max_bytes
        ):
            return None
        return entry

    def sending(self, entry: Entry) -> None:
        """
        C{entry} (L{next}'s) was handed to the broker.
        """
        self.sent += 1
        self.sent_bytes += entry.size
        self.waiting_bytes -= entry.size

    def confirm(self, origin: bytes = b"") -> None:
        """
        The broker confirmed the oldest entry sent (and put it at
        C{origin}): it moves to C{recent}.
        (A confirmation with nothing sent -- a broker that answered twice
        -- is ignored.)
        """
        if not self.sent:
            return
        self.sent -= 1
        entry = self.pending.popleft()
        self.sent_bytes -= entry.size
        if not entry.replay:
            entry.origin = origin
        entry.replay = False
        recent = self.recent
        recent.append(entry)
        self.recent_bytes += entry.size
        while len(recent) > self.max_count or self.recent_bytes > self.max_bytes:
            self.recent_bytes -= recent.popleft().size

    def lost(self) -> int:
        """
        The connection to the broker was lost: whatever was sent and not
        confirmed may or may not have arrived, so it waits to be sent again
        (a receiver drops a repeat by its sequence number). How many.
        """
        sent, self.sent = self.sent, 0
        self.waiting_bytes += self.sent_bytes
        self.sent_bytes = 0
        return sent

    def replay(self) -> int:
        """
        The broker restarted empty: put the recently confirmed entries back
        in front of the waiting ones (none is in flight: L{lost} came
        first), marked as replays. How many.
        """
        recent = self.recent
        for entry in recent:
            entry.replay = True
        count = len(recent)
        self.pending.extendleft(reversed(recent))
        self.waiting_bytes += self.recent_bytes
        self.recent = collections.deque()
        self.recent_bytes = 0
        return count
