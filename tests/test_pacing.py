"""
Broadcast pacing, deterministic (transports that say when they are full,
a fake clock): bytes for a peer that is not keeping up wait in its
connection's queue; a queue that makes no progress for C{stall_timeout}
closes its connection as a slow consumer, one that makes progress never
does; C{whenDrained()} paces a broadcaster to its healthy clients; the
hub stops reading a client whose messages go to clients that are behind.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from harness.wire import parse
from twcomms import ClientHandle, CloseReason, CommsServerFactory
from twcomms.connection import PauseReason
from twcomms.ops.service import Hub

MiB = 1024 * 1024


class SocketLikeTransport(StringTransport):
    """
    Pauses its producer once it holds 64 KiB, as Twisted's socket
    transports do past their buffer size.
    """

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and len(self.io.getvalue()) >= 65536:
            self.producer.pauseProducing()


class Peer:
    """
    A server-side connection on a transport whose "socket" we fill
    (pause) and drain (resume) by hand.
    """

    def __init__(self, server: CommsServerFactory) -> None:
        self.transport = SocketLikeTransport()
        self.proto = server.buildProtocol(None)
        self.proto.makeConnection(self.transport)
        self.handle: ClientHandle = self.proto.receiver  # type: ignore[assignment]

    @property
    def writer(self) -> Any:
        return self.proto.writer

    def fill(self) -> None:
        self.transport.producer.pauseProducing()

    def drain(self) -> list[bytes]:
        """
        The socket takes everything, however many times it fills: what it
        got, as payloads.
        """
        data = b""
        for _ in range(10_000):
            data += self.transport.value()
            self.transport.clear()
            self.transport.producer.resumeProducing()
            if not self.transport.value() and self.writer.queued == 0:
                break
        return list(parse(data))


def make(**options: Any) -> tuple[CommsServerFactory, Clock]:
    clock = Clock()
    server = CommsServerFactory("binary", reactor=clock, **options)
    return server, clock


def test_bytes_for_a_full_transport_wait_in_the_connection_queue() -> None:
    server, clock = make()
    peer = Peer(server)
    peer.handle.send(b"before")
    peer.fill()
    # A full transport still takes a slice's worth (the fast path)...
    peer.handle.send(b"s" * (MiB - 100))
    assert peer.writer.queued == 0
    # ...and past that, bytes wait here, not in the transport.
    for i in range(3):
        peer.handle.send(b"x%d" % i * 100)
    assert peer.writer.queued == 3 * (4 + 200)
    assert peer.drain() == [b"before", b"s" * (MiB - 100)] + [
        b"x%d" % i * 100 for i in range(3)
    ]
    assert peer.writer.queued == 0


def test_a_queue_without_progress_for_stall_timeout_is_a_slow_consumer() -> None:
    server, clock = make(stall_timeout=5)
    closed: list[CloseReason] = []
    server.on_close.append(lambda client, reason: closed.append(reason))
    peer = Peer(server)
    peer.fill()
    peer.handle.send(b"y" * (2 * MiB))  # over the transport's share: queued
    clock.advance(4.9)
    assert not peer.transport.disconnecting and peer.proto.closeReason is None
    clock.advance(0.2)
    assert peer.proto.closeReason is CloseReason.SLOW_CONSUMER
    assert peer.writer.queued == 0  # discarded with the connection


def test_a_slow_but_steady_reader_is_never_dropped() -> None:
    # 40 MiB to a peer whose socket takes a 1 MiB slice every 4 s: the
    # queue never goes stall_timeout (5 s) without progress.
    server, clock = make(stall_timeout=5, max_message_size=64 * MiB)
    peer = Peer(server)
    peer.fill()
    peer.handle.send(b"z" * (40 * MiB))
    got = b""
    for _ in range(60):
        clock.advance(4)
        assert peer.proto.closeReason is None
        got += peer.transport.value()
        peer.transport.clear()
        peer.transport.producer.resumeProducing()  # took one slice
        if peer.writer.queued == 0:
            got += peer.transport.value()
            break
    payloads = list(parse(got))
    assert len(payloads) == 1 and len(payloads[0]) == 40 * MiB


def test_a_client_that_recovers_before_stall_timeout_is_kept() -> None:
    server, clock = make(stall_timeout=5)
    peer = Peer(server)
    peer.fill()
    peer.handle.send(b"a" * 2 * MiB)
    clock.advance(4.5)
    assert peer.drain() == [b"a" * 2 * MiB]
    peer.fill()
    peer.handle.send(b"b")
    clock.advance(4.5)  # 9 s since the first wait, 4.5 since progress
    assert peer.proto.closeReason is None
    assert peer.drain() == [b"b"]
    clock.advance(60)  # nothing waits: no stall timer
    assert peer.proto.closeReason is None


def test_when_below_fires_as_the_queue_drains_and_fails_on_close() -> None:
    server, clock = make(stall_timeout=None)
    peer = Peer(server)
    peer.fill()
    peer.handle.send(b"q" * 3 * MiB)
    fired: list[object] = []
    peer.writer.whenBelow(MiB).addCallback(fired.append)
    assert fired == []
    peer.drain()
    assert fired == [None]
    peer.fill()
    peer.handle.send(b"q" * 3 * MiB)
    failed: list[Any] = []
    peer.writer.whenBelow(0).addErrback(failed.append)
    peer.proto.abort(CloseReason.CLOSED)
    assert len(failed) == 1


def test_when_drained_paces_a_broadcaster_to_its_healthy_clients() -> None:
    server, clock = make(
        drain_high_water=4 * MiB, drain_low_water=MiB, stall_timeout=10
    )
    healthy, stuck = Peer(server), Peer(server)
    assert server.whenDrained().called  # nothing waits
    stuck.fill()
    healthy.fill()
    for _ in range(5):
        server.broadcast(b"m" * MiB)
    clock.advance(0)
    drained = server.whenDrained()
    assert not drained.called  # both are over 4 MiB
    healthy.drain()
    assert not drained.called  # the stuck one still is
    clock.advance(10.1)  # the stuck one made no progress: dropped
    assert stuck.proto.closeReason is CloseReason.SLOW_CONSUMER
    assert drained.called and drained.result is None
    assert server.whenDrained().called


def test_when_drained_for_a_room_looks_at_its_members_only() -> None:
    server, clock = make(drain_high_water=MiB, drain_low_water=0)
    member, other = Peer(server), Peer(server)
    server.join(member.handle, "lab")
    other.fill()
    server.broadcast(b"o" * 2 * MiB, exclude=member.handle)
    assert server.whenDrained(room="lab").called
    assert not server.whenDrained().called


def test_the_hub_stops_reading_a_client_whose_recipients_are_behind() -> None:
    server, clock = make(drain_high_water=2 * MiB + 100, drain_low_water=MiB)
    Hub(server, "broadcast")
    producer, reader = Peer(server), Peer(server)
    reader.fill()
    frame = (MiB).to_bytes(4, "little") + b"p" * MiB
    producer.proto.dataReceived(frame * 2)
    assert reader.writer.queued <= 2 * MiB + 8
    assert PauseReason.PACING not in producer.proto.readPausedFor
    producer.proto.dataReceived(frame)  # the reader is now over 2 MiB
    assert producer.proto.readPausedFor == {PauseReason.PACING}
    assert producer.transport.producerState == "paused"
    # Kept while paused, relayed once the reader has caught up.
    producer.proto.dataReceived(frame)
    assert len(reader.drain()) == 4
    assert producer.proto.readPausedFor == frozenset()
    assert producer.transport.producerState == "producing"
