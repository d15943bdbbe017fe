"""
The servers and clients of scenarios A-E for the event-loop systems
(twcomms-twisted, stock-twisted, asyncio), written once against the "net"
interface of L{benchmarks.peers.nets}.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from benchmarks.peers.common import (
    emit,
    maxrss_kib,
    messages,
    pattern,
    payload_ok,
    rss_kib,
    rtt_result,
)
from benchmarks.peers.nets import make_net
from benchmarks.peers.settings import ACK, BATCH, HELLO, HI, IN_FLIGHT, now


def _ignore(*args: Any) -> None:
    pass


def run_server(system: str, scn: str, spec: dict[str, Any]) -> None:
    net = make_net(system, binary=scn == "D")

    if scn == "A":
        n = spec["messages"]
        count = 0
        t_first = 0.0

        def on_message(conn: Any, msg: Any) -> None:
            nonlocal count, t_first
            count += 1
            if count == 1:
                t_first = now()
            elif count == n:
                t_last = now()
                emit(
                    "result", t_first=t_first, t_last=t_last, count=count, last=msg["i"]
                )
                net.stop()

        port = net.listen(_ignore, on_message)

    elif scn == "B":
        port = net.listen(_ignore, net.reply)

    elif scn == "C":
        msgs = messages(spec["messages"])
        expected = spec["clients"]
        connected = 0
        t_start = 0.0

        def broadcast_from(i: int) -> None:
            nonlocal t_start
            if i == 0:
                t_start = now()
            broadcast = net.broadcast
            for m in msgs[i : i + BATCH]:
                broadcast(m)
            if i + BATCH < len(msgs):
                net.call_soon(broadcast_from, i + BATCH)
            else:
                emit("result", t_start=t_start, t_sent=now(), clients=connected)

        def on_connect(conn: Any) -> None:
            nonlocal connected
            connected += 1
            if connected == expected:
                net.call_soon(broadcast_from, 0)

        port = net.listen(on_connect, _ignore)

    elif scn == "D":
        size = spec["size"]
        reps = spec["reps"]
        received = 0
        base = maxrss_kib()

        def on_message(conn: Any, payload: Any) -> None:
            nonlocal received
            if len(payload) < 16:
                net.reply(conn, HI)
                return
            if not payload_ok(payload, size):
                emit("error", error=f"payload check failed ({len(payload)} bytes)")
                return
            net.reply(conn, ACK)
            received += 1
            if received == reps:
                emit("result", peak_extra_kib=maxrss_kib() - base, baseline_kib=base)

        port = net.listen(_ignore, on_message)

    elif scn == "E":
        expected = spec["connections"]
        connected = 0
        state: dict[str, Any] = {"done": False}

        def fire() -> None:
            rss_connected = rss_kib()
            t_broadcast = now()
            net.broadcast({"i": 0, "payload": "x" * 20})
            state["done"] = True
            emit(
                "result",
                connections=connected,
                rss_base_kib=state["rss_base"],
                rss_connected_kib=rss_connected,
                t_ready=state["t_ready"],
                t_all=state["t_all"],
                t_broadcast=t_broadcast,
                t_sent=now(),
            )

        def on_connect(conn: Any) -> None:
            nonlocal connected
            connected += 1
            if connected == expected:
                state["t_all"] = now()
                net.call_soon(fire)

        def tick() -> None:
            if not state["done"]:
                emit("progress", accepted=connected)
                net.call_later(0.5, tick)

        port = net.listen(on_connect, _ignore)
        gc.collect()
        state["rss_base"] = rss_kib()
        state["t_ready"] = now()
        net.call_later(0.5, tick)

    else:
        raise ValueError(scn)

    emit("ready", ports=[port])
    net.run()


def run_client(system: str, scn: str, spec: dict[str, Any], go: dict[str, Any]) -> None:
    net = make_net(system, binary=scn == "D")
    port = go["ports"][0]

    def failed(error: str) -> None:
        emit("error", error=f"connect failed: {error}")
        net.stop()

    if scn == "A":
        msgs = messages(spec["messages"])

        def on_connected(conn: Any) -> None:
            send = net.sender(conn)
            t0 = now()
            for m in msgs:
                send(m)
            emit("result", t_send_start=t0, t_send_end=now())
            # Keep running: the reactor still has to write it all.

        net.connect(port, _ignore, on_connected, failed)

    elif scn == "B":
        msgs = messages(spec["trips"] + spec["warmup"])
        warmup = spec["warmup"]
        rtts: list[float] = []
        i = 0
        t0 = 0.0
        send: Callable[[Any], None] = _ignore

        def on_connected(conn: Any) -> None:
            nonlocal send, t0
            send = net.sender(conn)
            t0 = now()
            send(msgs[0])

        def on_message(conn: Any, msg: Any) -> None:
            nonlocal i, t0
            t1 = now()
            if i >= warmup:
                rtts.append(t1 - t0)
            i += 1
            if i == len(msgs):
                emit("result", **rtt_result(rtts))
                net.stop()
                return
            t0 = now()
            send(msgs[i])

        net.connect(port, on_message, on_connected, failed)

    elif scn == "C":
        k = spec["clients"]
        m = spec["messages"]
        counts: dict[Any, int] = {}
        done = 0

        def on_message(conn: Any, msg: Any) -> None:
            nonlocal done
            c = counts.get(conn, 0) + 1
            counts[conn] = c
            if c == m:
                if msg["i"] != m - 1:
                    emit("error", error=f"last message out of order: {msg['i']}")
                done += 1
                if done == k:
                    emit("result", t_done=now(), clients=k, each=m)
                    net.stop()

        for _ in range(k):
            net.connect(port, on_message, _ignore, failed)

    elif scn == "D":
        size = spec["size"]
        reps = spec["reps"]
        payload = pattern(size)
        times: list[float] = []
        t0 = 0.0
        send: Callable[[Any], None] = _ignore

        def on_connected(conn: Any) -> None:
            nonlocal send
            send = net.sender(conn)
            send(HELLO)

        def start() -> None:
            nonlocal t0
            t0 = now()
            send(payload)

        def on_message(conn: Any, reply: Any) -> None:
            if reply == HI:
                start()
                return
            times.append(now() - t0)
            emit("progress", times=times)
            if len(times) == reps:
                emit("result", times=times)
                net.stop()
            else:
                start()

        net.connect(port, on_message, on_connected, failed)

    elif scn == "E":
        k = spec["connections"]
        launched = connected = failures = got = 0
        finished = False

        def launch() -> None:
            nonlocal launched
            while launched < k and launched - connected - failures < IN_FLIGHT:
                launched += 1
                net.connect(port, on_message, on_connected, on_failed)

        def on_connected(conn: Any) -> None:
            nonlocal connected
            connected += 1
            launch()

        def on_failed(error: str) -> None:
            nonlocal failures
            failures += 1
            emit("progress", connected=connected, failures=failures, error=error)
            launch()

        def on_message(conn: Any, msg: Any) -> None:
            nonlocal got, finished
            got += 1
            if got == k:
                finished = True
                emit("result", t_done=now(), connections=k, failures=failures)
                net.stop()

        def tick() -> None:
            if not finished:
                emit("progress", connected=connected, failures=failures)
                net.call_later(0.5, tick)

        net.call_soon(launch)
        net.call_later(0.5, tick)

    else:
        raise ValueError(scn)

    net.run()
