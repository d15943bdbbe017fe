"""
Independent raw-socket peers for the threaded API tests.

Framing is L{harness.wire}'s: C{struct} exactly as the original library
did (C{struct.pack('<I', len(p)) + p}); nothing comes from twcomms.
"""

from __future__ import annotations

import queue
import socket
from typing import Any

from harness import sockets

#: Bound on every wait in these tests: a bug fails the test, never hangs it.
WAIT = 15.0


def raw_connect(port: int) -> socket.socket:
    """
    A socket connected to 127.0.0.1:C{port}, timing out after L{WAIT}.
    """
    return sockets.raw_connect(port, WAIT)


def recv_frame(sock: socket.socket, byte_order: str = "little") -> bytes:
    """
    Read one frame and return its payload, within L{WAIT} seconds.
    """
    return sockets.recv_frame(sock, byte_order, WAIT)


def get(q: queue.Queue[Any], what: str = "an event", timeout: float = WAIT) -> Any:
    """
    The next item of C{q}, failing (not hanging) after C{timeout} seconds.
    """
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no {what} within {timeout} s") from None


def assert_empty(q: queue.Queue[Any], what: str, timeout: float = 0.3) -> None:
    """
    Nothing more arrives on C{q} within a short window (a negative check).
    """
    try:
        item = q.get(timeout=timeout)
    except queue.Empty:
        return
    raise AssertionError(f"unexpected {what}: {item!r}")


class RawServer:
    """
    A listening socket on 127.0.0.1 that a twcomms Client can connect to.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(WAIT)
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []

    def accept(self) -> socket.socket:
        conn, _ = self.sock.accept()
        conn.settimeout(WAIT)
        self.accepted.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()
