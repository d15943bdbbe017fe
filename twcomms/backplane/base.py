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

Thread: the reactor thread only.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Collection
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from twcomms.backplane.envelope import Envelope, Kind, decode, encode
from twcomms.errors import ClientGoneError
from twcomms.server import ClientHandle, LocalClientRegistry
from twcomms.wire.format import LITTLE_ENDIAN, Frame

__all__ = ["LARGE_ABOVE", "Backplane"]

_log = Logger()

#: Payloads over this many bytes are stored under a key and announced,
#: not published: Redis disconnects a subscriber whose output buffer
#: passes 8 MiB for 60 s or 32 MiB at once (client-output-buffer-limit
#: pubsub), so a large message on the channel could cut every node off.
LARGE_ABOVE = 1024 * 1024


class Backplane(LocalClientRegistry):
    """
    The clients of this node, and the way to every other node's.

    @ivar hub: the name nodes that act as one share.
    @ivar node: this node's id (random, 32 hex digits).
    @ivar counters: what crossed: C{published}, C{received}, C{own}
        (own envelopes dropped), C{malformed}, C{expired} (a large
        payload gone before it was fetched), C{unroutable} (a direct
        message whose client is on no node), C{gaps} and C{missed} (holes
        in a publisher's sequence, and the messages in them), C{duplicates}
        (envelopes heard twice, dropped).
    """

    def __init__(self, hub: str = "twcomms", *, large_above: int = LARGE_ABOVE) -> None:
        super().__init__()
        self.hub = hub
        self._nodeBytes = os.urandom(16)
        self.node = self._nodeBytes.hex()
        self.large_above = large_above
        # Stored payloads published (their keys), and each channel's
        # sequence; the last sequence number heard per (publisher, direct).
        self._seq = 0
        self._seqs: dict[str, int] = {}
        self._heard: dict[tuple[str, bool], int] = {}
        # Envelopes received, in order; a stored payload's entry waits for
        # its fetch (its Deferred) before it and those after it go out.
        self._inbound: collections.deque[list[Any]] = collections.deque()
        self._structFormat = LITTLE_ENDIAN
        self.counters = dict.fromkeys(
            (
                "published",
                "received",
                "own",
                "malformed",
                "expired",
                "unroutable",
                "gaps",
                "missed",
                "duplicates",
            ),
            0,
        )

    # -- what a broker subclass provides ---------------------------------

    def publish(self, channel: str, data: bytes) -> None:
        """
        Publish C{data} on C{channel} (C{"all"}, or C{"to:" + node}).
        """
        raise NotImplementedError

    def store(self, key: str, data: bytes) -> None:
        """
        Keep C{data} under C{key} for a while (long enough for every node
        to fetch it), before the envelope announcing it is published.
        """
        raise NotImplementedError

    def fetch(self, key: str) -> Deferred[bytes | None]:
        """
        What L{store} kept under C{key}; L{None} if it is gone.
        """
        raise NotImplementedError

    def owner(self, client_id: str) -> Deferred[str | None]:
        """
        The node (alive) that holds C{client_id}, or L{None}.
        """
        raise NotImplementedError

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
            self._send("to:" + node, Kind.DIRECT, frame.payload, target=client_id)

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
    ) -> None:
        # One sequence per channel: a node hears all of "all" and its own
        # "to:" channel, so each is gapless to whoever hears it.
        seq = self._seqs[channel] = self._seqs.get(channel, 0) + 1
        stored = len(payload) > self.large_above
        if stored:
            self._seq += 1
            key = f"blob:{self.node}:{self._seq}"
            self.store(key, payload)
            payload = key.encode("ascii")
        envelope = Envelope(
            kind, self.node, seq, payload, room, exclude, target, stored
        )
        self.counters["published"] += 1
        self.publish(channel, encode(envelope))

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
            key = envelope.payload.decode("ascii", "replace")
            fetching = self.fetch(key)
            entry[1] = fetching
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
        channel = (envelope.node, envelope.kind == Kind.DIRECT)
        last = self._heard.get(channel)
        seq = envelope.seq
        if last is not None:
            if seq <= last:
                self.counters["duplicates"] += 1
                return False
            if seq > last + 1:
                self.counters["gaps"] += 1
                self.counters["missed"] += seq - last - 1
                _log.warn(
                    "backplane: {missed} messages from node {node} never "
                    "arrived (its sequence went from {last} to {seq})",
                    missed=seq - last - 1,
                    node=envelope.node,
                    last=last,
                    seq=seq,
                )
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

    def stats(self) -> dict[str, int]:
        return {**super().stats(), **self.counters}
