"""
Client driver for the reliability scenarios: many client connections in one
process, started with C{sys.executable} by L{harness.stress.processes}.

It imports only twcomms, Twisted, the standard library and
L{harness.wire} / L{harness.procs} (nothing from the tests or the
benchmarks); it runs from the repository root as::

    python -m harness.stress.driver MODE --port PORT [options]

Modes:

  - C{load}: C{--clients} twcomms clients (json) under one reactor; each
    sends C{--messages} numbered messages C{{"c": index, "i": seq}} as soon
    as it is connected, then expects C{--broadcasts} messages C{{"b": seq}}
    in order.
  - C{receivers}: C{--fast} twcomms clients (binary) that read and verify
    every broadcast payload (L{payload_for}); C{--slow-raw} raw sockets with
    a tiny receive buffer that never read; C{--slow-paused} twcomms clients
    that stop reading after their first message.
  - C{sender}: one raw socket that sends C{--messages} json frames as fast as
    TCP lets it (with C{--listen}: it listens and sends to the first
    connection instead of connecting).
  - C{idle}: connects, sends one frame, then does nothing (a test stops the
    process with SIGSTOP to make a dead peer, or SIGKILLs it).
  - C{partial}: connects, sends one frame and the first half of another,
    then does nothing until killed.

Every mode prints JSON lines on stdout: C{{"event": "ready", ...}} once set
up and C{{"event": "result", ...}} at the end, and exits by itself within
C{--timeout} seconds. The parent kills it by pid in any case.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import struct
import sys
import time
from typing import Any

from harness.procs import raise_fd_limit
from harness.wire import frame, header

#: Distinct offsets into the pattern, so consecutive payloads differ.
PATTERN_SPAN = 65536
_SEQ = struct.Struct("<Q")


def make_pattern(seed: int, size: int) -> bytes:
    """
    The random bytes both ends derive payloads from.
    """
    return random.Random(seed).randbytes(size + PATTERN_SPAN)


def payload_for(seq: int, size: int, pattern: bytes) -> bytes:
    """
    Payload number C{seq} of C{size} bytes: the sequence number, then a
    slice of C{pattern} that depends on it.
    """
    off = (seq * 7919) % PATTERN_SPAN
    return _SEQ.pack(seq) + pattern[off : off + size - _SEQ.size]


def check_payload(payload: bytes, size: int, pattern: bytes) -> int | None:
    """
    The sequence number of C{payload} if it is exactly L{payload_for} that
    number, else L{None}.
    """
    if len(payload) != size:
        return None
    (seq,) = _SEQ.unpack_from(payload)
    off = (seq * 7919) % PATTERN_SPAN
    body = memoryview(payload)[_SEQ.size :]
    if body != memoryview(pattern)[off : off + size - _SEQ.size]:
        return None
    return int(seq)


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class Sequence:
    """
    Checks that numbered messages arrive once each, in order.
    """

    __slots__ = ("duplicated", "gaps", "next", "received")

    def __init__(self) -> None:
        self.next = 0
        self.received = 0
        self.duplicated = 0
        self.gaps = 0

    def see(self, seq: int) -> None:
        if seq == self.next:
            self.next += 1
            self.received += 1
        elif seq < self.next:
            self.duplicated += 1
        else:
            # A gap: something before it was lost (or reordered).
            self.gaps += 1
            self.received += 1
            self.next = seq + 1


# -- load -----------------------------------------------------------------------


def run_load(args: argparse.Namespace) -> int:
    from twisted.internet import defer, task

    from twcomms.client import CommsClientFactory

    def main(reactor: Any) -> defer.Deferred[None]:
        done: defer.Deferred[None] = defer.Deferred()
        seqs = [Sequence() for _ in range(args.clients)]
        state = {"connected": 0, "complete": 0, "closed_early": 0, "bad": 0}
        factories: list[CommsClientFactory] = []

        def finish(timed_out: bool) -> None:
            if done.called:
                return
            emit(
                "result",
                clients=args.clients,
                connected=state["connected"],
                complete=state["complete"],
                expected=args.clients * args.broadcasts,
                received=sum(s.received for s in seqs),
                duplicated=sum(s.duplicated for s in seqs),
                gaps=sum(s.gaps for s in seqs),
                bad=state["bad"],
                closed_early=state["closed_early"],
                timed_out=timed_out,
            )
            stops = [f.stop() for f in factories]
            d = defer.DeferredList(stops).addTimeout(10, reactor)
            d.addBoth(lambda _: done.callback(None))

        deadline = reactor.callLater(args.timeout, finish, True)

        def make(index: int, seq: Sequence) -> CommsClientFactory:
            def on_connect(f: CommsClientFactory) -> None:
                state["connected"] += 1
                if state["connected"] == args.clients:
                    emit("ready", clients=args.clients)
                for i in range(args.messages):
                    f.send({"c": index, "i": i})

            def on_message(f: CommsClientFactory, message: Any) -> None:
                try:
                    seq.see(message["b"])
                except (TypeError, KeyError):
                    state["bad"] += 1
                    return
                if seq.next == args.broadcasts and seq.received == args.broadcasts:
                    state["complete"] += 1
                    if state["complete"] == args.clients:
                        if deadline.active():
                            deadline.cancel()
                        finish(False)

            def on_close(f: CommsClientFactory, reason: Any) -> None:
                if not done.called and seq.next < args.broadcasts:
                    state["closed_early"] += 1

            return CommsClientFactory(
                "json", on_connect=on_connect, on_message=on_message, on_close=on_close
            )

        for j in range(args.clients):
            f = make(args.first + j, seqs[j])
            factories.append(f)
            f.connectTCP("127.0.0.1", args.port, timeout=args.timeout)
        return done

    task.react(main)
    return 0


# -- receivers ------------------------------------------------------------------


def run_receivers(args: argparse.Namespace) -> int:
    from twisted.internet import defer, task

    from twcomms.client import CommsClientFactory

    pattern = make_pattern(args.seed, args.size)

    def main(reactor: Any) -> defer.Deferred[None]:
        done: defer.Deferred[None] = defer.Deferred()
        seqs = [Sequence() for _ in range(args.fast)]
        state = {"connected": 0, "complete": 0, "bad": 0, "closed_early": 0}
        factories: list[CommsClientFactory] = []
        raw: list[socket.socket] = []
        expected_connections = args.fast + args.slow_paused

        def finish(timed_out: bool) -> None:
            if done.called:
                return
            emit(
                "result",
                fast=args.fast,
                complete=state["complete"],
                expected=args.fast * args.messages,
                received=sum(s.received for s in seqs),
                duplicated=sum(s.duplicated for s in seqs),
                gaps=sum(s.gaps for s in seqs),
                bad=state["bad"],
                closed_early=state["closed_early"],
                timed_out=timed_out,
            )
            for s in raw:
                s.close()
            stops = [f.stop() for f in factories]
            d = defer.DeferredList(stops).addTimeout(10, reactor)
            d.addBoth(lambda _: done.callback(None))

        deadline = reactor.callLater(args.timeout, finish, True)

        def connected() -> None:
            state["connected"] += 1
            if state["connected"] == expected_connections:
                emit("ready", fast=args.fast, slow=args.slow_raw + args.slow_paused)

        def fast(seq: Sequence) -> CommsClientFactory:
            def on_connect(f: CommsClientFactory) -> None:
                f.send(b"fast")
                connected()

            def on_message(f: CommsClientFactory, payload: bytes) -> None:
                n = check_payload(payload, args.size, pattern)
                if n is None:
                    state["bad"] += 1
                    return
                seq.see(n)
                if seq.next == args.messages:
                    state["complete"] += 1
                    if state["complete"] == args.fast:
                        if deadline.active():
                            deadline.cancel()
                        finish(False)

            def on_close(f: CommsClientFactory, reason: Any) -> None:
                if not done.called and seq.next < args.messages:
                    state["closed_early"] += 1

            return CommsClientFactory(
                "binary",
                max_message_size=args.max_message_size,
                on_connect=on_connect,
                on_message=on_message,
                on_close=on_close,
            )

        def paused() -> CommsClientFactory:
            def on_connect(f: CommsClientFactory) -> None:
                f.send(b"slow-paused")
                connected()

            def on_message(f: CommsClientFactory, payload: bytes) -> None:
                # Stop reading for good after the first message.
                if f.connection is not None and not f.connection.paused:
                    f.connection.pauseProducing()

            return CommsClientFactory(
                "binary",
                max_message_size=args.max_message_size,
                on_connect=on_connect,
                on_message=on_message,
            )

        for _ in range(args.slow_raw):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(args.timeout)
            s.connect(("127.0.0.1", args.port))
            s.sendall(frame(b"slow-raw"))
            raw.append(s)
        for seq in seqs:
            f = fast(seq)
            factories.append(f)
            f.connectTCP("127.0.0.1", args.port, timeout=args.timeout)
        for _ in range(args.slow_paused):
            f = paused()
            factories.append(f)
            f.connectTCP("127.0.0.1", args.port, timeout=args.timeout)
        return done

    task.react(main)
    return 0


# -- sender ---------------------------------------------------------------------


def message_frames(first: int, count: int, size: int) -> bytes:
    """
    C{count} json frames C{{"i": n, "p": "xxx..."}}, numbered from
    C{first}, each of about C{size} payload bytes.
    """
    pad = "x" * max(0, size - 24)
    out = []
    for i in range(first, first + count):
        payload = json.dumps({"i": i, "p": pad}).encode()
        out.append(frame(payload))
    return b"".join(out)


def run_sender(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    listener = None
    if args.listen:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(args.timeout)
        emit("ready", port=listener.getsockname()[1])
        sock, _ = listener.accept()
    else:
        sock = socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout)
        emit("ready")
    sock.settimeout(max(1.0, deadline - time.monotonic()))
    started = time.monotonic()
    sent = 0
    batch = 1000
    while sent < args.messages:
        n = min(batch, args.messages - sent)
        sock.sendall(message_frames(sent, n, args.size))
        sent += n
    elapsed = time.monotonic() - started
    emit("sent", messages=sent, seconds=round(elapsed, 3))
    # Wait for the other side to close (it has then read everything).
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass
    sock.close()
    if listener is not None:
        listener.close()
    emit("result", messages=sent)
    return 0


# -- idle / partial -------------------------------------------------------------


def run_idle(args: argparse.Namespace, partial: bool) -> int:
    sock = socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout)
    hello = json.dumps({"hello": "partial" if partial else "idle"}).encode()
    data = frame(hello)
    if partial:
        cut = json.dumps({"never": "complete", "pad": "z" * 100}).encode()
        data += header(len(cut)) + cut[: len(cut) // 2]
    sock.sendall(data)
    emit(
        "ready",
        port=sock.getsockname()[1],
        partial_bytes=4 + len(cut) // 2 if partial else 0,
    )
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
    sock.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "mode", choices=["load", "receivers", "sender", "idle", "partial"]
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--messages", type=int, default=0)
    parser.add_argument("--broadcasts", type=int, default=0)
    parser.add_argument("--fast", type=int, default=0)
    parser.add_argument("--slow-raw", type=int, default=0)
    parser.add_argument("--slow-paused", type=int, default=0)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-message-size", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--listen", action="store_true")
    args = parser.parse_args(argv)
    raise_fd_limit()
    # A parent that dies must not leave us blocked on a full pipe.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if args.mode == "load":
        return run_load(args)
    if args.mode == "receivers":
        return run_receivers(args)
    if args.mode == "sender":
        return run_sender(args)
    return run_idle(args, partial=args.mode == "partial")


if __name__ == "__main__":
    sys.exit(main())
