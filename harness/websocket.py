"""
A blocking raw WebSocket client (RFC 6455) on 127.0.0.1, for tests that
must control every byte: fragments, masks, bad upgrades, a reader that
stops. It writes frames itself and reads the server's (unmasked) frames.

Every read has a deadline (L{harness.sockets.recv_exact}).
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import struct

from harness.sockets import WAIT, raw_connect, recv_exact

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10


def upgrade_request(
    path: str = "/ws", host: str = "127.0.0.1", origin: str | None = None
) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket, timeout: float = WAIT) -> tuple[int, bytes]:
    """
    The status code and head of an HTTP response (up to the blank line).
    """
    head = b""
    while b"\r\n\r\n" not in head:
        head += recv_exact(sock, 1, timeout)
    return int(head.split(b" ", 2)[1]), head


def frame(payload: bytes, opcode: int = BINARY, fin: bool = True) -> bytes:
    """
    One client frame, masked with an all-zero key (allowed, and the
    payload then goes as it is: no copy to mask a large one).
    """
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 0x10000:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


class RawWebSocket:
    """
    One WebSocket connection to 127.0.0.1:C{port}.

    @ivar status: the upgrade's HTTP status (101 when it worked).
    """

    def __init__(
        self,
        port: int,
        path: str = "/ws",
        origin: str | None = None,
        timeout: float = WAIT,
    ) -> None:
        self.sock = raw_connect(port, timeout)
        self.sock.sendall(upgrade_request(path, f"127.0.0.1:{port}", origin))
        self.status, self.head = read_response(self.sock, timeout)

    def send(self, payload: bytes, opcode: int = BINARY, fin: bool = True) -> None:
        self.sock.sendall(frame(payload, opcode, fin))

    def send_text(self, text: str) -> None:
        self.send(text.encode(), TEXT)

    def recv(self, timeout: float = WAIT) -> tuple[int, bytes]:
        """
        The next frame from the server: C{(opcode, payload)}; a ping is
        answered and skipped.
        """
        while True:
            first, second = recv_exact(self.sock, 2, timeout)
            n = second & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", recv_exact(self.sock, 2, timeout))
            elif n == 127:
                (n,) = struct.unpack("!Q", recv_exact(self.sock, 8, timeout))
            payload = recv_exact(self.sock, n, timeout) if n else b""
            opcode = first & 0x0F
            if opcode == PING:
                self.send(payload, PONG)
                continue
            return opcode, payload

    def recv_close(self, timeout: float = WAIT) -> tuple[int, str]:
        """
        Skip messages until the server's close frame: its code and reason
        (answered with a close frame, as a client does).
        """
        while True:
            opcode, payload = self.recv(timeout)
            if opcode == CLOSE:
                (code,) = struct.unpack("!H", payload[:2])
                # The closing handshake (the server may have dropped the
                # socket already).
                with contextlib.suppress(OSError):
                    self.send(payload[:2], CLOSE)
                return code, payload[2:].decode()

    def close(self) -> None:
        self.sock.close()
