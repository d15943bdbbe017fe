"""
The code under test, threaded: an echo service on the threaded API
(C{from twcomms import Server}), as a script of the original library would
write it. Every message comes back to its sender as C{{"echo": message}}.
"""

from __future__ import annotations

from typing import Any

from twcomms import ConnectedClient, Server


def start_echo(port: int = 0) -> Server:
    """
    Start an echo server on 127.0.0.1 (port 0: a free one; C{server.port}
    tells which). Blocks until listening: not on the reactor thread.
    """
    server = Server("127.0.0.1", port)

    def echo(client: ConnectedClient, message: Any) -> None:
        client.send({"echo": message})

    server.add_onmessage_callback(echo, with_sender=True)
    server.start()
    return server
