"""
Scenario: load. Many clients in client processes send numbered messages
to one server, which then broadcasts to all; everything arrives once, in
order.
"""

from __future__ import annotations

import time
from typing import Any

from harness.stress.processes import driver, kill_all
from harness.stress.reactor import LOCAL_TCP, Counter, bounded
from harness.stress.result import Result
from harness.stress.scale import Scale


async def load(scale: Scale) -> Result:
    """
    C{scale.load_clients} clients in C{scale.load_processes} client processes
    each send C{scale.load_messages} numbered messages: the server receives
    exactly clients x messages, each client's in order. Then the server
    broadcasts C{scale.load_broadcasts} messages and every client gets all,
    in order.
    """
    from twisted.internet import defer

    from twcomms.server import CommsServerFactory

    started = time.monotonic()
    n, m, k = scale.load_clients, scale.load_messages, scale.load_broadcasts
    nproc = max(1, min(scale.load_processes, n))
    result = Result(
        "load",
        scale=scale.name,
        load=f"{n} clients x {m:,} msgs in, {k:,} broadcasts out ({nproc} procs)",
        faults="-",
    )
    nexts = [0] * n
    state = {"dup": 0, "gaps": 0, "bad": 0}
    received = Counter()

    def on_message(handle: Any, message: Any) -> None:
        try:
            c, i = message["c"], message["i"]
            expected = nexts[c]
        except (TypeError, KeyError, IndexError):
            state["bad"] += 1
            return
        if i == expected:
            nexts[c] = i + 1
        elif i < expected:
            state["dup"] += 1
        else:
            state["gaps"] += 1
            nexts[c] = i + 1
        received.add()

    server = CommsServerFactory("json", on_message=on_message)
    listening = await bounded(server.listen(LOCAL_TCP), 10, "listening")
    port = listening.getHost().port
    timeout = 60 + n * m / 20_000 + n * k / 50_000
    procs = []
    per = -(-n // nproc)
    try:
        for first in range(0, n, per):
            count = min(per, n - first)
            procs.append(
                driver(
                    "load", "--port", port, "--clients", count, "--first", first,
                    "--messages", m, "--broadcasts", k, "--timeout", timeout,
                )
            )  # fmt: skip
        await received.wait(n * m, timeout, "messages from every client")
        result.check(len(server.clients) == n, f"{len(server.clients)} clients")
        result.check(all(x == m for x in nexts), "some client's messages are missing")
        inbound_seconds = time.monotonic() - started
        clients = list(server.clients)
        for b in range(k):
            server.broadcast({"b": b})
            if b % 64 == 63:
                waits = [
                    c.protocol.whenDrained() for c in clients if c.protocol.writePaused
                ]
                if waits:
                    await bounded(defer.gatherResults(waits), 30, "clients to drain")
        outcomes = []
        for p in procs:
            outcomes.append(await p.wait_event("result", timeout))
    finally:
        await kill_all(procs)
        await bounded(server.stop(), 20, "server stop")
    got_out = sum(o["received"] for o in outcomes)
    result.sent = n * m + n * k
    result.received = received.count - state["dup"] + got_out
    result.duplicated = state["dup"] + sum(o["duplicated"] for o in outcomes)
    result.lost = n * m - (received.count - state["dup"]) + n * k - got_out
    result.check(received.count == n * m, f"server received {received.count}")
    result.check(state["dup"] == 0 and state["gaps"] == 0, f"inbound order {state}")
    result.check(state["bad"] == 0, f"{state['bad']} malformed messages")
    for o in outcomes:
        result.check(
            o["received"] == o["expected"] and o["duplicated"] == 0 and o["gaps"] == 0,
            f"a client process: {o}",
        )
        result.check(o["closed_early"] == 0 and not o["timed_out"], f"{o}")
    result.details.update(
        inbound_seconds=round(inbound_seconds, 2),
        inbound_msgs_per_s=round(n * m / max(inbound_seconds, 1e-9)),
    )
    result.seconds = time.monotonic() - started
    return result
