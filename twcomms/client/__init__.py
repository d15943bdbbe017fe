"""
The Twisted API, client side: L{CommsClientFactory}, a reconnecting client
factory with C{ReconnectingClientFactory}'s pitfalls handled, and TLS
client options.

Thread: the reactor thread only. Nothing here blocks or starts a thread.
"""

from twcomms.client.factory import CLIENT_SECTIONS, STABLE_AFTER, CommsClientFactory
from twcomms.client.tls import client_tls_options
from twcomms.errors import GaveUpError

__all__ = [
    "CLIENT_SECTIONS",
    "STABLE_AFTER",
    "CommsClientFactory",
    "GaveUpError",
    "client_tls_options",
]
