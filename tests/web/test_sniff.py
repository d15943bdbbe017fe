"""
One port for both (L{twcomms.web.sniff}): a connection is classified by
its first bytes or, silent, by a timeout; C{GET } split at any byte is
still HTTP; nothing is written before classification; the port refuses
to be shared when C{GET } is a valid header; unclassified connections
count toward C{max_clients}; over TLS one deadline covers the handshake
and the sniff.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, threads
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import INegotiated
from twisted.internet.testing import MemoryReactorClock, StringTransport
from zope.interface import directlyProvides

from harness.sockets import raw_connect, recv_frame
from twcomms import CommsServerFactory
from twcomms.connection import CommsProtocol
from twcomms.web import SharedPortFactory, check_unambiguous
from twcomms.web.sniff import Sniffer

REQUEST = b"GET /twcomms.js HTTP/1.1\r\nHost: hub\r\n\r\n"
ADDR = IPv4Address("TCP", "127.0.0.1", 50000)


def shared(**options: Any) -> tuple[CommsServerFactory, SharedPortFactory, Any]:
    clock = MemoryReactorClock()
    server = CommsServerFactory(reactor=clock, web_shared=True, **options)
    return server, server.listening_factory(), clock


def accept(port: SharedPortFactory) -> tuple[Sniffer, StringTransport]:
    sniffer = port.buildProtocol(ADDR)
    assert sniffer is not None
    transport = StringTransport()
    transport.protocol = sniffer
    sniffer.makeConnection(transport)
    return sniffer, transport


def splits(data: bytes) -> list[list[bytes]]:
    """
    C{data} cut at every combination of the positions inside C{GET }.
    """
    result = []
    for k in range(4):
        for cuts in itertools.combinations((1, 2, 3), k):
            bounds = [0, *cuts, len(data)]
            result.append([data[a:b] for a, b in itertools.pairwise(bounds)])
    return result


@pytest.mark.parametrize("pieces", splits(REQUEST), ids=lambda p: repr(p[:-1]))
def test_get_split_at_any_byte_is_http(pieces: list[bytes]) -> None:
    server, port, clock = shared()
    sniffer, transport = accept(port)
    for piece in pieces:
        assert transport.value() == b""
        transport.protocol.dataReceived(piece)
    response = transport.value()
    assert response.startswith(b"HTTP/1.1 200 OK"), response[:80]
    assert b"export class Client" in response
    assert port.unclassified == 0
    assert not server.clients


def test_a_frame_header_makes_a_tcp_client_at_once() -> None:
    server, port, clock = shared()
    got: list[Any] = []
    server.on_message.append(lambda client, message: got.append(message))
    sniffer, transport = accept(port)
    transport.protocol.dataReceived(b"\x06\x00\x00\x00[1, 2]")
    assert isinstance(transport.protocol, CommsProtocol)
    assert got == [[1, 2]]
    assert len(server.clients) == 1


def test_a_silent_client_becomes_a_tcp_client_after_the_timeout() -> None:
    # A client that only listens (twcomms listen, a Unity listener): it is
    # a client once classify_timeout passes, and gets every message from
    # then on; nothing was written to it before.
    server, port, clock = shared(classify_timeout=0.25)
    sniffer, transport = accept(port)
    clock.advance(0.2)
    assert not server.clients
    assert transport.value() == b""
    clock.advance(0.05)
    assert len(server.clients) == 1
    server.broadcast({"a": 1})
    (client,) = server.clients
    client.protocol.writer.beforeWrite()  # (the registry's batch, now)
    assert transport.value() == b'\x08\x00\x00\x00{"a": 1}'


def test_a_partial_get_that_stops_is_a_tcp_client_at_the_timeout() -> None:
    server, port, clock = shared()
    sniffer, transport = accept(port)
    transport.protocol.dataReceived(b"GE")
    clock.advance(1)
    assert isinstance(transport.protocol, CommsProtocol)
    # The bytes read go to the protocol it turned out to be: a frame
    # header in progress.
    assert transport.protocol.incompleteFrameBytes == 2


@pytest.mark.parametrize(
    ("byte_order", "size", "ambiguous"),
    [
        ("little", 542_393_670, False),
        ("little", 542_393_671, True),
        ("big", 1_195_725_855, False),
        ("big", 1_195_725_856, True),
    ],
)
def test_sharing_is_refused_when_get_is_a_valid_header(
    byte_order: str, size: int, ambiguous: bool
) -> None:
    server = CommsServerFactory(
        byteOrder=byte_order,
        max_message_size=size,
        outbound_limit=None,
        web_shared=True,
        reactor=MemoryReactorClock(),
    )
    if ambiguous:
        with pytest.raises(ValueError, match="own listener"):
            check_unambiguous(server.options.connection)
        failed = server.listen("tcp:0:interface=127.0.0.1")
        failure = []
        failed.addErrback(failure.append)
        assert failure and failure[0].check(ValueError)
    else:
        check_unambiguous(server.options.connection)


def test_unclassified_connections_count_toward_max_clients() -> None:
    server, port, clock = shared(max_clients=2)
    accept(port)
    accept(port)
    assert port.buildProtocol(ADDR) is None
    assert server.rejected == 1


def test_over_tls_one_deadline_covers_the_handshake_and_the_sniff() -> None:
    server, port, clock = shared(handshake_timeout=3.0, classify_timeout=0.25)
    sniffer = port.buildProtocol(ADDR)
    assert sniffer is not None
    transport = StringTransport()
    directlyProvides(transport, INegotiated)
    sniffer.makeConnection(transport)
    clock.advance(2.9)  # no classification before the handshake is done
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting
    assert port.unclassified == 0


@pytest_twisted.ensureDeferred
async def test_a_listening_only_tcp_client_gets_broadcasts_on_a_shared_port() -> None:
    server = CommsServerFactory(web_shared=True)
    joined: defer.Deferred[Any] = defer.Deferred()
    server.on_connect.append(joined.callback)
    port = (await server.listen("tcp:0:interface=127.0.0.1")).getHost().port
    try:
        sock = await threads.deferToThread(raw_connect, port)
        await joined  # after classify_timeout: it sent nothing
        server.broadcast({"hello": "listener"})
        assert await threads.deferToThread(recv_frame, sock) == b'{"hello": "listener"}'
        sock.close()
    finally:
        await server.stop()


def test_an_http_connection_must_upgrade_within_the_handshake_timeout() -> None:
    server, port, clock = shared(handshake_timeout=3.0)
    sniffer, transport = accept(port)
    transport.protocol.dataReceived(b"GET /ws HTTP/1.1\r\nHost: hub\r\n")
    http = transport.protocol
    assert not isinstance(http, (Sniffer, CommsProtocol))
    clock.advance(2.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting  # still HTTP: aborted
