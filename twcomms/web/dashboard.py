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
        if not authorized(gateway.token, header, request.path + "?" + _query(request)):
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

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        pass  # read-only: nothing a dashboard sends changes the hub

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._open = False
        if self in self.factory.monitor.watchers:
            self.factory.monitor.watchers.remove(self)
        if self._pending is not None and self._pending.active():
            self._pending.cancel()


def _query(request: Any) -> str:
    params = getattr(request, "params", {}) or {}
    return "&".join(f"{k}={v[0]}" for k, v in params.items() if v)


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
        self.setProtocolOptions(
            maxMessagePayloadSize=4096, autoPingInterval=0, failByDrop=False
        )
