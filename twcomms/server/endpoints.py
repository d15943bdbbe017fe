"""
Where a server listens: endpoint descriptions from a port, an C{(address,
port)} pair or a description, with a backlog of L{DEFAULT_BACKLOG}.

Thread: any (it only builds descriptions and endpoints).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import quoteStringArgument, serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint

__all__ = ["DEFAULT_BACKLOG", "listen_description", "server_endpoint"]

#: The listening backlog used unless an endpoint description gives one.
#: Twisted's default (50) makes a burst of connects wait seconds on SYN
#: retries.
DEFAULT_BACKLOG = 1024

# Endpoint types whose descriptions take a backlog= argument.
_BACKLOG_KINDS = frozenset({"tcp", "tcp6", "ssl", "tls", "unix"})


def listen_description(where: str | int | tuple[str, int]) -> str:
    """
    An endpoint description (as C{serverFromString} and C{twistd}'s
    C{strports} take) for a description, a port, or an C{(address, port)}
    pair. TCP, TLS and UNIX get a backlog of L{DEFAULT_BACKLOG} unless the
    description sets one.
    """
    if isinstance(where, bool):
        raise TypeError("a port must be an int")
    if isinstance(where, int):
        description = f"tcp:{where}"
    elif isinstance(where, tuple):
        address, port = where
        kind = "tcp6" if ":" in address else "tcp"
        description = f"{kind}:{port}:interface={quoteStringArgument(address)}"
    elif isinstance(where, str):
        description = f"tcp:{where}" if where.isdigit() else where
    else:
        raise TypeError(f"cannot listen on {where!r}")
    kind = description.split(":", 1)[0]
    if kind in _BACKLOG_KINDS and "backlog=" not in description:
        description += f":backlog={DEFAULT_BACKLOG}"
    return description


def server_endpoint(
    reactor: Any, where: str | int | tuple[str, int] | IStreamServerEndpoint
) -> IStreamServerEndpoint:
    """
    Make a server endpoint from a description, a port, an C{(address,
    port)} pair (see L{listen_description}), or an endpoint (returned as
    is).
    """
    if IStreamServerEndpoint.providedBy(where):
        return where
    return serverFromString(  # type: ignore[no-any-return]
        reactor,
        listen_description(where),
    )
