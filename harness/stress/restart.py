"""
Scenario: server restart. Auto-reconnecting clients (Twisted API:
L{restart}; threaded API, with messages queued offline:
L{restart_threaded}) come back, with jittered delays.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from harness.stress.reactor import LOCAL_TCP, Counter, bounded, sleep
from harness.stress.result import Result
from harness.stress.scale import Scale
from harness.stress.threads import ThreadCounter, wait_until


def _counting_client(**kwargs: Any) -> Any:
    """
    A L{CommsClientFactory} that also calls C{on_failure(factory)} after
    each failed connection attempt.
    """
    from twcomms.client import CommsClientFactory

    class CountingClient(CommsClientFactory):
        on_failure: Callable[[Any], object] | None = None

        def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
            super().clientConnectionFailed(connector, reason)
            if self.on_failure is not None:
                self.on_failure(self)

    on_failure = kwargs.pop("on_failure", None)
    client = CountingClient(**kwargs)
    client.on_failure = on_failure
    return client


RESTART_INITIAL_DELAY = 0.1
RESTART_MAX_DELAY = 1.0
RESTART_JITTER = 0.12


async def restart(scale: Scale, seed: int = 1000) -> Result:
    """
    C{scale.restart_clients} auto-reconnecting Twisted-API clients (seeded
    jitter) lose their server, fail to reconnect at least twice each while
    it is down, and all reconnect when it comes back on the same port;
    each then sends one message that arrives once. The first scheduled
    delays are spread by jitter exactly as the seeded generators say, all
    within C{[0, max_delay]}.
    """
    from twcomms.server import CommsServerFactory

    started = time.monotonic()
    n = scale.restart_clients
    result = Result(
        "restart (Twisted API)",
        scale=scale.name,
        load=f"{n} auto-reconnecting clients",
        faults="server stopped, down for >= 2 retries, restarted",
    )
    received: dict[int, list[int]] = {}
    got = Counter()

    def on_message(handle: Any, message: Any) -> None:
        received.setdefault(message["c"], []).append(message["round"])
        got.add()

    connects = Counter()
    closes = Counter()
    failing = Counter()
    reconnected_at: dict[int, float] = {}
    restarted_at = [0.0]
    failures: dict[int, int] = {}

    def client(i: int) -> Any:
        def on_connect(c: Any) -> None:
            connects.add()
            if restarted_at[0]:
                reconnected_at[i] = time.monotonic() - restarted_at[0]

        def on_failure(c: Any) -> None:
            failures[i] = failures.get(i, 0) + 1
            if failures[i] == 2:
                failing.add()

        return _counting_client(
            messageDataType="json",
            autoReconnect=True,
            initial_delay=RESTART_INITIAL_DELAY,
            max_delay=RESTART_MAX_DELAY,
            jitter=RESTART_JITTER,
            rng=random.Random(seed + i),
            on_connect=on_connect,
            on_close=lambda c, r: closes.add(),
            on_failure=on_failure,
        )

    first = CommsServerFactory("json", on_message=on_message)
    listening = await bounded(first.listen(LOCAL_TCP), 10, "listening")
    port = listening.getHost().port
    clients = [client(i) for i in range(n)]
    second = None
    try:
        for c in clients:
            c.connectTCP("127.0.0.1", port, timeout=10)
        await connects.wait(n, 30, "clients connected")
        for i, c in enumerate(clients):
            c.send({"c": i, "round": 0})
        await got.wait(n, 20, "first-round messages")
        await bounded(first.stop(), 20, "first server stop")
        await closes.wait(n, 20, "clients seeing the server go")
        await failing.wait(n, 30, "every client failing twice to reconnect")
        second = CommsServerFactory("json", on_message=on_message)
        restarted_at[0] = time.monotonic()
        await bounded(second.listen(("127.0.0.1", port)), 10, "listening again")
        await connects.wait(2 * n, 30, "clients reconnected")
        for i, c in enumerate(clients):
            c.send({"c": i, "round": 1})
        await got.wait(2 * n, 20, "second-round messages")
        await sleep(0.1)  # a duplicate would arrive now
    finally:
        for c in clients:
            with contextlib.suppress(Exception):
                await bounded(c.stop(), 10, "client stop")
        if second is not None:
            await bounded(second.stop(), 10, "second server stop")
    ok = sum(1 for i in range(n) if received.get(i) == [0, 1])
    result.sent = 2 * n
    result.received = ok * 2
    result.duplicated = sum(max(0, len(v) - 2) for v in received.values())
    result.lost = 2 * n - sum(min(2, len(v)) for v in received.values())
    result.check(ok == n, f"{n - ok} clients' messages missing or repeated")
    first_delays = [c.scheduled_delays[0] for c in clients]
    expected = []
    for i in range(n):
        rng = random.Random(seed + i)
        d = rng.normalvariate(
            RESTART_INITIAL_DELAY, RESTART_INITIAL_DELAY * RESTART_JITTER
        )
        expected.append(min(max(d, 0.0), RESTART_MAX_DELAY))
    result.check(first_delays == expected, "first delays differ from the seeded jitter")
    all_delays = [d for c in clients for d in c.scheduled_delays]
    result.check(
        all(0 <= d <= RESTART_MAX_DELAY for d in all_delays),
        f"delays outside [0, {RESTART_MAX_DELAY}]: "
        f"{min(all_delays)}..{max(all_delays)}",
    )
    spread = statistics.pstdev(first_delays)
    result.check(len(set(first_delays)) == n, "clients share a first delay")
    result.check(
        0.3 * RESTART_INITIAL_DELAY * RESTART_JITTER
        < spread
        < 3 * RESTART_INITIAL_DELAY * RESTART_JITTER,
        f"first delays' spread {spread:.4f}",
    )
    times = sorted(reconnected_at.values())
    result.details.update(
        first_delay_min=round(min(first_delays), 4),
        first_delay_max=round(max(first_delays), 4),
        first_delay_stdev=round(spread, 4),
        reconnect_after_restart_s=(round(times[0], 3), round(times[-1], 3))
        if times
        else None,
        retries=sum(len(c.scheduled_delays) for c in clients),
    )
    result.seconds = time.monotonic() - started
    return result


def restart_threaded(scale: Scale, offline: int = 5) -> Result:
    """
    Threaded API: C{scale.restart_clients} C{Client(autoReconnect=True)}s
    lose their C{Server}; while it is down each sends C{offline} messages
    (queued offline) and fails to reconnect at least twice; a new Server
    comes up on the same port: every client reconnects, every queued
    message arrives exactly once, in order, and a message sent after
    reconnecting arrives too. The first reconnection delays are spread by
    jitter.
    """
    from twcomms.threaded import Client, Server

    started = time.monotonic()
    n = scale.restart_clients
    result = Result(
        "restart (threaded API)",
        scale=scale.name,
        load=f"{n} auto-reconnecting clients, {offline} msgs each queued offline",
        faults="server stopped, down for >= 2 retries, restarted",
    )
    lock = threading.Lock()
    received: dict[int, list[tuple[int, int]]] = {}
    got = ThreadCounter()
    connects = ThreadCounter()
    closes = ThreadCounter()

    def on_message(message: Any) -> None:
        with lock:
            received.setdefault(message["c"], []).append((message["r"], message["k"]))
        got.add()

    def server() -> Server:
        s = Server("127.0.0.1", port)
        s.add_onmessage_callback(on_message)
        return s

    port = 0
    first = server()
    first.start(timeout=10)
    port = first.port
    servers = [first]
    clients: list[Client] = []
    try:
        for _ in range(n):
            c = Client(
                "127.0.0.1", port, autoReconnect=True, initial_delay=0.1, max_delay=1.0
            )
            c.add_onconnect_callback(lambda c: connects.add())
            c.add_onclose_callback(lambda c: closes.add())
            clients.append(c)
            c.connect(timeout=10, wait=False)
        connects.wait(n, 30, "clients connected")
        for i, c in enumerate(clients):
            c.send({"c": i, "r": 0, "k": 0})
        got.wait(n, 20, "first-round messages")
        first.stop(timeout=10)
        closes.wait(n, 20, "clients seeing the server go")
        refused = 0
        for i, c in enumerate(clients):
            for k in range(offline):
                try:
                    c.send({"c": i, "r": 1, "k": k})
                except Exception as e:
                    refused += 1
                    result.problems.append(f"send while disconnected raised {e!r}")
        result.check(
            not any(c.connected for c in clients), "a client reconnected too early"
        )
        wait_until(
            lambda: all(len(c._factory.scheduled_delays) >= 2 for c in clients),
            30,
            "every client retrying twice",
        )
        second = server()
        servers.append(second)
        second.start(timeout=10)
        connects.wait(2 * n, 30, "clients reconnected")
        got.wait(n + n * offline - refused, 30, "messages queued offline")
        for i, c in enumerate(clients):
            c.send({"c": i, "r": 2, "k": 0})
        got.wait(2 * n + n * offline - refused, 20, "messages after reconnecting")
        time.sleep(0.2)  # a duplicate would arrive now (a negative check)
    finally:
        for c in clients:
            c.close(timeout=10)
        for s in servers:
            s.stop(timeout=10)
    want = [(0, 0), *((1, k) for k in range(offline)), (2, 0)]
    ok = sum(1 for i in range(n) if received.get(i) == want)
    total = sum(map(len, received.values()))
    result.sent = n * len(want)
    result.received = ok * len(want)
    result.duplicated = sum(len(v) - len(set(v)) for v in received.values())
    result.lost = result.sent - (total - result.duplicated)
    result.check(ok == n, f"{n - ok} clients' messages lost, repeated or reordered")
    delays = [c._factory.scheduled_delays[0] for c in clients]
    everything = [d for c in clients for d in c._factory.scheduled_delays]
    spread = statistics.pstdev(delays)
    result.check(len(set(delays)) == n, "clients share a first reconnection delay")
    result.check(spread > 0.003, f"first delays barely spread ({spread:.4f} s)")
    result.check(
        all(0 <= d <= 1.0 for d in everything),
        f"delays outside [0, max_delay]: {min(everything)}..{max(everything)}",
    )
    result.details.update(
        first_delay_range=(round(min(delays), 4), round(max(delays), 4)),
        first_delay_stdev=round(spread, 4),
        retries=len(everything),
    )
    result.seconds = time.monotonic() - started
    return result
