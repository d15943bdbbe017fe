"""
A fake TCP transport for protocols run in memory (no reactor, no socket).
"""

from __future__ import annotations

from twisted.internet.interfaces import ITCPTransport
from twisted.internet.testing import StringTransport
from zope.interface import implementer


@implementer(ITCPTransport)
class TCPStringTransport(StringTransport):
    """
    A L{StringTransport} that says it is TCP and records socket options.
    """

    noDelay = False
    keepAlive = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.noDelay = enabled

    def getTcpNoDelay(self) -> bool:
        return self.noDelay

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self.keepAlive = enabled

    def getTcpKeepAlive(self) -> bool:
        return self.keepAlive
