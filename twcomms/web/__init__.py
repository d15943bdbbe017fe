"""
Browsers join the hub: the WebSocket gateway (L{twcomms.web.gateway}, on
autobahn: C{pip install 'twcomms[web]'}), the site a web listener serves
(L{twcomms.web.site}: C{/ws} and C{/twcomms.js}), one port for TCP
clients and browsers both (L{twcomms.web.sniff}), and what operators see
on a web listener: the dashboard (L{twcomms.web.dashboard}) and
Prometheus metrics (L{twcomms.web.metrics}), from a L{Monitor}. A WebSocket client is a
L{twcomms.connection.CommsProtocol} whose transport maps frames to
WebSocket messages (L{twcomms.web.frames}), so the server treats it as
any other client. C{docs/web.md} has the rules.

Thread: the reactor thread only.
"""

from __future__ import annotations

from typing import Any

from twcomms.web.handover import ServerFactory, hand_over
from twcomms.web.monitor import Monitor
from twcomms.web.sniff import SharedPortFactory, check_unambiguous

__all__ = [
    "Monitor",
    "ServerFactory",
    "SharedPortFactory",
    "check_unambiguous",
    "hand_over",
    "make_site",
]


def make_site(comms: ServerFactory, monitoring: bool = False) -> Any:
    """
    The C{twisted.web} site serving browsers for the server factory
    C{comms} (L{twcomms.web.site.make_site}).

    @raise ImportError: autobahn (or, for metrics, prometheus_client) is
        not installed, with what to install.
    """
    try:
        from twcomms.web.site import make_site as site_for
    except ImportError as e:
        if (e.name or "").split(".")[0] not in ("autobahn", "txaio"):
            raise
        raise ImportError(
            "serving browsers (web=, web_shared=, --web) needs autobahn: "
            "pip install 'twcomms[web]'"
        ) from e
    try:
        return site_for(comms, monitoring)
    except ImportError as e:
        if (e.name or "").split(".")[0] != "prometheus_client":
            raise
        raise ImportError(
            "metrics (--metrics) need prometheus_client: pip install 'twcomms[web]'"
        ) from e
