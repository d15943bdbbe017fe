"""
Scenario: cross-node load. Two hub processes, nodes of one hub on one
real Redis, relay every client's numbered messages to every other client
on both nodes: each client gets everyone else's messages once, each
sender's in order, and never its own.
"""

from __future__ import annotations

import time
from typing import Any

from harness.sockets import free_port
from harness.stress.nodes import FENCE, HubProcess, connect_seq, hub_name, stop_hubs
from harness.stress.reactor import Counter
from harness.stress.result import Result, mib
from harness.stress.scale import Scale

#: Seconds a single event (a hub joining, a client registered) may take.
WAIT = 10.0
#: The phase of the numbered messages (L{harness.stress.nodes.SeqClient}).
LOAD = 1


def relay_timeout(deliveries: int) -> float:
    """
    Seconds for C{deliveries} messages to arrive (generous: a bound, not a
    speed requirement).
    """
    return 30 + deliveries / 20_000


def rss_figure(peaks: dict[str, int | None]) -> str:
    """
    The memory column: each hub process's peak resident memory.
    """
    shown = [f"{name} {mib(p)}" for name, p in peaks.items() if p is not None]
    return "hub peak RSS: " + ", ".join(shown) if shown else "-"


async def cross_node_load(scale: Scale, redis_url: str) -> Result:
    """
    Two hub processes (C{twcomms serve --backplane redis_url --hub NAME},
    mode broadcast); C{scale.cross_node_clients} raw clients, alternately
    on each, all registered before anything is sent; each sends
    C{scale.cross_node_messages} messages C{{"p", "s": sender, "q": seq}}
    at once. Every client must receive exactly clients x messages -
    messages (everyone's but its own), each sender's in order, none twice,
    none of its own. A fence from every client at the end (once it has
    reached everyone, anything sent before it has arrived) lets a late
    duplicate show.
    """
    started = time.monotonic()
    n, m = scale.cross_node_clients, scale.cross_node_messages
    each = (n - 1) * m
    result = Result(
        "cross-node load",
        scale=scale.name,
        load=f"{n} raw clients on 2 hub processes x {m:,} msgs, each to {n - 1}",
        faults="-",
    )
    got = Counter()
    fences = Counter()

    def tally(client: Any, phase: int, sender: int) -> None:
        (fences if phase == FENCE else got).add()

    hubs: list[HubProcess] = []
    clients: list[Any] = []
    peaks: dict[str, int | None] = {}
    name = hub_name("xload")
    codes: list[Any] = []
    try:
        hubs = [HubProcess(free_port(), redis_url, name) for _ in range(2)]
        nodes = [await h.joined(WAIT) for h in hubs]
        result.check(nodes[0] != nodes[1], f"both hubs are node {nodes[0]}")
        for i in range(n):
            h = hubs[i % 2]
            client = await connect_seq(h.port, i, tally, WAIT)
            clients.append(client)
            await h.wait_client(client.port, WAIT)
        sending = time.monotonic()
        for client in clients:
            client.send(LOAD, range(m))
        await got.wait(n * each, relay_timeout(n * each), "messages relayed")
        relay_seconds = time.monotonic() - sending
        for client in clients:
            client.fence()
        await fences.wait(n * (n - 1), WAIT, "every client's fence at every other")
        dropped = [c.index for c in clients if not c.is_open]
        result.check(not dropped, f"clients' connections dropped: {dropped}")
        peaks = {"A": hubs[0].peak_rss(), "B": hubs[1].peak_rss()}
    finally:
        for client in clients:
            client.close()
        codes = await stop_hubs(hubs)
    result.check(codes == [0, 0], f"hubs' exit codes on SIGTERM: {codes}")
    for label, h in zip("AB", hubs, strict=True):
        trouble = h.trouble()
        result.check(not trouble, f"hub {label} logged trouble: {trouble[:5]}")
    for c in clients:
        others = [s for s in range(n) if s != c.index]
        short = [s for s in others if c.nexts.get((LOAD, s), 0) != m]
        result.check(
            not short,
            f"client {c.index}: incomplete from senders {short[:10]} "
            f"({c.received[LOAD]} of {each})",
        )
        result.check(
            c.gaps[LOAD] == 0, f"client {c.index}: {c.gaps[LOAD]} skipped numbers"
        )
        result.check(c.own == 0, f"client {c.index}: got {c.own} of its own")
        result.check(c.bad == 0, f"client {c.index}: {c.bad} malformed frames")
        result.check(
            sum(c.duplicated.values()) == 0,
            f"client {c.index}: duplicates {dict(c.duplicated)}",
        )
    result.sent = n * each
    result.received = sum(c.received[LOAD] for c in clients)
    result.lost = result.sent - result.received
    result.duplicated = sum(sum(c.duplicated.values()) for c in clients)
    result.memory = rss_figure(peaks)
    result.details.update(
        hub=name,
        messages_sent=n * m,
        per_client=each,
        relay_seconds=round(relay_seconds, 2),
        deliveries_per_s=round(n * each / max(relay_seconds, 1e-9)),
        hub_peak_rss=peaks,
    )
    result.seconds = time.monotonic() - started
    return result
