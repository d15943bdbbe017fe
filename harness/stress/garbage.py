"""
Hostile byte streams for the framing scenarios: valid frames, cut frames,
oversized headers (up to 0xFFFFFFFF), random bytes, many tiny frames, each
cut into random pieces; and checking what a protocol fed in memory makes
of one against the reference outcome (L{harness.wire.outcome}).
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from harness.stress.measure import LogWatch
from harness.wire import frame, header
from harness.wire import outcome as reference_outcome


def random_split(rng: random.Random, data: bytes, max_pieces: int) -> list[bytes]:
    """
    C{data} cut at up to C{max_pieces - 1} random places.
    """
    if len(data) < 2 or max_pieces < 2:
        return [data] if data else []
    cuts = sorted(rng.sample(range(1, len(data)), min(max_pieces - 1, len(data) - 1)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


GARBAGE_KINDS = ("valid", "cut", "oversize", "random", "many", "bytewise")
#: Oversized headers worth trying, for a limit of L{GARBAGE_LIMIT}.
GARBAGE_LIMIT = 4096
BIG_HEADERS = (GARBAGE_LIMIT + 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)


def garbage_stream(rng: random.Random, limit: int = GARBAGE_LIMIT) -> tuple[str, bytes]:
    """
    One hostile (or merely awkward) byte stream and its kind.
    """
    kind = rng.choice(GARBAGE_KINDS)

    def size() -> int:
        return rng.choice([0, 1, 3, 4, 5, rng.randint(0, 64), rng.randint(0, limit)])

    def frames(k: int) -> bytes:
        return b"".join(frame(rng.randbytes(size())) for _ in range(k))

    if kind == "valid":
        return kind, frames(rng.randint(0, 20))
    if kind == "cut":
        last = frame(rng.randbytes(max(1, size())))
        return kind, frames(rng.randint(0, 20)) + last[: rng.randint(1, len(last) - 1)]
    if kind == "oversize":
        announced = rng.choice([*BIG_HEADERS, rng.randint(limit + 1, 0xFFFFFFFF)])
        junk = rng.randbytes(rng.randint(0, 2000))
        return kind, frames(rng.randint(0, 10)) + header(announced) + junk
    if kind == "random":
        return kind, rng.randbytes(rng.randint(1, 3000))
    if kind == "many":
        return kind, b"".join(
            frame(rng.randbytes(rng.randint(0, 8)))
            for _ in range(rng.randint(200, 2000))
        )
    # bytewise: small frames, to be written one byte at a time.
    return kind, b"".join(
        frame(rng.randbytes(rng.randint(0, 40))) for _ in range(rng.randint(1, 4))
    )


def garbage_plan(
    rng: random.Random, n: int, limit: int = GARBAGE_LIMIT
) -> list[tuple[str, bytes, list[bytes]]]:
    """
    C{n} garbage streams with the pieces each is written in.
    """
    plan = []
    for _ in range(n):
        kind, stream = garbage_stream(rng, limit)
        max_pieces = len(stream) if kind == "bytewise" else rng.randint(1, 30)
        plan.append((kind, stream, random_split(rng, stream, max_pieces)))
    return plan


class RecordingReceiver:
    """
    A L{twcomms.connection.MessageReceiver} that records what it is given.
    """

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.decode_errors: list[Any] = []
        self.started = 0
        self.stopped: list[Any] = []

    def startReceivingMessages(self, sender: Any) -> None:
        self.started += 1

    def messageReceived(self, message: Any) -> None:
        self.messages.append(message)

    def messageDecodeFailed(self, error: Any) -> None:
        self.decode_errors.append(error)

    def stopReceivingMessages(self, reason: Any, failure: Any) -> None:
        self.stopped.append(reason)


def memory_connection(
    limit: int, data_type: str = "binary", byte_order: str = "little"
) -> tuple[Any, RecordingReceiver, Any]:
    """
    A L{CommsProtocol} connected to a fake TCP transport: (protocol,
    receiver, transport).
    """
    from harness.transport import TCPStringTransport
    from twcomms.connection import CommsProtocol

    receiver = RecordingReceiver()
    proto = CommsProtocol(
        receiver, data_type, byte_order, max_message_size=limit, idle_timeout=None
    )
    transport = TCPStringTransport()
    proto.makeConnection(transport)
    return proto, receiver, transport


def check_memory_stream(
    stream: bytes, pieces: list[bytes], limit: int, watch: LogWatch
) -> list[str]:
    """
    Feed C{pieces} (C{stream} cut up) to a fresh protocol, then end the
    connection; return what went wrong compared with L{reference_outcome}.
    """
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    from twcomms.connection import CloseReason

    expected, oversize, trailing = reference_outcome(stream, limit)
    proto, receiver, transport = memory_connection(limit)
    problems = []
    before = len(watch.kept)
    for piece in pieces:
        proto.dataReceived(piece)
    if receiver.messages != expected:
        got = receiver.messages
        first = next(
            (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
            min(len(expected), len(got)),
        )
        problems.append(
            f"delivered {len(got)} payloads, expected {len(expected)} "
            f"(first difference at {first})"
        )
    if oversize:
        if not transport.disconnecting:
            problems.append("an oversized header did not close the connection")
        if proto.closeReason is not CloseReason.OVERSIZE:
            problems.append(f"close reason {proto.closeReason}, expected oversize")
        if proto.incompleteFrameBytes:
            problems.append(
                f"{proto.incompleteFrameBytes} bytes buffered after an oversized header"
            )
    else:
        if transport.disconnecting:
            problems.append("a valid stream closed the connection")
        if proto.incompleteFrameBytes != trailing:
            problems.append(
                f"holds {proto.incompleteFrameBytes} bytes of an incomplete frame, "
                f"expected {trailing}"
            )
    proto.connectionLost(Failure(ConnectionDone()))
    new = watch.kept[before:]
    oversize_logs = [e for e in new if "header announced" in e.get("log_format", "")]
    cut_logs = [e for e in new if "middle of a message" in e.get("log_format", "")]
    if len(oversize_logs) != (1 if oversize else 0):
        problems.append(f"{len(oversize_logs)} oversize warnings, oversize={oversize}")
    if trailing and not oversize:
        if [e.get("incomplete") for e in cut_logs] != [trailing]:
            problems.append(
                f"cut-off warning(s) {[e.get('incomplete') for e in cut_logs]}, "
                f"expected one for {trailing} bytes"
            )
    elif cut_logs:
        problems.append("a cut-off warning without a cut-off frame")
    return problems
