"""
Benchmark: what a broadcast to one room costs, beside the number of
clients, and what a room membership costs in memory.

Clients are real L{CommsProtocol}s of a L{CommsServerFactory}, on
transports that count what is written and keep nothing (the cost measured
is twcomms': framing, batching, the registry, not a kernel's). For each
total number of clients (1,000 and C{--clients}, 10,000 by default), every
client is in one of C{--rooms} rooms (10 members each at 10,000 clients in
1,000 rooms) and the script times, per broadcast, written when the reactor
turn ends:

  - a broadcast to one room;
  - a broadcast to every client.

A room broadcast should cost time proportional to its members, whatever
the number of clients: its time at 10,000 clients over its time at 1,000
(same room size) is printed, beside the same ratio for a broadcast to all
(proportional to clients: about 10). Memory per membership is the traced
memory that joining every client to one more room adds, divided by the
memberships made.

    python -m benchmarks.rooms                  # 10,000 clients, 1,000 rooms
    python -m benchmarks.rooms --clients 20000 --rooms 2000
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from typing import Any

from twisted.internet.testing import MemoryReactorClock, StringTransport

from twcomms import CommsServerFactory


class CountingTransport(StringTransport):
    """
    Counts what is written; keeps nothing.
    """

    written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writeSequence(self, seq: Any) -> None:
        for data in seq:
            self.written += len(data)


def make_server(clients: int) -> tuple[CommsServerFactory, MemoryReactorClock]:
    clock = MemoryReactorClock()
    server = CommsServerFactory("json", reactor=clock)
    for _ in range(clients):
        proto = server.buildProtocol(None)
        proto.makeConnection(CountingTransport())
    return server, clock


def time_per_call(clock: MemoryReactorClock, call: Any, count: int) -> float:
    """
    Seconds per C{call()}, each followed by the end of its reactor turn
    (where the batched broadcast is written).
    """
    gc.collect()
    start = time.perf_counter()
    for _ in range(count):
        call()
        clock.advance(0)
    return (time.perf_counter() - start) / count


def measure(clients: int, rooms: int, count: int) -> dict[str, float]:
    server, clock = make_server(clients)
    handles = list(server.clients)
    for i, handle in enumerate(handles):
        server.join(handle, f"room-{i % rooms}")
    members = len(server.members("room-0"))
    message = {"n": 1, "text": "x" * 20}
    room = time_per_call(clock, lambda: server.broadcast(message, room="room-0"), count)
    everyone = time_per_call(
        clock, lambda: server.broadcast(message), max(1, count // 20)
    )
    # Memory: every client joins one more room.
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i, handle in enumerate(handles):
        server.join(handle, f"second-{i % rooms}")
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
    return {
        "clients": clients,
        "rooms": rooms,
        "members": members,
        "room_s": room,
        "all_s": everyone,
        "bytes_per_membership": grown / len(handles),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--rooms", type=int, default=1_000)
    parser.add_argument(
        "--count", type=int, default=2_000, help="room broadcasts timed per size"
    )
    args = parser.parse_args(argv)
    small_clients = max(args.clients // 10, 1)
    small_rooms = max(args.rooms // 10, 1)
    small = measure(small_clients, small_rooms, args.count)
    large = measure(args.clients, args.rooms, args.count)
    print(
        f"{'clients':>8} {'rooms':>6} {'members':>8} {'room broadcast':>15} "
        f"{'per member':>11} {'broadcast to all':>17} {'per client':>11} "
        f"{'B/membership':>13}"
    )
    for r in (small, large):
        print(
            f"{r['clients']:>8,} {r['rooms']:>6,} {r['members']:>8} "
            f"{r['room_s'] * 1e6:>12.1f} us "
            f"{r['room_s'] * 1e6 / r['members']:>8.2f} us "
            f"{r['all_s'] * 1e6:>14.1f} us "
            f"{r['all_s'] * 1e6 / r['clients']:>8.3f} us "
            f"{r['bytes_per_membership']:>13.0f}"
        )
    print(
        f"\n{large['clients']:,} vs {small['clients']:,} clients, same room size: "
        f"room broadcast x{large['room_s'] / small['room_s']:.2f} "
        f"(proportional to members: ~1), broadcast to all "
        f"x{large['all_s'] / small['all_s']:.2f} (proportional to clients: "
        f"~{large['clients'] / small['clients']:.0f})"
    )
    print(
        f"a room broadcast to {large['members']} members at {large['clients']:,} "
        f"clients costs {large['room_s'] / large['all_s']:.4f} of a broadcast to all"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
