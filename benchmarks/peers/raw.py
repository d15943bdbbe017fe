"""
raw-socket: the floor. Blocking sockets, pre-built frames (framed by
L{harness.wire}), C{recv_into} a preallocated buffer, C{json.loads} per
message.
"""

from __future__ import annotations

import socket
from typing import Any

from benchmarks.peers.common import (
    emit,
    hold,
    json_bytes,
    json_value,
    maxrss_kib,
    messages,
    nodelay,
    pattern,
    payload_ok,
    rtt_result,
)
from benchmarks.peers.settings import ACK, BATCH, HELLO, HI, now
from harness.wire import HEADER, frame


class _RawFrames:
    """
    Frames from a blocking socket, read with C{recv_into} into one
    preallocated buffer (small frames only).
    """

    def __init__(self, sock: socket.socket, size: int = 1 << 20) -> None:
        self.sock = sock
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0

    def fill(self) -> int:
        buf = self.buf
        if self.start and len(buf) - self.end < 65536:
            rest = self.end - self.start
            buf[:rest] = buf[self.start : self.end]
            self.start, self.end = 0, rest
        got = self.sock.recv_into(self.view[self.end :])
        if not got:
            raise EOFError("peer closed")
        self.end += got
        return got

    def frames(self) -> list[bytearray]:
        """
        The complete payloads now in the buffer.
        """
        out = []
        buf, start, end = self.buf, self.start, self.end
        unpack_from = HEADER.unpack_from
        while end - start >= 4:
            (length,) = unpack_from(buf, start)
            stop = start + 4 + length
            if stop > end:
                break
            out.append(buf[start + 4 : stop])
            start = stop
        self.start = start
        return out

    def next(self) -> bytearray:
        while True:
            frames = self.frames_one()
            if frames is not None:
                return frames
            self.fill()

    def frames_one(self) -> bytearray | None:
        if self.end - self.start < 4:
            return None
        (length,) = HEADER.unpack_from(self.buf, self.start)
        stop = self.start + 4 + length
        if stop > self.end:
            return None
        payload = self.buf[self.start + 4 : stop]
        self.start = stop
        return payload


def _recv_exact(sock: socket.socket, view: memoryview) -> None:
    got = 0
    size = len(view)
    while got < size:
        n = sock.recv_into(view[got:])
        if not n:
            raise EOFError("peer closed")
        got += n


def _raw_listen() -> socket.socket:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1024)
    emit("ready", ports=[lsock.getsockname()[1]])
    return lsock


def _raw_accept(lsock: socket.socket) -> socket.socket:
    conn, _ = lsock.accept()
    nodelay(conn)
    return conn


def run_server(scn: str, spec: dict[str, Any]) -> None:
    if scn == "D":
        base = maxrss_kib()
    lsock = _raw_listen()

    if scn == "A":
        conn = _raw_accept(lsock)
        n = spec["messages"]
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        start = end = count = 0
        t_first = 0.0
        loads = json_value
        unpack_from = HEADER.unpack_from
        msg: Any = None
        while count < n:
            if start and len(buf) - end < 65536:
                buf[: end - start] = buf[start:end]
                start, end = 0, end - start
            got = conn.recv_into(view[end:])
            if not got:
                raise EOFError("peer closed")
            end += got
            while end - start >= 4:
                (length,) = unpack_from(buf, start)
                stop = start + 4 + length
                if stop > end:
                    break
                msg = loads(buf[start + 4 : stop])
                start = stop
                count += 1
                if count == 1:
                    t_first = now()
        emit("result", t_first=t_first, t_last=now(), count=count, last=msg["i"])

    elif scn == "B":
        conn = _raw_accept(lsock)
        requests = _RawFrames(conn)
        while True:
            data = json_bytes(json_value(requests.next()))
            conn.sendall(HEADER.pack(len(data)) + data)

    elif scn == "C":
        socks = [_raw_accept(lsock) for _ in range(spec["clients"])]
        frames = [frame(json_bytes(m)) for m in messages(spec["messages"])]
        batches = [
            b"".join(frames[i : i + BATCH]) for i in range(0, len(frames), BATCH)
        ]
        t_start = now()
        for batch in batches:
            for s in socks:
                s.sendall(batch)
        emit("result", t_start=t_start, t_sent=now(), clients=len(socks))

    elif scn == "D":
        conn = _raw_accept(lsock)
        size = spec["size"]
        header = bytearray(4)
        buf: bytearray | None = None
        received = 0
        while received < spec["reps"]:
            _recv_exact(conn, memoryview(header))
            (length,) = HEADER.unpack(header)
            if length < 16:
                _recv_exact(conn, memoryview(bytearray(length)))
                conn.sendall(frame(HI))
                continue
            if buf is None or len(buf) != length:
                buf = bytearray(length)
            _recv_exact(conn, memoryview(buf))
            if not payload_ok(buf, size):
                emit("error", error="payload check failed")
            conn.sendall(frame(ACK))
            received += 1
        emit("result", peak_extra_kib=maxrss_kib() - base, baseline_kib=base)

    else:
        raise ValueError(scn)
    hold()


def _raw_connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    nodelay(sock)
    return sock


def run_client(scn: str, spec: dict[str, Any], go: dict[str, Any]) -> None:
    port = go["ports"][0]

    if scn == "A":
        data = b"".join(frame(json_bytes(m)) for m in messages(spec["messages"]))
        sock = _raw_connect(port)
        t0 = now()
        sock.sendall(data)
        emit("result", t_send_start=t0, t_send_end=now())

    elif scn == "B":
        frames = [
            frame(json_bytes(m)) for m in messages(spec["trips"] + spec["warmup"])
        ]
        sock = _raw_connect(port)
        replies = _RawFrames(sock, 65536)
        rtts = []
        for i, request in enumerate(frames):
            t0 = now()
            sock.sendall(request)
            json_value(replies.next())
            if i >= spec["warmup"]:
                rtts.append(now() - t0)
        emit("result", **rtt_result(rtts))

    elif scn == "C":
        import selectors

        k, m = spec["clients"], spec["messages"]
        sel = selectors.DefaultSelector()
        for _ in range(k):
            sock = _raw_connect(port)
            sel.register(sock, selectors.EVENT_READ, [_RawFrames(sock), 0])
        done = 0
        loads = json_value
        while done < k:
            for key, _ in sel.select():
                state = key.data
                state[0].fill()
                frames = state[0].frames()
                for payload in frames:
                    loads(payload)
                state[1] += len(frames)
                if state[1] == m:
                    done += 1
        emit("result", t_done=now(), clients=k, each=m)

    elif scn == "D":
        message = frame(pattern(spec["size"]))
        sock = _raw_connect(port)
        replies = _RawFrames(sock, 65536)
        sock.sendall(frame(HELLO))
        replies.next()
        times = []
        for _ in range(spec["reps"]):
            t0 = now()
            sock.sendall(message)
            replies.next()
            times.append(now() - t0)
            emit("progress", times=times)
        emit("result", times=times)

    else:
        raise ValueError(scn)
    hold()
