"""
What operators see (L{twcomms.web.monitor}, C{metrics}, C{dashboard}):
off unless asked for, only on a web listener; C{/metrics} parses with
prometheus_client's own parser and its counters match what was sent;
each server has its own registry; a token guards the dashboard and the
metrics; the dashboard's WebSocket hears of a client at once.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, threads

from harness.sockets import raw_connect, recv_frame, send_json
from harness.websocket import TEXT, RawWebSocket
from harness.wire import frame
from twcomms import CommsServerFactory
from twcomms.wire.extended import ANSWER_MAGIC, Kind, encode_hello, new_nonce


async def serve(**options: Any) -> tuple[CommsServerFactory, int, int]:
    server = CommsServerFactory(**options)
    web = (await server.listen_web("tcp:0:interface=127.0.0.1")).getHost().port
    tcp = (await server.listen("tcp:0:interface=127.0.0.1")).getHost().port
    return server, tcp, web


def get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    Every sample of a scrape, by name and labels, parsed by
    prometheus_client's own parser.
    """
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def waiter(hooks: list[Any], count: int) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    seen = [0]

    def hook(*args: Any) -> None:
        seen[0] += 1
        if seen[0] == count and not d.called:
            d.callback(None)

    hooks.append(hook)
    return d.addTimeout(10, reactor)


@pytest_twisted.ensureDeferred
async def test_nothing_answers_on_those_paths_unless_asked_for() -> None:
    server, tcp, web = await serve(web_shared=True)
    try:
        statuses = [
            (await threads.deferToThread(get, port, path))[0]
            for port in (web, tcp)
            for path in ("/", "/metrics", "/dashboard/ws")
        ]
        assert statuses == [404] * 6
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_shared_port_never_serves_the_dashboard_or_metrics() -> None:
    server, tcp, web = await serve(web_shared=True, dashboard=True, metrics=True)
    try:
        assert (await threads.deferToThread(get, tcp, "/metrics"))[0] == 404
        assert (await threads.deferToThread(get, tcp, "/"))[0] == 404
        assert (await threads.deferToThread(get, web, "/metrics"))[0] == 200
        assert (await threads.deferToThread(get, web, "/"))[0] == 200
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_metrics_parse_and_count_what_was_sent() -> None:
    server, tcp, web = await serve(metrics=True)
    server.on_request.append(lambda client, message: {"echo": message})
    decoded = waiter(server.on_decode_error, 1)
    received = waiter(server.on_message, 5)
    answered = waiter(server.on_request_done, 1)
    reasons: list[str] = []
    server.on_close.append(lambda client, reason: reasons.append(str(reason)))
    closed = waiter(server.on_close, 1)
    try:
        ws = await threads.deferToThread(RawWebSocket, web)
        sock = await threads.deferToThread(raw_connect, tcp)

        def send() -> None:
            for n in range(3):
                send_json(sock, {"n": n})
            sock.sendall(frame(b"{not json"))
            ws.send(encode_hello(new_nonce(), {"request": {}}))
            assert ws.recv()[1].startswith(ANSWER_MAGIC)
            for n in range(2):
                ws.send_text(json.dumps({"ws": n}))
            ws.send(bytes([Kind.REQUEST]) + (9).to_bytes(4, "little") + b'"q"')
            assert ws.recv()[1][0] == Kind.REPLY

        await threads.deferToThread(send)
        await received
        await decoded
        await answered
        server.broadcast({"to": "all"})
        await threads.deferToThread(recv_frame, sock)
        assert await threads.deferToThread(ws.recv) == (TEXT, b'{"to": "all"}')
        ws.close()
        await closed
        status, body = await threads.deferToThread(get, web, "/metrics")
        assert status == 200
        got = samples(body)
        # 3 + 2 messages and the frame that did not decode (it was
        # received); the request is a control frame, not a message.
        assert got["twcomms_messages_received_total", ()] == 6
        assert got["twcomms_decode_errors_total", ()] == 1
        assert got["twcomms_messages_sent_total", ()] == 2
        assert got["twcomms_requests_total", (("outcome", "ok"),)] == 1
        assert got["twcomms_request_seconds_count", ()] == 1
        (reason,) = reasons
        assert got["twcomms_closes_total", (("reason", reason),)] == 1
        connections = (("protocol", "plain"), ("transport", "tcp"))
        assert got["twcomms_connections", connections] == 1
        web_extended = (("protocol", "extended"), ("transport", "websocket"))
        assert got["twcomms_connections", web_extended] == 0
        sock.close()
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_two_servers_in_one_process_have_their_own_metrics() -> None:
    one, tcp_one, web_one = await serve(metrics=True)
    two, tcp_two, web_two = await serve(metrics=True)
    joined = waiter(one.on_connect, 1)
    try:
        sock = await threads.deferToThread(raw_connect, tcp_one)
        await joined
        first = samples((await threads.deferToThread(get, web_one, "/metrics"))[1])
        second = samples((await threads.deferToThread(get, web_two, "/metrics"))[1])
        plain_tcp = (("protocol", "plain"), ("transport", "tcp"))
        assert first["twcomms_connections", plain_tcp] == 1
        assert second["twcomms_connections", plain_tcp] == 0
        sock.close()
    finally:
        await one.stop()
        await two.stop()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("path", ["/", "/metrics"])
async def test_a_token_guards_the_dashboard_and_the_metrics(path: str) -> None:
    server, tcp, web = await serve(dashboard=True, metrics=True, monitor_token="s3cret")
    try:
        assert (await threads.deferToThread(get, web, path))[0] == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await threads.deferToThread(get, web, path, wrong))[0] == 401
        right = {"Authorization": "Bearer s3cret"}
        assert (await threads.deferToThread(get, web, path, right))[0] == 200
        query = path + "?token=s3cret"
        assert (await threads.deferToThread(get, web, query))[0] == 200
        # The dashboard's WebSocket too.
        refused = await threads.deferToThread(RawWebSocket, web, "/dashboard/ws")
        assert refused.status == 401
        refused.close()
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_the_dashboard_hears_of_a_client_at_once() -> None:
    server, tcp, web = await serve(dashboard=True)
    try:
        board = await threads.deferToThread(RawWebSocket, web, "/dashboard/ws")
        assert board.status == 101
        first = json.loads((await threads.deferToThread(board.recv))[1])
        assert first["clients"] == []
        sock = await threads.deferToThread(raw_connect, tcp)

        def next_with_a_client() -> dict[str, Any]:
            while True:
                view = json.loads(board.recv(timeout=2)[1])
                if view["clients"]:
                    return view  # type: ignore[no-any-return]

        view = await threads.deferToThread(next_with_a_client)
        (client,) = view["clients"]
        assert client["transport"] == "tcp" and client["protocol"] == "plain"
        assert client["address"] == f"127.0.0.1:{sock.getsockname()[1]}"
        # Read-only: what a dashboard sends changes nothing.
        await threads.deferToThread(board.send_text, '{"close": "everyone"}')
        assert len(server.clients) == 1
        sock.close()
        board.close()
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("token", ["s3cret", "a+b", "a&b=c", "sp ace%"])
async def test_any_token_opens_the_dashboards_websocket(token: str) -> None:
    # (autobahn hands the query decoded: it is encoded again to be checked.)
    from urllib.parse import quote

    server, tcp, web = await serve(dashboard=True, monitor_token=token)
    try:
        path = "/dashboard/ws?token=" + quote(token, safe="")
        board = await threads.deferToThread(RawWebSocket, web, path)
        assert board.status == 101
        board.close()
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_dashboard_that_sends_is_dropped_and_snapshots_grow_freely() -> None:
    # Read-only: a dashboard sending anything is dropped at its first
    # frame; what the hub sends is not bounded (a snapshot of many
    # clients is well over 4 KiB).
    server, tcp, web = await serve(dashboard=True)
    socks = []
    try:
        joined = waiter(server.on_connect, 30)
        for _ in range(30):
            socks.append(await threads.deferToThread(raw_connect, tcp))
        await joined
        board = await threads.deferToThread(RawWebSocket, web, "/dashboard/ws")
        opcode, payload = await threads.deferToThread(board.recv)
        assert len(json.loads(payload)["clients"]) == 30 and len(payload) > 4096
        await threads.deferToThread(board.send_text, "hello")

        def dropped() -> bool:
            deadline = time.monotonic() + 5
            try:
                while time.monotonic() < deadline:
                    board.recv(timeout=5)  # snapshots, until dropped
            except TimeoutError:
                return False  # still open, silent
            except (EOFError, OSError):
                return True
            return False  # still open, sending snapshots

        assert await threads.deferToThread(dropped)
        assert len(server.clients) == 30
    finally:
        for sock in socks:
            sock.close()
        await server.stop()
