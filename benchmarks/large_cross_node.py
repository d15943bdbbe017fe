"""
Benchmark: one 1 GiB message broadcast across nodes -- what it costs in
memory, in Redis and in each node, and how long it takes.

Two hub processes (C{twcomms serve --backplane URL --hub NAME}, mode
broadcast, C{--max-message-size} just over the message) on one real
C{redis-server} (L{harness.redis.RedisServer}, default settings but no
persistence). A raw client on node A sends one message of C{--size}
bytes; a raw client on node B reads it, streaming, and checks it byte for
byte (a BLAKE2 digest of both). Node A stores the payload in Redis in 64
MiB pieces (Redis refuses a value over 512 MB) and announces it on the
stream; node B fetches the pieces and delivers the message.

Figures: seconds from the first byte sent to the last byte received;
Redis's C{used_memory_peak} (C{INFO memory}) against its C{used_memory}
before; each node's peak resident memory (C{VmHWM} of
C{/proc/<pid>/status}) against its resident memory before; and each as a
multiple of the message size.

Run from the repository root::

    python -m benchmarks.large_cross_node                 # 1 GiB
    python -m benchmarks.large_cross_node --size 268435456

It needs a C{redis-server} (see L{harness.redis.find_redis_server}) and
about 6 GiB of free memory for 1 GiB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from harness.procs import child_env, end_process
from harness.redis import RedisServer, redis_command
from harness.sockets import free_port
from harness.wire import header

GiB = 1024**3
#: Seconds the whole run may take before it is called failed.
LIMIT = float(os.environ.get("LARGE_LIMIT", "600"))


def rss(pid: int, field: str) -> int:
    """
    C{VmRSS} or C{VmHWM} (peak) of a process, in bytes.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def redis_memory(port: int) -> dict[str, int]:
    info = redis_command(port, "INFO", "memory")
    text = info.decode() if isinstance(info, bytes) else str(info)
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("used_memory", "used_memory_peak"):
            out[key] = int(value)
    return out


def start_hub(port: int, url: str, hub: str, size: int, log: Path) -> Any:
    args = [
        sys.executable, "-m", "twcomms", "serve",
        "--port", str(port), "--interface", "127.0.0.1",
        "--backplane", url, "--hub", hub,
        "--max-message-size", str(size + 1024),
        "--stall-timeout", "120", "--type", "binary",
    ]  # fmt: skip
    out = open(log, "wb")  # noqa: SIM115
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=child_env())
    deadline = time.monotonic() + 30
    while "backplane: node" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"hub :{port} did not join; log:\n{log.read_text()}")
        time.sleep(0.05)
    return proc


def connect(port: int) -> socket.socket:
    deadline = time.monotonic() + 10
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=LIMIT)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def payload(size: int) -> bytes:
    pattern = bytes(range(256)) * 4096  # 1 MiB
    whole, rest = divmod(size, len(pattern))
    return pattern * whole + pattern[:rest]


def receive(sock: socket.socket, expect: int, result: dict[str, Any]) -> None:
    head = b""
    while len(head) < 4:
        head += sock.recv(4 - len(head))
    length = int.from_bytes(head, "little")
    digest = hashlib.blake2b()
    left = length
    buf = bytearray(4 * 1024 * 1024)
    view = memoryview(buf)
    while left:
        n = sock.recv_into(view, min(left, len(buf)))
        if not n:
            raise RuntimeError(f"closed with {left} bytes to go")
        digest.update(view[:n])
        left -= n
    result["length"] = length
    result["digest"] = digest.hexdigest()
    result["done"] = time.monotonic()


def run(size: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="twcomms-large-"))
    redis = RedisServer()
    hubs: list[Any] = []
    try:
        hub = "big" + os.urandom(3).hex()
        ports = [free_port(), free_port()]
        hubs = [
            start_hub(p, redis.url, hub, size, workdir / f"hub{i}.log")
            for i, p in enumerate(ports)
        ]
        receiver = connect(ports[1])
        sender = connect(ports[0])
        time.sleep(0.5)  # both clients registered on their nodes
        data = payload(size)
        expected = hashlib.blake2b(data).hexdigest()
        before = {
            "redis": redis_memory(redis.port)["used_memory"],
            "A": rss(hubs[0].pid, "VmRSS"),
            "B": rss(hubs[1].pid, "VmRSS"),
        }
        result: dict[str, Any] = {}
        reader = threading.Thread(target=receive, args=(receiver, size, result))
        reader.start()
        start = time.monotonic()
        sender.sendall(header(size))
        sender.sendall(data)
        del data
        reader.join(LIMIT)
        if "done" not in result:
            raise RuntimeError("the message did not arrive in time")
        if (result["length"], result["digest"]) != (size, expected):
            raise RuntimeError("the message arrived changed")
        memory = redis_memory(redis.port)
        figures = {
            "size": size,
            "seconds": result["done"] - start,
            "MB/s": size / (result["done"] - start) / 1e6,
            "redis before": before["redis"],
            "redis peak": memory["used_memory_peak"],
            "node A before": before["A"],
            "node A peak": rss(hubs[0].pid, "VmHWM"),
            "node B before": before["B"],
            "node B peak": rss(hubs[1].pid, "VmHWM"),
        }
        sender.close()
        receiver.close()
        return figures
    finally:
        for proc in hubs:
            end_process(proc, first=15, grace=5.0, wait=10.0)
        redis.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.large_cross_node", description=__doc__
    )
    parser.add_argument("--size", type=int, default=GiB, help="bytes (1 GiB)")
    parser.add_argument("--output-dir", default="benchmarks/results")
    args = parser.parse_args(argv)
    figures = run(args.size)
    size = figures["size"]
    print(f"one {size:,}-byte message, node A -> Redis -> node B, arrived whole")
    print(f"  {figures['seconds']:.1f} s ({figures['MB/s']:.0f} MB/s)")
    for name in ("redis", "node A", "node B"):
        peak, base = figures[f"{name} peak"], figures[f"{name} before"]
        print(
            f"  {name}: peak {peak / 2**20:,.0f} MiB (before {base / 2**20:,.0f} "
            f"MiB): {(peak - base) / size:.2f}x the message"
        )
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "large_cross_node.json").write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
