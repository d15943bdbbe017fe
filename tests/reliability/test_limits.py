"""
Dead peers, limits, TLS, under hostile company.

tests/test_sockets.py already has the single-client cases (an idle client
closed by the idle timeout, a second client refused by max_clients=1, a
plain client and a raw frame on a TLS port, an untrusted certificate).
These extend them to what a server meets in the field: peer processes
that freeze (SIGSTOP: the TCP connection stays up, nothing comes) or die
(SIGKILL) in the middle of a message, a burst of connections beyond
max_clients, and many hostile connections at once on a TLS port, while a
well-behaved client keeps being served.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor

from harness.stress.measure import LogWatch
from harness.stress.processes import driver, kill_all
from harness.stress.reactor import (
    LOCAL_TCP,
    Counter,
    PingPong,
    Slots,
    bounded,
    connect_raw,
)
from harness.wire import frame
from tests.tls_helpers import TLSFiles, make_tls_files
from twcomms.client import CommsClientFactory, GaveUpError
from twcomms.connection import CloseReason, CommsProtocol
from twcomms.server import CommsServerFactory

WAIT = 15.0


class Tracking(CommsServerFactory):
    """
    Keeps every protocol built (clients or not), with a count.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.built: list[CommsProtocol] = []
        self.by_port: dict[int, CommsProtocol] = {}
        self.built_count = Counter()

    def buildProtocol(self, addr: Any) -> CommsProtocol:
        proto = super().buildProtocol(addr)
        self.built.append(proto)
        self.by_port[addr.port] = proto
        self.built_count.add()
        return proto


async def listen(server: CommsServerFactory, where: str = LOCAL_TCP) -> int:
    port = await bounded(server.listen(where), WAIT, "listening")
    return int(port.getHost().port)


@pytest_twisted.ensureDeferred
async def test_frozen_peer_processes_are_closed_by_the_idle_timeout() -> None:
    """
    Three client processes connect, say hello and freeze (SIGSTOP): their
    connections stay up but nothing comes. Each is closed with reason
    C{idle timeout} (logged) after about the timeout; a chatty client is
    served throughout.
    """
    connected = Slots()
    closed = Slots()
    server = CommsServerFactory(
        "json",
        idle_timeout=1.0,
        on_connect=lambda h: connected.fire(h.port, h),
        on_message=lambda h, m: h.send(m) if "ping" in m else None,
        on_close=lambda h, r: closed.fire(h.id, r),
    )
    port = await listen(server)
    live = PingPong("json")
    procs = [driver("idle", "--port", port, "--timeout", 60) for _ in range(3)]
    try:
        with LogWatch() as watch:
            await bounded(live.start(port), WAIT, "live client")
            live.go()
            readies = [await p.wait_event("ready", WAIT) for p in procs]
            handles = [
                await connected.get(r["port"], WAIT, "server side") for r in readies
            ]
            for p in procs:
                p.signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            before = live.echoes.count
            reasons = [await closed.get(h.id, WAIT, "idle close") for h in handles]
            elapsed = time.monotonic() - frozen_at
            assert reasons == [CloseReason.IDLE_TIMEOUT] * 3
            assert watch.count("idle timeout") == 3
            assert elapsed < 5
            assert live.echoes.count > before
            assert live.client.connected
            assert [h.port for h in server.clients] == [
                live.client.connection.transport.getHost().port
            ]
    finally:
        await kill_all(procs)
        await bounded(live.stop(), WAIT, "live stop")
        await bounded(server.stop(), WAIT, "server stop")


@pytest_twisted.ensureDeferred
async def test_a_peer_killed_mid_message_delivers_only_whole_messages() -> None:
    """
    A client process sends a message and half of another, then is killed:
    the server delivers the first only, logs the discarded half with its
    size, and the close is reported.
    """
    connected = Slots()
    closed = Slots()
    got = Counter()
    messages: list[Any] = []
    server = CommsServerFactory(
        "json",
        on_connect=lambda h: connected.fire(h.port, h),
        on_message=lambda h, m: (messages.append(m), got.add()),
        on_close=lambda h, r: closed.fire(h.id, r),
    )
    port = await listen(server)
    proc = driver("partial", "--port", port, "--timeout", 60)
    try:
        with LogWatch() as watch:
            ready = await proc.wait_event("ready", WAIT)
            handle = await connected.get(ready["port"], WAIT, "server side")
            await got.wait(1, WAIT, "the complete message")
            proc.kill()
            reason = await closed.get(handle.id, WAIT, "the close")
        assert reason in (CloseReason.PEER_CLOSED, CloseReason.ERROR)
        assert messages == [{"hello": "partial"}]
        cut = watch.warnings("middle of a message", peer=f"127.0.0.1:{ready['port']}")
        assert [w["incomplete"] for w in cut] == [ready["partial_bytes"]]
        assert not list(server.clients)
    finally:
        await kill_all([proc])
        await bounded(server.stop(), WAIT, "server stop")


@pytest_twisted.ensureDeferred
async def test_max_clients_holds_under_a_burst_and_frees_slots() -> None:
    """
    40 clients connect at once to a server with max_clients=10: exactly 10
    become clients and are served, 30 are closed with a logged reason;
    when 5 leave, 5 newcomers get their slots.
    """
    limit = 10
    server_connects = Counter()
    server_closes = Counter()
    server = CommsServerFactory(
        "json",
        max_clients=limit,
        on_connect=lambda h: server_connects.add(),
        on_close=lambda h, r: server_closes.add(),
        on_message=lambda h, m: h.send(m),
    )
    port = await listen(server)
    client_closes = Counter()
    echoes = Counter()

    def make() -> CommsClientFactory:
        c = CommsClientFactory(
            "json",
            on_close=lambda c, r: client_closes.add(),
            on_message=lambda c, m: echoes.add(),
        )
        c.connectTCP("127.0.0.1", port, timeout=WAIT)
        return c

    clients = [make() for _ in range(40)]
    try:
        with LogWatch() as watch:
            await server_connects.wait(limit, WAIT, "accepted clients")
            await client_closes.wait(30, WAIT, "rejected clients closed")
            assert server.rejected == 30
            assert len(server.clients) == limit
            assert len(watch.warnings("maximum of")) == 30
            accepted = [c for c in clients if c.connected]
            assert len(accepted) == limit
            for c in accepted:
                c.send({"hi": 1})
            await echoes.wait(limit, WAIT, "echoes to accepted clients")
            for c in accepted[:5]:
                await bounded(c.stop(), WAIT, "a client leaving")
            await server_closes.wait(5, WAIT, "the server seeing them leave")
            newcomers = [make() for _ in range(5)]
            clients += newcomers
            await bounded(
                defer.gatherResults([c.whenConnected() for c in newcomers]),
                WAIT,
                "newcomers",
            )
            await server_connects.wait(limit + 5, WAIT, "newcomers accepted")
            for c in newcomers:
                c.send({"new": 1})
            await echoes.wait(limit + 5, WAIT, "echoes to newcomers")
            assert server.rejected == 30
            assert len(server.clients) == limit
    finally:
        for c in clients:
            await bounded(c.stop(), WAIT, "client stop")
        await bounded(server.stop(), WAIT, "server stop")


# -- TLS ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reliability-tls")


@pytest.fixture(scope="module")
def tls(tls_dir: Path) -> TLSFiles:
    return make_tls_files(str(tls_dir), "good")


@pytest.fixture(scope="module")
def other_ca(tls_dir: Path) -> TLSFiles:
    return make_tls_files(str(tls_dir), "other")


@pytest.mark.filterwarnings(
    "ignore:Passing pyOpenSSL (X509|PKey) objects is deprecated:DeprecationWarning"
)
@pytest_twisted.ensureDeferred
async def test_tls_port_under_hostile_connections(
    tls: TLSFiles, other_ca: TLSFiles
) -> None:
    """
    While a verified TLS client keeps getting echoes, the TLS port gets at
    once: 20 raw connections sending garbage or plain frames, 10 that
    never send (no handshake: closed by the idle timeout), 10 plain twcomms
    clients, and 10 TLS clients that do not trust the server's CA (they
    give up: certificate verify failed). None of them becomes a client or
    delivers a message; all are closed; nothing is left.
    """
    rng = random.Random(9)
    connects = Counter()
    server = Tracking(
        "json",
        idle_timeout=1.0,
        on_connect=lambda h: connects.add(),
        on_message=lambda h, m: h.send(m),
    )
    port = await listen(server, tls.ssl_description())
    good = PingPong("json")
    others: list[CommsClientFactory] = []
    peers: list[Any] = []
    try:
        await bounded(good.start(port, trust_root=tls.ca_pem), WAIT, "TLS client")
        good.go()
        await good.echoes.wait(5, WAIT, "first echoes")
        before = good.echoes.count
        for i in range(20):
            peer = await connect_raw(port)
            peers.append(peer)
            data = (
                rng.randbytes(rng.randint(1, 3000))
                if i % 2
                else frame(json.dumps({"plain": i}).encode())
            )
            peer.transport.write(data)
        silent = [await connect_raw(port) for _ in range(10)]
        peers += silent
        plain_closes = Counter()
        for _ in range(10):
            c = CommsClientFactory("json", on_close=lambda c, r: plain_closes.add())
            c.connectTCP("127.0.0.1", port, timeout=WAIT)
            others.append(c)
        untrusted = []
        for _ in range(10):
            c = CommsClientFactory("json")
            c.connectSSL("127.0.0.1", port, trust_root=other_ca.ca_pem)
            others.append(c)
            untrusted.append(c)
        for peer in peers:
            await bounded(peer.lost, WAIT, "a hostile connection's close")
        await plain_closes.wait(10, WAIT, "plain clients closed")
        for c in untrusted:
            with pytest.raises(GaveUpError, match="certificate verify failed"):
                await bounded(c.whenConnected(), WAIT, "untrusted client")
        await server.built_count.wait(1 + 20 + 10 + 10 + 10, WAIT, "all connections")
        for proto in server.built[1:]:
            await bounded(proto.receiver.when_closed(), WAIT, "server-side close")
        # The silent ones by the idle timeout; the others by the TLS layer
        # (or, for garbage that reads as the start of a long TLS record, by
        # the idle timeout too).
        for peer in silent:
            proto = server.by_port[peer.port]
            assert proto.closeReason is CloseReason.IDLE_TIMEOUT
        for proto in server.built[1:]:
            assert proto.closeReason in (CloseReason.ERROR, CloseReason.IDLE_TIMEOUT)
            assert proto.messagesReceived == 0
        assert connects.count == 1
        assert [h.id for h in server.clients] == [server.built[0].receiver.id]
        assert server.connections == {server.built[0]}
        await good.echoes.wait(good.echoes.count + 5, WAIT, "echoes afterwards")
        assert good.echoes.count > before
        assert good.bad == 0
        assert good.longest_gap < 2.0
    finally:
        for peer in peers:
            if peer.reason is None:
                peer.transport.abortConnection()
        for c in others:
            await bounded(c.stop(), WAIT, "client stop")
        await bounded(good.stop(), WAIT, "TLS client stop")
        await bounded(server.stop(), WAIT, "server stop")


@pytest_twisted.ensureDeferred
async def test_stop_closes_a_connection_still_in_its_tls_handshake(
    tls: TLSFiles,
) -> None:
    """
    A TLS client connects to a TCP server that never answers the handshake;
    stop() must close that connection, not only stop retrying.
    """
    hello = Counter()
    lost = Slots()
    peers: list[protocol.Protocol] = []

    class Silent(protocol.Protocol):
        def connectionMade(self) -> None:
            peers.append(self)

        def dataReceived(self, data: bytes) -> None:
            hello.add()  # the client's TLS hello: its handshake is under way

        def connectionLost(self, reason: Any = None) -> None:
            lost.fire("lost")

    port = reactor.listenTCP(
        0, protocol.Factory.forProtocol(Silent), interface="127.0.0.1"
    )
    client = CommsClientFactory("json")
    try:
        client.connectSSL("127.0.0.1", port.getHost().port, trust_root=tls.ca_pem)
        await hello.wait(1, WAIT, "the client's TLS hello")
        await bounded(client.stop(), WAIT, "stop()")
        await lost.get("lost", 5, "the connection closing after stop()")
    finally:
        for peer in peers:
            peer.transport.abortConnection()
        await lost.get("lost", WAIT, "cleanup")
        await bounded(defer.maybeDeferred(port.stopListening), WAIT, "port")
