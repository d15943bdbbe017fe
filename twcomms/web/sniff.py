"""
One port for both: L{SharedPortFactory} listens for TCP clients and
browsers alike, telling them apart by the first bytes a connection sends.

The rules (C{docs/web.md}):

  - A plain or extended TCP client's first four bytes are a frame header;
    a browser's are C{GET } (an HTTP request). As a header, C{GET } is
    542,393,671 (little-endian) or 1,195,725,856 (big-endian) bytes: a
    server whose C{max_message_size} reaches it refuses to share its port
    (L{check_unambiguous}); give browsers a port of their own (C{--web}).
  - A connection is unclassified until it has sent four bytes, or bytes
    that cannot begin C{GET } (classified at once), or until
    C{classify_timeout} passes with nothing that decides: then it is a TCP
    client (one that only listens, as C{twcomms listen} or a Unity client
    may, still becomes a client and gets every message from then on).
    C{GET } split across reads, at any byte, is still C{GET }.
  - Nothing is written to an unclassified connection, so nothing can
    corrupt an HTTP response; the bytes read meanwhile go, unchanged, to
    the protocol it turns out to be.
  - Over TLS, classification starts once the handshake is done, and
    C{handshake_timeout} bounds the handshake and classification together
    from the moment the connection is accepted; an HTTP connection must
    also have become a WebSocket by then (on any shared port).
  - A connection counts toward C{max_clients} from the moment it is
    accepted: past it, a new connection is closed at once.

Thread: the reactor thread only.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IHandshakeListener, INegotiated
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.server import Site
from zope.interface import implementer

from twcomms.options import ConnectionOptions
from twcomms.web.handover import ServerFactory, hand_over

__all__ = ["GET", "SharedPortFactory", "Sniffer", "check_unambiguous"]

_log = Logger()

#: What an HTTP request (a browser's WebSocket upgrade) starts with.
GET = b"GET "


def check_unambiguous(connection: ConnectionOptions) -> None:
    """
    @raise ValueError: C{GET } read as a frame header is a size these
        connection options accept, so a port cannot be shared.
    """
    size = int.from_bytes(GET, connection.byteOrder)  # type: ignore[arg-type]
    if connection.max_message_size >= size:
        raise ValueError(
            f"a port cannot serve browsers and TCP clients both with "
            f"max_message_size={connection.max_message_size}: 'GET ' is a "
            f"valid {connection.byteOrder}-endian header of {size:,} bytes. "
            f"Lower max_message_size below {size:,}, or give browsers their "
            f"own listener (web='tcp:8080', --web)"
        )


@implementer(IHandshakeListener)
class Sniffer(Protocol):
    """
    One connection while it is unclassified (see the module docstring).
    """

    def __init__(self, shared: SharedPortFactory, addr: Any) -> None:
        self.shared = shared
        self.addr = addr
        self._buffer = b""
        self._timer: Any = None
        self._deadline: Any = None
        self._done = False
        self._handshaken = False

    def connectionMade(self) -> None:
        shared = self.shared
        shared.unclassified += 1
        clock = shared.comms.reactor
        self._accepted = clock.seconds()
        if INegotiated.providedBy(self.transport):
            timeout = shared.comms.options.connection.handshake_timeout
            if timeout is not None:
                self._deadline = clock.callLater(timeout, self._tooSlow)
        else:
            self._startTimer()

    def handshakeCompleted(self) -> None:
        self._handshaken = True
        if not self._done:
            self._startTimer()

    def _startTimer(self) -> None:
        timeout = self.shared.comms.options.gateway.classify_timeout
        self._timer = self.shared.comms.reactor.callLater(timeout, self._classify)

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        buffer = self._buffer = self._buffer + data
        if len(buffer) >= len(GET) or not GET.startswith(buffer):
            self._classify()

    def _tooSlow(self) -> None:
        self._deadline = None
        if self._done:
            return
        _log.info(
            "closing connection from {peer}: its TLS handshake and first bytes "
            "did not come within {timeout} seconds (handshake timeout)",
            peer=self.addr,
            timeout=self.shared.comms.options.connection.handshake_timeout,
        )
        self._finish()
        transport: Any = self.transport
        transport.abortConnection()

    def _finish(self) -> None:
        self._done = True
        self.shared.unclassified -= 1
        for call in (self._timer, self._deadline):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._deadline = None

    def _classify(self) -> None:
        if self._done:
            return
        self._finish()
        data, self._buffer = self._buffer, b""
        shared = self.shared
        protocol: Any
        transport = self.transport
        if data.startswith(GET):
            protocol = shared.site.buildProtocol(self.addr)
            timeout = shared.comms.options.connection.handshake_timeout
            if timeout is not None:
                # The upgrade too must be done within handshake_timeout of
                # the accept (the WebSocket protocol then holds the socket).
                left = timeout - (shared.comms.reactor.seconds() - self._accepted)
                shared.comms.reactor.callLater(
                    max(left, 0), _abortIfStill, transport, protocol
                )
        else:
            protocol = shared.comms.buildProtocol(self.addr)
        hand_over(transport, protocol)
        if self._handshaken and IHandshakeListener.providedBy(protocol):
            protocol.handshakeCompleted()
        if data:
            protocol.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self._done:
            self._finish()


def _abortIfStill(transport: Any, http: Any) -> None:
    current = (
        transport.wrappedProtocol
        if isinstance(transport, ProtocolWrapper)
        else getattr(transport, "protocol", None)
    )
    if current is http and transport.connected:
        _log.info(
            "closing connection from {peer}: no WebSocket upgrade within the "
            "handshake timeout",
            peer=transport.getPeer(),
        )
        transport.abortConnection()


class SharedPortFactory(Factory):
    """
    Listens on a port for TCP clients of C{comms} and browsers of C{site}.

    @ivar unclassified: connections accepted and not yet classified.
    """

    noisy = False

    def __init__(self, comms: ServerFactory, site: Site) -> None:
        check_unambiguous(comms.options.connection)
        self.comms = comms
        self.site = site
        self.unclassified = 0

    def startFactory(self) -> None:
        self.comms.doStart()

    def stopFactory(self) -> None:
        self.comms.doStop()

    def buildProtocol(self, addr: Any) -> Sniffer | None:
        limit = self.comms.options.server.max_clients
        if limit is not None:
            taken = len(self.comms.connections) + self.unclassified
            if taken >= limit:
                self.comms.rejected += 1
                _log.warn(
                    "refused a connection from {peer}: the server already "
                    "has its maximum of {max_clients} clients and "
                    "connections",
                    peer=addr,
                    max_clients=limit,
                )
                return None
        return Sniffer(self, addr)
