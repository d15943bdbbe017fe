"""
What framing asks of a transport beyond Twisted's interfaces: a printable
peer address for logs (L{describe_peer}) and a larger read size while a
large payload arrives (L{set_read_size}).

Thread: the reactor thread only.
"""

from __future__ import annotations

from typing import Any

__all__ = ["describe_peer", "set_read_size"]


def set_read_size(transport: Any, size: int) -> int | None:
    """
    Make C{transport} read up to C{size} bytes per read; return the read
    size it had, to restore later with this function, or L{None} (and
    nothing is changed) where the transport has no read size to set.

    Twisted has no method for this. Its socket transports
    (C{twisted.internet.abstract.FileDescriptor}: TCP and UNIX) read
    C{bufferSize} bytes per C{doRead} and look the attribute up on every
    read, so setting it on the instance takes effect at the next read
    (C{tests/test_framing.py::test_set_read_size_changes_what_twisted_reads}
    pins that). TLS transports decrypt in their own record sizes and have
    no C{bufferSize}: left alone. (Twisted also uses C{bufferSize} as the
    write-buffer size over which it pauses a producer.)
    """
    current = getattr(transport, "bufferSize", None)
    if not isinstance(current, int) or isinstance(current, bool):
        return None
    transport.bufferSize = size
    return current


def describe_peer(transport: Any) -> str:
    """
    A printable peer address for log events: C{host:port}, a UNIX path.
    """
    if transport is None:
        return "<not connected>"
    try:
        peer = transport.getPeer()
    except Exception:
        return "<unknown peer>"
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    if host is not None and port is not None:
        return f"{host}:{port}"
    name = getattr(peer, "name", None)
    return str(name) if name else str(peer)
