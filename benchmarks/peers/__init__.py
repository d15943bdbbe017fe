"""
Benchmark: twcomms against its peers, from one command and one run.

Systems (each a server and its clients, written small and idiomatically):

  - C{raw-socket}: the floor. Blocking sockets, pre-built frames, C{recv_into}
    a preallocated buffer, C{json.loads} per message.
  - C{twcomms-twisted}: C{CommsServerFactory} / C{CommsClientFactory}
    (C{broadcast()} encodes once).
  - C{twcomms-threaded}: the threaded C{Server} / C{Client} (outside any
    reactor; twcomms starts its own reactor thread; callbacks on workers).
  - C{stock-twisted}: C{Int32StringReceiver} with C{structFormat = "<I"},
    C{MAX_LENGTH = 2**32 - 1}, C{json.loads}/C{json.dumps} around it.
  - C{asyncio}: streams, C{readexactly} of a C{struct} header then the payload.
  - C{pyzmq}: PUSH/PULL (A, D), REQ/REP (B), XPUB/SUB (C, E; XPUB is PUB that
    also reports subscriptions, so the server knows when all subscribers are
    there). High-water marks are unlimited so nothing is dropped.

Scenarios (server and clients in separate processes on 127.0.0.1):

  - A: one client sends 200,000 small json messages
    C{{"i": n, "payload": "x" * 20}}; the server decodes each. Messages/s at
    the server, first to last message received (best of C{--repeat} runs).
  - B: 5,000 sequential request/echo round trips (after 500 warm-up ones);
    p50 and p99 in microseconds, measured by the client.
  - C: 50 clients in 2 processes; the server broadcasts 20,000 small json
    messages (yielding to its event loop every 1,000); every client decodes
    and counts. Deliveries/s from the first broadcast until the last client
    has all (C{time.perf_counter} is C{CLOCK_MONOTONIC} on Linux, one clock
    for every process).
  - D: one 64 MiB and one 256 MiB binary message, client to server: seconds
    from the client starting to send until it has the server's small
    acknowledgement (best of C{--repeat} receptions on one connection, after
    a small hello message), MB/s (10**6 bytes), and the receiver's peak RSS
    growth as a multiple of the message size (one process per size).
    Stock Twisted receives once (its receive path is quadratic).
  - E: C{--scale-connections} (default 10,000) concurrent connections, from
    clients spread over processes of at most 2,500 connections each (100
    connection attempts in flight per process), then one broadcast to all.
    Server memory per connection (RSS growth from listening to all connected,
    divided by the connections) and the time until every client has the
    message. Systems: twcomms-twisted, stock-twisted, asyncio, pyzmq.

Every process raises its soft C{RLIMIT_NOFILE} to the hard limit; servers
listen with a backlog of 1024. Processes synchronise over pipes (the server
prints its port; the parent hands it to the clients, which connect only
then), never with sleeps. Every cell has a time bound: a cell that exceeds
it is killed and reported as a cut-off; every child process is killed by
pid when its cell ends.

It prints one table per scenario (each figure and its ratio to the
raw-socket floor), then twcomms' targets with PASS/MISS, and writes
C{benchmarks/results/peers.json} and C{benchmarks/results/peers.png}.
C{--quick} uses tiny sizes (about 10-20 s) and writes C{peers-quick.json} and
C{peers-quick.png} instead, so a smoke run never replaces a full run's
figures.

Run from the repository root::

    python -m benchmarks.peers                        # everything
    python -m benchmarks.peers --quick                # every cell, tiny sizes
    python -m benchmarks.peers --scenarios A,B --systems twcomms-twisted,stock-twisted
    python -m benchmarks.peers --scenarios E --scale-connections 2000
    python -m benchmarks.peers --scenarios A --systems twcomms-twisted --profile

C{--profile} runs the twcomms processes under C{py-spy} (C{pip install
py-spy}) and prints, per process, the functions with the most samples (self
and inclusive); the raw stacks are kept in C{benchmarks/results/profiles/}.

From a test (the maintainer's CI calls this; it blocks for ~10-20 s and
uses only subprocesses, so it is safe under pytest-twisted)::

    from benchmarks.peers import run_quick, problems

    def test_every_cell_is_produced(tmp_path):
        run = run_quick(tmp_path)          # or run_quick() to write nothing
        assert not problems(run)           # missing cells, errors, cut-offs

Layout: L{settings} (what a run is), one module per system's processes
(L{eventloop} over L{nets} for twcomms-twisted, stock-twisted and asyncio;
L{threaded}, L{zeromq}, L{raw}; entered through L{child}), L{runner}
(cells, processes, time bounds), L{report} and L{chart} (tables, chart),
L{targets} (twcomms' targets as data), L{profiles}, L{run} and L{cli}.

Benchmark-only dependencies: C{pyzmq} (the pyzmq system; without it those
cells are reported as errors) and C{matplotlib} (the chart; without it the
chart is skipped). Linux only (C{/proc}, C{resource}).
"""

from benchmarks.peers.cli import main
from benchmarks.peers.run import problems, run_benchmark, run_quick
from benchmarks.peers.settings import FULL, QUICK, SCENARIOS, SYSTEMS, Settings

__all__ = [
    "FULL",
    "QUICK",
    "SCENARIOS",
    "SYSTEMS",
    "Settings",
    "main",
    "problems",
    "run_benchmark",
    "run_quick",
]
