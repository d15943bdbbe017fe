"""
pyzmq: PUSH/PULL (A, D), REQ/REP (B), XPUB/SUB (C, E), as servers and
clients of the scenarios. High-water marks are unlimited so nothing is
dropped.
"""

from __future__ import annotations

import gc
from typing import Any

from benchmarks.peers.common import (
    emit,
    hold,
    json_bytes,
    json_value,
    maxrss_kib,
    messages,
    pattern,
    payload_ok,
    rss_kib,
    rtt_result,
)
from benchmarks.peers.settings import ACK, HELLO, HI, now


def run_server(scn: str, spec: dict[str, Any]) -> None:
    import zmq

    ctx = zmq.Context()
    url = "tcp://127.0.0.1"

    if scn == "A":
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, 0)  # unbounded, like the other systems' buffers
        port = pull.bind_to_random_port(url)
        emit("ready", ports=[port])
        n = spec["messages"]
        recv = pull.recv
        loads = json_value
        loads(recv())
        t_first = now()
        msg = None
        for _ in range(n - 1):
            msg = loads(recv())
        emit(
            "result",
            t_first=t_first,
            t_last=now(),
            count=n,
            last=msg["i"] if msg else 0,
        )

    elif scn == "B":
        rep = ctx.socket(zmq.REP)
        port = rep.bind_to_random_port(url)
        emit("ready", ports=[port])
        while True:
            rep.send(json_bytes(json_value(rep.recv())))

    elif scn in ("C", "E"):
        pub = ctx.socket(zmq.XPUB)
        pub.setsockopt(zmq.XPUB_VERBOSE, 1)  # one subscription message each
        pub.setsockopt(zmq.SNDHWM, 0)  # no drops
        pub.setsockopt(zmq.BACKLOG, 1024)
        pub.setsockopt(zmq.RCVTIMEO, 500)
        expected = spec["clients"] if scn == "C" else spec["connections"]
        port = pub.bind_to_random_port(url)
        gc.collect()
        rss_base = rss_kib()
        t_ready = now()
        emit("ready", ports=[port])
        subscribed = 0
        next_progress = now() + 0.5
        while subscribed < expected:
            if now() >= next_progress:
                emit("progress", accepted=subscribed)
                next_progress = now() + 0.5
            try:
                event = pub.recv()
            except zmq.Again:
                continue
            if event[:1] == b"\x01":
                subscribed += 1
        t_all = now()
        if scn == "C":
            msgs = messages(spec["messages"])
            t_start = now()
            send = pub.send
            for m in msgs:
                send(json_bytes(m))
            emit("result", t_start=t_start, t_sent=now(), clients=subscribed)
        else:
            rss_connected = rss_kib()
            t_broadcast = now()
            pub.send(json_bytes({"i": 0, "payload": "x" * 20}))
            emit(
                "result",
                connections=subscribed,
                rss_base_kib=rss_base,
                rss_connected_kib=rss_connected,
                t_ready=t_ready,
                t_all=t_all,
                t_broadcast=t_broadcast,
                t_sent=now(),
            )

    elif scn == "D":
        pull = ctx.socket(zmq.PULL)
        acks = ctx.socket(zmq.PUSH)
        port = pull.bind_to_random_port(url)
        ack_port = acks.bind_to_random_port(url)
        base = maxrss_kib()
        emit("ready", ports=[port, ack_port])
        size = spec["size"]
        received = 0
        while received < spec["reps"]:
            frame = pull.recv(copy=False)  # pyzmq's zero-copy path for large data
            payload = frame.buffer
            if len(payload) < 16:
                acks.send(HI)
                continue
            if not payload_ok(payload, size):
                emit("error", error="payload check failed")
            del payload, frame
            acks.send(ACK)
            received += 1
        emit("result", peak_extra_kib=maxrss_kib() - base, baseline_kib=base)

    else:
        raise ValueError(scn)
    hold()


def run_client(scn: str, spec: dict[str, Any], go: dict[str, Any]) -> None:
    import zmq

    ctx = zmq.Context()
    url = f"tcp://127.0.0.1:{go['ports'][0]}"

    if scn == "A":
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, 0)  # unbounded, like the other systems' buffers
        push.connect(url)
        msgs = messages(spec["messages"])
        send = push.send
        t0 = now()
        for m in msgs:
            send(json_bytes(m))
        emit("result", t_send_start=t0, t_send_end=now())

    elif scn == "B":
        req = ctx.socket(zmq.REQ)
        req.connect(url)
        msgs = messages(spec["trips"] + spec["warmup"])
        rtts = []
        for i, m in enumerate(msgs):
            t0 = now()
            req.send(json_bytes(m))
            json_value(req.recv())
            if i >= spec["warmup"]:
                rtts.append(now() - t0)
        emit("result", **rtt_result(rtts))

    elif scn == "C":
        k, m = spec["clients"], spec["messages"]
        poller = zmq.Poller()
        counts = {}
        for _ in range(k):
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.RCVHWM, 0)
            sub.connect(url)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            poller.register(sub, zmq.POLLIN)
            counts[sub] = 0
        done = 0
        loads = json_value
        while done < k:
            for sub, _ in poller.poll():
                while True:
                    try:
                        data = sub.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    loads(data)
                    counts[sub] += 1
                    if counts[sub] == m:
                        done += 1
        emit("result", t_done=now(), clients=k, each=m)

    elif scn == "D":
        push = ctx.socket(zmq.PUSH)
        acks = ctx.socket(zmq.PULL)
        push.connect(url)
        acks.connect(f"tcp://127.0.0.1:{go['ports'][1]}")
        payload = pattern(spec["size"])
        push.send(HELLO)
        acks.recv()
        times = []
        for _ in range(spec["reps"]):
            t0 = now()
            push.send(payload, copy=False)
            acks.recv()
            times.append(now() - t0)
            emit("progress", times=times)
        emit("result", times=times)

    elif scn == "E":
        k = spec["connections"]
        ctx.set(zmq.MAX_SOCKETS, k + 100)
        subs = []
        for i in range(k):
            sub = ctx.socket(zmq.SUB)
            sub.connect(url)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            subs.append(sub)
            if i % 500 == 499:
                emit("progress", connected=i + 1)
        for sub in subs:
            json_value(sub.recv())
        emit("result", t_done=now(), connections=k, failures=0)

    else:
        raise ValueError(scn)
    hold()
