"""
What the web package needs of a server factory (L{ServerFactory}), and
how a connection passes from one protocol to another (L{hand_over}): from
a shared port's sniffer to a TCP client's or an HTTP channel, and from
C{twisted.web} to the WebSocket gateway.

Thread: the reactor thread only.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IProtocol
from twisted.protocols.policies import ProtocolWrapper

from twcomms.connection import CommsProtocol
from twcomms.options import ConnectionOptions, Options

__all__ = ["ServerFactory", "hand_over"]


class ServerFactory(Protocol):
    """
    What the web package needs of a twcomms server factory
    (C{CommsServerFactory}).
    """

    options: Options
    reactor: Any
    connections: set[CommsProtocol]
    rejected: int

    @property
    def monitor(self) -> Any:
        """
        The figures the dashboard and metrics show (a L{Monitor}); its
        events and views need the factory's C{clients}, C{on_connect},
        C{on_close}, C{on_decode_error}, C{on_request_done}, C{totals()},
        C{rooms()}, C{members()} and C{rooms_of()} too.
        """

    def buildProtocol(
        self, addr: Any, options: ConnectionOptions | None = None
    ) -> CommsProtocol:
        """
        A connection for a client at C{addr}, with these connection options
        (default: the factory's).
        """

    def doStart(self) -> None:
        """
        A port starts serving the factory (Twisted's C{Factory}).
        """

    def doStop(self) -> None:
        """
        A port stops serving it.
        """


def hand_over(transport: Any, protocol: IProtocol, data: bytes = b"") -> None:
    """
    Give C{transport}'s connection to C{protocol} (which has not been
    connected), then C{data} already read from it. Over TLS the transport
    is the TLS protocol, which wraps the protocol it delivers to.
    """
    if isinstance(transport, ProtocolWrapper):
        transport.wrappedProtocol = protocol
    else:
        transport.protocol = protocol
    protocol.makeConnection(transport)
    if data:
        protocol.dataReceived(data)
