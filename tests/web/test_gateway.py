"""
The WebSocket gateway over real loopback sockets: WebSocket clients are
clients like TCP ones (both ways, every data type, the extended protocol
by the WebSocket mapping), limits hold as bytes arrive, origins are
checked, close reasons become close codes. The peers are raw sockets in
threads, so every byte on the wire is the test's.
"""

from __future__ import annotations

import json
import socket
import struct
import tracemalloc
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads

from harness.sockets import raw_connect, recv_frame, recv_json, send_json
from harness.websocket import BINARY, CONTINUATION, TEXT, RawWebSocket
from harness.wire import frame
from twcomms import CommsServerFactory
from twcomms.wire.extended import ANSWER_MAGIC, Kind, encode_hello, new_nonce

MiB = 1024 * 1024


async def serve(**options: Any) -> tuple[CommsServerFactory, int, int]:
    """
    A server with a TCP port and a web port: C{(factory, tcp, web)}.
    """
    server = CommsServerFactory(**options)
    web = (await server.listen_web("tcp:0:interface=127.0.0.1")).getHost().port
    tcp = (await server.listen("tcp:0:interface=127.0.0.1")).getHost().port
    return server, tcp, web


def connected(server: CommsServerFactory, count: int) -> defer.Deferred[None]:
    """
    Fires once C{server} has C{count} clients.
    """
    d: defer.Deferred[None] = defer.Deferred()

    def check(client: Any = None) -> None:
        if len(server.clients) >= count and not d.called:
            d.callback(None)

    server.on_connect.append(check)
    check()
    return d


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("shared", [False, True], ids=["web port", "shared port"])
async def test_json_both_ways_between_a_websocket_and_a_tcp_client(
    shared: bool,
) -> None:
    server, tcp, web = await serve(web_shared=shared)
    relay = Relay(server)
    try:
        ws = await threads.deferToThread(RawWebSocket, tcp if shared else web)
        assert ws.status == 101
        sock = await threads.deferToThread(raw_connect, tcp)
        await connected(server, 2)

        def exchange() -> tuple[Any, Any]:
            ws.send_text(json.dumps({"from": "ws", "n": 1}))
            got_tcp = recv_json(sock)
            send_json(sock, {"from": "tcp", "é": [1, 2]})
            opcode, payload = ws.recv()
            assert opcode == TEXT
            return got_tcp, json.loads(payload)

        got_tcp, got_ws = await threads.deferToThread(exchange)
        assert got_tcp == {"from": "ws", "n": 1}
        assert got_ws == {"from": "tcp", "é": [1, 2]}
        assert relay.kinds == {"ws": 1, "tcp": 1}
        ws.close()
        sock.close()
    finally:
        await server.stop()


class Relay:
    """
    Hub-like: each message goes to every other client; counts who sent.
    """

    def __init__(self, server: CommsServerFactory) -> None:
        self.kinds: dict[str, int] = {}
        server.on_message.append(self)
        self.server = server

    def __call__(self, client: Any, message: Any) -> None:
        if isinstance(message, dict) and "from" in message:
            self.kinds[message["from"]] = self.kinds.get(message["from"], 0) + 1
        self.server.broadcast(message, exclude=client)


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("data_type", ["string", "binary"])
async def test_strings_are_text_messages_and_bytes_binary(data_type: str) -> None:
    server, tcp, web = await serve(messageDataType=data_type)
    Relay(server)
    try:
        ws = await threads.deferToThread(RawWebSocket, web)
        sock = await threads.deferToThread(raw_connect, tcp)
        await connected(server, 2)
        payload = "héllo".encode() if data_type == "string" else bytes(range(256))

        def exchange() -> tuple[bytes, tuple[int, bytes]]:
            ws.send(payload, TEXT if data_type == "string" else BINARY)
            got_tcp = recv_frame(sock)
            sock.sendall(frame(payload))
            return got_tcp, ws.recv()

        got_tcp, (opcode, got_ws) = await threads.deferToThread(exchange)
        assert got_tcp == payload
        assert got_ws == payload
        assert opcode == (TEXT if data_type == "string" else BINARY)
        ws.close()
        sock.close()
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_the_extended_protocol_by_the_websocket_mapping() -> None:
    server, tcp, web = await serve(messageDataType="json")
    server.on_request.append(lambda client, message: {"echo": message})
    try:
        ws = await threads.deferToThread(RawWebSocket, web)
        nonce = new_nonce()

        def negotiate() -> dict[str, Any]:
            ws.send(encode_hello(nonce, {"request": {}, "rooms": {}}))
            opcode, answer = ws.recv()
            assert opcode == BINARY
            assert answer.startswith(ANSWER_MAGIC)
            assert answer[17:33] == nonce
            return json.loads(answer[33:])  # type: ignore[no-any-return]

        features = await threads.deferToThread(negotiate)
        assert set(features) == {"request", "rooms"}
        await connected(server, 1)
        (client,) = server.clients

        def ask_and_join() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
            # A REQUEST: kind, a little-endian id, the message.
            ws.send(bytes([Kind.REQUEST]) + struct.pack("<I", 7) + b'{"q": 1}')
            reply = ws.recv()
            ws.send(bytes([Kind.JOIN]) + struct.pack("<I", 8) + b"lobby")
            return reply, ws.recv()

        reply, joined = await threads.deferToThread(ask_and_join)
        assert reply == (
            BINARY,
            bytes([Kind.REPLY]) + struct.pack("<I", 7) + b'{"echo": {"q": 1}}',
        )
        assert joined == (BINARY, bytes([Kind.REPLY]) + struct.pack("<I", 8) + b"\x01")
        assert server.rooms_of(client) == {"lobby"}
        # A message on an extended json connection is a text message; the
        # server's request to the client is a control frame.
        server.broadcast({"room": 1}, room="lobby")
        asked = server.request(client, {"ping": 1})

        def answer() -> tuple[int, bytes]:
            message = ws.recv()
            opcode, body = ws.recv()
            assert body[0] == Kind.REQUEST
            ws.send(bytes([Kind.REPLY]) + body[1:5] + b'"pong"')
            return message

        message = await threads.deferToThread(answer)
        assert message == (TEXT, b'{"room": 1}')
        assert await asked == "pong"
        ws.close()
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_extended_binary_messages_carry_a_zero_kind_byte() -> None:
    server, tcp, web = await serve(messageDataType="binary")
    got: list[bytes] = []
    server.on_message.append(lambda client, message: got.append(message))
    try:
        ws = await threads.deferToThread(RawWebSocket, web)

        def negotiate() -> None:
            ws.send(encode_hello(new_nonce(), {}))
            assert ws.recv()[1].startswith(ANSWER_MAGIC)
            ws.send(b"\x00\x01\x02\x03")

        await threads.deferToThread(negotiate)
        await connected(server, 1)
        server.broadcast(b"\x09\x08")
        assert await threads.deferToThread(ws.recv) == (BINARY, b"\x00\x09\x08")
        assert got == [b"\x01\x02\x03"]
        ws.close()
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_fragmented_1_gib_message_is_refused_with_1009_as_it_grows() -> None:
    # The sender offers 1 GiB in 1 MiB fragments to a gateway whose maximum
    # is 4 MiB: it closes with 1009 at the fragment that takes the message
    # past the maximum, and what it holds meanwhile stays near that.
    limit = 4 * MiB
    server, tcp, web = await serve(messageDataType="binary", max_message_size=limit)
    closed: defer.Deferred[Any] = defer.Deferred()
    server.on_close.append(lambda client, reason: closed.callback(str(reason)))
    try:
        ws = await threads.deferToThread(RawWebSocket, web)
        await connected(server, 1)

        def flood() -> tuple[int, int, str]:
            chunk = b"\x00" * MiB
            sent = 0
            try:
                for i in range(1024):
                    ws.send(chunk, BINARY if i == 0 else CONTINUATION, fin=False)
                    sent += len(chunk)
            except OSError:
                pass  # the gateway dropped the socket while we sent
            code, reason = ws.recv_close(timeout=30)
            return sent, code, reason

        tracemalloc.start()
        sent, code, reason = await threads.deferToThread(flood)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert code == 1009, reason
        assert "exceeds payload limit" in reason
        assert await closed.addTimeout(10, reactor) == "oversize"
        # The gateway read on (and discarded) during its closing handshake;
        # whatever of the 1 GiB it read, it held about the maximum.
        assert sent >= 8 * MiB
        assert peak < 3 * limit, peak
        ws.close()
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_message_over_the_maximum_in_one_frame_is_refused() -> None:
    server, tcp, web = await serve(messageDataType="binary", max_message_size=1000)
    try:
        ws = await threads.deferToThread(RawWebSocket, web)

        def oversized() -> tuple[int, str]:
            ws.send(b"x" * 1001)
            return ws.recv_close()

        code, reason = await threads.deferToThread(oversized)
        assert code == 1009
        assert "oversize" in reason
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    ("origin", "allowed", "status"),
    [
        (None, (), 101),  # not a browser: not checked
        ("http://127.0.0.1:{port}", (), 101),  # the page's own origin
        ("http://evil.example", (), 403),
        ("http://evil.example", ("http://evil.example",), 101),
        ("https://any.example", ("*",), 101),
    ],
)
async def test_origins_are_checked(
    origin: str | None, allowed: tuple[str, ...], status: int
) -> None:
    server, tcp, web = await serve(web_origins=allowed)
    try:
        given = origin.format(port=web) if origin else None
        ws = await threads.deferToThread(RawWebSocket, web, "/ws", given)
        assert ws.status == status
        ws.close()
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_bad_upgrade_gets_an_http_error_and_only_two_paths_exist() -> None:
    server, tcp, web = await serve()
    try:

        def requests() -> list[int]:
            statuses = []
            for request in (
                b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n",  # not an upgrade
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n\r\n",  # no key, no version
                b"GET /twcomms.js HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            ):
                with raw_connect(web) as sock:
                    sock.sendall(request)
                    statuses.append(int(sock.recv(64).split(b" ")[1]))
            return statuses

        assert await threads.deferToThread(requests) == [426, 400, 200, 404, 404]
        assert server.clients.__len__() == 0
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_server_stop_closes_websocket_clients_with_1001() -> None:
    server, tcp, web = await serve()
    ws = await threads.deferToThread(RawWebSocket, web)
    await connected(server, 1)
    stopped = server.stop()
    code, reason = await threads.deferToThread(ws.recv_close)
    ws.close()
    await stopped
    assert (code, reason) == (1001, "server stopping")


@pytest_twisted.ensureDeferred
async def test_a_websocket_client_that_stops_reading_is_dropped_alone() -> None:
    server, tcp, web = await serve(
        messageDataType="binary",
        max_message_size=128 * 1024,
        outbound_limit=4 * MiB,
        drain_high_water=512 * 1024,
        drain_low_water=256 * 1024,
        stall_timeout=1.0,
    )
    reasons: list[str] = []
    server.on_close.append(lambda client, reason: reasons.append(str(reason)))
    try:
        slow = await threads.deferToThread(RawWebSocket, web)
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock = await threads.deferToThread(raw_connect, tcp)
        await connected(server, 2)
        body = b"." * (64 * 1024)
        count = 400  # 25 MiB: far past the slow one's outbound limit

        def receive() -> int:
            got = 0
            for _ in range(count):
                assert len(recv_frame(sock)) == len(body)
                got += 1
            return got

        receiving = threads.deferToThread(receive)
        for _ in range(count):
            server.broadcast(body)
            await server.whenDrained()
        assert await receiving == count
        assert reasons == ["slow consumer"]
        slow.close()
        sock.close()
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_limits_apply_to_websocket_clients_with_their_close_codes() -> None:
    # max_clients counts browsers and TCP clients together (1013), and an
    # idle browser is closed by the idle timeout (1000, its reason).
    server, tcp, web = await serve(max_clients=1, idle_timeout=0.5)
    try:
        first = await threads.deferToThread(RawWebSocket, web)
        await connected(server, 1)
        second = await threads.deferToThread(RawWebSocket, web)
        assert await threads.deferToThread(second.recv_close) == (1013, "max clients")
        assert await threads.deferToThread(first.recv_close) == (1000, "idle timeout")
        first.close()
        second.close()
        assert server.rejected == 1
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_the_hub_paces_a_flooding_browser_to_its_slow_recipient() -> None:
    # Hub mode relays a browser's messages; a browser sending as fast as it
    # can is read at the pace of the recipients (its socket paused), and
    # the healthy recipient gets everything in order.
    import threading

    from tests.test_pacing_sockets import Counter, slow_reader
    from twcomms import CommsClientFactory
    from twcomms.connection import PauseReason
    from twcomms.ops.service import Hub

    server, tcp, web = await serve(
        messageDataType="binary",
        drain_high_water=2 * MiB,
        drain_low_water=MiB // 2,
        stall_timeout=5,
    )
    Hub(server, "broadcast")
    joined: defer.DeferredQueue[Any] = defer.DeferredQueue()
    server.on_connect.append(joined.put)
    count = 48
    healthy = Counter(count)
    reader = CommsClientFactory("binary", on_message=healthy)
    reader.connectTCP("127.0.0.1", tcp)
    await joined.get()
    done = threading.Event()
    slow_out: list[Any] = []
    slow = threading.Thread(target=slow_reader, args=(tcp, 8 * MiB, done, slow_out))
    slow.start()
    await joined.get()
    ws = await threads.deferToThread(RawWebSocket, web)
    producer = await joined.get()
    paused: list[str] = []
    real_pause = producer.protocol.pauseReading

    def record(reason: str) -> None:
        paused.append(reason)
        real_pause(reason)

    producer.protocol.pauseReading = record
    body = b"." * (MiB - 4)
    try:

        def flood() -> None:
            for i in range(count):
                ws.send(i.to_bytes(4, "little") + body)

        await threads.deferToThread(flood)
        await healthy.done.addTimeout(60, reactor)
        assert (healthy.count, healthy.bad) == (count, 0)
        assert PauseReason.PACING in paused  # the browser's socket was paused
        assert producer.connected
    finally:
        done.set()
        ws.close()
        await threads.deferToThread(slow.join, 30)
        await reader.stop()
        await server.stop()
