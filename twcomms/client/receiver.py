"""
What a client connection delivers to: L{ClientConnection} passes its
events to the L{CommsClientFactory}; L{EndpointFactory} builds a client's
protocols for an endpoint or C{ClientService}.

Thread: the reactor thread only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from twcomms.connection import CloseReason, CommsProtocol
from twcomms.connection.events import call_each, first_answer
from twcomms.errors import DecodeError

if TYPE_CHECKING:
    from twcomms.client.factory import CommsClientFactory

__all__ = ["ClientConnection", "EndpointFactory"]

_log = Logger()


class ClientConnection:
    """
    The L{MessageReceiver} of one client connection: passes what happens on
    it to the factory.
    """

    __slots__ = ("factory", "protocol")

    def __init__(self, factory: CommsClientFactory) -> None:
        self.factory = factory
        self.protocol: CommsProtocol | None = None

    def startReceivingMessages(self, sender: CommsProtocol) -> None:
        self.protocol = sender
        self.factory.connectionStarted(sender)

    def messageReceived(self, message: Any) -> None:
        factory = self.factory
        for f in factory.on_message:
            try:
                f(factory, message)
            except Exception:
                _log.failure("on_message callback {callback!r} raised", callback=f)

    def requestReceived(self, message: Any) -> Any:
        return first_answer(self.factory.on_request, self.factory, message)

    def messageDecodeFailed(self, error: DecodeError) -> None:
        call_each(self.factory.on_decode_error, "on_decode_error", self.factory, error)

    def stopReceivingMessages(self, reason: CloseReason, failure: Failure) -> None:
        self.factory.connectionEnded(self.protocol, reason, failure)


class EndpointFactory(Factory):
    """
    Builds a L{CommsClientFactory}'s protocols for an endpoint or
    C{ClientService}; reconnection is the service's business.
    """

    def __init__(self, client: CommsClientFactory) -> None:
        self.client = client

    def buildProtocol(self, addr: Any) -> CommsProtocol:
        return self.client.buildProtocol(addr)
