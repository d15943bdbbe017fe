"""
What a web listener serves: a C{twisted.web} L{Site} with the WebSocket
gateway at C{/ws} and the JavaScript client at C{/twcomms.js}, and nothing
else (404). The dashboard and metrics of a later issue are resources on
the same site.

L{UpgradeResource} hands an upgrade request's connection from
C{twisted.web} to autobahn: the HTTP channel lets go of the socket (its
producer registration and its idle timeout), and the WebSocket protocol
reads the request again and answers the handshake.

Thread: the reactor thread only.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from twcomms.web.gateway import GatewayFactory
from twcomms.web.handover import ServerFactory, hand_over

__all__ = ["CLIENT_SCRIPT", "ScriptResource", "UpgradeResource", "make_site"]

#: The JavaScript client, as served at C{/twcomms.js}.
CLIENT_SCRIPT: bytes = files("twcomms.web").joinpath("twcomms.js").read_bytes()


class UpgradeResource(Resource):
    """
    The gateway's URL: a WebSocket upgrade request's connection becomes a
    L{GatewayFactory} protocol's; any other request gets 426.
    """

    isLeaf = True

    def __init__(self, gateway: GatewayFactory) -> None:
        super().__init__()
        self.gateway = gateway

    def render(self, request: Request) -> bytes | int:
        upgrade = (request.getHeader("upgrade") or "").lower()
        channel = request.channel
        transport: Any = channel.transport
        if upgrade != "websocket" or transport is None:
            request.setResponseCode(426)
            request.setHeader("upgrade", "websocket")
            request.setHeader("content-type", "text/plain; charset=utf-8")
            return (
                b"This is a twcomms hub's WebSocket gateway: connect with a "
                b"WebSocket client (twcomms.js).\n"
            )
        protocol: Any = self.gateway.buildProtocol(transport.getPeer())
        # The socket is the WebSocket protocol's from now on: twisted.web
        # lets go of it (it registered itself as the socket's producer, and
        # paused reading while it served this request).
        channel.transport = None
        transport.unregisterProducer()
        head = [request.method + b" " + request.uri + b" HTTP/1.1\r\n"]
        for name, values in request.requestHeaders.getAllRawHeaders():
            head.append(name + b": " + b",".join(values) + b"\r\n")
        head.append(b"\r\n")
        content: Any = request.content
        hand_over(transport, protocol, b"".join(head) + content.read())
        transport.resumeProducing()
        return NOT_DONE_YET


class ScriptResource(Resource):
    """
    C{/twcomms.js}: the JavaScript client (twisted.web.static is not
    used: importing it warns of its deprecated error pages).
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader("content-type", "text/javascript; charset=utf-8")
        # A public script: a page of any origin may import it (which
        # origins may then connect is the gateway's check).
        request.setHeader("access-control-allow-origin", "*")
        return CLIENT_SCRIPT


class _Root(Resource):
    # Anything else is 404 (Resource's own default warns of deprecation).
    def getChild(self, path: bytes, request: Request) -> Any:
        return notFound()


def make_site(comms: ServerFactory) -> Site:
    """
    The site a web listener (or a shared port's HTTP connections) serves
    for the server factory C{comms}.
    """
    root = _Root()
    root.putChild(b"ws", UpgradeResource(GatewayFactory(comms)))
    root.putChild(b"twcomms.js", ScriptResource())
    # An HTTP connection is idle-timed out like a handshake: the site only
    # serves a script and upgrades (twisted.web's default is 12 hours).
    timeout = comms.options.connection.handshake_timeout
    site = Site(root, timeout=timeout if timeout is not None else 60)
    site.noisy = False
    site.displayTracebacks = False
    return site
