"""
The sizes of the reliability scenarios (L{Scale}, chosen by
C{TWCOMMS_SCALE}: C{ci}, the default, or C{full}), and the size constants
they share.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MiB = 1024 * 1024
KiB = 1024


@dataclass(frozen=True)
class Scale:
    """
    The sizes of the heavy scenarios.
    """

    name: str
    #: load: clients, numbered messages each, broadcasts, client processes.
    load_clients: int
    load_messages: int
    load_broadcasts: int
    load_processes: int
    #: churn: connect/disconnect cycles (Twisted API, then threaded API).
    churn_cycles: int
    churn_threaded_cycles: int
    #: restart: auto-reconnecting clients.
    restart_clients: int
    #: slow consumer: payload bytes broadcast in total.
    slow_consumer_bytes: int
    #: slow callback: messages sent to a slow callback.
    slow_callback_messages: int
    #: hostile input: garbage connections (real sockets), bad-payload
    #: connections, random streams fed in memory.
    garbage_connections: int
    bad_payload_connections: int
    fuzz_streams: int
    #: hypothesis examples per property.
    hypothesis_examples: int
    #: shutdown: messages in flight at stop().
    shutdown_messages: int
    #: cross-node load: raw clients spread over two hub processes on one
    #: Redis, numbered messages each.
    cross_node_clients: int
    cross_node_messages: int
    #: node kill: raw clients (half on each of two hub processes), numbered
    #: messages each, before and again after the kill.
    node_kill_clients: int
    node_kill_messages: int
    #: Redis outage: raw clients (half on each of two hub processes),
    #: numbered messages each (a third, or half, sent while Redis is
    #: down), twice; the outage bound (--outage-max-count) of the second
    #: run, far below what each hub's clients send during the outage.
    redis_outage_clients: int
    redis_outage_messages: int
    redis_outage_bound: int


SCALES = {
    "ci": Scale(
        name="ci",
        load_clients=100,
        load_messages=100,
        load_broadcasts=100,
        load_processes=2,
        churn_cycles=1_000,
        churn_threaded_cycles=1_000,
        restart_clients=50,
        slow_consumer_bytes=256 * MiB,
        slow_callback_messages=20_000,
        garbage_connections=300,
        bad_payload_connections=50,
        fuzz_streams=3_000,
        hypothesis_examples=1_000,
        shutdown_messages=20_000,
        cross_node_clients=20,
        cross_node_messages=200,
        node_kill_clients=20,
        node_kill_messages=200,
        redis_outage_clients=10,
        redis_outage_messages=300,
        redis_outage_bound=50,
    ),
    "full": Scale(
        name="full",
        load_clients=500,
        load_messages=1_000,
        load_broadcasts=1_000,
        load_processes=4,
        churn_cycles=5_000,
        churn_threaded_cycles=5_000,
        restart_clients=200,
        slow_consumer_bytes=1024 * MiB,
        slow_callback_messages=100_000,
        garbage_connections=1_000,
        bad_payload_connections=200,
        fuzz_streams=20_000,
        hypothesis_examples=5_000,
        shutdown_messages=100_000,
        cross_node_clients=60,
        cross_node_messages=1_000,
        node_kill_clients=60,
        node_kill_messages=1_000,
        redis_outage_clients=40,
        redis_outage_messages=2_000,
        redis_outage_bound=200,
    ),
}


def current_scale(name: str | None = None) -> Scale:
    """
    The scale named C{name}, or by C{TWCOMMS_SCALE} (default C{ci}).
    """
    name = name or os.environ.get("TWCOMMS_SCALE", "ci") or "ci"
    try:
        return SCALES[name]
    except KeyError:
        raise ValueError(
            f"TWCOMMS_SCALE must be one of {sorted(SCALES)}, not {name!r}"
        ) from None


#: Twisted pauses a transport's producer above this many buffered bytes
#: (abstract.FileDescriptor.bufferSize).
TWISTED_BUFFER = 64 * KiB
