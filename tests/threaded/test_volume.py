"""
Volume through the threaded API: floods, concurrent senders, one large
message. The original broke after ~2,600 small messages and truncated
anything over ~64 KiB.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from typing import Any

import pytest

from twcomms.errors import MessageTooLargeError

from .raw import WAIT, get

MiB = 1024 * 1024


def test_100k_small_json_messages_in_order(make_server, make_client):
    n = 100_000
    server = make_server()
    received: list[int] = []
    problems: list[Any] = []
    done = threading.Event()

    def on_message(message):
        seq = message["seq"]
        if seq != len(received):
            problems.append((len(received), message))
        received.append(seq)
        if len(received) == n:
            done.set()

    server.add_onmessage_callback(on_message)
    client = make_client(server.port)
    start = time.monotonic()
    for i in range(n):
        client.send({"seq": i, "payload": "abc"})
    assert done.wait(60), f"only {len(received)} of {n} messages arrived"
    elapsed = time.monotonic() - start
    assert not problems, f"out of order or missing: {problems[:5]}"
    assert received == list(range(n))
    assert elapsed < 30, f"{n} messages took {elapsed:.1f} s"


def test_8_threads_share_one_client(make_server, make_client):
    threads, per_thread = 8, 5_000
    total = threads * per_thread
    server = make_server()
    received: list[Any] = []
    done = threading.Event()

    def on_message(message):
        received.append(message)
        if len(received) == total:
            done.set()

    server.add_onmessage_callback(on_message)
    client = make_client(server.port)
    errors: queue.Queue[BaseException] = queue.Queue()
    go = threading.Barrier(threads)

    def sender(tid: int) -> None:
        try:
            go.wait(WAIT)
            for seq in range(per_thread):
                client.send({"t": tid, "seq": seq, "check": f"{tid}:{seq}"})
        except BaseException as e:
            errors.put(e)

    workers = [threading.Thread(target=sender, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(WAIT * 2)
    assert not any(w.is_alive() for w in workers), "a sender thread hung"
    assert errors.empty(), f"a sender raised: {errors.get()!r}"
    assert done.wait(60), f"only {len(received)} of {total} messages arrived"
    per: dict[int, list[int]] = {t: [] for t in range(threads)}
    for message in received:
        assert message["check"] == f"{message['t']}:{message['seq']}"  # intact
        per[message["t"]].append(message["seq"])
    for tid, seqs in per.items():
        assert seqs == list(range(per_thread)), f"thread {tid} out of order"


def test_one_64_mib_binary_message_both_ways(make_server, make_client):
    """
    max_message_size defaults to 64 MiB and a message of exactly that size
    is allowed; it arrives intact client -> server and server -> client.
    """
    size = 64 * MiB
    big = hashlib.sha256(b"seed").digest() * (size // 32)
    assert len(big) == size
    digest = hashlib.sha256(big).hexdigest()
    server = make_server(messageDataType="binary")
    assert server.max_message_size == size
    at_server: queue.Queue[Any] = queue.Queue()

    def on_message(client, message):
        at_server.put((len(message), hashlib.sha256(message).hexdigest()))
        client.send(message)

    server.add_onmessage_callback(on_message, with_sender=True)
    client = make_client(server.port, messageDataType="binary")
    assert client.max_message_size == size
    at_client: queue.Queue[Any] = queue.Queue()
    client.add_onmessage_callback(
        lambda m: at_client.put((len(m), hashlib.sha256(m).hexdigest()))
    )
    start = time.monotonic()
    client.send(big)
    assert get(at_server, "64 MiB at the server", 60) == (size, digest)
    assert get(at_client, "64 MiB echoed back", 60) == (size, digest)
    assert time.monotonic() - start < 30


def test_over_the_limit_raises_at_send_and_the_connection_stays(
    make_server, make_client
):
    server = make_server(messageDataType="binary", max_message_size=1024)
    got: queue.Queue[Any] = queue.Queue()
    server.add_onmessage_callback(got.put)
    client = make_client(server.port, messageDataType="binary", max_message_size=1024)
    with pytest.raises(MessageTooLargeError) as info:
        client.send(b"x" * 1025)
    assert isinstance(info.value, ValueError)
    client.send(b"y" * 1024)
    assert get(got, "message at the limit") == b"y" * 1024


def test_sequential_round_trips_are_fast(make_server, make_client):
    """
    Request/reply in lock step: the original (two send() calls, no
    TCP_NODELAY) took ~88 ms per round trip; 500 must take well under that.
    """
    n = 500
    server = make_server()
    server.add_onmessage_callback(lambda c, m: c.send(m), with_sender=True)
    client = make_client(server.port)
    replies: queue.Queue[Any] = queue.Queue()
    client.add_onmessage_callback(replies.put)
    start = time.monotonic()
    for i in range(n):
        client.send({"ping": i})
        assert get(replies, f"reply {i}") == {"ping": i}
    per_trip = (time.monotonic() - start) / n
    assert per_trip < 0.02, f"{per_trip * 1000:.1f} ms per round trip"
