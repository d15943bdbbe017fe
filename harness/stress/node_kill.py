"""
Scenario: node kill. One of two hub processes (nodes of one hub on one
real Redis) is SIGKILLed while clients on both stream numbered messages:
the survivors lose nothing among themselves; the killed node's clients
see their connection drop; a new process on the same port takes its
place, the clients reconnect, and everything broadcast afterwards, from
either node, reaches everyone exactly once.
"""

from __future__ import annotations

import time
from typing import Any

from harness.sockets import free_port
from harness.stress.cross_node import WAIT, relay_timeout, rss_figure
from harness.stress.nodes import (
    FENCE,
    HubProcess,
    connect_seq,
    hub_keys,
    hub_name,
    stop_hubs,
)
from harness.stress.reactor import Counter, bounded
from harness.stress.result import Result
from harness.stress.scale import Scale

#: The phases of the numbered messages: before the restart (the kill
#: comes during it), and after.
BEFORE = 1
AFTER = 2
#: The stream before the restart goes in this many rounds...
ROUNDS = 50
#: ... with at most this many rounds in flight (sent, not yet all
#: arrived at A's clients) when the next is sent.
WINDOW = 4


async def node_kill(scale: Scale, redis_url: str) -> Result:
    """
    Hubs A and B (C{twcomms serve --backplane redis_url --hub NAME}, mode
    broadcast); C{scale.node_kill_clients} raw clients, alternately on A
    and B. Before: every client streams C{scale.node_kill_messages}
    numbered messages in L{ROUNDS} rounds, at most L{WINDOW} rounds in
    flight; after a third of the rounds B is SIGKILLed (its clients stop
    sending) and A's clients send the rest. Then:

      - every client of A got every message of every other client of A,
        once, in order; of each client of B, a prefix (what B relayed
        before it died), the same at every client of A, none twice;
      - every client of B saw its connection drop, having got from each
        sender a prefix, none twice;
      - a new B process on the same port joins the backplane as a new
        node, B's clients reconnect, and every client sends
        C{scale.node_kill_messages} more: every client gets exactly
        everyone else's, once, in order; a fence from every client at
        the end lets a late duplicate show;
      - A and the new B exit 0 on SIGTERM; no hub logged trouble.

    Counted as had to arrive: A's clients' messages at A's other clients
    before, and everything after. What the hub leaves in Redis for the
    killed node is reported in C{details} (C{keys_after_stop}).
    """
    from twisted.internet import defer

    started = time.monotonic()
    n, m = scale.node_kill_clients, scale.node_kill_messages
    on_a = [i for i in range(n) if i % 2 == 0]
    on_b = [i for i in range(n) if i % 2 == 1]
    na, nb = len(on_a), len(on_b)
    rounds = max(1, min(ROUNDS, m))
    bounds = [m * r // rounds for r in range(rounds + 1)]
    kill_round = max(1, rounds // 3)
    must_before = m * na * (na - 1)
    must_after = m * n * (n - 1)
    result = Result(
        "node kill",
        scale=scale.name,
        load=f"{n} raw clients on 2 hub processes x {m:,} msgs, twice",
        faults="1 of 2 hubs SIGKILLed mid-stream, restarted on its port",
    )
    a_from_a = Counter()
    after = Counter()
    fences = Counter()

    def tally(client: Any, phase: int, sender: int) -> None:
        if phase == FENCE:
            fences.add()
        elif phase == AFTER:
            after.add()
        elif client.index % 2 == 0 and sender % 2 == 0:
            a_from_a.add()

    name = hub_name("kill")
    hubs: list[HubProcess] = []
    a_clients: list[Any] = []
    b_clients: list[Any] = []
    b_again: list[Any] = []
    peaks: dict[str, int | None] = {}
    codes: list[Any] = []
    details: dict[str, Any] = {"hub": name}
    dropped: list[float] = []
    try:
        hub_a = HubProcess(free_port(), redis_url, name)
        hubs.append(hub_a)
        hub_b = HubProcess(free_port(), redis_url, name)
        hubs.append(hub_b)
        node_a = await hub_a.joined(WAIT)
        node_b = await hub_b.joined(WAIT)
        for i in range(n):
            hub = hub_a if i % 2 == 0 else hub_b
            client = await connect_seq(hub.port, i, tally, WAIT)
            (a_clients if i % 2 == 0 else b_clients).append(client)
            await hub.wait_client(client.port, WAIT)

        # Before: stream, and kill B a third of the way in.
        killed_at = 0.0
        for r in range(rounds):
            if r >= WINDOW:
                done = bounds[r - WINDOW + 1] * na * (na - 1)
                await a_from_a.wait(done, relay_timeout(done), "A's clients to keep up")
            senders = a_clients if killed_at else a_clients + b_clients
            for client in senders:
                client.send(BEFORE, range(bounds[r], bounds[r + 1]))
            if r == kill_round - 1:
                peaks["B"] = hub_b.peak_rss()
                result.check(
                    all(c.is_open for c in a_clients + b_clients),
                    "a client's connection dropped before the kill",
                )
                details["in_flight_at_kill"] = (
                    bounds[r + 1] * na * (na - 1) - a_from_a.count
                )
                hub_b.kill()
                killed_at = time.monotonic()
                for c in b_clients:
                    c.lost.addCallback(lambda _: dropped.append(time.monotonic()))
        drops = [bounded(c.lost, WAIT, "B's client seeing the drop") for c in b_clients]
        await defer.gatherResults(drops, consumeErrors=True)
        details["drop_seconds"] = round(max(dropped, default=killed_at) - killed_at, 3)
        await hub_b.wait_ended(WAIT)
        await a_from_a.wait(must_before, relay_timeout(must_before), "A to A")

        # A new B on the same port; B's clients come back.
        restarting = time.monotonic()
        hub_b2 = HubProcess(hub_b.port, redis_url, name)
        hubs.append(hub_b2)
        node_b2 = await hub_b2.joined(WAIT)
        result.check(len({node_a, node_b, node_b2}) == 3, "the new B is not a new node")
        for i in on_b:
            client = await connect_seq(hub_b2.port, i, tally, WAIT)
            b_again.append(client)
            await hub_b2.wait_client(client.port, WAIT)
        details["restart_seconds"] = round(time.monotonic() - restarting, 3)

        # After: everyone to everyone.
        everyone = a_clients + b_again
        for client in everyone:
            client.send(AFTER, range(m))
        await after.wait(must_after, relay_timeout(must_after), "messages after")
        for client in everyone:
            client.fence()
        await fences.wait(n * (n - 1), WAIT, "every client's fence at every other")
        result.check(
            all(c.is_open for c in everyone),
            f"connections dropped: A's clients "
            f"{[c.index for c in a_clients if not c.is_open]}, B's "
            f"{[c.index for c in b_again if not c.is_open]}",
        )
        peaks["A"] = hub_a.peak_rss()
        peaks["B again"] = hub_b2.peak_rss()
        details["keys_before_stop"] = await hub_keys(redis_url, name)
    finally:
        for client in a_clients + b_clients + b_again:
            client.close()
        codes = await stop_hubs([h for h in hubs if h.pid is not None])
    details["keys_after_stop"] = await hub_keys(redis_url, name)
    result.check(codes == [0, 0], f"A's and new B's exit codes on SIGTERM: {codes}")
    for label, h in zip(("A", "B", "B again"), hubs, strict=True):
        trouble = h.trouble()
        result.check(not trouble, f"hub {label} logged trouble: {trouble[:5]}")

    # Before the restart.
    sent_by_b = bounds[kill_round]
    prefixes = set()
    for c in a_clients:
        short = [s for s in on_a if s != c.index and c.nexts.get((BEFORE, s), 0) != m]
        result.check(not short, f"A's client {c.index}: incomplete from A's {short}")
        got_from_b = tuple(c.by_sender[(BEFORE, s)] for s in on_b)
        prefixes.add(got_from_b)
        result.check(
            all(k <= sent_by_b for k in got_from_b),
            f"A's client {c.index}: more from B's clients than they sent",
        )
    result.check(
        len(prefixes) <= 1,
        f"A's clients got different parts of B's clients' messages: {prefixes}",
    )
    for c in a_clients + b_clients + b_again:
        result.check(c.gaps[BEFORE] == 0, f"client {c.index}: gaps before {c.gaps}")
        result.check(c.gaps[AFTER] == 0, f"client {c.index}: gaps after {c.gaps}")
        result.check(c.own == 0, f"client {c.index}: got {c.own} of its own")
        result.check(c.bad == 0, f"client {c.index}: {c.bad} malformed frames")
        result.check(
            sum(c.duplicated.values()) == 0,
            f"client {c.index}: duplicates {dict(c.duplicated)}",
        )

    # After the restart.
    for c in a_clients + b_again:
        short = [
            s for s in range(n) if s != c.index and c.nexts.get((AFTER, s), 0) != m
        ]
        result.check(not short, f"client {c.index}: incomplete after from {short}")

    got_before = sum(
        c.by_sender[(BEFORE, s)] for c in a_clients for s in on_a if s != c.index
    )
    got_after = sum(c.received[AFTER] for c in a_clients + b_again)
    result.sent = must_before + must_after
    result.received = got_before + got_after
    result.lost = result.sent - result.received
    result.duplicated = sum(
        sum(c.duplicated.values()) for c in a_clients + b_clients + b_again
    )
    result.memory = rss_figure(peaks)
    details.update(
        nodes={"A": node_a, "B": node_b, "B again": node_b2},
        sent_before={"by A's clients": na * m, "by B's clients": nb * sent_by_b},
        survivors_got_from_killed_nodes_clients=sum(
            c.by_sender[(BEFORE, s)] for c in a_clients for s in on_b
        ),
        of_at_most=na * nb * sent_by_b,
        killed_nodes_clients_got_before_drop=sum(c.received[BEFORE] for c in b_clients),
        must_arrive={"before (A to A)": must_before, "after": must_after},
        received={"before (A to A)": got_before, "after": got_after},
        hub_peak_rss=peaks,
    )
    result.details.update(details)
    result.seconds = time.monotonic() - started
    return result
