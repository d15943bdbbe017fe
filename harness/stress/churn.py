"""
Scenario: churn. Thousands of connect/disconnect cycles (Twisted API:
L{churn}; threaded API: L{churn_threaded}) leak nothing.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from harness.stress.measure import LogWatch, TraceMemory, fd_count, reactor_handles
from harness.stress.reactor import LOCAL_TCP, Slots, bounded, connect_raw
from harness.stress.result import Result, mib
from harness.stress.scale import KiB, Scale
from harness.stress.threads import CONNECT_RACES, connect_threaded, wait_until
from harness.wire import header

#: How churn cycles end, in turn.
CHURN_ENDINGS = (
    "client stop",
    "client abort",
    "server close",
    "cut mid-message",
    "oversize header",
    "silent raw",
)
#: What churn's traced memory may grow by over all the cycles after the
#: warm-up: one leaked protocol, handle or timer per cycle would be several
#: times that.
GROWTH_BOUND = 512 * KiB


def warmup_cycles(cycles: int) -> int:
    """
    The cycles run before the baseline is taken (a tenth, at least 100).
    """
    return max(100, cycles // 10)


def record_memory(result: Result, growth: int, peak: int, measured: int) -> None:
    """
    Put churn's memory figures in C{result}: C{growth} over the
    C{measured} cycles after the warm-up, and the C{peak}.
    """
    result.peak_memory = peak
    result.memory = (
        f"growth {growth / KiB:.0f} KiB over {measured:,} cycles "
        f"(bound {GROWTH_BOUND // KiB} KiB); peak {mib(peak)}"
    )
    result.details.update(
        memory_growth=growth, bytes_per_cycle=round(growth / max(1, measured), 1)
    )


async def churn(scale: Scale, concurrency: int = 16) -> Result:
    """
    C{scale.churn_cycles} connect/disconnect cycles (C{concurrency} at a
    time) against one server with an idle timeout (so every connection has
    a timer to cancel), ending in turn as L{CHURN_ENDINGS}. Each cycle
    checks its close reason. After a warm-up, nothing may accumulate: file
    descriptors, threads, server clients and connections, reactor readers,
    writers and delayed calls, and traced memory (under 512 KiB of growth
    over all the cycles: one leaked protocol, handle or timer per cycle
    would be several times that).

    Run it in a fresh process (C{python -m harness.stress churn}): Twisted
    keeps every log event in memory until logging begins, which would look
    like a leak.
    """
    from twisted.internet import defer

    from twcomms.client import CommsClientFactory
    from twcomms.connection import CloseReason
    from twcomms.server import CommsServerFactory

    started = time.monotonic()
    cycles = scale.churn_cycles
    warmup = warmup_cycles(cycles)
    growth_bound = GROWTH_BOUND
    result = Result(
        "churn",
        scale=scale.name,
        load=f"{cycles:,} connect/disconnect cycles, {concurrency} at a time",
        faults="aborts, server closes, cut frames, oversize, silent peers",
        memory_bound=growth_bound,
    )
    connected = Slots()
    closed = Slots()
    echoes = Slots()
    want = {
        "client stop": CloseReason.PEER_CLOSED,
        "client abort": CloseReason.ERROR,
        "server close": CloseReason.CLOSED,
        "cut mid-message": CloseReason.PEER_CLOSED,
        "oversize header": CloseReason.OVERSIZE,
        "silent raw": CloseReason.PEER_CLOSED,
    }
    server = CommsServerFactory(
        "json",
        max_message_size=64 * KiB,
        idle_timeout=60,
        on_connect=lambda h: connected.fire(h.port, h),
        on_message=lambda h, m: h.send(m),
        on_close=lambda h, r: closed.fire(h.id, r),
    )
    listening = await bounded(server.listen(LOCAL_TCP), 10, "listening")
    port = listening.getHost().port
    wrong: dict[str, int] = {}

    async def cycle(i: int) -> None:
        ending = CHURN_ENDINGS[i % len(CHURN_ENDINGS)]
        if ending == "silent raw":
            peer = await connect_raw(port)
            handle = await connected.get(peer.port, 10, "server side")
            connected.discard(peer.port)
            peer.transport.loseConnection()
            await bounded(peer.lost, 10, "raw close")
        else:
            client = CommsClientFactory(
                "json",
                max_message_size=64 * KiB,
                on_message=lambda c, m: echoes.fire(m["n"]),
            )
            client.connectTCP("127.0.0.1", port, timeout=10)
            proto = await bounded(client.whenConnected(), 10, "connection")
            p = proto.transport.getHost().port
            handle = await connected.get(p, 10, "server side")
            connected.discard(p)
            client.send({"n": i})
            await echoes.get(i, 10, "echo")
            echoes.discard(i)
            if ending == "client stop":
                client.stop()
            elif ending == "client abort":
                proto.transport.abortConnection()
            elif ending == "server close":
                handle.close()
            elif ending == "cut mid-message":
                proto.transport.write(header(100) + b"x" * 50)
                proto.close()
            else:
                proto.transport.write(header(0xFFFFFFFF) + b"junk")
            await bounded(client.whenStopped(), 10, "client stopped")
        reason = await closed.get(handle.id, 10, f"server-side close ({ending})")
        closed.discard(handle.id)
        if reason is not want[ending]:
            key = f"{ending}: {reason}"
            wrong[key] = wrong.get(key, 0) + 1

    async def run(first: int, last: int) -> None:
        queue = iter(range(first, last))

        async def worker() -> None:
            for i in queue:
                await cycle(i)

        outcomes = await defer.DeferredList(
            [defer.ensureDeferred(worker()) for _ in range(concurrency)],
            consumeErrors=True,
        )
        for ok, value in outcomes:
            if not ok:
                raise value.value

    try:
        with LogWatch(keep=False) as watch, TraceMemory() as memory:
            await run(0, warmup)
            memory.rebase()
            fds0 = fd_count()
            threads0 = threading.active_count()
            handles0 = reactor_handles()
            await run(warmup, cycles)
            growth = memory.growth
            peak = memory.peak
            fds1 = fd_count()
            threads1 = threading.active_count()
            handles1 = reactor_handles()
    finally:
        await bounded(server.stop(), 10, "server stop")
    result.check(not wrong, f"unexpected close reasons: {wrong}")
    result.check(fds1 <= fds0, f"file descriptors {fds0} -> {fds1}")
    result.check(threads1 <= threads0, f"threads {threads0} -> {threads1}")
    result.check(
        all(handles1[k] <= handles0[k] for k in handles0),
        f"reactor handles {handles0} -> {handles1}",
    )
    result.check(len(server.clients) == 0, f"{len(server.clients)} clients left")
    result.check(
        len(server.connections) == 0, f"{len(server.connections)} connections left"
    )
    result.check(
        growth <= growth_bound,
        f"traced memory grew {growth / KiB:.0f} KiB over "
        f"{cycles - warmup} cycles (bound {growth_bound / KiB:.0f} KiB)",
    )
    n_cut = watch.count("middle of a message")
    n_over = watch.count("header announced")
    result.check(
        n_cut == sum(1 for i in range(cycles) if i % 6 == 3),
        f"{n_cut} cut-off warnings",
    )
    result.check(
        n_over == sum(1 for i in range(cycles) if i % 6 == 4),
        f"{n_over} oversize warnings",
    )
    result.sent = result.received = sum(1 for i in range(cycles) if i % 6 != 5)
    record_memory(result, growth, peak, cycles - warmup)
    result.details.update(
        fds=(fds0, fds1),
        threads=(threads0, threads1),
        reactor=(handles0, handles1),
    )
    result.seconds = time.monotonic() - started
    return result


def churn_threaded(scale: Scale, workers: int = 4) -> Result:
    """
    Threaded API: C{scale.churn_threaded_cycles} cycles (C{workers} threads
    at a time) of C{Client} connect, one echo, close, against one
    C{Server}. After a warm-up nothing accumulates: file descriptors,
    threads, server clients, traced memory (512 KiB over all cycles). Once
    the server stops, the callback threads end.
    """
    import queue
    from concurrent.futures import ThreadPoolExecutor

    from twcomms.threaded import Client, Server

    started = time.monotonic()
    cycles = scale.churn_threaded_cycles
    warmup = warmup_cycles(cycles)
    growth_bound = GROWTH_BOUND
    result = Result(
        "churn (threaded API)",
        scale=scale.name,
        load=f"{cycles:,} Client connect/echo/close cycles, {workers} threads",
        faults="-",
        memory_bound=growth_bound,
    )
    server = Server("127.0.0.1", 0, idle_timeout=60)
    server.add_onmessage_callback(lambda c, m: c.send(m), with_sender=True)
    server.start(timeout=10)
    failures: list[str] = []
    races0 = CONNECT_RACES.count

    def cycle(i: int) -> None:
        replies: queue.Queue[Any] = queue.Queue()
        client = Client("127.0.0.1", server.port)
        client.add_onmessage_callback(replies.put)
        try:
            connect_threaded(client)
            client.send({"n": i})
            reply = replies.get(timeout=10)
            if reply != {"n": i}:
                failures.append(f"cycle {i}: echo {reply!r}")
        except Exception as e:
            failures.append(f"cycle {i}: {e!r}")
        finally:
            client.close(timeout=10)

    def run(first: int, last: int) -> None:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(cycle, range(first, last)))

    def settled() -> bool:
        return len(server.clients) == 0 and len(server._factory.connections) == 0

    try:
        with TraceMemory() as memory:
            run(0, warmup)
            wait_until(settled, 10, "the server forgetting warm-up clients")
            memory.rebase()
            fds0, threads0 = fd_count(), _threads_besides_callbacks()
            run(warmup, cycles)
            wait_until(settled, 10, "the server forgetting its clients")
            growth, peak = memory.growth, memory.peak
            fds1, threads1 = fd_count(), _threads_besides_callbacks()
    finally:
        server.stop(timeout=10)
    result.check(not failures, f"{len(failures)} failed cycles: {failures[:3]}")
    result.check(fds1 <= fds0, f"file descriptors {fds0} -> {fds1}")
    # Callback threads come and go with demand (a pool that grows while
    # more connections have callbacks to run than it has idle threads, and
    # whose threads end when idle); how many exist at one instant depends
    # on the machine's load. They are checked below: all end once nothing
    # is open. Every other thread must not grow at all.
    result.check(threads1 <= threads0, f"threads {threads0} -> {threads1}")
    result.check(
        growth <= growth_bound,
        f"traced memory grew {growth / KiB:.0f} KiB over {cycles - warmup} cycles",
    )
    pool_left = -1
    try:
        from twcomms.threaded.dispatch import default_pool

        wait_until(
            lambda: default_pool().workers == 0,
            15,
            "callback threads ending once nothing is open",
        )
        pool_left = 0
    except TimeoutError as e:
        result.problems.append(str(e))
    result.sent = result.received = 2 * (cycles - len(failures))
    result.lost = 2 * len(failures)
    record_memory(result, growth, peak, cycles - warmup)
    result.details.update(
        fds=(fds0, fds1),
        threads=(threads0, threads1),
        pool_workers_after_stop=pool_left,
        connect_returned_before_connected=CONNECT_RACES.count - races0,
    )
    result.seconds = time.monotonic() - started
    return result


def _threads_besides_callbacks() -> int:
    """
    Live threads other than the threaded API's callback pool.
    """
    return sum(
        1 for t in threading.enumerate() if not t.name.startswith("twcomms-callbacks")
    )
