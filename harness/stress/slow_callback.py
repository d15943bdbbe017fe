"""
Scenario: a slow callback (threaded API). A sender process sends flat out;
the receive window pauses reading, so the receiver's memory stays bounded,
and nothing is lost or reordered.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from harness.stress.measure import TraceMemory
from harness.stress.processes import child, read_event
from harness.stress.result import Result, mib
from harness.stress.scale import TWISTED_BUFFER, KiB, MiB, Scale

#: Receive window used by the slow-callback scenario.
SLOW_CB_HIGH_COUNT = 200
SLOW_CB_HIGH_BYTES = 256 * KiB
SLOW_CB_SIZE = 1024
#: How far past its marks the window may go: messages are counted against
#: it per batch (what one reactor turn read: one socket read, 64 KiB), so
#: it can overshoot by one read's worth before reading stops.
SLOW_CB_SLACK_BYTES = TWISTED_BUFFER + 2 * SLOW_CB_SIZE
SLOW_CB_SLACK_COUNT = SLOW_CB_SLACK_BYTES // SLOW_CB_SIZE


def slow_callback_bound() -> int:
    """
    The receiver's memory bound in the slow-callback scenario: the receive
    window's high-water marks (messages and bytes, the decoded messages
    held at most twice: payload and value), one socket read kept while
    paused (64 KiB), and 4 MiB for everything else; independent of how many
    messages are sent.
    """
    per_message = 2 * SLOW_CB_SIZE + 512
    return (
        2 * SLOW_CB_HIGH_BYTES
        + SLOW_CB_HIGH_COUNT * per_message
        + 2 * TWISTED_BUFFER
        + 4 * MiB
    )


def slow_callback(scale: Scale, side: str = "server") -> Result:
    """
    Threaded API: a sender process sends C{scale.slow_callback_messages}
    ~1 KiB json messages as fast as TCP allows to a receiver (a C{Server},
    or a C{Client} with C{side="client"}) whose callback is slow. The
    receive window pauses reading (TCP slows the sender); every message is
    handled once, in order; the messages waiting for the callback never
    exceed the window, and the receiver's traced memory stays under
    L{slow_callback_bound}.
    """
    from twcomms.threaded import Client, FlowControl, Server

    started = time.monotonic()
    n = scale.slow_callback_messages
    bound = slow_callback_bound()
    result = Result(
        f"slow callback ({side})",
        scale=scale.name,
        load=f"{n:,} x 1 KiB msgs from a process sending flat out",
        faults="callback slower than the sender",
        memory_bound=bound,
    )
    flow = FlowControl(
        receive_high_count=SLOW_CB_HIGH_COUNT, receive_high_bytes=SLOW_CB_HIGH_BYTES
    )
    # Checked as they come (keeping every number would itself be measured).
    seen = {"count": 0, "next": 0, "duplicated": 0, "gaps": 0}
    done = threading.Event()
    most = {"count": 0, "bytes": 0}
    windows: list[Any] = []

    def on_message(*args: Any) -> None:
        i = args[-1]["i"]
        if windows:
            w = windows[0]
            most["count"] = max(most["count"], w.pending_count)
            most["bytes"] = max(most["bytes"], w.pending_bytes)
        if i == seen["next"]:
            seen["next"] = i + 1
            seen["count"] += 1
        elif i < seen["next"]:
            seen["duplicated"] += 1
        else:
            seen["gaps"] += 1
            seen["count"] += 1
            seen["next"] = i + 1
        if seen["count"] % 10 == 0:
            time.sleep(0.0002)  # the slow work (not a wait for anything)
        if seen["next"] >= n:
            done.set()

    timeout = 30 + n / 2000
    objs: list[Any] = []
    with TraceMemory() as memory:
        try:
            if side == "server":
                server = Server("127.0.0.1", 0, flow=flow)
                objs.append(server)
                connected = threading.Event()
                server.add_onconnect_callback(lambda c: connected.set())
                server.add_onmessage_callback(on_message, with_sender=True)
                server.start(timeout=10)
                args = ["sender", "--port", server.port, "--messages", n]
            else:
                args = ["sender", "--listen", "--messages", n]
            with child(*args, "--size", SLOW_CB_SIZE, "--timeout", timeout) as proc:
                ready = read_event(proc, "ready", 20)
                if side == "server":
                    if not connected.wait(10):
                        raise TimeoutError("the sender did not connect")
                    windows.append(server.clients[0]._receive)
                else:
                    client = Client("127.0.0.1", ready["port"], flow=flow)
                    objs.append(client)
                    client.add_onmessage_callback(on_message)
                    client.connect(timeout=10)
                    windows.append(client._receive)
                result.check(done.wait(timeout), f"only {seen['count']} of {n} handled")
                peak = memory.peak
        finally:
            for obj in reversed(objs):
                (obj.stop if isinstance(obj, Server) else obj.close)(timeout=10)
    window = windows[0] if windows else None
    result.sent = n
    in_order = seen["gaps"] == 0 and seen["duplicated"] == 0 and seen["next"] == n
    result.received = seen["count"]
    result.duplicated = seen["duplicated"]
    result.lost = n - seen["count"]
    result.peak_memory = peak
    result.check(in_order, f"messages out of order, lost or repeated: {seen}")
    result.check(window is not None and window.pauses > 0, "reading never paused")
    result.check(
        most["count"] <= SLOW_CB_HIGH_COUNT + SLOW_CB_SLACK_COUNT,
        f"{most['count']} messages waited for the callback "
        f"(window {SLOW_CB_HIGH_COUNT} + one read, {SLOW_CB_SLACK_COUNT})",
    )
    result.check(
        most["bytes"] <= SLOW_CB_HIGH_BYTES + SLOW_CB_SLACK_BYTES,
        f"{most['bytes']} bytes waited "
        f"(window {SLOW_CB_HIGH_BYTES} + one read, {SLOW_CB_SLACK_BYTES})",
    )
    result.check(
        peak <= bound,
        f"receiver memory peaked {peak / MiB:.1f} MiB (bound {bound / MiB:.1f})",
    )
    result.memory = f"peak {mib(peak)} (bound {mib(bound)})"
    result.details.update(
        pauses=window.pauses if window else 0,
        most_waiting=most,
        peak_mib=round(peak / MiB, 2),
        bound_mib=round(bound / MiB, 2),
    )
    result.seconds = time.monotonic() - started
    return result


def slow_callback_client(scale: Scale) -> Result:
    return slow_callback(scale, side="client")
