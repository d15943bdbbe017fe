"""
Round trips and the wire format of the threaded API, checked against
independent C{struct} framing exactly as the original library wrote it.
"""

from __future__ import annotations

import json
import queue
import socket
from typing import Any

import pytest

from harness.wire import frame
from twcomms.errors import EncodeError, InvalidJSONError
from twcomms.threaded import ConnectedClient

from .raw import get, raw_connect, recv_frame

MODES = ["json", "string", "binary"]
ORDERS = ["little", "big"]

#: A message per mode, and the reply the server makes to it.
MESSAGES: dict[str, Any] = {
    "json": {"n": 1, "text": "h\u00e9llo \u2713", "list": [1, 2.5, None, True]},
    "string": "h\u00e9llo w\u00f6rld \u2713",
    "binary": bytes(range(256)) * 3,
}


def reply_to(mode: str, message: Any) -> Any:
    if mode == "json":
        return {"echo": message}
    if mode == "string":
        return "echo:" + message
    return b"echo:" + message


@pytest.mark.parametrize("via", ["sender-handle", "sendTo-handle"])
@pytest.mark.parametrize("byte_order", ORDERS)
@pytest.mark.parametrize("mode", MODES)
def test_round_trip(make_server, make_client, mode, byte_order, via):
    """
    client -> server -> reply, through the ConnectedClient handed to a
    with_sender callback (its send(), or server.sendTo(msg, handle)).
    """
    server = make_server(messageDataType=mode, byteOrder=byte_order)
    senders: queue.Queue[Any] = queue.Queue()

    def on_message(client, message):
        senders.put(client)
        if via == "sender-handle":
            client.send(reply_to(mode, message))
        else:
            server.sendTo(reply_to(mode, message), client)

    server.add_onmessage_callback(on_message, with_sender=True)
    client = make_client(server.port, messageDataType=mode, byteOrder=byte_order)
    replies: queue.Queue[Any] = queue.Queue()
    client.add_onmessage_callback(replies.put)

    message = MESSAGES[mode]
    client.send(message)
    reply = get(replies, "reply")
    assert reply == reply_to(mode, message)
    assert type(reply) is type(reply_to(mode, message))
    sender = get(senders, "sender")
    assert isinstance(sender, ConnectedClient)
    assert sender.address == "127.0.0.1"


@pytest.mark.parametrize("byte_order", ORDERS)
@pytest.mark.parametrize("mode", MODES)
def test_raw_original_peer_to_server_and_back(make_server, mode, byte_order):
    """
    A peer that frames like the original (struct.pack('<I', n) + payload,
    '>I' for big-endian) is understood; what the server sends back parses
    with the same independent struct parsing, byte for byte as the original
    would have encoded it.
    """
    server = make_server(messageDataType=mode, byteOrder=byte_order)
    got: queue.Queue[Any] = queue.Queue()

    def on_message(client, message):
        got.put(message)
        client.send(reply_to(mode, message))

    server.add_onmessage_callback(on_message, with_sender=True)
    message = MESSAGES[mode]
    if mode == "json":
        payload = json.dumps(message).encode("utf-8")
    elif mode == "string":
        payload = message.encode("utf-8")
    else:
        payload = message
    with raw_connect(server.port) as sock:
        sock.sendall(frame(payload, byte_order))
        assert get(got, "message") == message
        answer = recv_frame(sock, byte_order)
    expected = reply_to(mode, message)
    if mode == "json":
        # The original: json.dumps with default settings, then UTF-8.
        assert answer == json.dumps(expected).encode("utf-8")
    elif mode == "string":
        assert answer == expected.encode("utf-8")
    else:
        assert answer == expected


def test_raw_peer_any_segmentation(make_server):
    """
    Frames coalesced into one write, a frame trickled a few bytes at a
    time, and a 1 MiB frame (the original truncated anything over ~64 KiB)
    all arrive whole and in order.
    """
    server = make_server()
    got: queue.Queue[Any] = queue.Queue()
    server.add_onmessage_callback(got.put)
    big = {"blob": "x" * (1024 * 1024)}
    with raw_connect(server.port) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"".join(frame(json.dumps({"i": i}).encode()) for i in range(3)))
        trickled = frame(json.dumps({"i": 3, "pad": "y" * 50}).encode())
        for k in range(0, len(trickled), 7):
            sock.sendall(trickled[k : k + 7])
        sock.sendall(frame(json.dumps(big).encode()))
        sock.sendall(frame(b"[]"))
        for i in range(3):
            assert get(got, f"message {i}") == {"i": i}
        assert get(got, "trickled message") == {"i": 3, "pad": "y" * 50}
        assert get(got, "1 MiB message") == big
        assert get(got, "last message") == []


def test_json_mode_sends_like_the_original(make_server):
    """
    In json mode the original sent a dict as json.dumps(d), a str as is
    (it must already be JSON text) and bytes raw.
    """
    server = make_server()
    connected: queue.Queue[ConnectedClient] = queue.Queue()
    server.add_onconnect_callback(connected.put)
    with raw_connect(server.port) as sock:
        handle = get(connected, "connection")
        d = {"b": [1, 2], "a": "\u00e9\u4e2d", "c": None}
        handle.send(d)
        handle.send('{"a":   [1,2] }')  # sent as is, not re-encoded
        handle.send(b'{"raw": true}')
        server.sendTo("[1, 2, 3]", handle)
        assert recv_frame(sock) == json.dumps(d).encode("utf-8")
        assert recv_frame(sock) == b'{"a":   [1,2] }'
        assert recv_frame(sock) == b'{"raw": true}'
        assert recv_frame(sock) == b"[1, 2, 3]"


def test_client_json_mode_sends_like_the_original(raw_server, make_client):
    client = make_client(raw_server.port)
    sock = raw_server.accept()
    d = {"z": 1, "y": "\u00fc"}
    client.send(d)
    client.send('{"x" : 1}')
    client.send(b"[true]")
    assert recv_frame(sock) == json.dumps(d).encode("utf-8")
    assert recv_frame(sock) == b'{"x" : 1}'
    assert recv_frame(sock) == b"[true]"
    # And what the original's server sends, the client understands.
    got: queue.Queue[Any] = queue.Queue()
    client.add_onmessage_callback(got.put)
    sock.sendall(frame(json.dumps({"from": "raw"}).encode()))
    assert get(got, "message") == {"from": "raw"}


def test_invalid_json_str_raises_and_nothing_is_sent(raw_server, make_client):
    client = make_client(raw_server.port)
    sock = raw_server.accept()
    for bad in ["hello", "{'single': 'quotes'}", "", b"not json"]:
        with pytest.raises(InvalidJSONError) as info:
            client.send(bad)
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, EncodeError)
    client.send({"after": "errors"})
    # The first frame on the wire is the valid one: nothing was sent before.
    assert recv_frame(sock) == b'{"after": "errors"}'


def test_invalid_json_from_server_raises_and_nothing_is_sent(make_server):
    server = make_server()
    connected: queue.Queue[ConnectedClient] = queue.Queue()
    server.add_onconnect_callback(connected.put)
    with raw_connect(server.port) as sock:
        handle = get(connected, "connection")
        with pytest.raises(ValueError):
            handle.send("not json")
        with pytest.raises(ValueError):
            server.sendTo("not json", handle)
        with pytest.raises(ValueError):
            server.broadcast("not json")
        handle.send({"ok": 1})
        assert recv_frame(sock) == b'{"ok": 1}'


def test_string_and_binary_receivers_get_str_and_bytes(make_server, make_client):
    """
    The receiver decodes by its own mode: string -> str, binary -> bytes,
    whatever the sender's mode (here a raw peer sends UTF-8 text to both).
    """
    text = "caf\u00e9 \U0001f600"
    for mode, expected in [("string", text), ("binary", text.encode())]:
        server = make_server(messageDataType=mode)
        got: queue.Queue[Any] = queue.Queue()
        server.add_onmessage_callback(got.put)
        with raw_connect(server.port) as sock:
            sock.sendall(frame(text.encode("utf-8")))
            message = get(got, f"{mode} message")
        assert message == expected
        assert type(message) is type(expected)


def test_peer_closing_cleanly_delivers_no_empty_messages(make_server):
    """
    The original's string/binary receivers looped delivering empty
    messages when a peer closed; here the close callback fires instead.
    """
    server = make_server(messageDataType="string")
    got: queue.Queue[Any] = queue.Queue()
    closed: queue.Queue[Any] = queue.Queue()
    server.add_onmessage_callback(got.put)
    server.add_onclose_callback(closed.put)
    sock = raw_connect(server.port)
    sock.sendall(frame(b"last"))
    assert get(got, "message") == "last"
    sock.close()
    get(closed, "close callback")
    assert got.empty()
