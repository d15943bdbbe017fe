"""
The dashboard (C{--dashboard}): a page at C{/} and its own WebSocket at
C{/dashboard/ws}, which pushes the L{Monitor}'s snapshot once a second and
as soon as a client comes or goes. It is read-only: what a dashboard
sends is ignored. With a token, the page, its WebSocket and C{/metrics}
answer only requests that carry it (L{authorized}).

Thread: the reactor thread only.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any
from urllib.parse import urlencode

from autobahn.twisted.websocket import (
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.types import ConnectionDeny
from twisted.web.resource import Resource
from twisted.web.server import Request

from twcomms.web.gateway import origin_allowed
from twcomms.web.monitor import Monitor, authorized, refuse

__all__ = [
    "DASHBOARD_PAGE",
    "DashboardFactory",
    "DashboardPage",
    "DashboardProtocol",
]

#: The dashboard's page, as served at C{/}.
DASHBOARD_PAGE: bytes = files("twcomms.web").joinpath("dashboard.html").read_bytes()

#: A dashboard hears of a client's coming or going within this many
#: seconds (changes in between are sent together).
CHANGE_DELAY = 0.1


class DashboardPage(Resource):
    """
    C{/}: the dashboard's page.
    """

    isLeaf = True

    def __init__(self, token: str | None) -> None:
        super().__init__()
        self.token = token

    def render_GET(self, request: Request) -> bytes:
        if not authorized(self.token, request.getHeader("authorization"), request.uri):
            return refuse(request)
        request.setHeader("content-type", "text/html; charset=utf-8")
        request.setHeader("cache-control", "no-store")
        return DASHBOARD_PAGE


class DashboardProtocol(WebSocketServerProtocol):
    """
    One open dashboard.
    """

    factory: DashboardFactory
    _pending: Any = None
    _open = False

    def onConnect(self, request: Any) -> None:
        gateway = self.factory
        origin = request.headers.get("origin")
        if origin is not None and not origin_allowed(
            origin, request.headers.get("host"), ()
        ):
            raise ConnectionDeny(403, "the dashboard is same-origin only")
        header = request.headers.get("authorization")
        if not authorized(gateway.token, header, _query(request)):
            raise ConnectionDeny(401, "token needed")

    def onOpen(self) -> None:
        self._open = True
        self.factory.monitor.watchers.append(self)
        self.tick()

    def tick(self) -> None:
        if self._open:
            self.sendMessage(json.dumps(self.factory.monitor.snapshot()).encode())

    def changed(self) -> None:
        if self._pending is None or not self._pending.active():
            self._pending = self.factory.monitor.comms.reactor.callLater(
                CHANGE_DELAY, self.tick
            )

    def onMessageBegin(self, isBinary: bool) -> None:
        # Read-only: a dashboard has nothing to send; one that does is
        # dropped before its message is buffered.
        super().onMessageBegin(isBinary)
        self.dropConnection(abort=True)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        pass

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._open = False
        if self in self.factory.monitor.watchers:
            self.factory.monitor.watchers.remove(self)
        if self._pending is not None and self._pending.active():
            self._pending.cancel()


def _query(request: Any) -> str:
    # autobahn's params are decoded already: encoded again, so authorized()
    # decodes a token with '+' or '&' to itself.
    params = getattr(request, "params", {}) or {}
    return "?" + urlencode(params, doseq=True)


class DashboardFactory(WebSocketServerFactory):
    """
    The dashboards of one server.
    """

    protocol = DashboardProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, monitor: Monitor, token: str | None) -> None:
        super().__init__()
        self.monitor = monitor
        self.token = token
        # No message-size bound: autobahn applies it to what we send too,
        # and a snapshot grows with the clients and the rate history (a
        # 4 KiB bound froze dashboards within a minute). What a dashboard
        # sends is refused at its first frame (onMessageBegin) instead.
        self.setProtocolOptions(
            maxFramePayloadSize=4096, autoPingInterval=0, failByDrop=False
        )
