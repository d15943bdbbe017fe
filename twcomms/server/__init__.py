"""
The Twisted API, server side: L{CommsServerFactory} builds a connection
per client and tracks the clients (L{ClientHandle}s) in a
L{ClientRegistry}, through which broadcasts go.

Thread: the reactor thread only. Nothing here blocks or starts a thread.
"""

from twcomms.server.factory import (
    DEFAULT_BACKLOG,
    SERVER_SECTIONS,
    CommsServerFactory,
    listen_description,
    server_endpoint,
)
from twcomms.server.handle import ClientHandle
from twcomms.server.registry import ClientRegistry, LocalClientRegistry

__all__ = [
    "DEFAULT_BACKLOG",
    "SERVER_SECTIONS",
    "ClientHandle",
    "ClientRegistry",
    "CommsServerFactory",
    "LocalClientRegistry",
    "listen_description",
    "server_endpoint",
]
