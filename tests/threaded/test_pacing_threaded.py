"""
A broadcasting loop on the threaded API, over real sockets, as the
original's users write it (video frames, point clouds): it goes at the
pace of the clients that keep up, a client that has stopped reading is
dropped about C{stall_timeout} after it stopped, and a slow but steady
one is never dropped. Memory stays bounded (tracemalloc).
"""

from __future__ import annotations

import hashlib
import queue
import socket
import struct
import threading
import time
import tracemalloc
from typing import Any

from twcomms import CloseReason, ConnectedClient, FlowControl

from .raw import WAIT, get

MiB = 1024 * 1024


def _stuck_socket(port: int) -> socket.socket:
    """
    A raw client that never reads, with a small receive buffer so the
    server notices soon.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(WAIT)
    sock.connect(("127.0.0.1", port))
    return sock


def _payload(i: int, size: int) -> bytes:
    return struct.pack("<I", i) + bytes([i % 251]) * (size - 4)


def test_a_broadcasting_loop_goes_at_its_healthy_clients_pace(make_server, make_client):
    stall = 1.0
    count = 128  # 1 MiB each (the user story: 1,024; this is CI's size)
    flow = FlowControl(send_high_water=4 * MiB, send_low_water=MiB)
    server = make_server(
        messageDataType="binary",
        flow=flow,
        stall_timeout=stall,
        max_message_size=2 * MiB,
    )
    connected: queue.Queue[ConnectedClient] = queue.Queue()
    closed: queue.Queue[tuple[ConnectedClient, float]] = queue.Queue()
    server.add_onconnect_callback(connected.put)
    server.add_onclose_callback(lambda c: closed.put((c, time.monotonic())))
    healthy_got: queue.Queue[bytes] = queue.Queue()
    healthy = make_client(
        server.port,
        messageDataType="binary",
        max_message_size=2 * MiB,
        flow=FlowControl(receive_high_bytes=4 * MiB),
    )
    healthy.add_onmessage_callback(lambda m: healthy_got.put(hashlib.sha1(m).digest()))
    get(connected, "the healthy client")
    stuck = _stuck_socket(server.port)
    try:
        stuck_handle = get(connected, "the stuck client")
        tracemalloc.start()
        start = time.monotonic()
        for i in range(count):
            server.broadcast(_payload(i, MiB))  # a plain loop: no pacing here
        loop_seconds = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        got = [get(healthy_got, f"message {i}", timeout=30) for i in range(count)]
        assert got == [hashlib.sha1(_payload(i, MiB)).digest() for i in range(count)]
        client, closed_at = get(closed, "the stuck client's close")
        assert client is stuck_handle
        assert client.close_reason is CloseReason.SLOW_CONSUMER
        assert healthy.connected
        # Closed about stall_timeout after its queue stopped draining (it
        # never drained: that is soon after the loop began).
        assert stall * 0.9 <= closed_at - start <= stall + 5, closed_at - start
        # Bounded by the healthy client's pace plus stall_timeout.
        assert loop_seconds <= stall + 20, loop_seconds
        # Both queues are bounded by the send window (4 MiB high water and
        # one message), whatever the loop sends (128 MiB here); the healthy
        # client's receive window (4 MiB) is in this process too.
        assert peak < 24 * MiB, peak
        print(
            f"loop {loop_seconds:.2f} s for {count} MiB; stuck client closed "
            f"{closed_at - start:.2f} s in; traced peak {peak / MiB:.1f} MiB"
        )
    finally:
        stuck.close()


def _throttled_reader(port: int, rate: float, expected: int, out: list[Any]) -> None:
    """
    A raw client reading at about C{rate} bytes/s (64 KiB at a time), that
    puts C{(first 5 bytes, sha1)} of each payload in C{out} (after the
    socket itself).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(WAIT)
    sock.connect(("127.0.0.1", port))
    out.append(sock)
    buffered = b""
    got = 0
    try:
        while got < expected:
            chunk = sock.recv(64 * 1024)
            if not chunk:
                out.append("closed")
                return
            buffered += chunk
            while len(buffered) >= 4:
                (length,) = struct.unpack_from("<I", buffered)
                if len(buffered) < 4 + length:
                    break
                payload = buffered[4 : 4 + length]
                out.append((payload[:5], hashlib.sha1(payload).digest()))
                buffered = buffered[4 + length :]
                got += 1
            time.sleep(len(chunk) / rate)  # the throttle (not a wait)
    except OSError as e:
        out.append(e)
    finally:
        sock.close()


def test_slow_but_steady_clients_are_never_dropped(make_server, make_client):
    stall = 1.0
    big = 16 * MiB
    server = make_server(
        messageDataType="binary",
        flow=FlowControl(send_high_water=4 * MiB, send_low_water=MiB),
        stall_timeout=stall,
        max_message_size=big,
    )
    connected: queue.Queue[ConnectedClient] = queue.Queue()
    closed: queue.Queue[ConnectedClient] = queue.Queue()
    server.add_onconnect_callback(connected.put)
    server.add_onclose_callback(closed.put)
    fast_got: queue.Queue[bytes] = queue.Queue()
    fast = make_client(server.port, messageDataType="binary", max_message_size=big)
    fast.add_onmessage_callback(lambda m: fast_got.put(hashlib.sha1(m).digest()))
    get(connected, "the fast client")
    messages = [_payload(0, big)] + [_payload(i, 64 * 1024) for i in range(1, 9)]
    slow_out: list[Any] = []
    # ~4 MiB/s: a 1 MiB slice every 0.25 s, a quarter of stall_timeout (the
    # defaults' ratio, 1 MiB/s against 10 s, is a tenth).
    reader = threading.Thread(
        target=_throttled_reader, args=(server.port, 4 * MiB, len(messages), slow_out)
    )
    reader.start()
    try:
        get(connected, "the slow client")
        for m in messages:
            server.broadcast(m)
        digests = [hashlib.sha1(m).digest() for m in messages]
        assert [get(fast_got, "a message", 30) for _ in messages] == digests
        reader.join(60)
        assert not reader.is_alive()
        assert [d for _, d in slow_out[1:]] == digests, slow_out[1:3]
        # (The throttled reader closes its socket once it has everything.)
        dropped = []
        while not closed.empty():
            c = closed.get()
            if c.close_reason is CloseReason.SLOW_CONSUMER:
                dropped.append(c)
        assert not dropped, "a steady client was dropped"
        assert fast.connected
    finally:
        if slow_out and isinstance(slow_out[0], socket.socket):
            slow_out[0].close()
        reader.join(WAIT)


def test_send_to_and_broadcast_from_two_threads_share_one_window(
    make_server, make_client
):
    high = 2 * MiB
    server = make_server(
        messageDataType="binary",
        flow=FlowControl(send_high_water=high, send_low_water=high // 4),
        stall_timeout=5.0,
    )
    connected: queue.Queue[ConnectedClient] = queue.Queue()
    server.add_onconnect_callback(connected.put)
    out: list[Any] = []
    per_thread = 40
    size = 256 * 1024
    reader = threading.Thread(
        target=_throttled_reader,
        args=(server.port, 16 * MiB, 2 * per_thread, out),
    )
    reader.start()
    try:
        client = get(connected, "the slow client")
        windows: list[int] = []

        def send_to() -> None:
            for i in range(per_thread):
                server.sendTo(b"s" + struct.pack("<I", i) + b"." * size, client)
                windows.append(client.send_pending)

        def broadcast() -> None:
            for i in range(per_thread):
                server.broadcast(b"b" + struct.pack("<I", i) + b"." * size)
                windows.append(client.send_pending)

        threads = [threading.Thread(target=f) for f in (send_to, broadcast)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        reader.join(60)
        assert not reader.is_alive()
        # One budget: the window never held more than its high-water mark,
        # plus what may be on its way to the reactor when a broadcast
        # passes (broadcasts are counted into the windows once per reactor
        # batch, and those in flight are bounded by another high-water
        # mark), plus one message from each thread.
        assert max(windows) <= 2 * high + 2 * (size + 9), max(windows)
    finally:
        if out and isinstance(out[0], socket.socket):
            out[0].close()
        reader.join(WAIT)
    prefixes = [p for p, _ in out[1:]]
    assert len(prefixes) == 2 * per_thread, out[-1]
    # Each thread's messages arrive in the order it sent them.
    for kind in (b"s", b"b"):
        mine = [struct.unpack("<I", p[1:])[0] for p in prefixes if p[:1] == kind]
        assert mine == list(range(per_thread)), (kind, mine)
