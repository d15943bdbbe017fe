"""
Browsers join the hub: the WebSocket gateway (L{twcomms.web.gateway}, on
autobahn: C{pip install 'twcomms[web]'}), the site a web listener serves
(L{twcomms.web.site}: C{/ws} and C{/twcomms.js}), and one port for TCP
clients and browsers both (L{twcomms.web.sniff}). A WebSocket client is a
L{twcomms.connection.CommsProtocol} whose transport maps frames to
WebSocket messages (L{twcomms.web.frames}), so the server treats it as
any other client. C{docs/web.md} has the rules.

Thread: the reactor thread only.
"""

from __future__ import annotations

from typing import Any

from twcomms.web.handover import ServerFactory, hand_over
from twcomms.web.sniff import SharedPortFactory, check_unambiguous

__all__ = [
    "ServerFactory",
    "SharedPortFactory",
    "check_unambiguous",
    "hand_over",
    "make_site",
]


def make_site(comms: ServerFactory) -> Any:
    """
    The C{twisted.web} site serving browsers for the server factory
    C{comms} (L{twcomms.web.site.make_site}).

    @raise ImportError: autobahn is not installed, with what to install.
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
    return site_for(comms)
