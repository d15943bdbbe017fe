"""
The Twisted API, client side: L{CommsClientFactory}, a reconnecting client
factory with C{ReconnectingClientFactory}'s pitfalls handled.

Thread: the reactor thread only. Nothing here blocks or starts a thread.
"""

from twcomms.client.factory import STABLE_AFTER, CommsClientFactory, GaveUpError

__all__ = ["STABLE_AFTER", "CommsClientFactory", "GaveUpError"]
