"""
The Twisted API, server side: L{CommsServerFactory} builds a connection
per client and tracks the clients (L{ClientHandle}s) in a
L{ClientRegistry}, through which broadcasts go.

Thread: the reactor thread only. Nothing here blocks or starts a thread.
"""

from twcomms.server.endpoints import (
    DEFAULT_BACKLOG,
    listen_description,
    server_endpoint,
)
from twcomms.server.factory import SERVER_SECTIONS, CommsServerFactory
from twcomms.server.handle import ClientHandle
from twcomms.server.registry import (
    MAX_ROOM_LENGTH,
    ClientRegistry,
    LocalClientRegistry,
    check_room,
)

__all__ = [
    "DEFAULT_BACKLOG",
    "MAX_ROOM_LENGTH",
    "SERVER_SECTIONS",
    "ClientHandle",
    "ClientRegistry",
    "CommsServerFactory",
    "LocalClientRegistry",
    "check_room",
    "listen_description",
    "server_endpoint",
]
