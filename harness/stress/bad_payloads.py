"""
Scenario: bad payloads (invalid UTF-8 or JSON, empty, nested 100,000 deep)
mixed with good ones; each reaches the decode-error hook and the
connection stays up.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from harness.stress.measure import LogWatch
from harness.stress.reactor import LOCAL_TCP, PingPong, Slots, bounded, connect_raw
from harness.stress.result import Result
from harness.stress.scale import Scale
from harness.wire import frame

#: Payloads a json receiver must refuse (and a string receiver, for some).
BAD_PAYLOADS: tuple[tuple[str, bytes], ...] = (
    ("invalid UTF-8", b"\xff\xfe\xfd"),
    ("truncated UTF-8", b'"\xc3'),
    ("UTF-8 surrogate", b'"\xed\xa0\x80"'),
    ("invalid JSON", b"{not json"),
    ("unterminated JSON", b'{"a": [1, 2'),
    ("trailing garbage", b'{"a": 1} x'),
    ("empty frame", b""),
    ("byte-order mark", b"\xef\xbb\xbf{}"),
    ("lists nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000),
    ("objects nested 100,000 deep", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
)


def independent_decode(payload: bytes, data_type: str) -> tuple[bool, Any]:
    """
    Whether C{payload} decodes for C{data_type}, and to what, decided with
    the standard library only.
    """
    try:
        text = payload.decode("utf-8")
        if data_type == "string":
            return True, text
        return True, json.loads(text)
    except (ValueError, RecursionError):
        return False, None


async def bad_payloads(scale: Scale, data_type: str = "json", seed: int = 3) -> Result:
    """
    Bad payloads (L{BAD_PAYLOADS}) mixed with good ones on
    C{scale.bad_payload_connections} raw connections to a C{data_type}
    server: each bad one reaches the decode-error hook with its raw bytes,
    is counted in C{decodeErrors} and logged; the connection stays up
    (it answers a final message); good ones are delivered in order; a
    well-behaved client keeps getting echoes throughout.
    """
    from twisted.internet import defer

    from twcomms.server import CommsServerFactory

    started = time.monotonic()
    rng = random.Random(seed)
    n = scale.bad_payload_connections
    result = Result(
        f"bad payloads ({data_type})",
        scale=scale.name,
        load=f"{n} connections mixing good and bad payloads + 1 echo client",
        faults="invalid UTF-8/JSON, empty, BOM, JSON nested 100,000 deep",
    )
    messages: dict[str, list[Any]] = {}
    errors: dict[str, list[bytes]] = {}
    connected = Slots()
    good_port = [0]

    def done_marker(i: int) -> Any:
        return {"done": i} if data_type == "json" else f"done {i}"

    def on_connect(handle: Any) -> None:
        messages[handle.id] = []
        errors[handle.id] = []
        connected.fire(handle.port, handle)

    def on_message(handle: Any, message: Any) -> None:
        if handle.port == good_port[0]:
            handle.send(message)
            return
        messages[handle.id].append(message)
        if (isinstance(message, dict) and "done" in message) or (
            isinstance(message, str) and message.startswith("done ")
        ):
            reply = {"ack": handle.protocol.decodeErrors}
            handle.send(reply if data_type == "json" else json.dumps(reply))

    def on_decode_error(handle: Any, error: Any) -> None:
        errors[handle.id].append(error.payload)

    server = CommsServerFactory(
        data_type,
        on_connect=on_connect,
        on_message=on_message,
        on_decode_error=on_decode_error,
    )
    listening = await bounded(server.listen(LOCAL_TCP), 10, "listening")
    port = listening.getHost().port
    good = PingPong(data_type)
    totals = {"sent": 0, "received": 0, "bad": 0}
    try:
        with LogWatch() as watch:
            proto = await bounded(good.start(port), 10, "the good client")
            good_port[0] = proto.transport.getHost().port
            connected.discard(good_port[0])
            good.go()
            await good.echoes.wait(5, 10, "first echoes")
            before = good.echoes.count

            async def one(i: int, plan: list[bytes]) -> None:
                peer = await connect_raw(port)
                handle = await connected.get(peer.port, 10, "the server side")
                connected.discard(peer.port)
                marker = done_marker(i)
                last = (
                    json.dumps(marker).encode()
                    if data_type == "json"
                    else marker.encode()
                )
                await peer.write_pieces([frame(x) for x in [*plan, last]], close=False)
                await peer.frame_count.wait(1, 15, "the answer to the final message")
                want_ok = []
                want_bad = []
                for x in plan:
                    ok, value = independent_decode(x, data_type)
                    (want_ok.append(value) if ok else want_bad.append(x))
                want_ok.append(marker)
                totals["sent"] += len(want_ok)
                totals["bad"] += len(want_bad)
                got = messages[handle.id]
                if result.check(
                    got == want_ok,
                    f"connection {i}: {len(got)} messages, expected {len(want_ok)}",
                ):
                    totals["received"] += len(got)
                result.check(
                    errors[handle.id] == want_bad,
                    f"connection {i}: decode errors {len(errors[handle.id])}, "
                    f"expected {len(want_bad)}",
                )
                result.check(
                    handle.protocol.decodeErrors == len(want_bad),
                    f"connection {i}: decodeErrors {handle.protocol.decodeErrors}",
                )
                answer = json.loads(peer.frames[0])
                result.check(
                    answer == {"ack": len(want_bad)}, f"connection {i}: answer {answer}"
                )
                result.check(handle.connected, f"connection {i} did not stay up")
                peer.transport.loseConnection()
                await bounded(peer.lost, 10, "the peer's close")

            plans = []
            for _ in range(n):
                plan = [
                    json.dumps({"seq": j}).encode() for j in range(rng.randint(1, 10))
                ]
                plan += [rng.choice(BAD_PAYLOADS)[1] for _ in range(rng.randint(1, 8))]
                rng.shuffle(plan)
                plans.append(plan)
            for start in range(0, n, 25):
                batch = [
                    defer.ensureDeferred(one(i, plans[i]))
                    for i in range(start, min(n, start + 25))
                ]
                for ok, value in await defer.DeferredList(batch, consumeErrors=True):
                    if not ok:
                        result.problems.append(
                            f"bad-payload connection: {value.value!r}"
                        )
            await good.echoes.wait(good.echoes.count + 5, 10, "echoes afterwards")
            during = good.echoes.count - before
            result.check(good.bad == 0, f"{good.bad} wrong echoes")
            result.check(during > 0, "no echoes while bad payloads arrived")
            logged = watch.count("did not decode")
            result.check(
                logged == totals["bad"],
                f"{logged} decode errors logged, {totals['bad']} sent",
            )
            result.details.update(
                decode_errors=totals["bad"],
                echoes_during=during,
                longest_echo_gap=round(good.longest_gap, 3),
            )
    finally:
        await bounded(good.stop(), 10, "good client stop")
        await bounded(server.stop(), 10, "server stop")
    result.sent = totals["sent"] + good.echoes.count
    result.received = totals["received"] + good.echoes.count
    result.lost = result.sent - result.received
    result.seconds = time.monotonic() - started
    return result


async def bad_payloads_string(scale: Scale) -> Result:
    return await bad_payloads(scale, "string")
