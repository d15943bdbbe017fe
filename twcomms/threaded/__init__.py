"""
The threaded API: the original "Python Comms" C{Server} and C{Client},
kept and made true.

    from twcomms import Server

    server = Server("0.0.0.0", 6000)
    server.add_onmessage_callback(print)
    server.start()

A seed user changes one import line. Underneath, every C{Server} and
C{Client} in the process shares one reactor thread (started on first use,
never stopped by them; or the reactor a Twisted program already runs) and
wraps the Twisted API (L{twcomms.server.CommsServerFactory},
L{twcomms.client.CommsClientFactory}): the framing, bookkeeping and
protection are theirs.

Threads:
  - Every public method may be called from any thread, including from
    inside a callback.
  - Callbacks never run on the reactor thread. Each connection's callbacks
    run in order, one at a time, on a pool of worker threads; a callback
    that blocks (the original's example calls C{input()} in one) holds up
    only its own connection.
  - Methods that wait (C{start}, C{stop}, C{connect}, C{close}) raise
    L{ReactorThreadError} when called on the reactor thread, where they
    would deadlock. C{send} and C{broadcast} never wait for the reactor;
    they wait only for a peer that is behind (its send window), and never
    on the reactor thread.
  - A callback that raises is logged with its traceback (stdlib
    C{logging}, logger C{twcomms...}); nothing else stops.

Lifetime: while a Server is started or a Client is open, the process stays
alive (the original's scripts end after C{start()}/C{connect()} and rely on
it); it exits once all are stopped/closed. Ctrl-C then closes them cleanly.

Modules: L{base} (what both share), L{server}, L{client}, L{callbacks},
L{eventloop} (the reactor thread), L{dispatch} (worker threads, batches),
L{flow} (send and receive windows).
"""

from twcomms.errors import QueueFullError, ReactorThreadError, SendTimeoutError
from twcomms.options import FlowControl
from twcomms.threaded.client import Client
from twcomms.threaded.connected import ConnectedClient, Peer
from twcomms.threaded.server import Server

__all__ = [
    "Client",
    "ConnectedClient",
    "FlowControl",
    "Peer",
    "QueueFullError",
    "ReactorThreadError",
    "SendTimeoutError",
    "Server",
]
