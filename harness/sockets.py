"""
Blocking raw-socket peers on 127.0.0.1, framing with L{harness.wire}: a
test or benchmark talks to twcomms (or to a peer) without twcomms.

Every read has a deadline: a bug fails the caller, never hangs it.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from harness.wire import frame, header_struct

#: Seconds any single wait may take by default.
WAIT = 10.0


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listened on a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def local_port(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


def raw_connect(port: int, timeout: float = WAIT) -> socket.socket:
    """
    A connected socket to 127.0.0.1:C{port} whose operations time out after
    C{timeout} seconds (close it, or use it as a context manager).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def recv_exact(sock: socket.socket, n: int, timeout: float = WAIT) -> bytes:
    """
    Exactly C{n} bytes, within C{timeout} seconds overall (the socket's own
    timeout is restored afterwards).

    @raise EOFError: the peer closed first.
    @raise TimeoutError: they did not arrive in time.
    """
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    got = 0
    before = sock.gettimeout()
    try:
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"got {got} of {n} bytes within {timeout} s")
            sock.settimeout(left)
            chunk = sock.recv(min(n - got, 1 << 20))
            if not chunk:
                raise EOFError(f"connection closed after {got} of {n} bytes")
            chunks.append(chunk)
            got += len(chunk)
    finally:
        sock.settimeout(before)
    return b"".join(chunks)


def recv_frame(
    sock: socket.socket, byte_order: str = "little", timeout: float = WAIT
) -> bytes:
    """
    The payload of the next frame, within C{timeout} seconds overall.
    """
    deadline = time.monotonic() + timeout
    header = header_struct(byte_order)
    (length,) = header.unpack(recv_exact(sock, header.size, timeout))
    return recv_exact(sock, length, max(deadline - time.monotonic(), 0.01))


def send_json(sock: socket.socket, value: Any) -> None:
    sock.sendall(frame(json.dumps(value).encode()))


def recv_json(sock: socket.socket, timeout: float = WAIT) -> Any:
    return json.loads(recv_frame(sock, timeout=timeout))


def recv_eof(sock: socket.socket, timeout: float = WAIT) -> bytes:
    """
    Read until the peer closes; return what arrived first (C{b""} if
    nothing). A reset or a timeout raises.
    """
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the connection did not close within {timeout} s")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
