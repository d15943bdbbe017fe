"""
L{Backplane}: a client registry that spans nodes (processes, machines)
through a message broker, as python-socketio's C{PubSubManager} does: this
base class knows the envelopes, the order of delivery and the local
clients; a subclass per broker (L{twcomms.backplane.redis.RedisBackplane})
moves the bytes.

A broadcast is delivered to this node's clients at once (as by
L{LocalClientRegistry}) and published; every other node delivers it to its
own. A node drops its own envelopes when they come back. Envelopes are
delivered in the order they arrive, which is each publisher's order; a
large payload travels stored under a key, and the envelopes after it wait
until it has been fetched.

Nothing is lost without a count: what the broker has not confirmed is
kept in an L{Outbox} (bounded) through an outage and sent again after it
-- with what it confirmed lately, when it comes back empty -- and each
receiver checks every publisher's sequence numbers, dropping repeats and
counting holes. See C{docs/scaling.md}.

Thread: the reactor thread only.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Collection
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from twcomms.backplane.envelope import Envelope, Kind, decode, encode
from twcomms.backplane.outbox import Entry, Outbox
from twcomms.errors import ClientGoneError
from twcomms.options import ClusterOptions
from twcomms.server import ClientHandle, LocalClientRegistry
from twcomms.wire.format import LITTLE_ENDIAN, Frame

__all__ = ["LARGE_ABOVE", "Backplane"]

_log = Logger()

#: Payloads over this many bytes are stored under a key and announced,
#: not published: Redis disconnects a subscriber whose output buffer
#: passes 8 MiB for 60 s or 32 MiB at once (client-output-buffer-limit
#: pubsub), so a large message on the channel could cut every node off.
LARGE_ABOVE = 1024 * 1024

_DEFAULTS = ClusterOptions()


class Backplane(LocalClientRegistry):
    """
    The clients of this node, and the way to every other node's.

    @ivar hub: the name nodes that act as one share.
    @ivar node: this node's id (random, 32 hex digits).
    @ivar counters: what crossed, and what was lost, by cause. Published:
        C{published} (kept and sent, or to be sent), C{overflowed} (not
        kept: the outage buffer was full), C{refused} (the broker answered
        an error), C{replayed} (sent again after the broker restarted
        empty), C{outages} (times the broker was lost). Received:
        C{received}, C{own} (own envelopes dropped), C{malformed},
        C{expired} (a large payload gone before it was fetched),
        C{unroutable} (a direct message whose client is on no node),
        C{gaps} and C{missed} (holes in a publisher's sequence, and the
        messages in them: lost by the broker), C{duplicates} (heard twice,
        dropped: expected after an outage, when what may not have arrived
        is sent again), C{recovered} (replayed messages this node had
        missed, delivered), C{skipped} (replayed messages from before this
        node read the broker, not delivered).
    """

    def __init__(
        self,
        hub: str = "twcomms",
        *,
        large_above: int = LARGE_ABOVE,
        outage_max_count: int = _DEFAULTS.outage_max_count,
        outage_max_bytes: int = _DEFAULTS.outage_max_bytes,
    ) -> None:
        super().__init__()
        self.hub = hub
        self._nodeBytes = os.urandom(16)
        self.node = self._nodeBytes.hex()
        self.large_above = large_above
        # Stored payloads published (their keys), and each channel's
        # sequence; the last sequence number heard per publisher.
        self._seq = 0
        self._seqs: dict[str, int] = {}
        self._heard: dict[str, int] = {}
        # What was published and not confirmed yet, and what was lately.
        self._outbox = Outbox(outage_max_count, outage_max_bytes)
        self._linked = False
        self._downSince: float | None = None
        self._overflowing = False
        # Envelopes received, in order; a stored payload's entry waits for
        # its fetch (its Deferred) before it and those after it go out.
        self._inbound: collections.deque[list[Any]] = collections.deque()
        self._structFormat = LITTLE_ENDIAN
        self.counters = dict.fromkeys(
            (
                "published",
                "overflowed",
                "refused",
                "replayed",
                "outages",
                "received",
                "own",
                "malformed",
                "expired",
                "unroutable",
                "gaps",
                "missed",
                "duplicates",
                "recovered",
                "skipped",
            ),
            0,
        )

    # -- what a broker subclass provides ---------------------------------

    def publish(self, channel: str, data: bytes) -> bool:
        """
        Publish C{data} on C{channel} (C{"all"}: every node reads it), and
        call L{confirmed} once the broker has it (in publishing order).
        C{False}: not connected, nothing sent (it is kept, and sent again
        after L{link_up}).
        """
        raise NotImplementedError

    def store(self, name: str, data: bytes) -> bytes:
        """
        Keep C{data} for a while (long enough for every node to fetch it),
        before the envelope announcing it is published; the reference to
        announce, for L{fetch}.
        """
        raise NotImplementedError

    def fetch(self, reference: bytes) -> Deferred[bytes | None]:
        """
        What L{store} kept under C{reference}; L{None} if it is gone.
        """
        raise NotImplementedError

    def owner(self, client_id: str) -> Deferred[str | None]:
        """
        The node (alive) that holds C{client_id}, or L{None}.
        """
        raise NotImplementedError

    def was_reading_at(self, origin: bytes) -> bool:
        """
        Whether this node was reading the broker when it took the message
        at C{origin}: a replayed message from a publisher this node never
        heard is delivered only then (else it is from before this node
        joined). By default, yes: better a message from a little before a
        node joined than one lost without a trace.
        """
        return True

    # -- what a broker subclass calls ----------------------------------------

    def confirmed(self, error: Exception | None = None, origin: bytes = b"") -> None:
        """
        The broker has the oldest message published and not yet confirmed,
        at C{origin} (see L{was_reading_at}) -- or, with C{error}, refused
        it: counted, logged, not sent again.
        """
        if error is not None:
            self.counters["refused"] += 1
            _log.warn("backplane: the broker refused a message: {e}", e=error)
        outbox = self._outbox
        outbox.confirm(origin)
        if outbox.sent < len(outbox.pending) and self._linked:
            self._sendWaiting()

    def link_lost(self, reason: str) -> None:
        """
        The connection the node publishes on is gone: what was sent and
        not confirmed is sent again after L{link_up}; until then, what is
        published is kept, within the outage bounds. One log line.
        """
        if not self._linked:
            return
        self._linked = False
        self._outbox.lost()
        self._downSince = time.monotonic()
        self.counters["outages"] += 1
        outbox = self._outbox
        _log.warn(
            "backplane: lost the broker ({reason}); this node serves its own "
            "clients and keeps up to {count} messages ({size} bytes) for the "
            "other nodes until it is back",
            reason=reason,
            count=outbox.max_count,
            size=outbox.max_bytes,
        )

    def link_up(self, restarted_empty: bool = False) -> None:
        """
        The node can publish (again): what it kept goes out, in order --
        after, if the broker C{restarted_empty}, what it had lately
        published (the broker lost what its subscribers had not read yet).
        One log line, when this ends an outage.
        """
        outbox = self._outbox
        replayed = outbox.replay() if restarted_empty else 0
        self.counters["replayed"] += replayed
        self._linked = True
        waiting = outbox.waiting
        self._sendWaiting()
        if self._downSince is not None:
            _log.info(
                "backplane: the broker is back after {seconds:.1f} s{empty}; "
                "{sent} kept messages sent ({replayed} of them sent again)"
                "{overflow}",
                seconds=time.monotonic() - self._downSince,
                empty=" (restarted empty)" if restarted_empty else "",
                sent=waiting,
                replayed=replayed,
                overflow=(
                    f"; {self.counters['overflowed']} overflowed in all"
                    if self._overflowing
                    else ""
                ),
            )
        self._downSince = None
        self._overflowing = False

    # -- registry --------------------------------------------------------

    def add(self, client: ClientHandle) -> None:
        super().add(client)
        if client.protocol is not None:
            self._structFormat = client.protocol.structFormat

    def broadcast(
        self, frame: Frame, exclude: Collection[str] = (), room: str | None = None
    ) -> int:
        count = super().broadcast(frame, exclude, room)
        self._send(
            "all",
            Kind.BROADCAST,
            frame.payload,
            room=room,
            exclude=frozenset(exclude),
        )
        return count

    def send_to(self, client_id: str, frame: Frame) -> Deferred[None]:
        """
        Send C{frame} to the client with this id, on whichever node holds
        it: a L{Deferred} that fires once it is on its way, or fails with
        L{ClientGoneError} when no node holds that client.
        """
        local = self.get(client_id)
        if local is not None:
            try:
                local.write_frame(frame)
            except Exception:
                return fail()
            return succeed(None)

        def route(node: str | None) -> None:
            if node is None or node == self.node:
                self.counters["unroutable"] += 1
                raise ClientGoneError(client_id)
            self._send(
                "all", Kind.DIRECT, frame.payload, target=client_id, to_node=node
            )

        return self.owner(client_id).addCallback(route)

    def _send(
        self,
        channel: str,
        kind: Kind,
        payload: bytes,
        *,
        room: str | None = None,
        exclude: frozenset[str] = frozenset(),
        target: str = "",
        to_node: str = "",
    ) -> None:
        outbox = self._outbox
        if not outbox.fits(len(payload)):
            # Refused before it takes a sequence number: counted here, once,
            # and no receiver sees a gap for it.
            self.counters["overflowed"] += 1
            if not self._overflowing:
                self._overflowing = True
                _log.warn(
                    "backplane: {count} messages ({size} bytes) wait for the "
                    "broker, the outage bound; what is published from now "
                    "until it is back reaches this node's clients only "
                    "(counted as overflowed)",
                    count=outbox.waiting,
                    size=outbox.waiting_bytes,
                )
            return
        # One sequence per channel: every node hears all of a channel, so
        # it is gapless to each.
        seq = self._seqs[channel] = self._seqs.get(channel, 0) + 1
        entry = Entry(
            channel,
            Envelope(kind, self.node, seq, payload, room, exclude, target, to_node),
        )
        outbox.keep(entry)
        self.counters["published"] += 1
        if self._linked and outbox.sent == len(outbox.pending) - 1:
            self._sendWaiting()

    def _sendWaiting(self) -> None:
        """
        Send what waits, in order, as far as the broker may take it now.
        """
        outbox = self._outbox
        entry = outbox.next()
        while entry is not None and self._transmit(entry):
            outbox.sending(entry)
            entry = outbox.next()
        # (A broker subclass confirms later, never from within publish().)

    def _transmit(self, entry: Entry) -> bool:
        envelope = entry.envelope
        if entry.replay:
            envelope = replace(envelope, replayed=True, origin=entry.origin)
        if len(envelope.payload) > self.large_above:
            self._seq += 1
            reference = self.store(f"blob:{self.node}:{self._seq}", envelope.payload)
            envelope = replace(envelope, payload=reference, stored=True)
        # False: not sent, it waits; the broker subclass calls link_lost().
        return self.publish(entry.channel, encode(envelope))

    # -- receiving ---------------------------------------------------------

    def received(self, data: bytes) -> None:
        """
        An envelope arrived from the broker.
        """
        if data[2:18] == self._nodeBytes:
            # Our own, back from the broker: dropped before decoding it
            # (measured: decoding was 6% of a publishing node's time).
            self.counters["own"] += 1
            return
        try:
            envelope = decode(data)
        except ValueError as e:
            self.counters["malformed"] += 1
            _log.warn(
                "skipped a malformed entry on the backplane ({error}); another "
                "program on the channel?",
                error=e,
            )
            return
        if not self._inSequence(envelope):
            return
        self.counters["received"] += 1
        entry: list[Any] = [envelope, None]
        if envelope.stored:
            fetching = self.fetch(envelope.payload)
            entry[1] = fetching
            key = envelope.payload.decode("ascii", "replace")
            fetching.addBoth(self._fetched, entry, key)
        self._inbound.append(entry)
        self._drain()

    def _inSequence(self, envelope: Envelope) -> bool:
        """
        Check C{envelope}'s sequence number against the last one heard from
        its publisher on its channel: a gap is counted (C{gaps}, and the
        C{missed} messages) and logged -- a loss is never silent -- and an
        envelope heard before is dropped (C{duplicates}). The first one
        heard from a publisher starts its sequence.
        """
        channel = envelope.node
        last = self._heard.get(channel)
        seq = envelope.seq
        if last is None:
            if envelope.replayed and not self.was_reading_at(envelope.origin):
                self.counters["skipped"] += 1  # from before this node joined
                return False
        else:
            if seq <= last:
                self.counters["duplicates"] += 1
                return False
            if seq > last + 1:
                self.counters["gaps"] += 1
                self.counters["missed"] += seq - last - 1
                _log.warn(
                    "backplane: {missed} messages from node {node} never "
                    "arrived (its sequence went from {last} to {seq}): the "
                    "broker lost them (it restarted, or trimmed its history "
                    "before this node read them)",
                    missed=seq - last - 1,
                    node=envelope.node,
                    last=last,
                    seq=seq,
                )
        if envelope.replayed:
            self.counters["recovered"] += 1
        self._heard[channel] = seq
        return True

    def _fetched(self, payload: Any, entry: list[Any], key: str) -> None:
        if not isinstance(payload, bytes):
            self.counters["expired"] += 1
            _log.warn(
                "a large message announced on the backplane ({key}) was gone "
                "before this node fetched it; not delivered",
                key=key,
            )
            payload = None
        entry[0] = (entry[0], payload)
        entry[1] = None
        self._drain()

    def _drain(self) -> None:
        inbound = self._inbound
        while inbound and inbound[0][1] is None:
            item = inbound.popleft()[0]
            if isinstance(item, tuple):
                envelope, payload = item
                if payload is None:
                    continue
            else:
                envelope, payload = item, item.payload
            self._deliver(envelope, payload)

    def _deliver(self, envelope: Envelope, payload: bytes) -> None:
        frame = Frame(payload, self._structFormat)
        if envelope.kind == Kind.DIRECT:
            if envelope.to_node != self.node:
                return  # for a client of another node
            handle = self.get(envelope.target)
            if handle is None:
                self.counters["unroutable"] += 1
                return
            try:
                handle.write_frame(frame)
            except ConnectionError as e:
                _log.info("a message from another node was not sent: {e}", e=e)
            return
        LocalClientRegistry.broadcast(self, frame, envelope.exclude, envelope.room)

    @property
    def linked(self) -> bool:
        """
        Whether the link to the broker is up (the metrics' backplane_up).
        """
        return self._linked

    def stats(self) -> dict[str, int]:
        """
        The registry's figures, L{counters}, and C{kept}: messages (and
        C{kept_bytes}) waiting for the broker's confirmation.
        """
        outbox = self._outbox
        return {
            **super().stats(),
            **self.counters,
            "kept": len(outbox.pending),
            "kept_bytes": outbox.waiting_bytes + outbox.sent_bytes,
        }
