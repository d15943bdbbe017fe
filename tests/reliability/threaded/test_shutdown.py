"""
Shutdown, threaded API: what clients C{send()} before C{close()}, and what
the server C{broadcast()}s before C{stop()}, is delivered (README: "stop()/
close() deliver what was sent before them"); afterwards no file descriptor
is left and the callback threads end.
"""

from __future__ import annotations

import threading

from harness.stress.result import assert_held
from harness.stress.scale import Scale
from harness.stress.shutdown import shutdown_threaded
from harness.stress.threads import wait_until
from twcomms.threaded import Client, Server


def test_data_in_flight_at_close_and_stop_is_delivered(scale: Scale) -> None:
    result = shutdown_threaded(scale)
    assert_held(result)


def callback_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("twcomms-callbacks")]


def test_callback_threads_end_soon_after_the_last_close() -> None:
    server = Server("127.0.0.1", 0)
    server.start(timeout=10)
    client = Client("127.0.0.1", server.port)
    entered = threading.Event()
    gate = threading.Event()

    def blocking(message: object) -> None:
        entered.set()
        gate.wait(10)

    client.add_onmessage_callback(blocking)
    try:
        client.connect(timeout=10)
        wait_until(lambda: len(server.clients) == 1, 10, "the client registered")
        server.broadcast({"hello": 1})
        assert entered.wait(10)
    finally:
        client.close(timeout=10)
        server.stop(timeout=10)
        gate.set()  # the callback returns after everything was closed
    wait_until(lambda: not callback_threads(), 3, "callback threads ending")
