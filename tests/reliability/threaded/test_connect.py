"""
Client.connect() then send(), the README's first example, under an unlucky
thread switch.

Found by the threaded churn scenario at full scale: one cycle in 5,000 got
C{NotConnectedError} from the C{send()} right after a C{connect()} that had
returned normally. The scenarios work around it (L{connect_threaded}) and
count it; this test pins it deterministically.
"""

from __future__ import annotations

import time

from twcomms.threaded import Client, Server


def test_send_right_after_connect_succeeds() -> None:
    server = Server("127.0.0.1", 0)
    server.start(timeout=10)
    client = Client("127.0.0.1", server.port)
    # Stand-in for the thread switch that happens in the field (once in a
    # few thousand connects): a Twisted-level on_connect callback that runs
    # first and takes a moment, on the reactor thread.
    client._factory.on_connect.insert(0, lambda factory: time.sleep(0.2))
    try:
        client.connect(timeout=10)
        client.send({"hello": 1})  # raises NotConnectedError
        assert client.connected
    finally:
        client.close(timeout=10)
        server.stop(timeout=10)
