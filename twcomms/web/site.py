"""
What a web listener serves: a C{twisted.web} L{Site} with the WebSocket
gateway at C{/ws} and the JavaScript client at C{/twcomms.js}; on a
browsers-only listener, when asked for, the dashboard (C{/} and
C{/dashboard/ws}, L{twcomms.web.dashboard}) and C{/metrics}
(L{twcomms.web.metrics}); nothing else (404). A shared port never serves
the dashboard or metrics: they are where the operator puts a web
listener.

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
from twcomms.web.monitor import Monitor, read_token

__all__ = [
    "CLIENT_SCRIPT",
    "ScriptResource",
    "UpgradeResource",
    "WebSite",
    "make_site",
]

#: The JavaScript client, as served at C{/twcomms.js}.
CLIENT_SCRIPT: bytes = files("twcomms.web").joinpath("twcomms.js").read_bytes()


class UpgradeResource(Resource):
    """
    A WebSocket URL (the gateway's, the dashboard's): an upgrade request's
    connection becomes the WebSocket factory's protocol's; any other
    request gets 426.
    """

    isLeaf = True

    def __init__(self, gateway: Any) -> None:
        # (A GatewayFactory, or the dashboard's WebSocket factory.)
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


class WebSite(Site):
    """
    A site that runs its server's L{Monitor} (rates sampled once a second)
    while a port serves it, when it shows the dashboard or metrics.
    """

    monitor: Monitor | None = None

    def startFactory(self) -> None:
        if self.monitor is not None:
            self.monitor.start()

    def stopFactory(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()


def make_site(comms: ServerFactory, monitoring: bool = False) -> Site:
    """
    The site a web listener (C{monitoring}: with the dashboard and metrics
    its options ask for) or a shared port's HTTP connections serve for the
    server factory C{comms}.
    """
    root = _Root()
    root.putChild(b"ws", UpgradeResource(GatewayFactory(comms)))
    root.putChild(b"twcomms.js", ScriptResource())
    # An HTTP connection is idle-timed out like a handshake: the site only
    # serves a script and upgrades (twisted.web's default is 12 hours).
    timeout = comms.options.connection.handshake_timeout
    site = WebSite(root, timeout=timeout if timeout is not None else 60)
    site.noisy = False
    site.displayTracebacks = False
    gateway = comms.options.gateway
    if monitoring and (gateway.dashboard or gateway.metrics):
        monitor = site.monitor = comms.monitor
        token = read_token(gateway.monitor_token)
        if gateway.dashboard:
            from twcomms.web.dashboard import DashboardFactory, DashboardPage

            root.putChild(b"", DashboardPage(token))
            folder = _Root()
            folder.putChild(b"ws", UpgradeResource(DashboardFactory(monitor, token)))
            root.putChild(b"dashboard", folder)
        if gateway.metrics:
            from twcomms.web.metrics import MetricsResource, metrics_registry

            root.putChild(b"metrics", MetricsResource(metrics_registry(monitor), token))
    return site
