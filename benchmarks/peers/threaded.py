"""
twcomms-threaded: the threaded Server/Client, driven from plain threads,
as servers and clients of scenarios A-D.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from benchmarks.peers.common import (
    emit,
    hold,
    maxrss_kib,
    messages,
    pattern,
    payload_ok,
    rtt_result,
)
from benchmarks.peers.settings import ACK, HELLO, HI, MAX_MESSAGE, now


def run_server(scn: str, spec: dict[str, Any]) -> None:
    from twcomms import Server

    if scn == "D":
        srv = Server(
            "127.0.0.1",
            0,
            "binary",
            max_message_size=MAX_MESSAGE,
            keep_process_alive=False,
        )
    else:
        srv = Server("127.0.0.1", 0, "json", keep_process_alive=False)
    all_connected = threading.Event()

    if scn == "A":
        n = spec["messages"]
        count = 0
        t_first = 0.0

        def on_message(msg: Any) -> None:
            # One connection: its callbacks run one at a time, in order.
            nonlocal count, t_first
            count += 1
            if count == 1:
                t_first = now()
            elif count == n:
                emit(
                    "result", t_first=t_first, t_last=now(), count=count, last=msg["i"]
                )

        srv.add_onmessage_callback(on_message)

    elif scn == "B":
        srv.add_onmessage_callback(
            lambda client, msg: client.send(msg), with_sender=True
        )

    elif scn == "C":
        lock = threading.Lock()
        connected = 0

        def on_connect(client: Any) -> None:
            nonlocal connected
            with lock:
                connected += 1
                if connected == spec["clients"]:
                    all_connected.set()

        srv.add_onconnect_callback(on_connect)

    elif scn == "D":
        size = spec["size"]
        reps = spec["reps"]
        received = 0
        base = maxrss_kib()

        def on_payload(client: Any, payload: bytes) -> None:
            nonlocal received
            if len(payload) < 16:
                client.send(HI)
                return
            if not payload_ok(payload, size):
                emit("error", error="payload check failed")
                return
            client.send(ACK)
            received += 1
            if received == reps:
                emit("result", peak_extra_kib=maxrss_kib() - base, baseline_kib=base)

        srv.add_onmessage_callback(on_payload, with_sender=True)

    else:
        raise ValueError(scn)

    srv.start()
    emit("ready", ports=[srv.port])
    if scn == "C":
        msgs = messages(spec["messages"])
        all_connected.wait()
        t_start = now()
        for m in msgs:
            srv.broadcast(m)
        emit("result", t_start=t_start, t_sent=now(), clients=len(srv.clients))
    hold()


def run_client(scn: str, spec: dict[str, Any], go: dict[str, Any]) -> None:
    from twcomms import Client

    port = go["ports"][0]

    if scn == "A":
        msgs = messages(spec["messages"])
        client = Client("127.0.0.1", port, keep_process_alive=False)
        client.connect()
        t0 = now()
        for m in msgs:
            client.send(m)
        emit("result", t_send_start=t0, t_send_end=now())
        hold()

    elif scn == "B":
        msgs = messages(spec["trips"] + spec["warmup"])
        replies: queue.SimpleQueue[Any] = queue.SimpleQueue()
        client = Client("127.0.0.1", port, keep_process_alive=False)
        client.add_onmessage_callback(replies.put)
        client.connect()
        rtts = []
        for i, m in enumerate(msgs):
            t0 = now()
            client.send(m)
            replies.get()
            if i >= spec["warmup"]:
                rtts.append(now() - t0)
        emit("result", **rtt_result(rtts))

    elif scn == "C":
        k, m = spec["clients"], spec["messages"]
        lock = threading.Lock()
        all_done = threading.Event()
        done = 0
        clients = []

        def make_callback() -> Callable[[Any], None]:
            count = 0

            def on_message(msg: Any) -> None:
                # One client's callbacks run one at a time; clients in
                # parallel, hence the lock on the shared count.
                nonlocal count, done
                count += 1
                if count == m:
                    with lock:
                        done += 1
                        if done == k:
                            all_done.set()

            return on_message

        for _ in range(k):
            c = Client("127.0.0.1", port, keep_process_alive=False)
            c.add_onmessage_callback(make_callback())
            clients.append(c)
        for c in clients:
            c.connect()
        all_done.wait()
        emit("result", t_done=now(), clients=k, each=m)

    elif scn == "D":
        payload = pattern(spec["size"])
        replies = queue.SimpleQueue()
        client = Client(
            "127.0.0.1",
            port,
            messageDataType="binary",
            max_message_size=MAX_MESSAGE,
            keep_process_alive=False,
        )
        client.add_onmessage_callback(replies.put)
        client.connect()
        client.send(HELLO)
        replies.get()
        times = []
        for _ in range(spec["reps"]):
            t0 = now()
            client.send(payload)
            replies.get()
            times.append(now() - t0)
            emit("progress", times=times)
        emit("result", times=times)

    else:
        raise ValueError(scn)
    hold()
