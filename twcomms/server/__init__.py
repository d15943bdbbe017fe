"""
The Twisted API, server side: L{CommsServerFactory} builds a connection
per client and tracks the clients (L{ClientHandle}s) in a
L{ClientRegistry}, through which broadcasts go.

Thread: the reactor thread only. Nothing here blocks or starts a thread.
"""

from twcomms.server.factory import (
    DEFAULT_BACKLOG,
    ClientHandle,
    ClientRegistry,
    CommsServerFactory,
    LocalClientRegistry,
    server_endpoint,
)

__all__ = [
    "DEFAULT_BACKLOG",
    "ClientHandle",
    "ClientRegistry",
    "CommsServerFactory",
    "LocalClientRegistry",
    "server_endpoint",
]
