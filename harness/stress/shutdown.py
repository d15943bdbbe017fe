"""
Scenario: shutdown with data in flight (Twisted API: L{shutdown};
threaded API: L{shutdown_threaded}): everything sent before a stop or
close is delivered, and nothing is left afterwards.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from harness.stress.measure import fd_count, reactor_handles
from harness.stress.reactor import LOCAL_TCP, Counter, bounded
from harness.stress.result import Result
from harness.stress.scale import Scale
from harness.stress.threads import ThreadCounter, connect_threaded, wait_until


def count_deliveries(
    result: Result,
    per: int,
    k: int,
    inbound: dict[int, list[int]],
    outbound: list[list[int]],
) -> None:
    """
    Count and check what arrived: each client's C{per} messages at the
    server (C{inbound}, by client), and the C{k} broadcasts at each client
    (C{outbound}), all in order.
    """
    clients = len(outbound)
    ok_in = sum(1 for ci in range(clients) if inbound.get(ci) == list(range(per)))
    ok_out = sum(1 for ci in range(clients) if outbound[ci] == list(range(k)))
    result.sent = per * clients + k * clients
    result.received = ok_in * per + ok_out * k
    result.lost = (
        result.sent - sum(map(len, inbound.values())) - sum(map(len, outbound))
    )
    result.check(ok_in == clients, f"{clients - ok_in} clients' messages incomplete")
    result.check(ok_out == clients, f"{clients - ok_out} clients missed broadcasts")


async def shutdown(scale: Scale, clients: int = 10) -> Result:
    """
    Data in flight at a stop is delivered: C{clients} clients each send
    their share of C{scale.shutdown_messages} numbered messages and stop at
    once (the server gets every one); then the server broadcasts
    C{scale.shutdown_messages} messages to fresh clients and stops at once
    (every client gets every one, in order, then the close). Afterwards
    nothing is left: file descriptors, server clients and connections,
    reactor readers, writers and delayed calls.
    """
    from twisted.internet import defer

    from twcomms.client import CommsClientFactory
    from twcomms.connection import CloseReason
    from twcomms.server import CommsServerFactory

    started = time.monotonic()
    k = scale.shutdown_messages
    per = k // clients
    result = Result(
        "shutdown (Twisted API)",
        scale=scale.name,
        load=f"{clients} clients; {per * clients:,} msgs in, {k:,} broadcast",
        faults="client stop / server stop with data in flight",
    )
    inbound: dict[int, list[int]] = {}
    server_got = Counter()
    server_closes: list[Any] = []

    def on_message(handle: Any, message: Any) -> None:
        inbound.setdefault(message["c"], []).append(message["i"])
        server_got.add()

    server_connects = Counter()
    server = CommsServerFactory(
        "json",
        on_connect=lambda h: server_connects.add(),
        on_message=on_message,
        on_close=lambda h, r: server_closes.append(r),
    )
    listening = await bounded(server.listen(LOCAL_TCP), 10, "listening")
    port = listening.getHost().port
    # (After listening: Twisted reserves one file descriptor, for good, the
    # first time a port listens.)
    fds0 = fd_count()
    handles0 = reactor_handles()
    pad = "x" * 100
    outbound: list[list[int]] = [[] for _ in range(clients)]
    client_closes: list[Any] = []
    try:
        # Clients send and stop at once.
        senders = []
        for _ in range(clients):
            c = CommsClientFactory("json")
            c.connectTCP("127.0.0.1", port, timeout=10)
            senders.append(c)
        await bounded(
            defer.gatherResults([c.whenConnected() for c in senders]), 10, "connects"
        )
        for ci, c in enumerate(senders):
            for i in range(per):
                c.send({"c": ci, "i": i, "p": pad})
            c.stop()
        await bounded(
            defer.gatherResults([c.whenStopped() for c in senders]), 20, "stops"
        )
        await server_got.wait(per * clients, 20, "messages sent before stop()")

        # The server broadcasts and stops at once.
        def receiver(ci: int) -> Any:
            return CommsClientFactory(
                "json",
                on_message=lambda c, m: outbound[ci].append(m["s"]),
                on_close=lambda c, r: client_closes.append(r),
            )

        readers = [receiver(ci) for ci in range(clients)]
        for c in readers:
            c.connectTCP("127.0.0.1", port, timeout=10)
        await bounded(
            defer.gatherResults([c.whenConnected() for c in readers]), 10, "connects"
        )
        # (The server side of a connection may lag the client's.)
        await server_connects.wait(2 * clients, 10, "the server seeing them")
        for s in range(k):
            server.broadcast({"s": s, "p": pad})
        await bounded(server.stop(), 30, "server stop with data in flight")
        await bounded(
            defer.gatherResults([c.whenStopped() for c in readers]), 20, "closes"
        )
    finally:
        await bounded(server.stop(), 10, "server stop")
    fds1 = fd_count()
    handles1 = reactor_handles()
    count_deliveries(result, per, k, inbound, outbound)
    result.check(
        server_closes.count(CloseReason.SERVER_STOPPING) == clients,
        f"server close reasons {set(server_closes)}",
    )
    result.check(
        client_closes == [CloseReason.PEER_CLOSED] * clients,
        f"client close reasons {set(client_closes)}",
    )
    result.check(fds1 <= fds0, f"file descriptors {fds0} -> {fds1}")
    result.check(
        all(handles1[x] <= handles0[x] for x in handles0),
        f"reactor handles {handles0} -> {handles1}",
    )
    result.check(not list(server.clients), "server clients left")
    result.check(not server.connections, "server connections left")
    result.seconds = time.monotonic() - started
    return result


def shutdown_threaded(scale: Scale, clients: int = 5) -> Result:
    """
    Threaded API: clients each send their share of
    C{scale.shutdown_messages} and C{close()} at once (the server gets every
    one); the server broadcasts C{scale.shutdown_messages} and C{stop()}s at
    once (every client gets every one, in order). Afterwards no file
    descriptor is left and the callback threads end.
    """
    from twcomms.threaded import Client, Server
    from twcomms.threaded.dispatch import default_pool

    started = time.monotonic()
    k = scale.shutdown_messages
    per = k // clients
    result = Result(
        "shutdown (threaded API)",
        scale=scale.name,
        load=f"{clients} clients; {per * clients:,} msgs in, {k:,} broadcast",
        faults="close() / stop() with data in flight",
    )
    # Warm up: the reactor thread and Twisted's reserved descriptor exist
    # from the first listen on, for good.
    warm = Server("127.0.0.1", 0)
    warm.start(timeout=10)
    warm.stop(timeout=10)
    fds0 = fd_count()
    lock = threading.Lock()
    inbound: dict[int, list[int]] = {}
    got_in = ThreadCounter()

    def on_message(message: Any) -> None:
        with lock:
            inbound.setdefault(message["c"], []).append(message["i"])
        got_in.add()

    server = Server("127.0.0.1", 0)
    server.add_onmessage_callback(on_message)
    server.start(timeout=10)
    outbound: list[list[int]] = [[] for _ in range(clients)]
    got_out = ThreadCounter()
    made: list[Client] = []
    pad = "x" * 100
    try:
        senders = []
        for _ in range(clients):
            c = Client("127.0.0.1", server.port)
            made.append(c)
            connect_threaded(c)
            senders.append(c)
        for ci, c in enumerate(senders):
            for i in range(per):
                c.send({"c": ci, "i": i, "p": pad})
            c.close(timeout=20)
        got_in.wait(per * clients, 20, "messages sent before close()")
        readers = []
        for ci in range(clients):
            c = Client("127.0.0.1", server.port)
            made.append(c)

            def on_reply(m: Any, ci: int = ci) -> None:
                outbound[ci].append(m["s"])
                got_out.add()

            c.add_onmessage_callback(on_reply)
            connect_threaded(c)
            readers.append(c)
        wait_until(lambda: len(server.clients) == clients, 10, "clients registered")
        for s in range(k):
            server.broadcast({"s": s, "p": pad})
        server.stop(timeout=30)
        got_out.wait(k * clients, 30, "broadcasts sent before stop()")
        for c in readers:
            result.check(c.wait(10), "a client was not closed by the server's stop")
    finally:
        for c in made:
            c.close(timeout=10)
        server.stop(timeout=10)
    count_deliveries(result, per, k, inbound, outbound)
    try:
        wait_until(
            lambda: default_pool().workers == 0,
            15,
            "callback threads ending",
        )
    except TimeoutError as e:
        result.problems.append(str(e))
    fds1 = fd_count()
    result.check(fds1 <= fds0, f"file descriptors {fds0} -> {fds1}")
    result.details.update(fds=(fds0, fds1), threads_after=threading.active_count())
    result.seconds = time.monotonic() - started
    return result
