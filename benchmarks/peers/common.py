"""
Helpers shared by every child process of the peers benchmark (servers and
clients of every system): JSON events for the parent on stdout, memory
figures, the payloads, and the hand-over of the server's ports.
"""

from __future__ import annotations

import json
import math
import os
import resource
import socket
import sys
import threading
import time
from typing import Any

_emit_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    """
    One JSON line on stdout for the parent. Any thread.
    """
    line = json.dumps({"ev": event, **fields})
    with _emit_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def maxrss_kib() -> int:
    """
    Peak resident set size of this process so far, KiB.
    """
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def rss_kib() -> int:
    """
    Current resident set size of this process, KiB.
    """
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE") // 1024


def hold() -> None:
    """
    Keep the process (and its sockets, and what they still have to send)
    alive until the parent kills it (or, at the latest, its watchdog ends
    it: L{harness.procs.watchdog}).
    """
    while True:
        time.sleep(3600)


def messages(n: int) -> list[dict[str, Any]]:
    payload = "x" * 20
    return [{"i": i, "payload": payload} for i in range(n)]


def pattern(size: int) -> bytes:
    if size % 256:
        raise ValueError("D sizes must be multiples of 256 bytes")
    return bytes(range(256)) * (size // 256)


def payload_ok(payload: Any, size: int) -> bool:
    if len(payload) != size:
        return False
    return all(payload[i] == i % 256 for i in (0, size // 2, size - 1))


def _percentile(sorted_values: list[float], q: float) -> float:
    """
    Nearest-rank percentile of already sorted values.
    """
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def rtt_result(rtts: list[float]) -> dict[str, Any]:
    rtts.sort()
    return {
        "trips": len(rtts),
        "p50_us": _percentile(rtts, 0.50) * 1e6,
        "p99_us": _percentile(rtts, 0.99) * 1e6,
        "mean_us": sum(rtts) / len(rtts) * 1e6,
        "min_us": rtts[0] * 1e6,
    }


def read_go() -> dict[str, Any]:
    """
    A client waits for the parent to hand it the server's ports.
    """
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("parent closed stdin before the server was ready")
    return json.loads(line)  # type: ignore[no-any-return]


def nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def json_bytes(message: Any) -> bytes:
    return json.dumps(message).encode()


def json_value(payload: bytes | bytearray) -> Any:
    """
    UTF-8, then JSON: what twcomms' json codec does (C{json.loads} of bytes
    would first run a pure-Python encoding detection, ~0.8 us a message).
    """
    return json.loads(payload.decode())
