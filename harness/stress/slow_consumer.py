"""
Scenario: a server broadcasts to clients of which two do not read; they are
closed as slow consumers while the server's memory stays bounded and the
readers get everything.
"""

from __future__ import annotations

import time
from typing import Any

from harness.stress.driver import make_pattern, payload_for
from harness.stress.measure import LogWatch, TraceMemory
from harness.stress.processes import driver, kill_all
from harness.stress.reactor import LOCAL_TCP, Counter, Slots, bounded
from harness.stress.result import Result, mib
from harness.stress.scale import TWISTED_BUFFER, MiB, Scale

#: Slow consumer settings: message size, maximum message size, outbound
#: limit and drain marks of the server (explicit, so the bound below is
#: known; the high-water mark is under the outbound limit, so a reader
#: that keeps up is paced to, never closed).
SLOW_MESSAGE = 1 * MiB
SLOW_OUTBOUND_LIMIT = 4 * MiB
SLOW_DRAIN_HIGH = 2 * MiB
SLOW_DRAIN_LOW = MiB // 2
#: A stalled client is dropped after this long (the default is 10 s).
SLOW_STALL = 2.0


def slow_consumer_bound(fast: int, slow: int) -> int:
    """
    The server's memory bound for the slow-consumer scenario: per slow
    client, what may be queued before it is closed (the outbound limit,
    Twisted's pause threshold and one frame), counted twice because
    Twisted joins a transport's pending writes into one buffer (a copy) when
    it writes; per fast client, the drain high-water mark, the pause
    threshold and one frame (the broadcaster paces itself with
    C{whenDrained()}), also twice; the frame
    being broadcast (twice: it is built from a slice of the pattern); and
    8 MiB for everything else. It does not depend on how much is
    broadcast in total.
    """
    frame_size = SLOW_MESSAGE + 4
    per_slow = 2 * (SLOW_OUTBOUND_LIMIT + TWISTED_BUFFER + frame_size)
    per_fast = 2 * (SLOW_DRAIN_HIGH + TWISTED_BUFFER + frame_size)
    return slow * per_slow + fast * per_fast + 2 * frame_size + 8 * MiB


async def slow_consumer(scale: Scale, fast: int = 2, seed: int = 11) -> Result:
    """
    The server broadcasts C{scale.slow_consumer_bytes} in 1 MiB messages to
    C{fast} clients that read (in a client process) and two that do not: a
    raw socket with a 4 KiB receive buffer that never reads, and a twcomms
    client that stops reading after its first message. The loop paces
    itself only through the library: C{await server.whenDrained()} after
    each broadcast, which waits while any client is over the drain
    high-water mark -- the slow ones too, until they are closed (reason
    C{slow consumer}, logged: past their outbound limit, or stalled). The
    fast ones get every message intact and in order, and are never
    closed; the server's traced memory stays under L{slow_consumer_bound}.
    """

    from twcomms.connection import CloseReason
    from twcomms.server import CommsServerFactory

    started = time.monotonic()
    count = scale.slow_consumer_bytes // SLOW_MESSAGE
    slow = 2
    bound = slow_consumer_bound(fast, slow)
    result = Result(
        "slow consumer",
        scale=scale.name,
        load=f"{scale.slow_consumer_bytes // MiB:,} MiB broadcast to {fast} readers",
        faults="1 client never reads, 1 stops reading",
        memory_bound=bound,
    )
    roles: dict[str, list[Any]] = {"fast": [], "slow-raw": [], "slow-paused": []}
    hellos = Counter()
    closed = Slots()

    def on_message(handle: Any, payload: bytes) -> None:
        role = payload.decode("ascii", "replace")
        if role in roles:
            roles[role].append(handle)
            hellos.add()

    server = CommsServerFactory(
        "binary",
        max_message_size=SLOW_MESSAGE,
        outbound_limit=SLOW_OUTBOUND_LIMIT,
        drain_high_water=SLOW_DRAIN_HIGH,
        drain_low_water=SLOW_DRAIN_LOW,
        stall_timeout=SLOW_STALL,
        on_message=on_message,
        on_close=lambda handle, reason: closed.fire(handle.id, reason),
    )
    listening = await bounded(server.listen(LOCAL_TCP), 10, "listening")
    port = listening.getHost().port
    pattern = make_pattern(seed, SLOW_MESSAGE)
    timeout = 60 + scale.slow_consumer_bytes / (20 * MiB)
    procs = [
        driver(
            "receivers", "--port", port, "--fast", fast, "--slow-raw", 1,
            "--slow-paused", 1, "--messages", count, "--size", SLOW_MESSAGE,
            "--seed", seed, "--max-message-size", SLOW_MESSAGE, "--timeout", timeout,
        )
    ]  # fmt: skip
    try:
        with LogWatch() as watch:
            await hellos.wait(fast + slow, 20, "hellos from the receivers")
            fast_handles = list(roles["fast"])
            slow_handles = roles["slow-raw"] + roles["slow-paused"]
            sent_to_slow_at_close: dict[str, int] = {}
            with TraceMemory() as memory:
                for seq in range(count):
                    server.broadcast(payload_for(seq, SLOW_MESSAGE, pattern))
                    for h in slow_handles:
                        if h.id not in sent_to_slow_at_close and not h.connected:
                            sent_to_slow_at_close[h.id] = seq
                    await bounded(server.whenDrained(), 30, "the clients to drain")
                peak = memory.peak
            outcome = await procs[0].wait_event("result", timeout)
            for h in slow_handles:
                reason = await closed.get(h.id, 10, "a slow consumer's close")
                result.check(
                    reason is CloseReason.SLOW_CONSUMER,
                    f"slow client closed with {reason}, expected slow consumer",
                )
                result.check(
                    len(watch.warnings("slow consumer", peer=f"127.0.0.1:{h.port}"))
                    == 1,
                    f"no single 'slow consumer' warning for {h.port}",
                )
            for h in fast_handles:
                result.check(h.connected, f"fast client {h.port} was closed")
    finally:
        await kill_all(procs)
        await bounded(server.stop(), 20, "server stop")
    expected = fast * count
    result.sent = expected
    result.received = outcome["received"]
    result.duplicated = outcome["duplicated"]
    result.lost = expected - outcome["received"]
    result.peak_memory = peak
    result.check(outcome["received"] == expected, f"received {outcome}")
    result.check(outcome["duplicated"] == 0 and outcome["gaps"] == 0, f"{outcome}")
    result.check(outcome["bad"] == 0, f"{outcome['bad']} corrupt payloads")
    result.check(outcome["closed_early"] == 0, "a fast client was closed early")
    result.check(
        peak <= bound,
        f"server memory peaked {peak / MiB:.1f} MiB over its bound {bound / MiB:.1f}",
    )
    result.memory = f"peak {mib(peak)} (bound {mib(bound)})"
    result.details.update(
        messages=count,
        slow_closed_after_messages=sorted(sent_to_slow_at_close.values()),
        peak_mib=round(peak / MiB, 1),
        bound_mib=round(bound / MiB, 1),
    )
    result.seconds = time.monotonic() - started
    return result
