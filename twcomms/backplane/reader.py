"""
L{StreamReader}: one node's reading of its hub's Redis stream -- where it
is (the last entry id read), what to do when its connection comes back
(read on from there; from the start of a Redis that restarted empty; from
the end, the first time), how many entries to ask for at once, and a way
to hold reading (C{pause}) and to wait until it has read up to a point.

Why a stream read from an offset, not a pub/sub subscription: Redis pushes
published messages at a subscriber whether or not it keeps up, and cuts it
off at C{client-output-buffer-limit pubsub} (32 MiB, or 8 MiB for 60 s),
losing everything pushed meanwhile; a reader asks for C{count} entries
when it is ready, and after any cut reads on from its offset. If Redis
does cut it off (a reply past C{client-output-buffer-limit normal}, when
an operator set one), the next connection asks for half as many.

Thread: the reactor thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from twcomms.backplane.resp import RedisProtocol

__all__ = ["StreamReader"]

_log = Logger()

#: Milliseconds an XREAD waits for an entry before it is asked again.
BLOCK_MS = 2000

#: Bytes one read should bring, about: fewer entries are asked for when
#: they are large (at 64 KiB each, 64), so a batch -- what is delivered
#: before pacing can look at this node's clients again -- stays small.
BATCH_BYTES = 4 * 1024 * 1024

#: Seconds after a cut-off before the count may grow again.
_REGROW_AFTER = 60.0


class StreamReader:
    """
    @ivar offsets: the last entry id read, per stream.
    @ivar count: entries asked for per XREAD (halved after a cut-off, up to
        C{max_count} again a minute later).
    """

    def __init__(
        self,
        streams: tuple[bytes, ...],
        deliver: Callable[[bytes], object],
        counters: dict[str, int],
        clock: Any,
        max_count: int = 1000,
        pace: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        """
        @param pace: called after each batch is delivered; the next read
            waits for the L{Deferred} it returns (this node's clients to
            catch up), so a node reads from Redis at the pace of its
            healthy clients, and its memory does not grow with the others'
            rate.
        """
        self.streams = streams
        self.offsets = dict.fromkeys(streams, b"0-0")
        self.epoch: bytes | None = None
        # The epoch this node first read, from which entry on; the later
        # epochs it read from their start.
        self.first_epoch: bytes | None = None
        self.first_offset = b"0-0"
        self.later_epochs: set[bytes] = set()
        self.max_count = self.count = max_count
        self._deliver = deliver
        self._counters = counters
        #: The reactor (seconds(), callLater()); set before the first read.
        self.clock = clock
        self._cutAt = -1e9
        self._proto: RedisProtocol | None = None
        self._reading = False
        self._entrySize = 256  # bytes, a running mean
        self._pacing = False
        self._pace = pace
        self._paused = False
        self._idle: list[Deferred[None]] = []
        self._syncs: list[tuple[dict[bytes, bytes], Deferred[None]]] = []
        self.client_id: int | None = None
        for name in ("resumes", "cutoffs", "restarts", "paced"):
            counters.setdefault(name, 0)

    def connected(self, proto: RedisProtocol, epoch: bytes, cut: bool) -> Deferred[Any]:
        """
        A connection to Redis, logged in, whose epoch is C{epoch}: place
        the offsets, and read. C{cut}: the previous connection was closed
        by a Redis that stayed up (it cut this reader off). Fires once the
        offsets are placed: nothing appended after that is missed.
        """
        self._proto = proto
        first = self.epoch is None
        previous, self.epoch = self.epoch, epoch
        placed: Deferred[Any] = succeed(None)
        if first:
            # A new node reads what is appended from now on.
            ends = [
                proto.execute("XREVRANGE", key, "+", "-", "COUNT", 1)
                for key in self.streams
            ]

            def at(replies: list[Any]) -> None:
                for key, last in zip(self.streams, replies, strict=True):
                    self.offsets[key] = last[0][0] if last else b"0-0"
                self.first_epoch = epoch
                self.first_offset = self.offsets[self.streams[0]]

            placed = gatherResults(ends, consumeErrors=True).addCallback(at)
        elif epoch != previous:
            self._counters["restarts"] += 1
            self.later_epochs.add(epoch)
            _log.warn(
                "backplane: Redis restarted empty (a new epoch): reading its "
                "stream from the start"
            )
            self.offsets = dict.fromkeys(self.streams, b"0-0")
        else:
            self._counters["resumes"] += 1
            if cut:
                self._counters["cutoffs"] += 1
                self.count = max(1, self.count // 2)
                self._cutAt = self.clock.seconds()
                _log.warn(
                    "backplane: Redis closed this node's reading connection "
                    "while it stayed up (an output buffer limit?); reading on "
                    "from where it was, {count} entries at a time",
                    count=self.count,
                )
        identify = proto.execute("CLIENT", "ID")

        def known(client_id: int) -> None:
            self.client_id = client_id

        identify.addCallbacks(known, lambda f: None)
        return placed.addCallback(lambda _: self._read(proto))

    # -- holding --------------------------------------------------------------

    def was_reading_at(self, origin: bytes) -> bool:
        """
        Whether this node was reading when Redis put an entry at
        C{origin} (C{epoch/entry id}).
        """
        epoch, _, entry_id = origin.partition(b"/")
        if epoch == self.first_epoch:
            try:
                return _id(entry_id) > _id(self.first_offset)
            except ValueError:
                return True
        return epoch in self.later_epochs

    def pause(self) -> Deferred[None]:
        """
        Read no more until L{resume}; fires once no read is in flight
        (L{blocked} says whom to C{CLIENT UNBLOCK} to end a waiting one).
        """
        self._paused = True
        if not self._reading:
            return succeed(None)
        idle: Deferred[None] = Deferred()
        self._idle.append(idle)
        return idle

    @property
    def blocked(self) -> int | None:
        """
        The Redis client id of a read in flight, if any.
        """
        return self.client_id if self._reading else None

    def resume(self) -> None:
        self._paused = False
        proto = self._proto
        if proto is not None and not self._reading and not self._pacing:
            self._read(proto)

    def reached(self, targets: dict[bytes, bytes]) -> Deferred[None]:
        """
        Fires once the offsets are at or past C{targets} (entry ids).
        """
        done: Deferred[None] = Deferred()
        self._syncs.append((targets, done))
        self._synced()
        return done

    def release(self) -> None:
        """
        The node stops: fire whatever waits.
        """
        syncs, self._syncs = self._syncs, []
        idle, self._idle = self._idle, []
        for _targets, waiting in syncs:
            waiting.callback(None)
        for waiting in idle:
            waiting.callback(None)

    def _synced(self) -> None:
        offsets = self.offsets
        waiting = []
        for targets, done in self._syncs:
            if all(_id(offsets[key]) >= _id(last) for key, last in targets.items()):
                done.callback(None)
            else:
                waiting.append((targets, done))
        self._syncs = waiting

    # -- reading --------------------------------------------------------------

    def _read(self, proto: RedisProtocol) -> None:
        if self._paused or not proto.connected or proto is not self._proto:
            idle, self._idle = self._idle, []
            for waiting in idle:
                waiting.callback(None)
            return
        self._reading = True
        offsets = self.offsets
        count = min(self.count, max(1, BATCH_BYTES // self._entrySize))
        d = proto.execute(
            "XREAD",
            "COUNT",
            count,
            "BLOCK",
            BLOCK_MS,
            "STREAMS",
            *self.streams,
            *(offsets[key] for key in self.streams),
        )
        d.addCallback(self._entries, proto)
        d.addErrback(self._failed, proto)

    def _entries(self, reply: list[Any] | None, proto: RedisProtocol) -> None:
        self._reading = False
        if reply:
            offsets = self.offsets
            deliver = self._deliver
            full = False
            size = read = 0
            for key, entries in reply:
                for entry_id, fields in entries:
                    offsets[key] = entry_id
                    if len(fields) == 2:
                        data = fields[1]
                        size += len(data)
                        deliver(data)
                    else:
                        self._counters["malformed"] += 1
                read += len(entries)
                full = full or len(entries) >= self.count
            if read:
                self._entrySize = max(1, (self._entrySize + size // read) // 2)
            if (
                full
                and self.count < self.max_count
                and self.clock.seconds() - self._cutAt > _REGROW_AFTER
            ):
                self.count = min(self.max_count, self.count * 2)
            if self._syncs:
                self._synced()
            if self._pace is not None:
                caught_up = self._pace()
                if not caught_up.called:
                    self._counters["paced"] += 1
                    self._pacing = True
                    caught_up.addBoth(self._caughtUp, proto)
                    return
        self._read(proto)

    def _caughtUp(self, result: object, proto: RedisProtocol) -> None:
        self._pacing = False
        self._read(proto)

    def _failed(self, failure: Any, proto: RedisProtocol) -> None:
        self._reading = False
        if not proto.connected:
            idle, self._idle = self._idle, []
            for waiting in idle:
                waiting.callback(None)
            return  # ClientService connects again; connected() reads on
        _log.failure("backplane: reading from Redis failed; again in 1 s", failure)
        self.clock.callLater(1, self._read, proto)


def _id(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)
