"""
Scenario: hostile framing, in memory (L{fuzz_memory}) and over real
sockets while a well-behaved client keeps getting echoes
(L{garbage_sockets}).
"""

from __future__ import annotations

import random
import time
from typing import Any

from harness.stress.garbage import (
    GARBAGE_KINDS,
    GARBAGE_LIMIT,
    check_memory_stream,
    garbage_plan,
    memory_connection,
)
from harness.stress.measure import LogWatch
from harness.stress.reactor import LOCAL_TCP, PingPong, Slots, bounded, connect_raw
from harness.stress.result import Result
from harness.stress.scale import Scale
from harness.wire import frame
from harness.wire import outcome as reference_outcome


def fuzz_memory(scale: Scale, seed: int = 1) -> Result:
    """
    Hostile framing in memory: C{scale.fuzz_streams} random streams (see
    L{garbage_stream}), each cut at random places, fed to a protocol;
    compared with L{reference_outcome}. Also one stream cut at every byte
    boundary, and one segment of many frames.
    """
    started = time.monotonic()
    rng = random.Random(seed)
    result = Result(
        "hostile framing (memory)",
        scale=scale.name,
        load=f"{scale.fuzz_streams:,} random streams",
        faults="oversized headers up to 0xFFFFFFFF, garbage, cut frames, 1-byte splits",
    )
    limit = GARBAGE_LIMIT
    sent = received = 0
    with LogWatch() as watch:
        for kind, stream, pieces in garbage_plan(rng, scale.fuzz_streams, limit):
            expected = reference_outcome(stream, limit)[0]
            problems = check_memory_stream(stream, pieces, limit, watch)
            sent += len(expected)
            if problems:
                result.problems.append(f"{kind} stream {stream[:40]!r}...: {problems}")
            else:
                received += len(expected)
            watch.kept.clear()
        # One stream split at every byte boundary (two pieces each).
        stream = b"".join(
            frame(p) for p in (b"", b"a", b"bc" * 10, bytes(range(256)), b"z" * 600)
        )
        for cut in range(len(stream) + 1):
            problems = check_memory_stream(
                stream, [stream[:cut], stream[cut:]], limit, watch
            )
            sent += 5
            if problems:
                result.problems.append(f"split at byte {cut}: {problems}")
            else:
                received += 5
            watch.kept.clear()
        # Many frames in one segment.
        many = [str(i).encode() for i in range(50_000)]
        proto, receiver, _ = memory_connection(limit)
        proto.dataReceived(b"".join(frame(p) for p in many))
        sent += len(many)
        if result.check(receiver.messages == many, "50,000 frames in one segment"):
            received += len(many)
    result.sent, result.received = sent, received
    result.lost = sent - received
    result.seconds = time.monotonic() - started
    return result


async def garbage_sockets(scale: Scale, seed: int = 7, wave: int = 25) -> Result:
    """
    Hostile framing over real sockets: C{scale.garbage_connections}
    connections send garbage (L{garbage_stream}) in pieces, C{wave} at a
    time, while a well-behaved client keeps getting echoes. Each garbage
    connection gets exactly the complete frames before its first oversized
    header, never a partial one; it is closed once (reason and log) when it
    sends an oversized header; nothing stays buffered; the server ends with
    only the good client.
    """
    from twisted.internet import defer

    from twcomms.connection import CloseReason
    from twcomms.server import CommsServerFactory

    started = time.monotonic()
    limit = GARBAGE_LIMIT
    n = scale.garbage_connections
    plan = garbage_plan(random.Random(seed), n, limit)
    result = Result(
        "hostile framing (sockets)",
        scale=scale.name,
        load=f"{n} garbage connections, {wave} at a time, + 1 echo client",
        faults="oversized headers, random bytes, cut frames, 1-byte writes",
    )
    delivered: dict[str, list[bytes]] = {}
    connected = Slots()  # by peer port: the server's handle
    closed = Slots()  # by handle id: the close reason
    good_port = [0]

    def on_connect(handle: Any) -> None:
        delivered[handle.id] = []
        connected.fire(handle.port, handle)

    def on_message(handle: Any, payload: bytes) -> None:
        if handle.port == good_port[0]:
            handle.send(payload)
        else:
            delivered[handle.id].append(payload)

    def on_close(handle: Any, reason: Any) -> None:
        closed.fire(handle.id, reason)

    server = CommsServerFactory(
        "binary",
        max_message_size=limit,
        on_connect=on_connect,
        on_message=on_message,
        on_close=on_close,
    )
    listening = await bounded(server.listen(LOCAL_TCP), 10, "listening")
    port = listening.getHost().port
    good = PingPong("binary", limit)
    counts = {"expected": 0, "matched": 0, "lost": 0, "duplicated": 0}
    try:
        with LogWatch() as watch:
            proto = await bounded(good.start(port), 10, "the good client")
            good_port[0] = proto.transport.getHost().port
            connected.discard(good_port[0])
            good.go()
            await good.echoes.wait(10, 10, "first echoes")
            echoes_before = good.echoes.count

            async def one(kind: str, stream: bytes, pieces: list[bytes]) -> None:
                expected, oversize, trailing = reference_outcome(stream, limit)
                mark = watch.mark()
                peer = await connect_raw(port)
                p = peer.port
                handle = await connected.get(p, 10, f"server side of {p}")
                connected.discard(p)
                await peer.write_pieces(pieces, close=not oversize)
                reason = await closed.get(handle.id, 15, f"close of {kind} {p}")
                await bounded(peer.lost, 10, "the peer's close")
                got = delivered.pop(handle.id)
                counts["expected"] += len(expected)
                if got == expected:
                    counts["matched"] += len(expected)
                else:
                    extra = [g for g in got if g not in expected]
                    result.problems.append(
                        f"{kind} connection: {len(got)} payloads delivered, "
                        f"expected {len(expected)}; {len(extra)} unexpected"
                    )
                    counts["lost"] += max(0, len(expected) - len(got))
                    counts["duplicated"] += max(0, len(got) - len(expected))
                want = CloseReason.OVERSIZE if oversize else CloseReason.PEER_CLOSED
                result.check(
                    reason is want,
                    f"{kind} connection closed {reason}, expected {want}",
                )
                peer_name = f"127.0.0.1:{p}"
                oversize_logs = watch.warnings("header announced", mark, peer=peer_name)
                result.check(
                    len(oversize_logs) == (1 if oversize else 0),
                    f"{kind}: {len(oversize_logs)} oversize warnings "
                    f"(oversize={oversize})",
                )
                cut = watch.warnings("middle of a message", mark, peer=peer_name)
                want_cut = [trailing] if trailing and not oversize else []
                result.check(
                    [e["incomplete"] for e in cut] == want_cut,
                    f"{kind}: cut-off warnings {[e['incomplete'] for e in cut]}, "
                    f"expected {want_cut}",
                )
                result.check(
                    handle.protocol.incompleteFrameBytes == 0,
                    f"{kind}: {handle.protocol.incompleteFrameBytes} bytes still held",
                )

            for i in range(0, n, wave):
                batch = [
                    defer.ensureDeferred(one(kind, stream, pieces))
                    for kind, stream, pieces in plan[i : i + wave]
                ]
                outcomes = await defer.DeferredList(batch, consumeErrors=True)
                for ok, value in outcomes:
                    if not ok:
                        result.problems.append(f"garbage connection: {value.value!r}")
            echoes_during = good.echoes.count - echoes_before
            await good.echoes.wait(good.echoes.count + 10, 10, "echoes after garbage")
            result.check(good.bad == 0, f"{good.bad} wrong echoes")
            result.check(
                echoes_during >= n // wave,
                f"only {echoes_during} echoes during {n} garbage connections",
            )
            result.check(
                good.longest_gap < 2.0,
                f"the good client waited {good.longest_gap:.2f} s for an echo",
            )
            result.check(
                [h.port for h in server.clients] == [good_port[0]],
                f"server clients after: {list(server.clients)}",
            )
            result.check(
                len(server.connections) == 1,
                f"{len(server.connections)} connections tracked after",
            )
            result.details.update(
                echoes_during=echoes_during,
                longest_echo_gap=round(good.longest_gap, 3),
                kinds={k: sum(1 for s in plan if s[0] == k) for k in GARBAGE_KINDS},
            )
    finally:
        await bounded(good.stop(), 10, "good client stop")
        await bounded(server.stop(), 10, "server stop")
    result.sent = counts["expected"] + good.echoes.count
    result.received = counts["matched"] + good.echoes.count
    result.lost, result.duplicated = counts["lost"], counts["duplicated"]
    result.seconds = time.monotonic() - started
    return result
