"""
The code under test: a chat hub on the Twisted API. Each client is
welcomed with its id; what a client says is relayed to every other
client as C{{"from": id, "said": message}}; a client silent for
C{idle_timeout} seconds is closed.

The tests beside this file test it the two ways users of twcomms do:
with trial (C{test_chat_trial.py}) and with pytest-twisted
(C{test_chat_pytest.py}), each in memory with a fake clock and over real
loopback sockets. C{threaded_echo.py} is the same idea on the threaded API.
"""

from __future__ import annotations

from typing import Any

from twcomms import ClientHandle, CommsServerFactory


def chat_hub(reactor: Any = None, **options: Any) -> CommsServerFactory:
    """
    A chat hub (not listening yet: call C{listen} on it).

    @param reactor: the reactor, or a test's L{twcomms.testing.MemoryNetwork}
        reactor; default the global one.
    @param options: any twcomms option (C{idle_timeout}, C{max_clients}, ...).
    """
    hub = CommsServerFactory("json", reactor=reactor, **options)

    def welcome(client: ClientHandle) -> None:
        client.send({"welcome": client.id})

    def relay(client: ClientHandle, message: Any) -> None:
        hub.broadcast({"from": client.id, "said": message}, exclude=client)

    hub.on_connect.append(welcome)
    hub.on_message.append(relay)
    return hub
