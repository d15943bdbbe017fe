"""
Flow control through the threaded API, over 127.0.0.1: bounded memory, no
silent loss, clean shutdown. Blocking tests: see the root conftest.py.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.procs import end_process
from twcomms import Client, Server
from twcomms.threaded import FlowControl, QueueFullError, SendTimeoutError

WAIT = 30


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """
    Servers and Clients appended here are stopped/closed after the test.
    """
    objs: list[Any] = []
    yield objs
    for obj in reversed(objs):
        if isinstance(obj, Server):
            obj.stop()
        elif isinstance(obj, Client):
            obj.close()
        else:
            obj.close()


def test_fast_sender_slow_callback_bounded_nothing_lost_in_order(
    closing: list[Any],
) -> None:
    high = 50
    server = Server("127.0.0.1", 0, flow=FlowControl(receive_high_count=high))
    closing.append(server)
    got: list[int] = []
    most_pending = [0]
    done = threading.Event()
    total = 3000

    def slow(client: Any, message: Any) -> None:
        window = client._receive
        most_pending[0] = max(most_pending[0], window.pending_count)
        time.sleep(0.0002)  # a slow callback (simulated work, not a wait)
        got.append(message["i"])
        if len(got) == total:
            done.set()

    server.add_onmessage_callback(slow, with_sender=True)
    server.start()
    client = Client("127.0.0.1", server.port)
    closing.append(client)
    client.connect()
    for i in range(total):
        client.send({"i": i, "pad": "x" * 100})
    assert done.wait(WAIT)
    assert got == list(range(total))
    (peer,) = server.clients
    assert peer._receive.pauses > 0
    # Bounded: at most the high-water mark plus what one read of the socket
    # held when reading paused (64 KiB of ~120-byte frames).
    assert most_pending[0] <= high + 65536 // 120 + 1


def test_peer_that_never_reads_blocks_send_then_times_out(closing: list[Any]) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    closing.append(listener)
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    t = threading.Thread(target=lambda: accepted.append(listener.accept()[0]))
    t.start()
    client = Client(
        "127.0.0.1",
        port,
        messageDataType="binary",
        flow=FlowControl(
            send_high_water=1 << 20, send_low_water=1 << 18, send_timeout=0.5
        ),
    )
    closing.append(client)
    client.connect()
    t.join(WAIT)
    closing.extend(accepted)
    chunk = b"x" * 65536
    sent = 0
    with pytest.raises(SendTimeoutError, match="not reading") as info:
        for _ in range(10_000):  # ~640 MiB if nothing stopped us
            client.send(chunk)
            sent += 1
    assert "nothing was sent" in str(info.value)
    # Bounded: the high-water mark plus what the kernel buffers took.
    assert client._window.pending <= (1 << 20) + len(chunk) + 4
    assert sent * len(chunk) < 64 << 20


def test_offline_queue_across_a_server_restart_exactly_once_in_order(
    closing: list[Any],
) -> None:
    got: list[int] = []
    all_in = threading.Event()
    first = Server("127.0.0.1", 0)
    first.start()
    port = first.port
    connects = []
    client = Client(
        "127.0.0.1", port, autoReconnect=True, initial_delay=0.05, max_delay=0.2
    )
    closing.append(client)
    connected = threading.Semaphore(0)

    def on_connect(c: Any) -> None:
        connects.append(c)
        connected.release()

    client.add_onconnect_callback(on_connect)
    client.connect()
    assert connected.acquire(timeout=WAIT)
    first.stop()
    for i in range(200):
        client.send({"i": i})  # while the server is down
    second = Server("127.0.0.1", port)
    closing.append(second)

    def collect(message: Any) -> None:
        got.append(message["i"])
        if len(got) >= 200:
            all_in.set()

    second.add_onmessage_callback(collect)
    second.start()
    assert connected.acquire(timeout=WAIT)
    assert all_in.wait(WAIT)
    client.send({"i": 200})
    deadline = time.monotonic() + WAIT
    while len(got) < 201 and time.monotonic() < deadline:
        all_in.clear()
        all_in.wait(0.1)
    assert got == list(range(201))  # exactly once, in order


def test_offline_queue_full_raises(closing: list[Any]) -> None:
    server = Server("127.0.0.1", 0)
    server.start()
    client = Client(
        "127.0.0.1",
        server.port,
        autoReconnect=True,
        initial_delay=5,
        max_delay=5,
        flow=FlowControl(offline_max_count=10),
    )
    closing.append(client)
    closed = threading.Event()
    client.add_onclose_callback(lambda c: closed.set())
    client.connect()
    server.stop()
    assert closed.wait(WAIT)
    for i in range(10):
        client.send({"i": i})
    with pytest.raises(QueueFullError, match="nothing was queued"):
        client.send({"i": 10})


def test_stop_with_data_in_flight_delivers_all(closing: list[Any]) -> None:
    total = 20_000
    got: list[int] = []
    done = threading.Event()
    server = Server("127.0.0.1", 0)
    closing.append(server)

    def collect(message: Any) -> None:
        got.append(message[0])
        if len(got) == total:
            done.set()

    server.add_onmessage_callback(collect)
    server.start()
    client = Client("127.0.0.1", server.port)
    client.connect()
    for i in range(total):
        client.send([i])
    client.close()  # at once, with most of it still queued
    assert done.wait(WAIT)
    assert got == list(range(total))


def test_server_stop_delivers_what_was_sent_before_it(closing: list[Any]) -> None:
    server = Server("127.0.0.1", 0, messageDataType="string")
    closing.append(server)
    ready = threading.Event()
    server.add_onconnect_callback(lambda c: ready.set())
    server.start()
    got: list[str] = []
    closed = threading.Event()
    client = Client("127.0.0.1", server.port, messageDataType="string")
    closing.append(client)
    client.add_onmessage_callback(got.append)
    client.add_onclose_callback(lambda c: closed.set())
    client.connect()
    assert ready.wait(WAIT)
    for i in range(5000):
        server.broadcast(f"m{i}")
    server.stop()
    assert closed.wait(WAIT)
    assert client.wait(WAIT)
    assert got == [f"m{i}" for i in range(5000)]


def test_exit_with_open_clients_flushes(closing: list[Any], tmp_path: Path) -> None:
    total = 5000
    got: list[int] = []
    done = threading.Event()
    server = Server("127.0.0.1", 0)
    closing.append(server)

    def collect(message: Any) -> None:
        got.append(message["i"])
        if len(got) == total:
            done.set()

    server.add_onmessage_callback(collect)
    server.start()
    script = tmp_path / "sender.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from twcomms import Client
            c = Client("127.0.0.1", {server.port}, keep_process_alive=False)
            c.connect()
            for i in range({total}):
                c.send({{"i": i}})
            print("sent", flush=True)
            # The script ends with the client open: exit flushes it.
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    try:
        out, _ = proc.communicate(timeout=WAIT)
    finally:
        end_process(proc)
    assert proc.returncode == 0
    assert out.strip() == b"sent"
    assert done.wait(WAIT)
    assert got == list(range(total))


def test_raw_original_peer_reads_what_we_send(closing: list[Any]) -> None:
    """
    A peer written like the original (struct header then payload) reads our
    frames, including one sent right before stop().
    """
    server = Server("127.0.0.1", 0)
    closing.append(server)
    ready = threading.Event()
    server.add_onconnect_callback(lambda c: ready.set())
    server.start()
    sock = socket.create_connection(("127.0.0.1", server.port))
    closing.append(sock)
    assert ready.wait(WAIT)
    server.broadcast({"last": True})
    server.stop()
    sock.settimeout(WAIT)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    (n,) = struct.unpack("<I", data[:4])
    assert json.loads(data[4 : 4 + n]) == {"last": True}


def test_close_wakes_a_sender_blocked_on_a_peer_that_never_reads(
    closing: list[Any],
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    closing.append(listener)
    accepted: list[socket.socket] = []
    t = threading.Thread(target=lambda: accepted.append(listener.accept()[0]))
    t.start()
    client = Client(
        "127.0.0.1",
        listener.getsockname()[1],
        messageDataType="binary",
        flow=FlowControl(
            send_high_water=1 << 20, send_low_water=1 << 18, send_timeout=WAIT
        ),
    )
    client.connect()
    t.join(WAIT)
    closing.extend(accepted)
    outcome: list[BaseException] = []
    blocked = threading.Event()

    def sender() -> None:
        try:
            for _ in range(10_000):
                if client._window._blocked:
                    blocked.set()
                client.send(b"x" * 65536)
        except BaseException as e:
            outcome.append(e)

    s = threading.Thread(target=sender)
    s.start()
    assert blocked.wait(WAIT)
    started = time.monotonic()
    client.close(timeout=2)
    s.join(WAIT)
    assert outcome and isinstance(outcome[0], ConnectionError)
    assert time.monotonic() - started < WAIT


def test_close_with_a_peer_that_never_reads_aborts_after_the_timeout(
    closing: list[Any],
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    closing.append(listener)
    accepted: list[socket.socket] = []
    t = threading.Thread(target=lambda: accepted.append(listener.accept()[0]))
    t.start()
    client = Client(
        "127.0.0.1",
        listener.getsockname()[1],
        messageDataType="binary",
        flow=FlowControl(send_high_water=64 << 20, send_low_water=1 << 20),
    )
    client.connect()
    t.join(WAIT)
    closing.extend(accepted)
    for _ in range(32):
        client.send(b"x" * (1 << 20))  # far more than the kernel buffers
    started = time.monotonic()
    client.close(timeout=0.5)
    assert time.monotonic() - started < 5.5
    assert not client.connected and client.wait(0)
    (peer,) = accepted
    peer.settimeout(WAIT)
    received = 0
    try:
        while chunk := peer.recv(1 << 20):
            received += len(chunk)
    except ConnectionResetError:
        pass
    assert received < 32 << 20  # aborted: the rest was discarded
