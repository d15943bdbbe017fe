"""
The WebSocket gateway, on autobahn: L{GatewayFactory} makes one
L{GatewayProtocol} per WebSocket connection, and each carries one
L{CommsProtocol} built by the server factory, so a browser is a client like
any other (registry, broadcasts, rooms, ids, the backplane, the extended
protocol, every limit).

Why autobahn: it bounds a message as its frames arrive
(C{maxMessagePayloadSize}, close code 1009 as soon as a frame header takes
the message past it), where C{twisted.web.websocket} (Twisted 26.10) and
wsproto reassemble fragments without a bound (C{../shared/FACTS.md}); its
UTF-8 validation and unmasking are in C (NVX); it runs on Twisted.

Thread: the reactor thread only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.websocket import (
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure

from twcomms.connection import CloseReason, CommsProtocol
from twcomms.web.frames import MessageTransport
from twcomms.web.handover import ServerFactory
from twcomms.wire.extended import CONTROL_OVERHEAD, MAX_EXTENDED_MESSAGE

__all__ = ["GatewayFactory", "GatewayProtocol", "origin_allowed"]

_log = Logger()


def origin_allowed(origin: str, host: str | None, allowed: tuple[str, ...]) -> bool:
    """
    Whether a page from C{origin} may open the gateway reached as C{host}:
    its own origin (the Origin names the Host header's host and port), or
    one of C{allowed} (C{"*"}: any).
    """
    origin = origin.rstrip("/").lower()
    if "*" in allowed or origin in allowed:
        return True
    if host is None:
        return False
    try:
        page = urlsplit(origin)
        reached = urlsplit("//" + host)
        if page.scheme not in ("http", "https") or not page.hostname:
            return False
        default = 443 if page.scheme == "https" else 80
        return (page.hostname, page.port or default) == (
            reached.hostname,
            reached.port or default,
        )
    except ValueError:  # a port that is not a number
        return False


class GatewayProtocol(WebSocketServerProtocol):
    """
    One WebSocket client: the WebSocket end of a L{CommsProtocol} (its
    transport is a L{MessageTransport}).

    @ivar connection: the twcomms connection, once the handshake is done.
    """

    factory: GatewayFactory
    connection: CommsProtocol | None = None
    _messages: MessageTransport | None = None

    def onConnect(self, request: Any) -> None:
        origin = request.headers.get("origin")
        gateway = self.factory
        if origin is not None and not origin_allowed(
            origin, request.headers.get("host"), gateway.origins
        ):
            _log.warn(
                "refused a WebSocket connection from {peer}: origin {origin} "
                "is not allowed (allow it with --web-origins)",
                peer=self.peer,
                origin=origin,
            )
            raise ConnectionDeny(403, "origin not allowed")

    def onOpen(self) -> None:
        gateway = self.factory
        messages = MessageTransport(self, gateway.text)
        transport: Any = self.transport
        connection = gateway.comms.buildProtocol(
            transport.getPeer(), options=gateway.connectionOptions
        )
        messages.protocol = connection
        self._messages = messages
        self.connection = connection
        connection.makeConnection(messages)

    def onMessageEnd(self) -> None:
        # autobahn's own also fires its "message" event for observers (a
        # txaio future and callbacks per message, about 10% of a small
        # message's cost, profiled); the gateway has none.
        if not self.failedByMe:
            data = self.message_data
            payload = data[0] if len(data) == 1 else b"".join(data)
            self.onMessage(payload, self.message_is_binary)
        self.message_data = None  # type: ignore[assignment]

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._messages is not None:
            self._messages.messageReceived(payload, isBinary)

    def sendData(
        self, data: bytes, sync: bool = False, chopsize: int | None = None
    ) -> None:
        # autobahn's own frames (pong, close) wait while one of ours is
        # half written.
        messages = self._messages
        held = messages is not None and not sync and not chopsize
        if held and messages.holdWrite(data):  # type: ignore[union-attr]
            return
        super().sendData(data, sync, chopsize)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        messages, connection = self._messages, self.connection
        if messages is None or connection is None:
            return  # the handshake failed: there was no connection
        messages.connectionLost()
        if self.wasMaxMessagePayloadSizeExceeded or self.wasMaxFramePayloadSizeExceeded:
            _log.warn(
                "closing connection from {peer}: a WebSocket message grew past "
                "the maximum message size of {limit} (close code 1009)",
                peer=connection.peer,
                limit=connection.MAX_LENGTH,
            )
            connection.abort(CloseReason.OVERSIZE)
        connection.connectionLost(
            Failure(ConnectionDone() if wasClean else ConnectionLost())
        )


class GatewayFactory(WebSocketServerFactory):
    """
    The WebSocket side of one twcomms server factory (see the module
    docstring).

    @ivar comms: the server factory whose clients WebSocket clients become.
    @ivar text: whether messages are text (json and string) or binary.
    @ivar origins: the allowed origins besides the page's own.
    @ivar connectionOptions: the server's connection options, little-endian
        (the WebSocket mapping's request ids are).
    """

    protocol = GatewayProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, comms: ServerFactory) -> None:
        super().__init__()
        self.comms = comms
        options = comms.options
        self.connectionOptions = replace(options.connection, byteOrder="little")
        self.text = options.connection.codec.name != "binary"
        self.origins = options.gateway.web_origins
        limit = min(options.connection.max_message_size, MAX_EXTENDED_MESSAGE)
        # Room for an extended connection's kind byte and request id; the
        # connection itself holds each message to the exact maximum.
        bound = limit + CONTROL_OVERHEAD
        self.setProtocolOptions(
            maxMessagePayloadSize=bound,
            maxFramePayloadSize=bound,
            # Heartbeats are the protocol's own frames (browsers' scripts
            # cannot send or see WebSocket pings); idle_timeout applies.
            autoPingInterval=0,
            # A refused message (1009) or protocol error gets a close
            # frame with its code, so the page learns why; the socket is
            # dropped after closeHandshakeTimeout if the peer does not answer.
            failByDrop=False,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=2,
        )
