"""
Scenario: Redis outage. Two hub processes, nodes of one hub on a
C{redis-server} of the scenario's own, relay numbered messages between
their clients; mid-stream the Redis is SIGKILLed and, a while later,
started again on its port, empty (nothing is persisted). Meanwhile every
client goes on sending: each node goes on delivering to its own clients,
and keeps what it publishes (within its outage bound) for the other node,
sent in order once Redis is back; an epoch key tells the nodes that Redis
came back empty, and each republishes what Redis had lately confirmed.

Run twice:

  - within the bound (the default C{--outage-max-count}): afterwards every
    client has every other client's messages exactly once, each sender's
    in order, as if Redis had never gone away. Hub B is stopped (SIGSTOP)
    just before the kill, until Redis has confirmed what A published, so
    Redis dies holding entries B never read: B gets them from A's
    republishing (B's C{recovered}), the rest of it as duplicates;
  - past the bound (C{--outage-max-count} = C{scale.redis_outage_bound},
    far fewer than what each node's clients send during the outage): what
    overflowed never crosses, and exactly that: each remote sender's
    messages arrive in order, none twice, with one hole at the end of its
    outage part, and the holes at each receiving client add up to what
    the sender's hub reports as C{overflowed}. Nothing sent before the
    outage, nor what the bound kept, nor anything sent after it, is
    missing.

The hubs' figures come from their stats lines (C{--stats-interval}
L{STATS_INTERVAL}), the outage's length from their "the broker is back
after N s" lines.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.redis import MISSING, RedisServer, find_redis_server, redis_command
from harness.sockets import free_port
from harness.stress.cross_node import WAIT, relay_timeout, rss_figure
from harness.stress.nodes import FENCE, HubProcess, connect_seq, hub_name, stop_hubs
from harness.stress.reactor import Counter, sleep
from harness.stress.result import Result
from harness.stress.scale import Scale

#: The phase of the numbered messages: one sequence per sender across the
#: whole stream (before, during and after the outage), so order is checked
#: across the outage too.
LOAD = 1
#: At most this many rounds in flight (sent, not yet all arrived) when the
#: next is sent.
WINDOW = 4
#: Rounds in each part of the stream within the bound (before, during,
#: after the outage).
ROUNDS = 10
#: Seconds the outage lasts at least: the outage's rounds are paced over
#: it (time to pass, not an event to wait for).
OUTAGE_SECONDS = 2.0
#: Seconds the hubs may take to be back once Redis is: ClientService
#: retries with back-off (1, 1.5, 2.25, 3.4... s, plus up to 1 s jitter).
BACK_WAIT = 30.0
#: Seconds between the hubs' stats lines.
STATS_INTERVAL = 0.25

#: Log lines of the hubs.
LOST_LINE = r"backplane: lost the broker"
BACK_LINE = (
    r"backplane: the broker is back after ([\d.]+) s( \(restarted empty\))?; "
    r"(\d+) kept messages sent \((\d+) of them sent again\)"
)
STATS_LINE = (
    r"stats: backplane: (?P<published>\d+) published \((?P<kept>\d+) waiting "
    r"for Redis\), (?P<received>\d+) received; lost: (?P<overflowed>\d+) "
    r"overflowed, (?P<missed>\d+) missed in (?P<gaps>\d+) gaps, "
    r"(?P<expired>\d+) expired, (?P<refused>\d+) refused; (?P<duplicates>\d+) "
    r"duplicates dropped, (?P<recovered>\d+) recovered, (?P<outages>\d+) outages"
)


async def stats_line(
    hub: HubProcess,
    timeout: float,
    until: Callable[[dict[str, int]], bool] = lambda figures: True,
) -> dict[str, int]:
    """
    The figures of the first stats line the hub logs after this call for
    which C{until} holds (by default, its next one).
    """
    deadline = time.monotonic() + timeout
    start = len(hub.lines)
    regex = re.compile(STATS_LINE)
    # From the next reactor turn, not from inside the hub's line
    # callbacks, on from C{start}.
    await sleep(0)
    while True:
        left = max(deadline - time.monotonic(), 0.1)
        m = await hub.wait_line(STATS_LINE, left, start=start)
        figures = {k: int(v) for k, v in m.groupdict().items()}
        if until(figures):
            return figures
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"hub :{hub.port}'s stats did not get there within {timeout} s: "
                f"{figures}; its log ends:\n{hub.log_tail()}"
            )
        # On from the line after this one, from the next reactor turn.
        start = next(
            i for i in range(start, len(hub.lines)) if regex.search(hub.lines[i])
        )
        start += 1
        await sleep(0)


def settled(figures: dict[str, int]) -> bool:
    """
    Nothing waits for Redis: all the hub published is confirmed.
    """
    return figures["kept"] == 0


@dataclass
class Tally:
    """
    What the clients got, by part of the stream (0 before the outage, 1
    during, 2 after) and by whether the sender is on the same node; and
    each (receiver, sender)'s holes (seq ranges skipped).
    """

    cuts: tuple[int, int]
    same: list[Counter] = field(default_factory=lambda: [Counter() for _ in range(3)])
    cross: list[Counter] = field(default_factory=lambda: [Counter() for _ in range(3)])
    both: list[Counter] = field(default_factory=lambda: [Counter() for _ in range(3)])
    fences: Counter = field(default_factory=Counter)
    outage: bool = False
    same_in_outage: int = 0
    cross_in_outage: int = 0
    everything: Counter = field(default_factory=Counter)
    last: dict[tuple[int, int], int] = field(default_factory=dict)
    holes: dict[tuple[int, int], list[tuple[int, int]]] = field(default_factory=dict)

    def part(self, seq: int) -> int:
        return 0 if seq < self.cuts[0] else 1 if seq < self.cuts[1] else 2

    def __call__(self, client: Any, phase: int, sender: int) -> None:
        if phase == FENCE:
            self.fences.add()
            return
        seq = client.nexts[(phase, sender)] - 1
        key = (client.index, sender)
        last = self.last.get(key, -1)
        if seq > last + 1:
            self.holes.setdefault(key, []).append((last + 1, seq - 1))
        self.last[key] = seq
        local = client.index % 2 == sender % 2
        # (Counters last: a Counter's waiter runs as it is added to.)
        if self.outage:
            if local:
                self.same_in_outage += 1
            else:
                self.cross_in_outage += 1
        part = self.part(seq)
        (self.same if local else self.cross)[part].add()
        self.both[part].add()
        self.everything.add()


async def stream(
    clients: list[Any],
    lo: int,
    hi: int,
    step: int,
    gate: Counter,
    per_seq: int,
    what: str,
    pace: float = 0.0,
) -> None:
    """
    Every client sends its messages C{lo} to C{hi} in rounds of C{step},
    at most L{WINDOW} rounds in flight: round r goes once C{gate} (the
    deliveries of this part that must arrive, C{per_seq} per number) has
    counted every round up to r - WINDOW. With C{pace}, seconds between
    rounds.
    """
    bounds = [*range(lo, hi, step), hi]
    for r in range(len(bounds) - 1):
        if r >= WINDOW:
            need = (bounds[r - WINDOW + 1] - lo) * per_seq
            await gate.wait(need, relay_timeout(need), what)
        for client in clients:
            client.send(LOAD, range(bounds[r], bounds[r + 1]))
        if pace:
            await sleep(pace)


async def _part(
    result: Result, scale: Scale, server: RedisServer, bound: int | None
) -> dict[str, Any]:
    """
    One run: within the outage bound (C{bound} None: the hubs' default),
    or past it (C{--outage-max-count bound}). Checks go to C{result};
    the figures are returned.
    """
    label = "within the bound" if bound is None else "past the bound"
    n, m = scale.redis_outage_clients, scale.redis_outage_messages
    on_a = [i for i in range(n) if i % 2 == 0]
    on_b = [i for i in range(n) if i % 2 == 1]
    na, nb = len(on_a), len(on_b)
    pairs = n * (n - 1)
    same_pairs = na * (na - 1) + nb * (nb - 1)
    if bound is None:
        cuts = (m // 3, 2 * m // 3)
        steps = [max(1, c // ROUNDS) for c in (cuts[0], cuts[1] - cuts[0], m - cuts[1])]
    else:
        # A quarter before, half during, a quarter after; outside the
        # outage at most WINDOW rounds are unconfirmed, well within the
        # bound, so nothing overflows then.
        cuts = (m // 4, 3 * m // 4)
        step = max(1, bound // (2 * WINDOW * max(na, nb)))
        steps = [step, max(1, (cuts[1] - cuts[0]) // ROUNDS), step]
    tally = Tally(cuts)
    name = hub_name("outage")
    extra: list[str | float] = ["--stats-interval", STATS_INTERVAL]
    if bound is not None:
        extra += ["--outage-max-count", bound]
    prefix = f"twcomms:{name}:"
    sentinel = f"twcomms-test:{name}:sentinel"
    hubs: list[HubProcess] = []
    clients: list[Any] = []
    peaks: dict[str, int | None] = {}
    codes: list[Any] = []
    figures: dict[str, Any] = {"hub": name}
    stats: list[dict[str, int]] = []
    backs: list[Any] = []
    paused = False
    try:
        hubs = [HubProcess(free_port(), server.url, name, *extra) for _ in range(2)]
        nodes = [await h.joined(WAIT) for h in hubs]
        result.check(nodes[0] != nodes[1], f"{label}: both hubs are node {nodes[0]}")
        for i in range(n):
            h = hubs[i % 2]
            client = await connect_seq(h.port, i, tally, WAIT)
            clients.append(client)
            await h.wait_client(client.port, WAIT)
        a_clients = [clients[i] for i in on_a]
        b_clients = [clients[i] for i in on_b]

        # Redis persists nothing, so a restart brings it back empty: a key
        # of our own (no hub writes it) shows it, and the hub's epoch.
        config = redis_command(server.port, "CONFIG", "GET", "save") + redis_command(
            server.port, "CONFIG", "GET", "appendonly"
        )
        result.check(
            config == [b"save", b"", b"appendonly", b"no"],
            f"{label}: the Redis may persist data: {config}",
        )
        epoch = redis_command(server.port, "GET", prefix + "epoch")
        result.check(epoch is not None, f"{label}: no epoch key before the outage")
        redis_command(server.port, "SET", sentinel, "before the outage")

        # Before the outage.
        await stream(
            clients, 0, cuts[0], steps[0], tally.both[0], pairs, "deliveries before"
        )
        if bound is not None:
            # Past the bound: everything confirmed first, so the bound keeps
            # exactly its count of what is sent during the outage.
            need = cuts[0] * pairs
            await tally.both[0].wait(need, relay_timeout(need), "deliveries before")
            before = [await stats_line(h, WAIT, settled) for h in hubs]
            result.check(
                all(s["overflowed"] == 0 for s in before),
                f"{label}: overflowed before the outage: {before}",
            )

        if bound is None:
            # B lags behind: stopped, so that Redis confirms what A's
            # clients sent last and B has not read it when Redis dies (the
            # hubs' "recovered": delivered from A's republishing).
            hubs[1].signal(signal.SIGSTOP)
            paused = True
            published = na * cuts[0]
            await stats_line(
                hubs[0],
                WAIT,
                lambda s: s["published"] == published and settled(s),
            )

        # The outage: Redis SIGKILLed (mid-stream within the bound).
        marks = [len(h.lines) for h in hubs]
        figures["in_flight_at_kill"] = cuts[0] * pairs - tally.both[0].count
        server.kill()
        killed = time.monotonic()
        tally.outage = True
        if paused:
            hubs[1].signal(signal.SIGCONT)
            paused = False
        if bound is not None:
            for h, mark in zip(hubs, marks, strict=True):
                await h.wait_line(LOST_LINE, WAIT, start=mark)
        outage_rounds = max(1, -(-(cuts[1] - cuts[0]) // steps[1]))
        await stream(
            clients,
            cuts[0],
            cuts[1],
            steps[1],
            tally.same[1],
            same_pairs,
            "same-node deliveries during the outage",
            pace=OUTAGE_SECONDS / outage_rounds,
        )
        need = (cuts[1] - cuts[0]) * same_pairs
        await tally.same[1].wait(
            need, relay_timeout(need), "same-node deliveries during the outage"
        )
        figures["same_node_during_outage"] = tally.same_in_outage
        figures["cross_node_during_outage"] = tally.cross_in_outage
        result.check(
            tally.same_in_outage >= need,
            f"{label}: {tally.same_in_outage} same-node deliveries during the "
            f"outage, of {need} sent",
        )

        # Redis again, on its port, empty.
        tally.outage = False
        server.restart()
        restarted = time.monotonic()
        figures["harness_outage_seconds"] = round(restarted - killed, 3)
        result.check(
            redis_command(server.port, "GET", sentinel) is None,
            f"{label}: the restarted Redis kept a key: it is not empty",
        )
        again = redis_command(server.port, "GET", prefix + "epoch")
        result.check(again != epoch, f"{label}: the epoch survived the restart")
        # (A hub may have set a new one already.)
        figures["epoch_after_restart"] = "gone" if again is None else "new"
        for h, mark in zip(hubs, marks, strict=True):
            backs.append(await h.wait_line(BACK_LINE, BACK_WAIT, start=mark))
        figures["back_after_restart_seconds"] = round(time.monotonic() - restarted, 3)
        figures["hub_outage_seconds"] = [float(b.group(1)) for b in backs]
        figures["kept_sent_when_back"] = [int(b.group(3)) for b in backs]
        figures["sent_again_when_back"] = [int(b.group(4)) for b in backs]
        result.check(
            all(b.group(2) for b in backs),
            f"{label}: a hub did not see Redis restarted empty: "
            f"{[b.group(0) for b in backs]}",
        )
        if bound is not None:
            # Nothing unconfirmed before the stream goes on (else what is
            # sent next could overflow too).
            for h in hubs:
                await stats_line(h, WAIT, settled)

        # After the outage.
        await stream(
            clients, cuts[1], m, steps[2], tally.both[2], pairs, "deliveries after"
        )
        need = (m - cuts[1]) * pairs
        await tally.both[2].wait(need, relay_timeout(need), "deliveries after")
        if bound is None:
            need = m * pairs
            await tally.everything.wait(need, relay_timeout(need), "everything")
        for client in clients:
            client.fence()
        await tally.fences.wait(pairs, WAIT, "every client's fence at every other")
        stats = [await stats_line(h, WAIT, settled) for h in hubs]
        result.check(
            all(c.is_open for c in clients),
            f"{label}: connections dropped: "
            f"{[c.index for c in clients if not c.is_open]}",
        )
        peaks = {"A": hubs[0].peak_rss(), "B": hubs[1].peak_rss()}
    finally:
        if paused:
            hubs[1].signal(signal.SIGCONT)
        for client in clients:
            client.close()
        codes = await stop_hubs(hubs)
    result.check(codes == [0, 0], f"{label}: hubs' exit codes on SIGTERM: {codes}")
    for hub_label, h in zip("AB", hubs, strict=True):
        trouble = h.trouble()
        result.check(
            not trouble, f"{label}: hub {hub_label} logged trouble: {trouble[:5]}"
        )
        lost = [line for line in h.lines if re.search(LOST_LINE, line)]
        result.check(
            len(lost) == 1,
            f"{label}: hub {hub_label} lost the broker {len(lost)} times",
        )

    # The hubs' figures.
    senders = (na, nb)
    for x, (mine, other) in enumerate(zip(stats, reversed(stats), strict=True)):
        hub_label = "AB"[x]
        result.check(
            mine["published"] + mine["overflowed"] == senders[x] * (m + 1),
            f"{label}: hub {hub_label} published {mine['published']} + overflowed "
            f"{mine['overflowed']} of its clients' {senders[x] * (m + 1)}",
        )
        result.check(
            other["received"] == mine["published"],
            f"{label}: hub {'BA'[x]} received {other['received']} of the "
            f"{mine['published']} hub {hub_label} published",
        )
        if bound is None and x == 0:
            result.check(
                other["recovered"] > 0,
                f"{label}: hub B recovered nothing of what Redis lost: {other}",
            )
        for k in ("missed", "gaps", "expired", "refused", "kept"):
            result.check(mine[k] == 0, f"{label}: hub {hub_label} {k} {mine[k]}")
        result.check(mine["outages"] == 1, f"{label}: hub {hub_label} outages {mine}")
        if bound is None:
            result.check(
                mine["overflowed"] == 0,
                f"{label}: hub {hub_label} overflowed {mine['overflowed']}",
            )
        else:
            result.check(
                mine["overflowed"] > 0, f"{label}: hub {hub_label} did not overflow"
            )

    # The clients.
    for c in clients:
        result.check(c.own == 0, f"{label}: client {c.index}: got {c.own} of its own")
        result.check(c.bad == 0, f"{label}: client {c.index}: {c.bad} malformed")
        result.check(
            sum(c.duplicated.values()) == 0,
            f"{label}: client {c.index}: duplicates {dict(c.duplicated)}",
        )
        short = [s for s in range(n) if s != c.index and c.nexts.get((LOAD, s), 0) != m]
        result.check(
            not short, f"{label}: client {c.index}: stream cut short from {short}"
        )
    missing_by_hub: dict[str, set[int]] = {}
    if bound is None:
        holes = {k: v for k, v in tally.holes.items() if v}
        result.check(not holes, f"{label}: holes (receiver, sender): {holes}")
    else:
        # Same-node: nothing missing. Cross-node: one hole per sender, at
        # the end of its outage part, the same at every receiver; what the
        # receivers miss from a hub's senders is what that hub overflowed.
        for c in clients:
            for s in range(n):
                if s == c.index:
                    continue
                holes_cs = tally.holes.get((c.index, s), [])
                if c.index % 2 == s % 2:
                    result.check(
                        not holes_cs,
                        f"{label}: client {c.index} missed same-node {s}'s {holes_cs}",
                    )
                    continue
                ok = len(holes_cs) <= 1 and all(
                    cuts[0] <= lo and hi == cuts[1] - 1 for lo, hi in holes_cs
                )
                result.check(
                    ok,
                    f"{label}: client {c.index} missed from {s} {holes_cs}, not one "
                    f"hole ending the outage part [{cuts[0]}, {cuts[1]})",
                )
        for x, receivers in enumerate((b_clients, a_clients)):
            hub_label = "AB"[x]
            remote = on_a if x == 0 else on_b
            seen = set()
            for c in receivers:
                holes_c = tuple(
                    tuple(tally.holes.get((c.index, s), [])) for s in remote
                )
                seen.add(holes_c)
                missing = sum(hi - lo + 1 for h in holes_c for lo, hi in h)
                missing_by_hub.setdefault(hub_label, set()).add(missing)
                result.check(
                    missing == stats[x]["overflowed"],
                    f"{label}: client {c.index} missed {missing} from hub "
                    f"{hub_label}'s clients, which overflowed "
                    f"{stats[x]['overflowed']}",
                )
                kept = (cuts[1] - cuts[0]) * len(remote) - missing
                result.check(
                    kept == bound,
                    f"{label}: client {c.index} got {kept} of hub {hub_label}'s "
                    f"clients' outage messages, not the bound {bound}",
                )
            result.check(
                len(seen) == 1,
                f"{label}: hub {hub_label}'s receivers missed different "
                f"messages: {sorted(seen)[:3]}",
            )

    overflowed = [s["overflowed"] for s in stats]
    # Must arrive: everything but what overflowed (each overflowed message
    # of hub X would have gone to every client of the other hub).
    by_design = overflowed[0] * nb + overflowed[1] * na
    delivered = sum(c.received[LOAD] for c in clients)
    figures.update(
        clients=n,
        messages_per_client=m,
        outage_part=list(cuts),
        outage_max_count=bound if bound is not None else "default",
        must_arrive=m * pairs - by_design,
        delivered=delivered,
        lost=m * pairs - by_design - delivered,
        duplicated_at_clients=sum(sum(c.duplicated.values()) for c in clients),
        not_sent_overflowed=by_design,
        hubs={"AB"[x]: s for x, s in enumerate(stats)},
        published=sum(s["published"] for s in stats),
        overflowed=overflowed,
        recovered=sum(s["recovered"] for s in stats),
        duplicates_dropped_at_hubs=sum(s["duplicates"] for s in stats),
        missing_per_receiver={k: sorted(v) for k, v in missing_by_hub.items()},
        hub_peak_rss=peaks,
    )
    return figures


async def redis_outage(scale: Scale, redis_executable: str | None = None) -> Result:
    """
    Hubs A and B (C{twcomms serve --backplane URL --hub NAME}, mode
    broadcast) on a C{redis-server} of this scenario's own (it kills it),
    C{scale.redis_outage_clients} raw clients alternately on A and B, each
    streaming C{scale.redis_outage_messages} numbered messages through a
    Redis outage, twice: within the hubs' outage bound, then past it
    (L{_part}). A and B exit 0 on SIGTERM and log no trouble.

    @raise RuntimeError: there is no C{redis-server} (L{MISSING}).
    """
    started = time.monotonic()
    n, m = scale.redis_outage_clients, scale.redis_outage_messages
    executable = redis_executable or find_redis_server()
    if executable is None:
        raise RuntimeError(MISSING)
    result = Result(
        "redis outage",
        scale=scale.name,
        load=f"{n} raw clients on 2 hub processes x {m:,} msgs, twice",
        faults=(
            "Redis SIGKILLed mid-stream, restarted empty; within the outage "
            f"bound, then past it ({scale.redis_outage_bound})"
        ),
    )
    server = RedisServer(executable, config=["save ''", "appendonly no"])
    try:
        within = await _part(result, scale, server, None)
        past = await _part(result, scale, server, scale.redis_outage_bound)
    finally:
        server.stop()
    result.sent = within["must_arrive"] + past["must_arrive"]
    result.received = within["delivered"] + past["delivered"]
    result.lost = result.sent - result.received
    result.duplicated = within["duplicated_at_clients"] + past["duplicated_at_clients"]
    result.memory = rss_figure(
        {
            f"{k} ({p})": v
            for p, f in (("1", within), ("2", past))
            for k, v in f["hub_peak_rss"].items()
        }
    )
    result.details.update(within_bound=within, past_bound=past)
    result.seconds = time.monotonic() - started
    return result
