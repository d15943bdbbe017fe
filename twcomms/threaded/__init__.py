"""
The threaded API: the original "Python Comms" C{Server} and C{Client},
over the Twisted API, with the reactor in a thread of its own (or the one
a Twisted program already runs).

Thread: every public method may be called from any thread; user callbacks
run on worker threads, never on the reactor thread.
"""

from twcomms.threaded.api import (
    Client,
    ConnectedClient,
    FlowControl,
    QueueFullError,
    ReactorThreadError,
    SendTimeoutError,
    Server,
)

__all__ = [
    "Client",
    "ConnectedClient",
    "FlowControl",
    "QueueFullError",
    "ReactorThreadError",
    "SendTimeoutError",
    "Server",
]
