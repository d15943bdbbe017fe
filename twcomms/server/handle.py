"""
L{ClientHandle}: the server's handle for one connected client, and the
receiver of that client's connection.

Thread: the reactor thread only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from twcomms.connection import CloseReason, CommsProtocol
from twcomms.connection.timers import Timeout
from twcomms.errors import ClientGoneError, DecodeError
from twcomms.wire.extended import Kind
from twcomms.wire.framing import Frame

if TYPE_CHECKING:
    from twcomms.server.factory import CommsServerFactory

__all__ = ["ClientHandle"]

_log = Logger()


class ClientHandle:
    """
    The server's handle for one connected client.

    It is the L{twcomms.connection.MessageReceiver} of that client's
    connection: the protocol hands it messages and it passes them to the
    factory's callbacks.

    Thread: the reactor thread only.

    @ivar id: a string, unique and stable for this connection.
    @ivar address: the peer's host (a UNIX socket's path, or C{""}).
    @ivar port: the peer's port (0 for a UNIX socket).
    @ivar connected_at: when the connection was made (the factory's clock,
        seconds since the epoch).
    @ivar close_reason: why it closed, once it has.
    @ivar close_failure: what Twisted gave C{connectionLost}, once closed.
    @ivar protocol: the connection's L{CommsProtocol}.
    @ivar registered: whether the factory accepted it as a client (it may
        refuse one: C{max_clients}, a stopping server; with C{require_auth}
        it waits until the client authenticated).
    @ivar auth_timer: with C{require_auth}, the timer that closes it if it
        does not authenticate in time.
    """

    auth_timer: Timeout | None = None

    def __init__(self, factory: CommsServerFactory, client_id: str) -> None:
        self.factory = factory
        self.id = client_id
        self.address = ""
        self.port = 0
        self.connected_at = 0.0
        self.close_reason: CloseReason | None = None
        self.close_failure: Failure | None = None
        self.protocol: CommsProtocol | None = None
        self.registered = False
        # when_closed() waiters; a list only while someone waits.
        self._lost: list[Deferred[None]] | None = None

    def __repr__(self) -> str:
        state = "connected" if self.connected else f"closed: {self.close_reason}"
        return f"<ClientHandle {self.id} {self.address}:{self.port} {state}>"

    @property
    def connected(self) -> bool:
        """
        Whether the client is connected and accepting messages.
        """
        return self.registered and self.close_reason is None

    @property
    def extended(self) -> bool:
        """
        Whether this client agreed the extended protocol (it can answer
        requests, and may join rooms itself).
        """
        return self.protocol is not None and self.protocol.extended

    @property
    def identity(self) -> str | None:
        """
        Who this client authenticated as (L{None}: it did not).
        """
        return self.protocol.identity if self.protocol else None

    @property
    def messages_in(self) -> int:
        """
        Messages received from this client (decoded or not).
        """
        return self.protocol.messagesReceived if self.protocol else 0

    @property
    def bytes_in(self) -> int:
        """
        Payload bytes received from this client.
        """
        return self.protocol.bytesReceived if self.protocol else 0

    @property
    def messages_out(self) -> int:
        """
        Messages sent to this client.
        """
        return self.protocol.messagesSent if self.protocol else 0

    @property
    def bytes_out(self) -> int:
        """
        Payload bytes sent to this client.
        """
        return self.protocol.bytesSent if self.protocol else 0

    def send(self, message: Any) -> None:
        """
        Encode and send one message to this client.

        @raise ClientGoneError: the client has disconnected.
        @raise EncodeError: the message cannot be encoded.
        @raise MessageTooLargeError: it is over the maximum message size.
        @raise SlowConsumerError: the client's outbound limit would be
            exceeded.
        """
        self._connectedProtocol().sendMessage(message)

    def write_frame(self, frame: Frame) -> None:
        """
        Write an already-encoded L{Frame} (see L{CommsServerFactory.encode}).

        @raise ClientGoneError: the client has disconnected.
        @raise SlowConsumerError: the client's outbound limit would be
            exceeded.
        """
        self._connectedProtocol().writeFrame(frame)

    def close(self) -> None:
        """
        Close the connection once what was sent to it has been written.
        """
        if self.protocol is not None:
            self.protocol.close(CloseReason.CLOSED)

    def when_closed(self) -> Deferred[None]:
        """
        A L{Deferred} that fires (with L{None}) once the connection has
        closed and the close callbacks have run.
        """
        if self.close_failure is not None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        if self._lost is None:
            self._lost = []
        self._lost.append(d)
        return d

    def _connectedProtocol(self) -> CommsProtocol:
        proto = self.protocol
        if proto is None or not self.connected or proto.closing:
            raise ClientGoneError(self.id)
        return proto

    # -- MessageReceiver ------------------------------------------------------

    def startReceivingMessages(self, sender: CommsProtocol) -> None:
        self.protocol = sender
        peer = sender.transport.getPeer()
        if isinstance(peer, (IPv4Address, IPv6Address)):
            self.address, self.port = peer.host, peer.port
        elif isinstance(peer, UNIXAddress):
            self.address = peer.name.decode() if peer.name else ""
        else:
            self.address = str(peer)
        self.connected_at = self.factory.clock.seconds()
        self.factory.clientConnected(self)

    def messageReceived(self, message: Any) -> None:
        if not self.registered:
            if self.auth_timer is not None:
                self.factory.access.unauthenticated(self, "a message")
            return
        for f in self.factory.on_message:
            try:
                f(self, message)
            except Exception:
                _log.failure(
                    "on_message callback {callback!r} raised for a message from {id}",
                    callback=f,
                    id=self.id,
                )

    def requestReceived(self, message: Any) -> Any:
        return self.factory.access.requestReceived(self, message)

    def controlRequest(self, kind: Kind, body: bytes) -> Deferred[bytes]:
        return self.factory.access.controlRequest(self, kind, body)

    def messageDecodeFailed(self, error: DecodeError) -> None:
        if not self.registered and self.auth_timer is not None:
            self.factory.access.unauthenticated(self, "a message")
            return
        self.factory.clientDecodeFailed(self, error)

    def stopReceivingMessages(self, reason: CloseReason, failure: Failure) -> None:
        self.close_reason = reason
        self.close_failure = failure
        self.factory.clientDisconnected(self, reason, failure)
        waiters, self._lost = self._lost, None
        for d in waiters or ():
            d.callback(None)
