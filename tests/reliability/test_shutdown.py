"""
Shutdown, Twisted API: data in flight when a client stops or the server
stops is delivered, and nothing is left behind (file descriptors, clients,
connections, reactor readers/writers/delayed calls). The threaded API's
version is C{threaded/test_shutdown.py}.

Two bugs are pinned here as strict xfails (see their reasons): a client
that does not read can keep a connection open forever after the server has
decided to close it, and then C{CommsServerFactory.stop()} never completes.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted

from harness.stress.reactor import LOCAL_TCP, Slots, bounded
from harness.stress.result import assert_held
from harness.stress.scale import MiB, Scale
from harness.stress.shutdown import shutdown
from harness.wire import header
from twcomms.connection import CloseReason
from twcomms.server import CommsServerFactory

WAIT = 15.0


@pytest_twisted.ensureDeferred
async def test_data_in_flight_at_stop_is_delivered(scale: Scale) -> None:
    assert_held(await shutdown(scale))


@pytest.fixture
def non_reader() -> Iterator[list[socket.socket]]:
    """
    Sockets appended here are closed after the test. They are plain
    blocking sockets with a 4 KiB receive buffer that the tests never read.
    """
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def connect_non_reader(port: int, socks: list[socket.socket]) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    socks.append(s)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(WAIT)
    s.connect(("127.0.0.1", port))  # the kernel accepts; the reactor follows
    return s


async def server_with_a_stuck_client(
    socks: list[socket.socket], queued: int, max_message_size: int
) -> tuple[CommsServerFactory, Any, socket.socket]:
    """
    A server and one raw client that never reads, with C{queued} bytes sent
    to it (below its outbound limit: it is not a slow consumer yet) and
    still waiting in the server's transport.
    """
    connected = Slots()
    server = CommsServerFactory(
        "binary",
        max_message_size=max_message_size,
        on_connect=lambda h: connected.fire("c", h),
    )
    port = (await bounded(server.listen(LOCAL_TCP), WAIT, "listening")).getHost().port
    sock = connect_non_reader(port, socks)
    handle = await connected.get("c", WAIT, "the client")
    chunk = b"x" * MiB
    for _ in range(queued // MiB):
        handle.send(chunk)
    # More than the kernel buffers take is waiting in the transport.
    assert handle.protocol.writePaused
    assert handle.connected
    return server, handle, sock


@pytest_twisted.ensureDeferred
async def test_stop_completes_with_a_client_that_does_not_read(
    non_reader: list[socket.socket],
) -> None:
    server, handle, sock = await server_with_a_stuck_client(
        non_reader, 16 * MiB, 64 * MiB
    )
    stopping = server.stop()
    try:
        await bounded(stopping, 12, "server.stop() with a client that does not read")
        assert handle.close_reason is CloseReason.SERVER_STOPPING
    finally:
        sock.close()  # the peer goes away: now it closes
        await bounded(stopping, WAIT, "server.stop() once the peer left")


@pytest_twisted.ensureDeferred
async def test_oversize_from_a_client_that_does_not_read_closes_it(
    non_reader: list[socket.socket],
) -> None:
    server, handle, sock = await server_with_a_stuck_client(
        non_reader, 16 * MiB, 32 * MiB
    )
    sock.send(header(0xFFFFFFFF) + b"junk")
    try:
        await bounded(handle.when_closed(), 3, "the oversize close")
        assert handle.close_reason is CloseReason.OVERSIZE
        assert not list(server.clients)
    finally:
        sock.close()
        await bounded(handle.when_closed(), WAIT, "the close once the peer left")
        await bounded(server.stop(), WAIT, "server stop")
